"""Docker layer: Docker Engine + Compose v2 from Docker's own signed apt repo, enabled and running."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from labforge import aptsource, platform


@deploy("Docker")
def docker() -> None:
    p = platform.current()
    data = host.data
    apt.packages(
        name="Remove distro packages that conflict with Docker's",
        packages=data.get("docker_conflicting_packages"),
        present=False,
    )
    aptsource.signed_repo(
        "docker",
        key_url=f"{data.get('docker_repo_url')}/{p.distro}/gpg",
        key_sha256=data.get("docker_gpg_sha256"),
        legacy_list="docker.list",
        uris=f"{data.get('docker_repo_url')}/{p.distro}",
        suites=p.codename,
        components="stable",
        architectures=p.deb_arch,
    )
    apt.packages(name="Docker Engine packages", packages=data.get("docker_packages"), no_recommends=True)
    systemd.service(name="docker.service enabled and running", service="docker.service", running=True, enabled=True)
