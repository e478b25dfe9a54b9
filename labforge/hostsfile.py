"""Read the lab's hosts file (YAML) into pyinfra inventory groups, with one-line errors for bad input.

Format (see hosts.example.yml):
    vars: {apt_proxy: "http://cache:3142"}     # data for every host in the file (optional)
    gpu_servers:
      - host: 192.168.1.15                     # address or DNS name (required)
        ssh_user: ubuntu                       # optional: ssh_port, ssh_key, name, data
        data: {cvat_host: 192.168.1.15}
    cpu_servers:
      - 192.168.1.20                           # a bare address is fine too
A split lab (labforge/split.py): a CVAT host with data `inference_host: <name>`, and that host with data
`lab_role: inference`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from labforge import groupdata, settings, split
from labforge.paths import REPO

GROUPS = ("gpu_servers", "cpu_servers")
CONNECTION_KEYS = ("ssh_user", "ssh_port", "ssh_key", "ssh_password", "ssh_known_hosts_file", "ssh_strict_host_key_checking")
HOST_KEYS = ("host", "name", "data", *CONNECTION_KEYS)
DEFAULT = REPO / "hosts.yml"  # beside inventory.py
NO_HOSTS = ("no hosts to deploy to: copy hosts.example.yml to hosts.yml (beside inventory.py) and list your servers, "
            "or set LAB_HOSTS=<hosts file>, or start a VM of the Vagrantfile with `vagrant up` (docs/ci.md: CI with Vagrant)")
VAGRANT_STATUS_TIMEOUT = 120  # seconds; Vagrant loads its plugins and asks the provider (~1-2 s with libvirt here)

HostEntry = tuple[str, dict[str, Any]]


class HostsFileError(ValueError):
    """A hosts file that cannot be used; the message names the file and the problem."""


def _entry(path: Path, group: str, index: int, raw: Any, shared: dict[str, Any]) -> HostEntry:
    where = f"{path}: {group}[{index}]"
    if isinstance(raw, str):
        raw = {"host": raw}
    if not isinstance(raw, dict) or not raw.get("host"):
        raise HostsFileError(f"{where}: each host needs at least 'host: <address>'")
    for key in sorted(set(raw) - set(HOST_KEYS)):
        if key in settings.known():
            raise HostsFileError(f"{where}: '{key}' is a setting: put it under 'data:'")
        hint = settings.suggestion(key, HOST_KEYS) or f"; a host entry takes {', '.join(HOST_KEYS)}"
        raise HostsFileError(f"{where}: unknown key '{key}'{hint}")
    extra = raw.get("data") or {}
    if not isinstance(extra, dict):
        raise HostsFileError(f"{where}: 'data' must be a mapping")
    check_settings(f"{where}: data", extra)
    data: dict[str, Any] = {**shared, **extra, "ssh_hostname": str(raw["host"])}
    data.update({key: raw[key] for key in CONNECTION_KEYS if key in raw})
    return str(raw.get("name") or raw["host"]), data


def check_settings(where: str, values: dict[str, Any]) -> None:
    problems = settings.unknown(values)
    if problems:
        raise HostsFileError(f"{where}: {problems[0]}")


def resolve(lab_hosts: str | None = None) -> Path | None:
    """Which hosts the deploy targets: the LAB_HOSTS file; else hosts.yml beside inventory.py; else None, meaning the
    running VMs of the Vagrantfile beside inventory.py (@vagrant). With none of these, HostsFileError with one line.
    That Vagrant is installed (./install.sh installs it for the lint) does not by itself make the VM the target."""
    lab_hosts = os.environ.get("LAB_HOSTS") if lab_hosts is None else lab_hosts
    if lab_hosts:
        return Path(lab_hosts)
    if DEFAULT.exists():
        return DEFAULT
    if vagrant_running(REPO):
        return None
    raise HostsFileError(NO_HOSTS)


def vagrant_running(root: Path) -> bool:
    """Whether a VM of the Vagrantfile in ``root`` is running, as pyinfra's @vagrant would find it.

    Vagrant writes <local data>/machines/<name>/<provider>/id when it creates a machine and deletes it when the machine
    is destroyed (vagrant/machine.rb, Machine#id=); the local data directory is .vagrant beside the Vagrantfile, or
    $VAGRANT_DOTFILE_PATH relative to it. With no such file no VM exists, and Vagrant is not run (it takes seconds to
    start). Otherwise `vagrant status --machine-readable` says which are running (pyinfra's @vagrant reads the same);
    an error there (no provider, libvirt down) counts as not running."""
    if not shutil.which("vagrant"):
        return False
    local_data = Path(root, os.environ.get("VAGRANT_DOTFILE_PATH") or ".vagrant")
    if not any(local_data.glob("machines/*/*/id")):
        return False
    try:
        status = subprocess.run(["vagrant", "status", "--machine-readable"], cwd=root, env={**os.environ, "VAGRANT_CWD": str(root)},
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=VAGRANT_STATUS_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # lines: timestamp,target,type,data (vagrant's machine-readable output)
    return any(line.split(",", 3)[2:] == ["state", "running"] for line in status.stdout.splitlines())


def load(path: str | Path) -> dict[str, list[HostEntry]]:
    """Return {group: [(name, data), ...]} for both groups; raise HostsFileError on bad input."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise HostsFileError(f"{path}: cannot read hosts file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise HostsFileError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise HostsFileError(f"{path}: expected a mapping with gpu_servers/cpu_servers lists")
    unknown = set(doc) - {"vars", *GROUPS}
    if unknown:
        raise HostsFileError(f"{path}: unknown top-level keys {sorted(unknown)}; use vars, {', '.join(GROUPS)}")
    shared = doc.get("vars") or {}
    if not isinstance(shared, dict):
        raise HostsFileError(f"{path}: 'vars' must be a mapping")
    check_settings(f"{path}: vars", shared)
    groups: dict[str, list[HostEntry]] = {}
    seen: set[str] = set()
    for group in GROUPS:
        entries = doc.get(group) or []
        if not isinstance(entries, list):
            raise HostsFileError(f"{path}: '{group}' must be a list of hosts")
        groups[group] = [_entry(path, group, i, raw, shared) for i, raw in enumerate(entries)]
        for name, _ in groups[group]:
            if name in seen:
                raise HostsFileError(f"{path}: host '{name}' is listed twice")
            seen.add(name)
    if not seen:
        raise HostsFileError(f"{path}: no hosts in gpu_servers or cpu_servers")
    try:
        split.check(groups, functions_of)
    except split.SplitLabError as exc:
        raise HostsFileError(f"{path}: {exc}") from exc
    return groups


def functions_of(group: str, data: dict[str, Any]) -> list[str]:
    """The functions a host of this group deploys: its own nuclio_functions, else its group's."""
    return list(data.get("nuclio_functions") or groupdata.load(group).get("nuclio_functions") or [])


def ssh_config(groups: dict[str, list[HostEntry]]) -> str:
    """An OpenSSH client config naming each host of the file, for testinfra (`--ssh-config F --hosts ssh://NAME`)."""
    options = (("HostName", "ssh_hostname"), ("User", "ssh_user"), ("Port", "ssh_port"), ("IdentityFile", "ssh_key"),
               ("UserKnownHostsFile", "ssh_known_hosts_file"), ("StrictHostKeyChecking", "ssh_strict_host_key_checking"))
    blocks = []
    for entries in groups.values():
        for name, data in entries:
            lines = [f"Host {name}"] + [f"    {option} {data[key]}" for option, key in options if data.get(key) not in (None, "")]
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _main(argv: list[str]) -> int:
    """python -m labforge.hostsfile ssh-config HOSTS_FILE OUT: write OUT and print the testinfra --hosts value."""
    if len(argv) != 3 or argv[0] != "ssh-config":
        print("usage: python -m labforge.hostsfile ssh-config HOSTS_FILE OUT", file=sys.stderr)
        return 2
    try:
        groups = load(argv[1])
    except HostsFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    Path(argv[2]).write_text(ssh_config(groups))
    print(",".join(f"ssh://{name}" for entries in groups.values() for name, _ in entries))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
