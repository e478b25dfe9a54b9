"""What a lab host answers on its network, and to whom: pure functions the exposure layer renders onto the host.

Docker's published ports bypass host firewalls such as ufw (moby/moby#4737): Docker DNATs them in its own nat
rules and forwards them through the filter table's FORWARD chain, where it jumps to DOCKER-USER first and never
changes that chain itself (Docker's "Packet filtering and firewalls" documentation, which also shows matching the
port a client asked for with conntrack's --ctorigdstport, since the DNAT has already rewritten the destination).
labforge keeps its rules in a chain of its own (LABFORGE-EXPOSURE) that DOCKER-USER jumps to: new connections
forwarded from outside into any Docker network are dropped, except to CVAT's port(s) from cvat_allowed_networks.
Everything that does not come from outside is left alone: replies, containers talking to each other or to the
internet (their traffic enters from a Docker bridge), and CVAT calling its functions at host.docker.internal:<port>
(a container on the same bridge as the function reaches the published port through docker-proxy, not FORWARD).
"""

from __future__ import annotations

import ipaddress

CHAIN = "LABFORGE-EXPOSURE"
FIREWALL_SCRIPT = "/usr/local/lib/labforge/firewall"
FIREWALL_UNIT = "labforge-firewall.service"
DOCKER_BRIDGES = ("docker0", "br-+")  # the default bridge and every user-defined network's bridge (br-<id>)
DASHBOARD_PUBLISH = (None, "127.0.0.1")


class ExposureProblem(ValueError):
    """An exposure setting that cannot be applied; one actionable line."""


def cvat_ports(tls: str) -> list[int]:
    """The host ports CVAT answers on: traefik's 8080 (CVAT's docker-compose.yml), or 80 and 443 with TLS
    (CVAT's docker-compose.https.yml at dfd505e7: 80 redirects to 443)."""
    return [8080] if tls == "off" else [80, 443]


def allowed_networks(value) -> list[str]:
    """cvat_allowed_networks as normalised IPv4 CIDRs; one line naming the first bad entry otherwise."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ExposureProblem("cvat_allowed_networks must be a non-empty list of CIDRs, e.g. [\"192.168.10.0/24\"]")
    found = []
    for item in value:
        try:
            network = ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            raise ExposureProblem(f"cvat_allowed_networks: {item!r} is not a network (a CIDR such as 192.168.10.0/24)") from None
        if network.version != 4:
            raise ExposureProblem(f"cvat_allowed_networks: {item!r} is IPv6; only IPv4 networks are filtered (docs/security.md)")
        found.append(str(network))
    return found


def dashboard_publish(value) -> str | None:
    if value not in DASHBOARD_PUBLISH:
        raise ExposureProblem(f"nuclio_dashboard_publish must be None (not published) or \"127.0.0.1\" (loopback, for ssh -L); "
                              f"got {value!r}: the dashboard has no authentication and holds the Docker socket")
    return value


def rules(ports: list[int], networks: list[str]) -> str:
    """The iptables-restore input that (re)writes the chain atomically (a declared chain is flushed first)."""
    lines = ["*filter", f":{CHAIN} - [0:0]",
             f"-A {CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"]
    lines += [f"-A {CHAIN} -i {bridge} -j RETURN" for bridge in DOCKER_BRIDGES]
    lines += [f"-A {CHAIN} -s {network} -p tcp -m conntrack --ctorigdstport {port} --ctdir ORIGINAL -j RETURN"
              for port in ports for network in networks]
    lines += [f"-A {CHAIN} -o {bridge} -j DROP" for bridge in DOCKER_BRIDGES]
    return "\n".join([*lines, "COMMIT", ""])
