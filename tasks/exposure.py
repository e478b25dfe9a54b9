"""Exposure layer: the lab answers its network only through CVAT and SSH, over IPv4 and IPv6 (docs/security.md).

Before the stack starts, a systemd unit puts labforge's chains into iptables and ip6tables (labforge/exposure.py):
everything Docker publishes is dropped for traffic from outside except CVAT's port(s) from cvat_allowed_networks,
over IPv6 the host takes new TCP connections only on SSH's port (and CVAT's from allowed IPv6 networks), and only
root reaches a Nuclio dashboard's port from the host. The unit runs before Docker at every boot and again whenever
Docker restarts, and Docker Requires= it: no container runs while the rules could not be applied.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from labforge import exposure, report, split
from labforge.report import Refused
from labforge.templates import render


@deploy("Exposure")
def exposure_layer() -> None:
    if not host.data.get("cvat_start"):
        return
    try:
        ports, networks, ssh = exposure.layer_settings(host.data)
    except exposure.ExposureProblem as exc:
        raise Refused(str(exc)) from exc
    what = "Nuclio dashboard" if split.role(host.data) == "inference" else "CVAT"
    remote = [host.data.get("inference_address")] if host.data.get("inference_address") else []
    if remote and not exposure.is_address(remote[0]):
        report.notice(f"the inference host is reached by name ({remote[0]}): this host's local accounts are kept from its "
                      "dashboard only when its lab_address is an IP address (docs/security.md)")
    script = files.put(name=f"Firewall script ({what} {', '.join(map(str, ports))} from {', '.join(networks)}; "
                            f"IPv6: SSH {ssh}{' and ' + what if exposure.of_family(networks, 6) else ''})",
                       src=StringIO(exposure.firewall_script(ports, networks, ssh, remote, what)),
                       dest=exposure.FIREWALL_SCRIPT, mode="0755", create_remote_dir=True)
    unit = files.put(name=f"{exposure.FIREWALL_UNIT}", dest=f"/etc/systemd/system/{exposure.FIREWALL_UNIT}", mode="0644",
                     src=StringIO(render("labforge-firewall.service.j2", script=exposure.FIREWALL_SCRIPT,
                                         dropin=exposure.DOCKER_DROPIN)))
    dropin = files.put(name=f"docker.service requires {exposure.FIREWALL_UNIT}", dest=exposure.DOCKER_DROPIN, mode="0644",
                       src=StringIO(render("labforge-firewall.docker-dropin.conf.j2", unit=exposure.FIREWALL_UNIT)),
                       create_remote_dir=True)
    systemd.daemon_reload(name="systemd daemon-reload (firewall unit)", _if=any_changed(unit, dropin))
    systemd.service(name=f"{exposure.FIREWALL_UNIT} enabled", service=exposure.FIREWALL_UNIT, enabled=True)
    # Applied by running the program itself when the unit is active and the rules changed: `systemctl restart` of the
    # unit would restart Docker and every container with it (docker.service Requires= it, and systemd propagates an
    # explicit restart to the units that require the restarted one: systemd.unit(5), Requires=). Started when it is
    # not active (first run, or it failed). A failure says why on stderr, which the run summary's line carries.
    why = f"journalctl _SYSTEMD_UNIT={exposure.FIREWALL_UNIT} -n 20 -o cat --no-pager | grep -v '^$' | tail -n 1 >&2"
    if host.get_fact(SystemdStatus).get(exposure.FIREWALL_UNIT):
        server.shell(name=f"Apply the changed rules ({exposure.FIREWALL_SCRIPT}, Docker left running)",
                     commands=[exposure.FIREWALL_SCRIPT], _if=any_changed(script, unit))
    else:
        server.shell(name=f"Apply the rules ({exposure.FIREWALL_UNIT})",
                     commands=[f"systemctl start {exposure.FIREWALL_UNIT} || {{ {why}; exit 1; }}"])
