"""The doctor's targets, as the deploy sees them (the hosts file, group_data), and the ways to reach them: plain
ssh (BatchMode, ConnectTimeout) or paramiko for entries with ssh_password."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labforge import groupdata
from labforge.hostsfile import GROUPS, load
from labforge.paths import REPO


def group_data(group: str, group_data_dir: Path = REPO / "group_data") -> dict[str, Any]:
    """Variables of group_data/all.py overridden by group_data/<group>.py (plain values only)."""
    return groupdata.load(group, group_data_dir)


@dataclass(frozen=True)
class Target:
    """One host of the hosts file with the data the deploy would use for it."""

    name: str
    group: str
    data: dict[str, Any]

    @property
    def address(self) -> str:
        return str(self.data.get("ssh_hostname") or self.name)

    @property
    def where(self) -> str:
        port = self.data.get("ssh_port")
        return f"{self.address}:{port}" if port and int(port) != 22 else self.address

    @property
    def gpu_layers(self) -> bool | None:
        """True/False as the deploy decides from `gpu`; None: follow the hardware."""
        value = self.data.get("gpu")
        return None if value is None else bool(value)


def targets(hosts_file: str | Path, group_data_dir: Path = REPO / "group_data") -> list[Target]:
    """Every host of the hosts file, in file order, with all.py < group file < vars < host data merged."""
    groups = load(hosts_file)
    defaults = {group: group_data(group, group_data_dir) for group in GROUPS}
    return [Target(name, group, {**defaults[group], **data}) for group in GROUPS for name, data in groups[group]]



def _strict_option(value: Any) -> str:
    if value is False or str(value).lower() in ("off", "no", "false"):
        return "no"
    if value is True or str(value).lower() in ("yes", "true", "on"):
        return "yes"
    return str(value) if value else "accept-new"  # pyinfra's default


def ssh_command(target: Target, connect_timeout: float) -> list[str]:
    """`ssh` for a hosts-file entry: BatchMode (never prompts), ConnectTimeout, the entry's user/port/key."""
    data = target.data
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(connect_timeout))}",
           "-o", "LogLevel=ERROR", "-o", f"StrictHostKeyChecking={_strict_option(data.get('ssh_strict_host_key_checking'))}"]
    if data.get("ssh_known_hosts_file"):
        cmd += ["-o", f"UserKnownHostsFile={os.path.expanduser(str(data['ssh_known_hosts_file']))}"]
    if data.get("ssh_port"):
        cmd += ["-p", str(data["ssh_port"])]
    if data.get("ssh_key"):
        cmd += ["-i", os.path.expanduser(str(data["ssh_key"])), "-o", "IdentitiesOnly=yes"]
    if data.get("ssh_user"):
        cmd += ["-l", str(data["ssh_user"])]
    return [*cmd, target.address, "sh -s"]


@dataclass(frozen=True)
class RemoteResult:
    returncode: int
    stdout: str
    stderr: str


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_ssh(target: Target, script: str, connect_timeout: float, timeout: float) -> RemoteResult:
    try:
        proc = subprocess.run(ssh_command(target, connect_timeout), input=script, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return RemoteResult(255, "", f"no answer within {timeout:.0f}s")
    except FileNotFoundError:
        return RemoteResult(255, "", "the ssh client is not installed on this machine")
    return RemoteResult(proc.returncode, proc.stdout, proc.stderr)


def run_paramiko(target: Target, script: str, connect_timeout: float, timeout: float) -> RemoteResult:
    """For entries with ssh_password (BatchMode ssh cannot type a password)."""
    import paramiko

    data = target.data
    client = paramiko.SSHClient()
    known_hosts = data.get("ssh_known_hosts_file")
    try:
        if known_hosts and Path(os.path.expanduser(str(known_hosts))).exists():
            client.load_host_keys(os.path.expanduser(str(known_hosts)))
        else:
            client.load_system_host_keys()
        strict = _strict_option(data.get("ssh_strict_host_key_checking"))
        client.set_missing_host_key_policy(paramiko.RejectPolicy() if strict == "yes" else paramiko.AutoAddPolicy())
        client.connect(target.address, port=int(data.get("ssh_port") or 22), username=data.get("ssh_user"),
                       password=str(data["ssh_password"]),
                       key_filename=os.path.expanduser(str(data["ssh_key"])) if data.get("ssh_key") else None,
                       timeout=connect_timeout, banner_timeout=connect_timeout, auth_timeout=connect_timeout)
        stdin, stdout, stderr = client.exec_command("sh -s", timeout=timeout)
        stdin.write(script)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return RemoteResult(stdout.channel.recv_exit_status(), out, err)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return RemoteResult(255, "", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()


def run_remote(target: Target, script: str, connect_timeout: float, timeout: float) -> RemoteResult:
    runner = run_paramiko if target.data.get("ssh_password") else run_ssh
    return runner(target, script, connect_timeout, timeout)


