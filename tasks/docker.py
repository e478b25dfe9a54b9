"""Docker layer: Docker Engine + Compose v2 from Docker's signed apt repo, at the pinned versions, held.

The pin is the newest Docker the pinned CVAT stack works with (labforge/compat.py). A host that already
runs a newer Docker from Docker's repo is not downgraded: its packages are held where they are, and its
daemon is told, in daemon.json's "min-api-version", to accept the oldest API the stack speaks.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt as pyinfra_apt
from pyinfra.operations import server, systemd

from labforge import apt, aptsource, compat, daemon_json, platform, report
from labforge.facts import AptHeldPackages, DockerDaemonConfig
from labforge.report import Refused


@deploy("Docker")
def docker() -> None:
    p = platform.current()
    data = host.data
    pins = compat.docker_dpkg_versions(data.get("docker_package_versions"), p.distro, p.version, p.codename)
    installed = host.get_fact(DebPackages) or {}
    have = sorted(installed.get("docker-ce") or [], key=compat.upstream_version)
    keep = bool(have) and compat.upstream_version(have[-1]) > compat.upstream_version(pins["docker-ce"])
    engine = compat.upstream_version(have[-1] if keep else pins["docker-ce"])
    try:  # decided before any op, so a refusal changes nothing
        stack = compat.stack(data)
        setting = compat.min_api_setting(data, engine, stack)
    except compat.Incompatible as exc:
        raise Refused(str(exc)) from exc

    pyinfra_apt.packages(
        name="Remove distro packages that conflict with Docker's",
        packages=data.get("docker_conflicting_packages"),
        present=False,
    )
    repo = aptsource.signed_repo(
        "docker",
        key_url=f"{data.get('docker_repo_url')}/{p.distro}/gpg",
        key_sha256=data.get("docker_gpg_sha256"),
        legacy_list="docker.list",
        uris=f"{data.get('docker_repo_url')}/{p.distro}",
        suites=p.codename,
        components="stable",
        architectures=p.deb_arch,
    )
    if keep:
        report.notice(f"Docker {'.'.join(map(str, engine))} is newer than the pin "
                      f"{'.'.join(map(str, compat.upstream_version(pins['docker-ce'])))}: kept, not downgraded")
        apt.refresh("Docker", [], after=repo)
    else:
        specs = [f"{name}={version}" for name, version in pins.items()]
        apt.refresh("Docker", specs, after=repo)
        pyinfra_apt.packages(name="Docker Engine packages (pinned)", packages=specs, no_recommends=True,
                             extra_install_args="--allow-change-held-packages")
    unheld = [name for name in pins if name not in (host.get_fact(AptHeldPackages) or [])]
    if unheld:
        server.shell(name=f"Hold Docker's packages ({', '.join(unheld)})",
                     commands=[f"{apt.wait_command(apt.lock_timeout())}; apt-mark hold {' '.join(pins)}"])

    config = host.get_fact(DockerDaemonConfig)
    configured = None
    if setting is not None and daemon_json.get(config, "min-api-version") != setting:
        configured = daemon_json.put(config, "min-api-version", setting,
                                     name=f"daemon.json min-api-version {setting} (CVAT {stack.cvat}'s Nuclio dashboard speaks it)")
    systemd.service(name="docker.service enabled and running", service="docker.service", running=True, enabled=True)
    if configured is not None:
        systemd.service(name="Restart Docker for min-api-version", service="docker.service", restarted=True,
                        _if=configured.did_change)
