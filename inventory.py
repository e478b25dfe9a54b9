"""Inventory: groups gpu_servers and cpu_servers.

With LAB_HOSTS=<hosts file> the hosts come from that YAML file (format: hosts.example.yml).
Without it, the target is the local Vagrant VM (`@vagrant`), a CPU host.
"""

import os
import sys

from labforge.hostsfile import HostsFileError, load

_hosts_file = os.environ.get("LAB_HOSTS")
if _hosts_file:
    try:
        _groups = load(_hosts_file)
    except HostsFileError as _error:
        sys.exit(f"labforge: {_error}")
    gpu_servers = _groups["gpu_servers"]
    cpu_servers = _groups["cpu_servers"]
else:
    gpu_servers = []
    cpu_servers = ["@vagrant"]
