"""Docker layer: Docker Engine + Compose v2 from Docker's own signed apt repo, enabled and running."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from tasks import aptsource, platform

KEYRING = "/etc/apt/keyrings/docker.asc"


@deploy("Docker")
def docker() -> None:
    p = platform.current()
    data = host.data
    apt.packages(
        name="Remove distro packages that conflict with Docker's",
        packages=data.get("docker_conflicting_packages"),
        present=False,
    )
    key = files.download(
        name="Docker apt signing key",
        src=f"{data.get('docker_repo_url')}/{p.distro}/gpg",
        dest=KEYRING,
        sha256sum=data.get("docker_gpg_sha256"),
        mode="0644",
    )
    sources = aptsource.source(
        "docker",
        legacy_list="docker.list",
        uris=f"{data.get('docker_repo_url')}/{p.distro}",
        suites=p.codename,
        components="stable",
        architectures=p.deb_arch,
        signed_by=KEYRING,
    )
    apt.update(name="apt cache after Docker repo change", _if=any_changed(key, *sources))
    apt.packages(name="Docker Engine packages", packages=data.get("docker_packages"), no_recommends=True)
    systemd.service(name="docker.service enabled and running", service="docker.service", running=True, enabled=True)
