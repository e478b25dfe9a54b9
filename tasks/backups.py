"""Backups: the host's backup and restore scripts and the optional timer (the converge's layer), and the backup
itself (`pyinfra inventory.py backup.py`). labforge/backups.py says what is archived and why.

A backup is an action, not a state: backup.py reports a change every time it runs, by design.
"""

from __future__ import annotations

import shlex
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import files, python, server, systemd

from labforge import backups, compose, report, secrets, split
from labforge.backups import BACKUP_SCRIPT, LAST_RESULT, RESTORE_SCRIPT, SERVICE, TIMER
from labforge.paths import REPO, in_repo
from labforge.report import Refused
from labforge.templates import render


def labforge_version() -> str:
    """labforge's version (pyproject.toml), for the manifest."""
    return next((line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines()
                 if line.startswith("version = ")), "?")


def settings() -> tuple[str, int]:
    directory, keep = host.data.get("backup_dir"), host.data.get("backup_keep")
    if not str(directory or "").startswith("/") or any(c in str(directory) for c in " '\"$`\\"):
        raise Refused(f"backup_dir must be an absolute path without spaces or quotes, not {directory!r}")
    try:
        keep = int(keep)
    except (TypeError, ValueError):
        keep = 0
    if keep < 1:
        raise Refused(f"backup_keep must be a whole number of backups, 1 or more, not {host.data.get('backup_keep')!r}")
    return directory, keep


def install_scripts() -> None:
    directory, keep = settings()
    values = {"backup_dir": directory, "keep": keep, "cvat_dir": host.data.get("cvat_dir"), "project": compose.PROJECT,
              "compose_args": compose.compose_args(split.local_nuclio(host.data)), "volumes": backups.VOLUMES, "last_result": LAST_RESULT,
              "backup_script": BACKUP_SCRIPT, "restore_script": RESTORE_SCRIPT, "wait_api": compose.WAIT_API,
              "labforge_version": labforge_version()}
    files.directory(name="/var/lib/labforge", path="/var/lib/labforge", user="root", group="root", mode="0755")
    files.put(name="Backup script", src=StringIO(render("labforge-backup.sh.j2", **values)), dest=BACKUP_SCRIPT,
              user="root", group="root", mode="0700", create_remote_dir=True)
    files.put(name="Restore script", src=StringIO(render("labforge-restore.sh.j2", **values)), dest=RESTORE_SCRIPT,
              user="root", group="root", mode="0700", create_remote_dir=True)


@deploy("Backups")
def backup_layer() -> None:
    """The timer when backup_schedule is set (removed when it is not). The scripts themselves are installed by the
    CVAT layer, before it: an upgrade takes its backup with them."""
    if not host.data.get("cvat_start") or split.role(host.data) == "inference":  # no CVAT data there
        return
    schedule = host.data.get("backup_schedule")
    units = "/etc/systemd/system"
    if schedule is None:
        if host.get_fact(Command, command=f"test -e {units}/{TIMER} && echo yes || true") == "yes":
            systemd.service(name=f"{TIMER} off (no backup_schedule)", service=TIMER, running=False, enabled=False)
        for unit in (TIMER, SERVICE):
            files.file(name=f"No {unit}", path=f"{units}/{unit}", present=False)
        return
    check = host.get_fact(Command, command=f"systemd-analyze calendar {shlex.quote(str(schedule))} >/dev/null 2>&1 && echo ok || echo bad")
    if check != "ok":
        raise Refused(f"backup_schedule {schedule!r} is not a systemd calendar expression (see `systemd-analyze calendar`)")
    service = files.put(name=SERVICE, src=StringIO(render("labforge-backup.service.j2", script=BACKUP_SCRIPT)),
                        dest=f"{units}/{SERVICE}", mode="0644")
    timer = files.put(name=f"{TIMER} ({schedule})", src=StringIO(render("labforge-backup.timer.j2", schedule=schedule)),
                      dest=f"{units}/{TIMER}", mode="0644")
    systemd.daemon_reload(name="systemd daemon-reload (backup units)", _if=[service.did_change, timer.did_change])
    systemd.service(name=f"{TIMER} enabled", service=TIMER, running=True, enabled=True)


@deploy("Backup")
def backup_now() -> None:
    if split.role(host.data) == "inference":
        raise Refused("an inference host holds no CVAT data (only functions, rebuilt by a converge): back up its CVAT host")
    directory, _ = settings()
    fetch_dir = host.data.get("backup_fetch_dir")
    install_scripts()
    secrets.private_upload_dir()  # where a fetched archive is staged under --sudo (never /tmp)
    name = backups.new_name()
    taken = server.shell(name=f"Back up CVAT's data ({name})", commands=[f"{BACKUP_SCRIPT} {name}"])
    python.call(name="Say where the backup went", function=_summarise, op=taken, name_=name)
    if fetch_dir:
        local = in_repo(str(fetch_dir)) / host.name / name
        for item in ("manifest.json", *(f"{key}.tar" for key in backups.VOLUMES)):
            files.get(name=f"Copy {name}/{item} to the control machine", src=f"{directory}/{name}/{item}",
                      dest=str(local / item), create_local_dir=True, _temp_dir=secrets.UPLOAD_DIR)
        python.call(name=f"Check the copy in {local} against its manifest", function=_check_copy, local=local)


def _summarise(op, name_: str) -> None:
    name, size, down, directory = backups.parse_result(op.stdout_lines, backups.RESULT)
    report.notice(f"backup {name} in {directory}: {backups.human(int(size))}, CVAT was down {down} s")


def _check_copy(local: Path) -> None:
    local.parent.chmod(0o700)
    manifest = backups.verify_copy(local)
    report.notice(f"backup {manifest['name']} copied to {local} and checked against its manifest (sha256)")
