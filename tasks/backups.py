"""Backups: the timer on the host (the converge's layer), and the backup itself (`pyinfra inventory.py backup.py`).
labforge-data and what it reads are installed by labforge/data_host.py; labforge/backups.py decides the settings;
labforge/data_program.py is the program; docs/backups-and-upgrades.md says what is true.

A backup is an action, not a state: backup.py reports a change every time it runs, by design.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import files, python, server, systemd
from pyinfra.operations.util import any_changed

from labforge import backups, report, secrets, split
from labforge.backups import DATA_PROGRAM, SERVICE, TIMER
from labforge.data_host import fetch_repository, install_program, schedule_period, settings
from labforge.paths import in_repo
from labforge.report import Refused
from labforge.templates import render


@deploy("Backups")
def backup_layer() -> None:
    """The timer when backup_schedule is set (the default: daily; removed when None). labforge-data itself is
    installed by the CVAT layer, before it: an upgrade backs up with it."""
    if not host.data.get("cvat_start") or split.role(host.data) == "inference":  # no CVAT data there
        return
    schedule = host.data.get("backup_schedule")
    units = "/etc/systemd/system"
    if schedule is None:
        if host.get_fact(Command, command=f"test -e {units}/{TIMER} && echo yes || true") == "yes":
            systemd.service(name=f"{TIMER} off (backup_schedule None)", service=TIMER, running=False, enabled=False)
        for unit in (TIMER, SERVICE):
            files.file(name=f"No {unit}", path=f"{units}/{unit}", present=False)
        return
    schedule_period()  # refuses what systemd does not read
    command = f"{DATA_PROGRAM} --wait {backups.TIMER_LOCK_WAIT} backup --kind scheduled"
    service = files.put(name=SERVICE, src=StringIO(render("labforge-backup.service.j2", command=command)),
                        dest=f"{units}/{SERVICE}", mode="0644")
    timer = files.put(name=f"{TIMER} ({schedule})", src=StringIO(render("labforge-backup.timer.j2", schedule=schedule)),
                      dest=f"{units}/{TIMER}", mode="0644")
    systemd.daemon_reload(name="systemd daemon-reload (backup units)", _if=any_changed(service, timer))
    systemd.service(name=f"{TIMER} enabled", service=TIMER, running=True, enabled=True)


@deploy("Backup")
def backup_now() -> None:
    if split.role(host.data) == "inference":
        raise Refused("an inference host holds no CVAT data (only functions, rebuilt by a converge): back up its CVAT host")
    settings()
    fetch_dir = host.data.get("backup_fetch_dir")
    install_program()
    secrets.private_upload_dir()
    taken = server.shell(name="Back up CVAT's data (labforge-data backup)", commands=[backups.in_unit(
        backups.UNIT_BACKUP, f"{DATA_PROGRAM} --wait {backups.CONVERGE_LOCK_WAIT} backup --kind manual",
        "/var/lib/labforge/backup.log")])
    python.call(name="Say where the backup went", function=_summarise, op=taken)
    if fetch_dir:
        local = in_repo(str(fetch_dir)) / host.name / "repository"
        repository = backups.repository(host.data)
        if not repository.startswith("/"):
            raise Refused(f"backup_fetch_dir copies a repository on the host; backup_repository {repository} is elsewhere "
                          "(copy it with restic's own tools)")
        python.call(name=f"Copy the repository's new files to {local} and check each", function=fetch_repository, repository=repository,
                    local=local)


def _summarise(op) -> None:
    name, size, added, down, where = backups.parse_result(op.stdout_lines, backups.RESULT)
    report.notice(f"backup {name} in {where}: {backups.human(int(size))} read, {backups.human(int(added))} new in the "
                  f"repository; CVAT was down {down} s")
