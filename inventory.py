"""Inventory: groups gpu_servers and cpu_servers.

The hosts come from the YAML file named by LAB_HOSTS, else from hosts.yml beside this file (format:
hosts.example.yml); with neither, the target is the running VMs of the Vagrantfile beside this file
(`@vagrant`, CPU hosts) when one is running, and otherwise the run stops with one line saying how to name
the hosts (hosts.yml, LAB_HOSTS, or `vagrant up`).
"""

import os
import sys

from labforge import report
from labforge.hostsfile import REPO, HostsFileError, load, resolve

report.install()  # the run summary, before hosts connect (so an unreachable host gets its line too)
try:
    _hosts_file = resolve()
    if _hosts_file:
        _groups = load(_hosts_file)
    else:
        os.environ["VAGRANT_CWD"] = str(REPO)  # @vagrant asks the Vagrantfile that resolve() found running, wherever pyinfra runs
        _groups = {"gpu_servers": [], "cpu_servers": ["@vagrant"]}
except HostsFileError as _error:
    sys.exit(f"labforge: {_error}")
gpu_servers = _groups["gpu_servers"]
cpu_servers = _groups["cpu_servers"]
