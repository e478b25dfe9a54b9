"""Base layer: apt that waits for its locks, the tools later layers need, the keyring directory, optional apt proxy."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt as pyinfra_apt
from pyinfra.operations import files

from labforge import apt, aptsource

PROXY_FILE = "/etc/apt/apt.conf.d/01labforge-proxy"


@deploy("Base")
def base() -> None:
    # First, before any apt call: apt-get install/remove wait for the dpkg lock (labforge/apt.py).
    timeout = apt.lock_timeout()
    files.put(name="apt waits for its lock (DPkg::Lock::Timeout)", src=StringIO(apt.lock_timeout_conf(timeout)),
              dest=apt.LOCK_TIMEOUT_CONF, mode="0644")
    apt.finish_interrupted(timeout)  # else apt refuses every install below
    proxy = host.data.get("apt_proxy")
    if proxy:
        proxy_op = files.put(
            name="apt proxy",
            src=StringIO(f'Acquire::http::Proxy "{proxy}";\nAcquire::https::Proxy "{proxy}";\n'),
            dest=PROXY_FILE,
            mode="0644",
        )
    else:
        proxy_op = files.file(name="No apt proxy", path=PROXY_FILE, present=False)
    files.directory(name=aptsource.KEYRINGS_DIR, path=aptsource.KEYRINGS_DIR, mode="0755")
    packages = list(host.data.get("base_packages"))
    apt.refresh("Base", packages, after=[proxy_op])
    pyinfra_apt.packages(name="Base packages", packages=packages, no_recommends=True)
