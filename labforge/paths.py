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
