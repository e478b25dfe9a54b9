"""Nuclio layer: the nuctl CLI, pinned by version and sha256, checked after every fresh download."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from labforge import platform

NUCTL = "/usr/local/bin/nuctl"


@deploy("Nuclio")
def nuclio() -> None:
    p = platform.current()
    version = host.data.get("nuctl_version")
    sha = (host.data.get("nuctl_sha256") or {}).get(p.deb_arch)
    if not sha:
        raise DeployError(
            f"{host.name}: no sha256 pinned for nuctl {version} on {p.deb_arch}; add it to nuctl_sha256 in "
            "group_data/all.py. Nothing was changed."
        )
    fetched = files.download(
        name=f"nuctl {version}",
        src=host.data.get("nuctl_url").format(version=version, arch=p.deb_arch),
        dest=NUCTL,
        sha256sum=sha,
        mode="0755",
    )
    server.shell(
        name=f"nuctl reports version {version}",
        commands=[f"{NUCTL} version | grep -F 'Label: {version}'"],
        _if=fetched.did_change,
    )
