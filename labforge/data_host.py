"""labforge-data on a CVAT host, as pyinfra operations the layers share: the program, what it reads (its settings,
restic, the repository's password and credentials), and finishing what a killed run left. The CVAT layer installs it
before an upgrade, which backs up with it; the backup and restore scripts before they run it; preflight checks the
password and credentials settings with the same functions, so a bad one is refused before any layer changes
anything; backup.py's backup_fetch_dir copies the repository to the control machine (fetch_repository).
labforge/backups.py decides the settings; labforge/data_program.py is the program.
"""

from __future__ import annotations

import json
import os
import shlex
from io import BytesIO, StringIO
from pathlib import Path

from pyinfra import host, logger
from pyinfra.facts.server import Command
from pyinfra.operations import apt as pyinfra_apt
from pyinfra.operations import files, python, server

from labforge import apt, backup_credentials, backup_password, backups, gpu, platform, report, secrets, split, upgrades
from labforge.backups import DATA_CONFIG, DATA_PROGRAM
from labforge.facts import AptHeldPackages, TrimmedSha256
from labforge.nuclio_functions import INPUTS_PROGRAM
from labforge.paths import REPO
from labforge.report import Refused


def settings() -> tuple[str, int]:
    problem = backups.settings_problem(host.data)
    if problem:
        raise Refused(problem)
    return host.data.get("backup_dir"), int(host.data.get("backup_keep"))


def repository_credentials() -> dict[str, str] | None:
    """backup_repository_env_file, checked (labforge/backup_credentials.py) against the host's restic; None when unset.
    Preflight calls it too, so a bad file is refused before any layer changes anything."""
    setting = host.data.get("backup_repository_env_file")
    if not setting:
        return None
    settings()
    try:
        restic = backups.version_tuple(backups.restic_version(host.data, platform.current().codename))
        return backup_credentials.load(str(setting), restic)
    except (backups.BackupProblem, backup_credentials.CredentialsProblem) as exc:
        raise Refused(str(exc)) from exc


def repository_password_plan() -> tuple[Path, backup_password.Plan] | None:
    """backup_password_file, decided (labforge/backup_password.py) against the host's password; None when unset.
    Preflight calls it too, so a wrong, unsafe or shared file is refused before any layer changes anything."""
    setting = host.data.get(backup_password.SETTING)
    if not setting:
        return None
    path = backup_password.path_of(str(setting), host.name)
    holders = {other.name: backup_password.path_of(str(other.data.get(backup_password.SETTING)), other.name)
               for other in host.state.inventory if other.data.get(backup_password.SETTING)
               and other.data.get("cvat_start") and split.role(other.data) != "inference"}
    try:
        problem = backup_password.shared({**holders, host.name: path})
        if problem:
            raise backup_password.PasswordProblem(problem)
        local = backup_password.read(path)
        return path, backup_password.plan(local, host.get_fact(TrimmedSha256, path=backups.PASSWORD_FILE), path, host.name)
    except backup_password.PasswordProblem as exc:
        raise Refused(str(exc)) from exc


def repository_password() -> None:
    """The password where backup_password_file says, in the 0700 directory install_program makes."""
    decided = repository_password_plan()
    if decided is None:
        return
    path, plan = decided
    if plan.action == "make":  # the control machine's copy first: a host password nobody else holds is what we avoid
        python.call(name=f"A new repository password into {path} (0600)", function=_write_password, path=path,
                    text=plan.text)
    if plan.action in ("make", "push"):
        secrets.private_upload_dir()
        staged = f"{backups.PASSWORD_FILE}.new"
        secrets.put_secret(f"{staged} (the repository's password, from {path}: root only)", plan.text, staged)
        # linked, never copied over: a password labforge-data made since planning (a backup ran) is never replaced
        server.shell(name=f"{backups.PASSWORD_FILE} from {path}, unless the host made its own meanwhile", commands=[
            f"ln -T {staged} {backups.PASSWORD_FILE} 2>/dev/null || cmp -s {staged} {backups.PASSWORD_FILE} || "
            f"{{ rm -f {staged}; echo 'labforge: {host.name} made its own backup repository password since this run "
            "began (a backup ran): converge again to compare it with backup_password_file' >&2; exit 1; }",
            f"rm -f {staged}"])
    if plan.action == "fetch":
        secrets.private_upload_dir()
        python.call(name=f"The repository's password into {path} (0600)", function=_fetch_password, path=path)


def _failed(state, host, line: str) -> bool:
    """A callback's failure as one line (pyinfra prints a traceback for an exception raised in one)."""
    host.log_styled(f"labforge: {line}", fg="red", log_func=logger.error)
    return False


def _write_password(state, host, path: Path, text: str) -> bool | None:
    try:
        backup_password.write_private(path, text)
    except (backup_password.PasswordProblem, OSError) as exc:
        return _failed(state, host, str(exc))
    return None


def _fetch_password(state, host, path: Path) -> bool | None:
    """The host's password into the control machine's file, staged on the host where only the SSH user can enter."""
    sudo = bool(getattr(state.config, "SUDO", False))
    stream = BytesIO()
    if not host.get_file(backups.PASSWORD_FILE, stream, remote_temp_filename=f"{secrets.UPLOAD_DIR}/password.tmp", _sudo=sudo):
        return _failed(state, host, f"copying the repository's password {backups.PASSWORD_FILE} from {host.name} failed")
    password = stream.getvalue().decode(errors="replace").removeprefix("\ufeff").strip()
    if not password:
        return _failed(state, host, f"{backups.PASSWORD_FILE} on {host.name} is empty: no backup of its repository can be read")
    return _write_password(state, host, path, password + "\n")


