"""NVIDIA layer (GPU hosts): driver branch 550 held, nouveau off, Container Toolkit wired into Docker."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from labforge import aptsource, gpu, platform, report
from labforge.daemon_json import has_nvidia_runtime
from labforge.facts import AptHeldPackages, DockerDaemonConfig

NOUVEAU_CONF = "/etc/modprobe.d/blacklist-nouveau.conf"
TOOLKIT_PACKAGES = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools", "libnvidia-container1")


def driver_package(distro: str) -> str:
    return host.data.get("nvidia_driver_package") or host.data.get("nvidia_driver_packages")[distro]


@deploy("NVIDIA driver", data_defaults={"reboot_after_driver": False})
def driver() -> None:
    if not gpu.enabled():
        return
    package = driver_package(platform.current().distro)
    blacklist = files.put(
        name="Blacklist nouveau",
        src=StringIO("# Managed by labforge: the NVIDIA driver needs nouveau unloaded.\nblacklist nouveau\noptions nouveau modeset=0\n"),
        dest=NOUVEAU_CONF,
        mode="0644",
    )
    if host.get_fact(Which, command="update-initramfs"):
        server.shell(name="Rebuild initramfs without nouveau", commands=["update-initramfs -u"], _if=blacklist.did_change)
    install = apt.packages(name=f"NVIDIA driver {package}", packages=[package], no_recommends=True)
    if package not in (host.get_fact(AptHeldPackages) or []):
        server.shell(name=f"Hold {package} (apt-mark hold)", commands=[f"apt-mark hold {package}"])
    changed = any_changed(install, blacklist)
    if host.data.get("reboot_after_driver"):
        server.reboot(name="Reboot to load the new NVIDIA driver", _if=changed)
    else:
        # /run is emptied by a reboot, so the marker keeps saying "reboot required" on later runs until one happens.
        files.file(name="Mark reboot required (until the next boot)", path=report.REBOOT_MARKER, _if=changed)
        report.reboot_required_if(install, blacklist)


@deploy("NVIDIA container toolkit")
def container_toolkit() -> None:
    if not gpu.enabled():
        return
    p = platform.current()
    data = host.data
    repo = data.get("nvidia_container_toolkit_repo_url")
    version = data.get("nvidia_container_toolkit_version")
    aptsource.signed_repo(
        "nvidia-container-toolkit",
        key_url=f"{repo}/gpgkey",
        key_sha256=data.get("nvidia_container_toolkit_gpg_sha256"),
        legacy_list="nvidia-container-toolkit.list",
        uris=f"{repo}/stable/deb/{p.deb_arch}",
        suites="/",
    )
    apt.packages(
        name=f"NVIDIA container toolkit {version}",
        packages=[f"{name}={version}" for name in TOOLKIT_PACKAGES],
        no_recommends=True,
        allow_downgrades=True,
    )
    # nvidia-ctk edits daemon.json in place (keeping other keys); only run it when the runtime is missing.
    if not has_nvidia_runtime(host.get_fact(DockerDaemonConfig)):
        configure = server.shell(
            name="Register the nvidia runtime with Docker (nvidia-ctk)",
            commands=["nvidia-ctk runtime configure --runtime=docker"],
        )
        systemd.service(
            name="Restart Docker for the nvidia runtime",
            service="docker.service",
            restarted=True,
            _if=configure.did_change,
        )
