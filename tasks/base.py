"""Base layer: fresh apt cache, the tools later layers need, the keyring directory, optional apt proxy."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files

from labforge import aptsource

PROXY_FILE = "/etc/apt/apt.conf.d/01labforge-proxy"


@deploy("Base", data_defaults={"base_packages": ["git", "curl", "ca-certificates", "gnupg", "gcc"]})
def base() -> None:
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
    apt.update(name="apt cache (cache_time)", cache_time=host.data.get("apt_cache_time"))
    apt.update(name="apt cache after proxy change", _if=proxy_op.did_change)
    apt.packages(name="Base packages", packages=host.data.get("base_packages"), no_recommends=True)
