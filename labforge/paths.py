"""Where labforge's own files are on the control machine (one definition instead of Path(__file__).parents[1])."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUP_DATA = REPO / "group_data"
TEMPLATES = REPO / "templates"


def in_repo(setting: str) -> Path:
    """A path setting: absolute as given, else relative to the repository (as download_lock_file)."""
    path = Path(setting).expanduser()
    return path if path.is_absolute() else REPO / path


def inside(path: Path, repo: Path = REPO) -> bool:
    """Whether the resolved `path` is `repo` or lies under it: where no secret may be read from."""
    path = path.resolve()
    return path == repo or repo in path.parents


def committable(path: Path, repo: Path = REPO) -> bool:
    """Whether `path` lies in the git repository `repo` and git does not ignore it: a secret or a backup written
    there would be committed by the next `git add -A`."""
    import subprocess

    path = path.resolve()
    if not inside(path, repo) or not (repo / ".git").exists():
        return False
    return subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", "--no-index", str(path)],
                          capture_output=True).returncode != 0
