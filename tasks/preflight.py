"""Refuse, while planning and before any layer has changed anything: unknown setting names, a host we do not act on
as root, unsupported hosts, a GPU host without a GPU, pins the rest of the stack does not work with, and apt locked by
another process for longer than apt_lock_timeout. It also settles the CVAT release the host runs when cvat_version is
unset (labforge/releases.py), before any layer reads it."""

from __future__ import annotations

from pyinfra import host, state
from pyinfra.api import deploy

from labforge import apt, compat, gpu, platform, report, settings, split
from labforge.cvat_release import settle_release
from labforge.data_host import repository_credentials, repository_password_plan
from labforge.facts import Identity, InitProcess
from labforge.report import Refused


@deploy("Preflight")
def preflight() -> None:
    report.install()
    problems = settings.unknown(host.data.dict())  # the hosts file's vars/data and --data, all of them
    if problems:
        raise Refused(f"{problems[0]} (hosts file or --data)")
    partner = split.partner(host.data)
    if partner and partner in {h.name for h in state.failed_hosts}:
        raise Refused(f"its {'inference' if split.role(host.data) == 'cvat' else 'CVAT'} host {partner} could not be reached "
                      f"(its line above says why); a split lab converges both hosts or neither, so this one is left as it is")
    uid, user = host.get_fact(Identity)
    if uid != "0":
        raise Refused(f"connected as '{user}', not root: add --sudo to the pyinfra command (the user needs "
                      "passwordless sudo), or connect as root")
    platform.current()
    init = host.get_fact(InitProcess)
    if init != "systemd":
        raise Refused(f"PID 1 is {init or 'unknown'}, not systemd; labforge manages Docker through systemd, "
                          "so it needs a host booted with systemd (a server or VM, not a plain container)")
    gpu.check()
    settle_release()  # labforge/cvat_release.py
    pinned_engine = compat.upstream_version(host.data.get("docker_package_versions")["docker-ce"])
    try:
        compat.check(host.data, pinned_engine)
    except compat.Incompatible as exc:
        raise Refused(str(exc)) from exc
    if host.data.get("cvat_start") and split.role(host.data) != "inference":
        repository_credentials()  # a bad backup_repository_env_file is refused now, not after the first layers
        repository_password_plan()  # and so is a wrong or unsafe backup_password_file
    timeout = apt.lock_timeout()
    holders = host.get_fact(apt.AptLockHolders, timeout=timeout)
    if holders:
        lock, pid, name = [*holders[0].split(), "?", "?"][:3]
        raise Refused(f"apt is locked: {lock} is held by process {pid} ({name}) for more than {timeout}s "
                          "(apt_lock_timeout); wait for it to finish, or stop it, then run again")
    report.note_pending_reboot()
