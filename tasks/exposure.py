"""Exposure layer: the lab answers its network only through CVAT (docs/security.md).

Before the stack starts, a systemd unit puts labforge's rules into iptables' DOCKER-USER chain (labforge/exposure.py):
everything Docker publishes is dropped for traffic from outside except CVAT's port(s) from cvat_allowed_networks.
The unit runs before Docker at every boot and again whenever Docker restarts, so the rules outlive reboots, Docker
restarts and function redeploys (a redeployed function gets a new port: the rules name no function port).
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from labforge import exposure, split
from labforge.report import Refused
from labforge.templates import render


def settings() -> tuple[list[int], list[str]]:
    """CVAT's ports and the allowed networks, or a one-line refusal while planning. On a split lab's inference host:
    the Nuclio dashboard's port, for its CVAT host's address alone (its functions' ports answer nobody outside)."""
    if split.role(host.data) == "inference":
        return [split.DASHBOARD_PORT], [f"{host.data.get('cvat_address')}/32"]
    try:
        networks = exposure.allowed_networks(host.data.get("cvat_allowed_networks"))
        exposure.dashboard_publish(host.data.get("nuclio_dashboard_publish"))
    except exposure.ExposureProblem as exc:
        raise Refused(str(exc)) from exc
    return exposure.cvat_ports(host.data.get("cvat_tls")), networks


@deploy("Exposure")
def exposure_layer() -> None:
    if not host.data.get("cvat_start"):
        return
    ports, networks = settings()
    what = "Nuclio dashboard" if split.role(host.data) == "inference" else "CVAT"
    script = files.put(name=f"Firewall script ({what} {', '.join(map(str, ports))} from {', '.join(networks)})",
                       src=StringIO(render("labforge-firewall.sh.j2", ports=ports, networks=networks,
                                           chain=exposure.CHAIN, unit=exposure.FIREWALL_UNIT,
                                           rules=exposure.rules(ports, networks))),
                       dest=exposure.FIREWALL_SCRIPT, mode="0755", create_remote_dir=True)
    unit = files.put(name=f"{exposure.FIREWALL_UNIT}", dest=f"/etc/systemd/system/{exposure.FIREWALL_UNIT}", mode="0644",
                     src=StringIO(render("labforge-firewall.service.j2", script=exposure.FIREWALL_SCRIPT)))
    systemd.daemon_reload(name="systemd daemon-reload (firewall unit)", _if=unit.did_change)
    systemd.service(name=f"{exposure.FIREWALL_UNIT} enabled and applied", service=exposure.FIREWALL_UNIT, running=True,
                    enabled=True)
    systemd.service(name=f"Apply the changed rules ({exposure.FIREWALL_UNIT})", service=exposure.FIREWALL_UNIT,
                    restarted=True, _if=any_changed(script, unit))
