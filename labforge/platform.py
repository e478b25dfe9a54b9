"""Which distro/architecture the host runs, and the one place that decides whether we support it."""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.facts.server import Arch, LinuxDistribution

from labforge.report import Refused

# (os-release ID, VERSION_ID) -> apt codename. Docker dropped Ubuntu 20.04; Debian 12 is the test lab's OS.
SUPPORTED_RELEASES: dict[tuple[str, str], str] = {
    ("ubuntu", "22.04"): "jammy",
    ("ubuntu", "24.04"): "noble",
    ("debian", "12"): "bookworm",
}
# uname -m -> (Debian arch, NVIDIA CUDA repo arch)
SUPPORTED_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "x86_64"),
    "aarch64": ("arm64", "sbsa"),
}


class UnsupportedHost(Refused):
    """Raised while planning, so nothing on any host has been changed yet."""


@dataclass(frozen=True)
class Platform:
    distro: str
    version: str
    codename: str
    machine: str
    deb_arch: str
    cuda_arch: str

    @property
    def cuda_distro(self) -> str:
        """NVIDIA's repo directory name, e.g. ubuntu2204 or debian12."""
        return f"{self.distro}{self.version.replace('.', '')}"


def describe_support() -> str:
    releases = ", ".join(f"{d.capitalize()} {v}" for d, v in SUPPORTED_RELEASES)
    return f"{releases} on {'/'.join(SUPPORTED_MACHINES)}"


def detect(release_meta: dict, machine: str, name: str) -> Platform:
    """Map os-release fields and `uname -m` onto a Platform, or raise UnsupportedHost with one clear line."""
    distro = str(release_meta.get("ID", "")).lower()
    version = str(release_meta.get("VERSION_ID", "")).strip('"')
    pretty = release_meta.get("PRETTY_NAME") or f"{distro or 'unknown'} {version}".strip()
    codename = SUPPORTED_RELEASES.get((distro, version))
    if codename is None:
        raise UnsupportedHost(f"unsupported distro '{pretty}'; labforge supports {describe_support()}", name)
    arches = SUPPORTED_MACHINES.get(machine)
    if arches is None:
        raise UnsupportedHost(f"unsupported architecture '{machine}'; labforge supports {describe_support()}", name)
    return Platform(distro, version, codename, machine, *arches)


def current() -> Platform:
    """The current host's Platform (facts are cached by pyinfra, so every layer may call this)."""
    dist = host.get_fact(LinuxDistribution) or {}
    return detect(dist.get("release_meta") or {}, host.get_fact(Arch) or "unknown", host.name)
