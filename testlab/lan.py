"""A "LAN" for a lab host: a network namespace the test makes, joined to the host's own namespace by a veth pair,
so that the host can be tried as a person on its network would try it: from outside, not by reading its config.

Addresses: the host is 192.0.2.1 and the LAN client 192.0.2.2 (TEST-NET-1, RFC 5737, reserved for documentation),
and both exist only inside the two namespaces (the lab host's, made by systemd-nspawn --private-network, and the
one made here), so no packet of a probe leaves them.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
from dataclasses import dataclass

from testlab import labhosts

HOST_ADDRESS = "192.0.2.1"
CLIENT_ADDRESS = "192.0.2.2"
PREFIX = 24
# IPv6: a global pair from the documentation prefix (RFC 3849), and the link-local fe80:: addresses every interface
# gets by itself, as every NIC of a real server has them.
HOST_ADDRESS6 = "2001:db8:1ab::1"
CLIENT_ADDRESS6 = "2001:db8:1ab::2"
PREFIX6 = 64

# connect() to each port from the LAN side, concurrently; "open" (accepted), "refused" (RST) or "filtered" (no answer)
PROBE = textwrap.dedent("""
    import concurrent.futures, errno, json, socket, sys
    address, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
    def probe(port):
        try:
            socket.create_connection((address, port), timeout=2.0).close(); return port, "open"
        except ConnectionRefusedError:
            return port, "refused"
        except OSError:
            return port, "filtered"
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        print(json.dumps(dict(pool.map(probe, ports))))
""")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Lan:
    host: labhosts.LabHost
    index: int = 0  # keeps the names of two LANs on one machine apart

    @property
    def namespace(self) -> str:
        return f"labforge-lan{self.index}"

    @property
    def _host_end(self) -> str:
        return f"lfl{self.index}-h"

    @property
    def _lan_end(self) -> str:
        return f"lfl{self.index}-l"

    def attach(self) -> Lan:
        """Join the (booted) host: its end of the pair is 192.0.2.1, the LAN's 192.0.2.2. Again after a reboot."""
        self.detach()
        leader = labhosts._leader(self.host.pid)
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self._host_end, "type", "veth", "peer", "name", self._lan_end)
        _ip("link", "set", self._host_end, "netns", str(leader))
        _ip("link", "set", self._lan_end, "netns", self.namespace)
        into = ["nsenter", "-t", str(leader), "-n", "ip"]
        for args in (["addr", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", self._host_end], ["link", "set", self._host_end, "up"]):
            subprocess.run([*into, *args], check=True, capture_output=True)
        subprocess.run([*into, "addr", "add", f"{HOST_ADDRESS6}/{PREFIX6}", "dev", self._host_end, "nodad"], check=True,
                       capture_output=True)
        _ip("-n", self.namespace, "addr", "add", f"{CLIENT_ADDRESS}/{PREFIX}", "dev", self._lan_end)
        _ip("-n", self.namespace, "addr", "add", f"{CLIENT_ADDRESS6}/{PREFIX6}", "dev", self._lan_end, "nodad")
        _ip("-n", self.namespace, "link", "set", self._lan_end, "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        return self

    def host_link_local(self) -> str:
        """The host's fe80:: address on its end of the pair, scoped for use from the LAN (fe80::...%<LAN's end>)."""
        return f"{link_local(self.host, self._host_end)}%{self._lan_end}"

    def detach(self) -> None:
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)  # takes its end of the pair along

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A command on the LAN (a person's laptop on the lab's network)."""
        return subprocess.run(["ip", "netns", "exec", self.namespace, *argv], capture_output=True, text=True, timeout=timeout)

    def probe(self, ports: set[int], address: str = HOST_ADDRESS) -> dict[int, str]:
        proc = self.run("python3", "-c", PROBE, address, *map(str, sorted(ports)))
        if proc.returncode:
            raise RuntimeError(f"probe failed: {proc.stderr}")
        return {int(port): state for port, state in json.loads(proc.stdout).items()}

    def curl(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("curl", "-sS", "--max-time", "10", *args)


def link_local(host: labhosts.LabHost, device: str) -> str:
    """The fe80:: address the kernel gave a host's interface by itself (once its duplicate address detection ended)."""
    leader = labhosts._leader(host.pid)
    shown = ""
    for _ in range(50):
        shown = subprocess.run(["nsenter", "-t", str(leader), "-n", "ip", "-6", "-o", "addr", "show", "dev", device,
                                "scope", "link"], capture_output=True, text=True).stdout
        match = re.search(r"inet6 (fe80::[0-9a-f:]+)/64", shown)
        if match and "tentative" not in shown:
            return match.group(1)
        time.sleep(0.2)
    raise RuntimeError(f"no link-local IPv6 address on {device}: {shown}")


PORT = re.compile(r":(\d+)$")
PUBLISHED = re.compile(r":(\d+)->")


def listening_ports(host: labhosts.LabHost) -> dict[int, str]:
    """Every TCP port something listens on in the host's namespace (sshd, docker-proxy, ...) and every port Docker
    publishes (its NAT rules answer for them before any listener), each with what it is."""
    found: dict[int, str] = {}
    for line in host.ssh("ss -Htlnp").stdout.splitlines():
        fields = line.split()
        match = PORT.search(fields[3]) if len(fields) > 3 else None
        if match:
            process = re.search(r'users:\(\("([^"]+)"', line)
            found.setdefault(int(match.group(1)), f"listener {process.group(1) if process else '?'} on {fields[3]}")
    for line in host.ssh("docker ps --format '{{.Names}} {{.Ports}}'").stdout.splitlines():
        name, _, ports = line.partition(" ")
        for port in PUBLISHED.findall(ports):
            found[int(port)] = f"published by container {name}"
    return found


NETWORK_PREFIX = "198.51.100"  # TEST-NET-2 (RFC 5737): only inside the namespaces below
OUTSIDER_ADDRESS = f"{NETWORK_PREFIX}.250"


@dataclass
class LabNetwork:
    """The network of a split lab: a namespace the lab makes, holding a bridge that every host's end of a veth pair
    joins (host i is 198.51.100.10+i), and an address of its own (OUTSIDER_ADDRESS): a third machine on that
    network, which no host is told about. Nothing of it exists outside the hosts' namespaces and this one."""

    hosts: list[labhosts.LabHost]
    index: int = 0

    @property
    def namespace(self) -> str:
        return f"labforge-net{self.index}"

    def address(self, lab_host: labhosts.LabHost) -> str:
        return f"{NETWORK_PREFIX}.{10 + [h.name for h in self.hosts].index(lab_host.name)}"

    def attach(self) -> LabNetwork:
        self.detach()
        _ip("netns", "add", self.namespace)
        _ip("-n", self.namespace, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.namespace, "addr", "add", f"{OUTSIDER_ADDRESS}/{PREFIX}", "dev", "br0")
        for dev in ("br0", "lo"):
            _ip("-n", self.namespace, "link", "set", dev, "up")
        for lab_host in self.hosts:
            self.join(lab_host)
        return self

    def join(self, lab_host: labhosts.LabHost) -> None:
        """Plug a (booted) host in; again after it booted anew (its end went with its old namespace)."""
        i = [h.name for h in self.hosts].index(lab_host.name)
        host_end, net_end = f"lfn{self.index}h{i}", f"lfn{self.index}n{i}"
        subprocess.run(["ip", "-n", self.namespace, "link", "del", net_end], capture_output=True)
        leader = labhosts._leader(lab_host.pid)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", net_end)
        _ip("link", "set", net_end, "netns", self.namespace)
        _ip("link", "set", host_end, "netns", str(leader))
        _ip("-n", self.namespace, "link", "set", net_end, "master", "br0")
        _ip("-n", self.namespace, "link", "set", net_end, "up")
        into = ["nsenter", "-t", str(leader), "-n", "ip"]
        for args in (["addr", "add", f"{self.address(lab_host)}/{PREFIX}", "dev", host_end], ["link", "set", host_end, "up"]):
            subprocess.run([*into, *args], check=True, capture_output=True)

    def detach(self) -> None:
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)

    def link_local(self, lab_host: labhosts.LabHost) -> str:
        """A host's fe80:: address on this network, scoped for the third machine (fe80::...%br0)."""
        i = [h.name for h in self.hosts].index(lab_host.name)
        return f"{link_local(lab_host, f'lfn{self.index}h{i}')}%br0"

    def run(self, *argv: str, timeout: float = 60, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
        """A command on the third machine of the network."""
        return subprocess.run(["ip", "netns", "exec", self.namespace, *argv], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=cwd)

    def probe(self, address: str, ports: set[int]) -> dict[int, str]:
        proc = self.run("python3", "-c", PROBE, address, *map(str, sorted(ports)))
        if proc.returncode:
            raise RuntimeError(f"probe failed: {proc.stderr}")
        return {int(port): state for port, state in json.loads(proc.stdout).items()}
