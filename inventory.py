"""Inventory: groups gpu_servers and cpu_servers.

The hosts come from the YAML file named by LAB_HOSTS, else from hosts.yml beside this file (format:
hosts.example.yml); with neither, the target is the local Vagrant VM (`@vagrant`, a CPU host) when
Vagrant is installed, and otherwise the run stops with one line saying how to name the hosts.
"""

import sys

from labforge import report
from labforge.hostsfile import HostsFileError, load, resolve

report.install()  # the run summary, before hosts connect (so an unreachable host gets its line too)
try:
    _hosts_file = resolve()
    _groups = load(_hosts_file) if _hosts_file else {"gpu_servers": [], "cpu_servers": ["@vagrant"]}
except HostsFileError as _error:
    sys.exit(f"labforge: {_error}")
gpu_servers = _groups["gpu_servers"]
cpu_servers = _groups["cpu_servers"]
