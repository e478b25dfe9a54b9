"""Refuse, while planning and before any layer has changed anything: unsupported hosts, a GPU host without a GPU,
pins the rest of the stack does not work with, and apt locked by another process for longer than apt_lock_timeout."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError

from labforge import apt, compat, gpu, platform, report
from labforge.facts import InitProcess


@deploy("Preflight")
def preflight() -> None:
    report.install()
    platform.current()
    init = host.get_fact(InitProcess)
    if init != "systemd":
        raise DeployError(f"{host.name}: PID 1 is {init or 'unknown'}, not systemd; labforge manages Docker through systemd, "
                          "so it needs a host booted with systemd (a server or VM, not a plain container). Nothing was changed.")
    gpu.check()
    pinned_engine = compat.upstream_version(host.data.get("docker_package_versions")["docker-ce"])
    try:
        compat.check(host.data, pinned_engine)
    except compat.Incompatible as exc:
        raise DeployError(f"{host.name}: {exc}. Nothing was changed.") from exc
    timeout = int(host.data.get("apt_lock_timeout"))
    holders = host.get_fact(apt.AptLockHolders, timeout=timeout)
    if holders:
        lock, pid, name = [*holders[0].split(), "?", "?"][:3]
        raise DeployError(f"{host.name}: apt is locked: {lock} is held by process {pid} ({name}) for more than {timeout}s "
                          "(apt_lock_timeout); wait for it to finish, or stop it, then run again. Nothing was changed.")
    report.note_pending_reboot()
