"""Read the lab's hosts file (YAML) into pyinfra inventory groups, with one-line errors for bad input.

Format (see hosts.example.yml):
    vars: {apt_proxy: "http://cache:3142"}     # data for every host in the file (optional)
    gpu_servers:
      - host: 192.168.1.15                     # address or DNS name (required)
        ssh_user: ubuntu                       # optional: ssh_port, ssh_key, name, data
        data: {cvat_host: 192.168.1.15}
    cpu_servers:
      - 192.168.1.20                           # a bare address is fine too
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

GROUPS = ("gpu_servers", "cpu_servers")
CONNECTION_KEYS = ("ssh_user", "ssh_port", "ssh_key", "ssh_password", "ssh_known_hosts_file", "ssh_strict_host_key_checking")

HostEntry = tuple[str, dict[str, Any]]


class HostsFileError(ValueError):
    """A hosts file that cannot be used; the message names the file and the problem."""


def _entry(path: Path, group: str, index: int, raw: Any, shared: dict[str, Any]) -> HostEntry:
    where = f"{path}: {group}[{index}]"
    if isinstance(raw, str):
        raw = {"host": raw}
    if not isinstance(raw, dict) or not raw.get("host"):
        raise HostsFileError(f"{where}: each host needs at least 'host: <address>'")
    unknown = set(raw) - {"host", "name", "data", *CONNECTION_KEYS}
    if unknown:
        raise HostsFileError(f"{where}: unknown keys {sorted(unknown)}; put host settings under 'data:'")
    extra = raw.get("data") or {}
    if not isinstance(extra, dict):
        raise HostsFileError(f"{where}: 'data' must be a mapping")
    data: dict[str, Any] = {**shared, **extra, "ssh_hostname": str(raw["host"])}
    data.update({key: raw[key] for key in CONNECTION_KEYS if key in raw})
    return str(raw.get("name") or raw["host"]), data


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
    return groups
