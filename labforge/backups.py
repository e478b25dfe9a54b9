"""Backups of a lab's data: what the host scripts are called and keep, the names, and the checks made on the
control machine (a fetched copy against its manifest, the backup a restore takes).

What is archived (CVAT's backup guide, site/content/en/docs/administration/advanced/backup_guide.md at dfd505e7):
the volumes cvat_db (PostgreSQL's data directory), cvat_data (/home/django/data: media, exports), cvat_keys
(/home/django/keys: Django's secret key, listed by the guide but missing from its commands) and cvat_events_db
(ClickHouse's analytics), each as `<compose project>_<key>`, with the stack stopped, into exactly the same CVAT
release (the guide: restore only into the same version). The guide's commands pull an `ubuntu` image; here the
host's own tar reads each volume's mountpoint, so an air-gapped lab needs nothing it does not have.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path

VOLUMES = ("cvat_db", "cvat_data", "cvat_keys", "cvat_events_db")
BACKUP_SCRIPT = "/usr/local/lib/labforge/backup"
RESTORE_SCRIPT = "/usr/local/lib/labforge/restore"
LAST_RESULT = "/var/lib/labforge/backup-last.json"  # world-readable: a name, a time, a size; no data
SERVICE, TIMER = "labforge-backup.service", "labforge-backup.timer"
NAME = re.compile(r"cvat-[0-9]{8}T[0-9]{6}Z[A-Za-z0-9._-]*")
RESULT = re.compile(r"^backup=(\S+) bytes=(\d+) down=([0-9.]+) dir=(\S+)$")
RESTORED = re.compile(r"^restored=(\S+) safety=(\S+) down=([0-9.]+)$")


class BackupProblem(ValueError):
    """A backup that must not be trusted or used; one actionable line."""


def new_name(now: datetime.datetime | None = None) -> str:
    """cvat-<UTC time>: names sort by time, which is what retention and "the newest" rely on."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"cvat-{now:%Y%m%dT%H%M%SZ}"


def parse_result(lines: list[str], pattern: re.Pattern) -> tuple[str, ...]:
    for line in reversed(lines):
        match = pattern.match(line.strip())
        if match:
            return match.groups()
    raise BackupProblem("the script ended without its result line")


def human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def choose(backups: dict[str, dict], partial: list[str], wanted: str | None, tag: str | None, directory: str) -> tuple[str, dict]:
    """The backup a restore takes: `wanted`, else the newest complete one; refused when incomplete, missing or of
    another CVAT release than the checked-out `tag`."""
    if wanted:
        if f".partial-{wanted}" in partial and wanted not in backups:
            raise BackupProblem(f"backup {wanted} in {directory} is incomplete (its run was killed or failed); choose another")
        if wanted not in backups:
            have = ", ".join(sorted(backups)) or "none"
            raise BackupProblem(f"no complete backup {wanted} in {directory} (complete backups there: {have})")
        name = wanted
    else:
        if not backups:
            raise BackupProblem(f"no complete backup in {directory}: take one first with `pyinfra inventory.py backup.py`")
        name = max(backups)
    manifest = backups[name]
    if tag is None:
        raise BackupProblem("CVAT's checkout is not at a release tag: converge first")
    if manifest.get("cvat_tag") != tag:
        raise BackupProblem(f"backup {name} was taken at CVAT {manifest.get('cvat_tag')}, the checkout is at {tag}: CVAT restores "
                            "only into the same release (set cvat_version to it and converge, or choose another backup)")
    return name, manifest


def mismatches(manifest: dict, sums: dict[str, str]) -> list[str]:
    """The archives whose sha256 (`sums`: file -> sha256) differs from the manifest's, or that are missing."""
    bad = []
    for key in VOLUMES:
        entry = (manifest.get("archives") or {}).get(key)
        if entry is None:
            bad.append(f"{key} (not in the manifest)")
        elif sums.get(entry["file"]) != entry["sha256"]:
            bad.append(f"{entry['file']} (sha256 {sums.get(entry['file'], 'missing')}, manifest {entry['sha256']})")
    return bad


def verify_copy(directory: Path) -> dict:
    """A fetched backup on the control machine, checked byte for byte against its manifest."""
    manifest = json.loads((directory / "manifest.json").read_text())
    sums = {}
    for key in VOLUMES:
        path = directory / f"{key}.tar"
        if path.exists():
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
            sums[path.name] = digest.hexdigest()
    bad = mismatches(manifest, sums)
    if bad:
        raise BackupProblem(f"the copy in {directory} does not match its manifest: {', '.join(bad)}")
    return manifest
