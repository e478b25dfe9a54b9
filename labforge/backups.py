"""Backups of a lab's data, as the control machine sees them: the settings of labforge-data (the host's program,
labforge/data_program.py) decided from the inventory, its result lines, and the checks of a copy fetched off the host.

What is backed up (CVAT's backup guide, site/content/en/docs/administration/advanced/backup_guide.md at dfd505e7):
the volumes cvat_db (PostgreSQL's data directory), cvat_data (/home/django/data: media, exports), cvat_keys
(/home/django/keys: Django's secret key, listed by the guide but missing from its commands) and cvat_events_db
(ClickHouse's analytics), each as `<compose project>_<key>`, into exactly the same CVAT release (the guide: restore
only into the same version). The guide stops the stack and tars each volume; labforge-data reads them with restic
instead, first while CVAT runs and then again with CVAT stopped, so that what is captured is one stopped moment while
the down time is what changed since the first pass (docs/backups-and-upgrades.md).
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import os
import re
import shlex
from pathlib import Path

from labforge import backup_credentials, compose
from labforge.data_program import CONFIG as DATA_CONFIG  # noqa: F401  (re-exported: the tasks write it)
from labforge.data_program import JOURNAL, LAST, LOCK, human  # noqa: F401  (human: the run summary's sizes)
from labforge.paths import committable, in_repo

VOLUMES = ("cvat_db", "cvat_data", "cvat_keys", "cvat_events_db")
# Read while CVAT runs too, as a warm-up: the stopped pass then re-reads only the files changed since (media are
# written once; PostgreSQL rewrites only the files of the tables it changed), so down time follows the changes
ONLINE_VOLUMES = VOLUMES
DATA_PROGRAM = "/usr/local/lib/labforge/labforge-data"
PASSWORD_FILE = "/etc/labforge/backup/restic-password"  # made on the host on first use, root only
CACHE_DIR = "/var/cache/labforge/restic"
LAST_RESULT = LAST  # world-readable: a name, a time, a size; no data
DATA_JOURNAL = JOURNAL
SERVICE, TIMER = "labforge-backup.service", "labforge-backup.timer"
UNIT_BACKUP, UNIT_RESTORE = "labforge-backup-now", "labforge-restore"
TIMER_LOCK_WAIT = 4 * 3600  # a scheduled backup waits this long for an upgrade or restore to finish
CONVERGE_LOCK_WAIT = 120  # backup.py, restore.py and an upgrade wait this long, then stop naming the holder
RESULT = re.compile(r"^backup=(\S+) bytes=(\d+) added=(\d+) down=([0-9.]+) repository=(\S+)$")
RESTORED = re.compile(r"^restored=(\S+) safety=(\S+) down=([0-9.]+)$")
RESTIC_CONTENT_DIRS = ("data", "index", "snapshots", "keys")  # files named by the sha256 of their content


class BackupProblem(ValueError):
    """A backup setting or copy that must not be used; one actionable line."""


def repository(data) -> str:
    return str(data.get("backup_repository") or f"{data.get('backup_dir')}/repository")


def restic_version(data, codename: str) -> str:
    versions = data.get("restic_versions") or {}
    if codename not in versions:
        raise BackupProblem(f"restic_versions has no version for {codename} (it lists {', '.join(versions) or 'none'})")
    return str(versions[codename])


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0].split(":")[-1])[:3])


def program_config(data, *, codename: str, serverless: bool, period: float | None, upgrade: dict) -> dict:
    """What labforge-data reads (DATA_CONFIG), decided from the settings: a pure function, tested in tests/unit."""
    restic = version_tuple(restic_version(data, codename))
    keep = int(data.get("backup_keep"))
    return {
        "project": compose.PROJECT, "compose": shlex.split(compose.compose_args(serverless)), "cvat_dir": data.get("cvat_dir"),
        "volumes": list(VOLUMES), "online_volumes": list(ONLINE_VOLUMES), "repository": repository(data),
        "password_file": PASSWORD_FILE, "cache_dir": CACHE_DIR, "keep": keep,
        "reserve_bytes": int(data.get("backup_reserve_bytes")), "check_read_parts": int(data.get("backup_check_read_parts")),
        "wait_api": compose.WAIT_API, "api_timeout": int(data.get("cvat_api_timeout")),
        # restic 0.14 made repository format 2 (compression) "stable"; 0.13 brought --dry-run
        "init_args": ["--repository-version", "2"] if restic >= (0, 14) else [],
        "dry_run": restic >= (0, 13),
        "schedule_period_seconds": period, "upgrade": upgrade,
        # where the converge put a remote repository's credentials (never their content: this file is only root's too,
        # but restic gets them in its environment alone)
        **({"repository_env": backup_credentials.HOST_FILE} if data.get("backup_repository_env_file") else {}),
    }


def settings_problem(data) -> str | None:
    """Refusals of the backup settings, one line each."""
    directory = str(data.get("backup_dir") or "")
    if not directory.startswith("/") or any(c in directory for c in " '\"$`\\"):
        return f"backup_dir must be an absolute path without spaces or quotes, not {data.get('backup_dir')!r}"
    try:
        keep = int(data.get("backup_keep"))
    except (TypeError, ValueError):
        keep = 0
    if keep < 1:
        return f"backup_keep must be a whole number of backups, 1 or more, not {data.get('backup_keep')!r}"
    reserve = data.get("backup_reserve_bytes")
    if not isinstance(reserve, int) or reserve < 0:
        return f"backup_reserve_bytes must be a whole number of bytes, 0 or more, not {reserve!r}"
    parts = data.get("backup_check_read_parts")
    if not isinstance(parts, int) or parts < 0:
        return f"backup_check_read_parts must be 0 or a whole number of parts, not {parts!r}"
    if data.get("backup_repository_env_file") and repository(data).startswith("/"):
        return (f"backup_repository_env_file is for a repository elsewhere (S3, B2, Azure, Swift, a REST server); "
                f"{repository(data)} is on the host: set backup_repository, or remove backup_repository_env_file")
    fetch = data.get("backup_fetch_dir")
    if fetch and committable(in_repo(str(fetch))):
        return (f"backup_fetch_dir {fetch} is inside the repository and git does not ignore it: the lab's data would be "
                "committed; list it in .gitignore or choose a directory outside the repository")
    return None


def schedule_period(analyze_output: str) -> float | None:
    """The longest gap between runs of an OnCalendar= expression, from `systemd-analyze calendar --iterations=8`
    (each elapse is printed in UTC, on its own line when the host's zone is another: "(in UTC): Mon 2026-12-07
    02:00:00 UTC"); the longest, so that "Mon..Fri" is judged by its weekend."""
    stamps = [datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S")
              for s in re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$", analyze_output, re.MULTILINE)]
    if len(stamps) < 2:
        return None
    return max((b - a).total_seconds() for a, b in itertools.pairwise(stamps))


def parse_result(lines: list[str], pattern: re.Pattern) -> tuple[str, ...]:
    for line in reversed(lines):
        match = pattern.match(line.strip())
        if match:
            return match.groups()
    raise BackupProblem("labforge-data ended without its result line")


def in_unit(unit: str, command: str, log: str) -> str:
    """Shell that runs `command` in the transient systemd unit `unit` and waits for it: a dropped SSH session or a
    killed pyinfra does not stop it half-way (a unit that a killed run left is waited for first). Its output is
    appended to `log`; this run's part is printed, and its exit status is the command's."""
    rc = f"{log}.rc"
    return (f"while systemctl is-active -q {unit}; do sleep 2; done; rm -f {rc}; size=$(stat -c %s {log} 2>/dev/null || echo 0); "
            f"systemd-run --unit={unit} --wait --collect --quiet --property=StandardOutput=append:{log} "
            f"--property=StandardError=append:{log} /bin/sh -c '{command}; echo $? > {rc}'; "
            f"code=$(cat {rc} 2>/dev/null || echo 1); tail -c +$((size + 1)) {log} | tail -n 40 >&2; "
            f"tail -c +$((size + 1)) {log} | grep -E '^[a-z]+=' | tail -n 1; exit $code")


def verify_fetched(directory: Path) -> int:
    """A fetched copy of a repository on the control machine: every data, index, snapshot and key file must hash to
    its own name (restic names them by the sha256 of their content). Returns how many files were checked."""
    checked, bad = 0, []
    for sub in RESTIC_CONTENT_DIRS:
        for path in sorted((directory / sub).rglob("*")):
            if not path.is_file():
                continue
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                for block in iter(lambda s=stream: s.read(1 << 20), b""):
                    digest.update(block)
            checked += 1
            if digest.hexdigest() != path.name:
                bad.append(str(path.relative_to(directory)))
    if bad:
        raise BackupProblem(f"the copy in {directory} does not match its content: {', '.join(bad[:5])}")
    return checked


def private_file(path: Path) -> int:
    """Open `path` for writing, 0600 in 0700 directories from the moment each exists."""
    for parent in reversed([p for p in path.parents if not p.exists()]):
        parent.mkdir(mode=0o700)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def listing(lines: list[str]) -> dict[str, dict]:
    """`labforge-data list` (a JSON list) as {name: {"cvat_tag": release, "kind": kind}}."""
    try:
        items = json.loads("".join(lines) or "[]")
    except ValueError:
        return {}
    return {item["name"]: {"cvat_tag": item.get("cvat"), "kind": item.get("kind")} for item in items}


def journal_state_command(journal: str = JOURNAL, lock: str = LOCK) -> str:
    """Whether labforge-data's journal is on the host and, if so, whether a run holds the data lock now: nothing when
    there is no journal; `left` when no run holds the lock (a killed or powered-off run left it); `running <holder>`
    while one does (a journal is on the host for the whole of every backup and restore, not only after a kill)."""
    j, lk = shlex.quote(journal), shlex.quote(lock)
    return (f"if [ -e {j} ]; then if [ -e {lk} ] && ! flock -n {lk} true 2>/dev/null; then "
            f"echo \"running $(cat {lk} 2>/dev/null)\"; else echo left; fi; fi; true")


def journal_notice(state: str | None) -> str | None:
    """The run summary's line for journal_state_command's answer (None: no journal, nothing to say)."""
    state = (state or "").strip()
    if not state:
        return None
    if state.startswith("running"):
        holder = state.removeprefix("running").strip() or "another labforge-data run"
        return (f"a backup or restore is running now ({holder}): labforge-data waits up to {CONVERGE_LOCK_WAIT} s for "
                "it before it goes on")
    return ("a backup or restore did not finish (the host lost power, or it was killed): labforge-data finishes or "
            "undoes it first")


def under_lock(command: str, wait: int = CONVERGE_LOCK_WAIT) -> str:
    """Shell that runs `command` holding labforge-data's lock (flock(1) takes the same flock(2) lock as the program),
    waiting at most `wait` seconds, else failing with one line that names the holder."""
    held = f"labforge: the data lock is held by $(cat {LOCK} 2>/dev/null || echo another run) (waited {wait}s): try again when it is done"
    return (f"mkdir -p -m 0700 {os.path.dirname(LOCK)} && flock -E 75 -w {wait} {LOCK} {command} || "
            f"{{ code=$?; [ $code != 75 ] || echo \"{held}\" >&2; exit $code; }}")
