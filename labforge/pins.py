"""Pin on first use: the lock file that records the sha256 of downloads no upstream publishes a checksum for.

Nuclio publishes no checksums for nuctl, and no public pin for 1.13.23 exists. So, as Terraform does
with its dependency lock file (.terraform.lock.hcl): the first download that passes its check (for
nuctl: ``nuctl version`` reports the pinned version) records its sha256 in ``labforge.lock`` on the
control machine; commit that file with your inventory. Every later run and every other host must
then get exactly that file (a verified download), and a different one is refused with one line.
An explicit pin in group_data (e.g. ``nuctl_sha256``) always wins over the lock file.

Format (JSON): ``{"nuctl": {"1.13.23": {"amd64": "<sha256>"}}}``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

from labforge.downloads import MARK
from labforge.paths import REPO

DEFAULT_LOCK_FILE = REPO / "labforge.lock"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PinMismatch(RuntimeError):
    """A download differs from the sha256 the lock file recorded for it."""


def lock_path(setting: str | None) -> Path:
    """The lock file: the download_lock_file setting (relative to the repository), else labforge.lock."""
    if not setting:
        return DEFAULT_LOCK_FILE
    path = Path(setting).expanduser()
    return path if path.is_absolute() else REPO / path


def read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PinMismatch(f"{path} cannot be read as labforge's lock file ({exc}); fix or remove it") from exc
    if not isinstance(doc, dict):
        raise PinMismatch(f"{path} is not a JSON object; fix or remove it")
    return doc


def pinned(path: Path, tool: str, version: str, arch: str) -> str | None:
    value = read(path).get(tool, {}).get(version, {}).get(arch)
    if value is not None and not (isinstance(value, str) and SHA256.match(value)):
        raise PinMismatch(f"{path}: {tool} {version} {arch} is not a sha256 ({value!r}); fix or remove the entry")
    return value


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


def record(path: Path, tool: str, version: str, arch: str, sha256: str) -> bool:
    """Record the first verified download; True when newly recorded, False when it matched the record.

    Raises PinMismatch when the lock file already holds another hash (another host, or an earlier run,
    got a different file).
    """
    if not SHA256.match(sha256):
        raise PinMismatch(f"not a sha256: {sha256!r}")
    with _locked(path):
        doc = read(path)
        known = doc.get(tool, {}).get(version, {}).get(arch)
        if known == sha256:
            return False
        if known is not None:
            raise PinMismatch(f"{tool} {version} ({arch}) downloaded with sha256 {sha256}, but {path.name} pins {known}: "
                              "the upstream file changed; check it, then fix the lock file")
        doc.setdefault(tool, {}).setdefault(version, {})[arch] = sha256
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return True


def hash_from_output(lines: list[str]) -> str:
    """The sha256 a first-use download printed (downloads.first_use_command)."""
    for line in lines:
        if line.startswith(MARK + " "):
            return line.split()[1]
    raise PinMismatch("the first-use download printed no sha256")
