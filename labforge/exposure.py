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

Three more ways in are closed here (docs/security.md):
- IPv6. A port Docker publishes without a host address is also bound on [::] by docker-proxy, which forwards to the
  container's IPv4 address when the container has no IPv6 one (moby/libnetwork c3fabc68, "Fix regression in
  docker-proxy", in Docker 20.10 and kept since; seen in the lab's dockerd): that traffic meets the host's INPUT
  chain, never DOCKER-USER, and every NIC has a link-local fe80:: address. So over IPv6 the host takes new TCP
  connections only on SSH's port and, from cvat_allowed_networks' IPv6 entries, CVAT's (LABFORGE-INPUT6).
- Local accounts. The host reaching a container (a bridge address, or a port published on loopback) goes through
  OUTPUT, not FORWARD: only root may open connections to the Nuclio dashboard's port there (LABFORGE-LOCAL; the
  owner match sees the local socket's user).
- Both families alike: the same chains in iptables and ip6tables, each jumped to first.
"""

from __future__ import annotations

import ipaddress

from labforge import split
from labforge.templates import render

CHAIN = "LABFORGE-EXPOSURE"  # DOCKER-USER jumps here first: what reaches Docker's networks from outside
INPUT6_CHAIN = "LABFORGE-INPUT6"  # ip6tables INPUT jumps here first: what reaches the host itself over IPv6
LOCAL_CHAIN = "LABFORGE-LOCAL"  # OUTPUT jumps here first: what local accounts may open
FIREWALL_SCRIPT = "/usr/local/lib/labforge/firewall"
FIREWALL_UNIT = "labforge-firewall.service"
# docker.service Requires= the firewall unit: Docker does not start while the rules could not be applied
DOCKER_DROPIN = "/etc/systemd/system/docker.service.d/labforge-firewall.conf"
DOCKER_BRIDGES = ("docker0", "br-+")  # the default bridge and every user-defined network's bridge (br-<id>)
DASHBOARD_PUBLISH = (None, "127.0.0.1")
DASHBOARD_PORT = split.DASHBOARD_PORT  # the Nuclio dashboard's (and labforge's Nuclio guard's) port


class ExposureProblem(ValueError):
    """An exposure setting that cannot be applied; one actionable line."""


def cvat_ports(tls: str) -> list[int]:
    """The host ports CVAT answers on: traefik's 8080 (CVAT's docker-compose.yml), or 80 and 443 with TLS
    (CVAT's docker-compose.https.yml at dfd505e7: 80 redirects to 443)."""
    return [8080] if tls == "off" else [80, 443]


def allowed_networks(value) -> list[str]:
    """cvat_allowed_networks as normalised CIDRs, IPv4 and IPv6; one line naming the first bad entry otherwise."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ExposureProblem("cvat_allowed_networks must be a non-empty list of CIDRs, e.g. [\"192.168.10.0/24\"]")
    found = []
    for item in value:
        try:
            found.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            raise ExposureProblem(f"cvat_allowed_networks: {item!r} is not a network (a CIDR such as 192.168.10.0/24 "
                                  "or 2001:db8:10::/64)") from None
    return found


def is_address(value: str) -> bool:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return False
    return True


def of_family(networks, version: int) -> list[str]:
    """The addresses or networks of one IP version (a DNS name is of neither: it is left out)."""
    return [n for n in networks if is_address(n) and ipaddress.ip_network(n, strict=False).version == version]


def dashboard_publish(value) -> str | None:
    if value not in DASHBOARD_PUBLISH:
        raise ExposureProblem(f"nuclio_dashboard_publish must be None (not published) or \"127.0.0.1\" (loopback, for ssh -L); "
                              f"got {value!r}: the dashboard has no authentication and holds the Docker socket")
    return value


def ssh_port(value) -> int:
    """The SSH port kept open over IPv6 (the inventory's ssh_port, 22 by default)."""
    try:
        port = int(value if value is not None else 22)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise ExposureProblem(f"ssh_port must be a TCP port number, got {value!r}")
    return port


def forward_rules(ports: list[int], networks: list[str]) -> list[str]:
    """LABFORGE-EXPOSURE: new connections from outside into Docker's networks, CVAT's ports from `networks` only."""
    lines = [f"-A {CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"]
    lines += [f"-A {CHAIN} -i {bridge} -j RETURN" for bridge in DOCKER_BRIDGES]
    lines += [f"-A {CHAIN} -s {network} -p tcp -m conntrack --ctorigdstport {port} --ctdir ORIGINAL -j RETURN"
              for port in ports for network in networks]
    lines += [f"-A {CHAIN} -o {bridge} -j DROP" for bridge in DOCKER_BRIDGES]
    return lines


def local_rules(remote_dashboards: list[str] = ()) -> list[str]:
    """LABFORGE-LOCAL: only root opens connections to the dashboard's port on this host, in its containers, or at a
    split lab's inference host (which lets this host's address in): a local account or process that reaches a
    dashboard can deploy a container that mounts / there."""
    match = f"-p tcp --dport {DASHBOARD_PORT}"
    reject = "-j REJECT --reject-with tcp-reset"
    lines = [f"-A {LOCAL_CHAIN} {match} -m owner --uid-owner 0 -j RETURN",
             f"-A {LOCAL_CHAIN} {match} -m addrtype --dst-type LOCAL {reject}"]
    lines += [f"-A {LOCAL_CHAIN} {match} -o {bridge} {reject}" for bridge in DOCKER_BRIDGES]
    lines += [f"-A {LOCAL_CHAIN} -d {address} {match} {reject}" for address in remote_dashboards]
    return lines


def input6_rules(ports: list[int], networks: list[str], ssh: int) -> list[str]:
    """LABFORGE-INPUT6: over IPv6 the host takes new TCP connections on SSH's port, and on CVAT's from the allowed
    IPv6 networks; ICMPv6 (neighbour discovery), UDP, loopback and the containers' own traffic are left alone."""
    lines = [f"-A {INPUT6_CHAIN} -i lo -j RETURN",
             f"-A {INPUT6_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"]
    lines += [f"-A {INPUT6_CHAIN} -i {bridge} -j RETURN" for bridge in DOCKER_BRIDGES]
    lines += [f"-A {INPUT6_CHAIN} -p tcp --dport {ssh} -j RETURN"]
    lines += [f"-A {INPUT6_CHAIN} -s {network} -p tcp --dport {port} -j RETURN" for port in ports for network in networks]
    lines += [f"-A {INPUT6_CHAIN} -p tcp -j DROP"]
    return lines


def rules(ports: list[int], networks: list[str], version: int = 4, ssh: int = 22,
          remote_dashboards: list[str] = ()) -> str:
    """The iptables-restore (version 4) or ip6tables-restore (6) input that (re)writes labforge's chains atomically:
    a declared chain is flushed first, so applying it again changes nothing."""
    mine = of_family(networks, version)
    chains = [CHAIN, LOCAL_CHAIN, *([INPUT6_CHAIN] if version == 6 else [])]
    lines = ["*filter", *(f":{chain} - [0:0]" for chain in chains), *forward_rules(ports, mine),
             *local_rules(of_family(remote_dashboards, version))]
    if version == 6:
        lines += input6_rules(ports, mine, ssh)
    return "\n".join([*lines, "COMMIT", ""])


def jumps(version: int) -> list[tuple[str, str]]:
    """(built-in or Docker chain, labforge chain): each must be the first rule of the former."""
    return [("DOCKER-USER", CHAIN), ("OUTPUT", LOCAL_CHAIN), *([("INPUT", INPUT6_CHAIN)] if version == 6 else [])]


def firewall_script(ports: list[int], networks: list[str], ssh: int, remote_dashboards: list[str], what: str) -> str:
    """The firewall unit's program (templates/labforge-firewall.sh.j2): both families' chains, each jumped to first."""
    return render("labforge-firewall.sh.j2", ports=ports, networks=networks, what=what, ssh=ssh,
                  networks6=of_family(networks, 6), chain=CHAIN, local_chain=LOCAL_CHAIN, input6_chain=INPUT6_CHAIN,
                  dashboard_port=DASHBOARD_PORT, unit=FIREWALL_UNIT,
                  rules4=rules(ports, networks, 4, ssh, remote_dashboards),
                  rules6=rules(ports, networks, 6, ssh, remote_dashboards))


def layer_settings(data) -> tuple[list[int], list[str], int]:
    """What the exposure layer opens, from the settings: CVAT's ports, the allowed networks and SSH's port (an
    ExposureProblem while planning). On a split lab's inference host: the Nuclio dashboard's port, for its CVAT host's
    address alone (its functions' ports answer nobody outside)."""
    ssh = ssh_port(data.get("ssh_port"))
    if split.role(data) == "inference":
        return [split.DASHBOARD_PORT], [f"{data.get('cvat_address')}/32"], ssh
    networks = allowed_networks(data.get("cvat_allowed_networks"))
    dashboard_publish(data.get("nuclio_dashboard_publish"))
    return cvat_ports(data.get("cvat_tls")), networks, ssh