def schedule_period() -> float | None:
    schedule = host.data.get("backup_schedule")
    if schedule is None:
        return None
    out = host.get_fact(Command, command=f"systemd-analyze calendar --iterations=8 {shlex.quote(str(schedule))} 2>&1 "
                                          "&& echo ok || echo bad")
    if not out or not out.strip().endswith("ok"):
        raise Refused(f"backup_schedule {schedule!r} is not a systemd calendar expression (see `systemd-analyze calendar`)")
    return backups.schedule_period(out)


def restic() -> None:
    """restic from the distro's archive (apt checks its signature) at the pinned upstream version, held."""
    p = platform.current()
    try:
        wanted = backups.restic_version(host.data, p.codename)
    except backups.BackupProblem as exc:
        raise Refused(str(exc)) from exc
    installed = host.get_fact(Command, command="dpkg-query -W -f '${Version}' restic 2>/dev/null || true") or ""
    if backups.version_tuple(installed or "0") != backups.version_tuple(wanted):
        apt.refresh("restic", ["restic"])
        pyinfra_apt.packages(name=f"restic {wanted} (the backup tool)", packages=[f"restic={wanted}*"], no_recommends=True,
                             extra_install_args="--allow-change-held-packages")
    if "restic" not in (host.get_fact(AptHeldPackages) or []):
        server.shell(name="Hold restic", commands=[f"{apt.wait_command(apt.lock_timeout())}; apt-mark hold restic"])


def install_program() -> None:
    """labforge-data and what it reads; restic. The CVAT layer calls this before an upgrade, which backs up with it."""
    directory, _ = settings()
    data = host.data
    restic()
    config = backups.program_config(data, codename=platform.current().codename, serverless=split.local_nuclio(data),
                                    period=schedule_period(),
                                    upgrade=upgrades.program_settings(data, on_gpu=gpu.enabled(), arch=platform.current().deb_arch))
    files.directory(name="/var/lib/labforge", path="/var/lib/labforge", user="root", group="root", mode="0755")
    files.directory(name=f"{directory} (root only)", path=directory, user="root", group="root", mode="0700")
    files.directory(name="/etc/labforge/backup (the repository's password: root only)", path="/etc/labforge/backup",
                    user="root", group="root", mode="0700")
    repository_password()
    credentials = repository_credentials()
    if credentials:  # before the settings that name it
        secrets.private_upload_dir()
        secrets.put_secret(f"{backup_credentials.HOST_FILE} (the repository's credentials: root only)",
                           backup_credentials.host_text(credentials), backup_credentials.HOST_FILE)
    files.put(name="labforge-data (labforge/data_program.py)", src=str(REPO / "labforge" / "data_program.py"), dest=DATA_PROGRAM,
              user="root", group="root", mode="0700", create_remote_dir=True)
    files.put(name="function-inputs (labforge/function_inputs.py: what an upgrade checks each function's build fetches)",
              src=str(REPO / "labforge" / "function_inputs.py"), dest=INPUTS_PROGRAM, user="root", group="root", mode="0755")
    files.put(name=f"{DATA_CONFIG} (what labforge-data reads)", src=StringIO(json.dumps(config, indent=1, sort_keys=True) + "\n"),
              dest=DATA_CONFIG, user="root", group="root", mode="0600")
    if not credentials:  # after the settings stop naming it
        files.file(name=f"No {backup_credentials.HOST_FILE} (backup_repository_env_file unset)",
                   path=backup_credentials.HOST_FILE, present=False)


def recover() -> None:
    """What a killed backup or restore left (labforge-data's journal) is finished or undone before anything else."""
    said = backups.journal_notice(host.get_fact(Command, command=backups.journal_state_command()))
    if said:
        report.notice(said)
        server.shell(name="labforge-data recover (finish or undo what a killed run left)",
                     commands=[backups.in_unit(backups.UNIT_RESTORE, f"{DATA_PROGRAM} --wait {backups.CONVERGE_LOCK_WAIT} recover",
                                               "/var/lib/labforge/recover.log")])


def fetch_repository(repository: str, local: Path) -> None:
    """Copy the files the control machine lacks (restic never rewrites a file in place: a name is its content), each
    written 0600 in 0700 directories from the moment it exists, then check every file against its name."""
    sudo = bool(getattr(host.state.config, "SUDO", False))
    ok, output = host.run_shell_command(f"cd {shlex.quote(repository)} && find . -type f -printf '%s %P\\n'", _sudo=sudo)
    if not ok:
        raise Refused(f"cannot list the repository {repository} on {host.name}")
    wanted = {}
    for line in output.stdout_lines:
        size, _, rel = line.partition(" ")
        wanted[rel] = int(size)
    fetched = 0
    for rel, size in sorted(wanted.items()):
        target = local / rel
        if target.exists() and target.stat().st_size == size and not rel.startswith(("config", "locks/")):
            continue
        partial = target.with_name(f".{target.name}.partial")
        fd = backups.private_file(partial)
        with os.fdopen(fd, "wb") as stream:
            # under --sudo pyinfra copies the file to a temporary one and makes it readable (connectors/ssh.py get_file,
            # lines 494-515): in the SSH user's private staging directory, never in /tmp
            if not host.get_file(f"{repository}/{rel}", stream, remote_temp_filename=f"{secrets.UPLOAD_DIR}/fetch.tmp", _sudo=sudo):
                raise Refused(f"copying {repository}/{rel} from {host.name} failed")
        os.replace(partial, target)
        fetched += 1
    for rel in [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]:
        if rel not in wanted:  # forgotten and pruned on the host
            (local / rel).unlink()
    checked = backups.verify_fetched(local)
    report.notice(f"repository copied to {local}: {fetched} new files, {checked} checked against their names (sha256)")
