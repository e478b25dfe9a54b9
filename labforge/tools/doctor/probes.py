"""What the doctor runs on a host (one POSIX sh script, and curl timings of the upstreams) and its parsers."""

from __future__ import annotations

import shlex
from typing import Any

from labforge import exposure
from labforge.backups import LAST_RESULT
from labforge.facts import NvidiaGpuDevices
from labforge.tools.doctor.checks import Timing

CURL_MAX_TIME = 10
DOCKER_DIR = "/var/lib/docker"

def probe_script(cvat_dir: str = "/opt/cvat") -> str:
    """One shell script, sections marked `@@name value`; every command exits 0. `cvat_dir`: the CVAT checkout whose
    release decides an unset cvat_version (labforge/releases.py)."""
    return "\n".join([
        "LC_ALL=C; export LC_ALL",
        'echo "@@user $(id -un)"',
        'if [ "$(id -u)" = 0 ]; then echo "@@sudo root"; '
        'elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then echo "@@sudo yes"; '
        'else echo "@@sudo no"; fi',
        'echo "@@machine $(uname -m)"',
        'echo "@@os-release"',
        "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null || true",
        'echo "@@gpu"',
        NvidiaGpuDevices().command(),
        f'd={DOCKER_DIR}; while [ ! -e "$d" ]; do d=$(dirname "$d"); done',
        'echo "@@disk $d"',
        'df -P -k "$d" 2>/dev/null | tail -n 1',
        'if command -v curl >/dev/null 2>&1; then echo "@@curl yes"; else echo "@@curl no"; fi',
        f'echo "@@backup $(head -c 2000 {LAST_RESULT} 2>/dev/null | tr -d "\\n")"',
        f'if [ -d {shlex.quote(cvat_dir)}/.git ]; then echo "@@cvat-tags checkout"; '
        f"git -c safe.directory='*' -C {shlex.quote(cvat_dir)} tag --points-at HEAD 2>/dev/null; "
        'else echo "@@cvat-tags none"; fi',
        *firewall_lines(),
        'echo "@@end"',
        "",
    ])


def firewall_lines() -> list[str]:
    """The firewall section, where labforge installed its unit: the unit's state, its last log line, and the first
    rule of each chain labforge must lead (iptables needs root: sudo -n when the SSH user is not root)."""
    chains = [f"{family} {chain}" for version, family in ((4, "iptables"), (6, "ip6tables")) for chain, _ in exposure.jumps(version)]
    unit = exposure.FIREWALL_UNIT
    return [
        f'echo "@@firewall"; if [ -e /etc/systemd/system/{unit} ]; then',
        '  if [ "$(id -u)" = 0 ]; then S=; else S="sudo -n"; fi',
        f'  echo "unit $(systemctl is-active {unit} 2>/dev/null)"',
        f'  echo "why $($S journalctl _SYSTEMD_UNIT={unit} -n 20 -o cat --no-pager 2>/dev/null | grep -v "^$" | tail -n 1)"',
        '  [ -e /proc/net/if_inet6 ] && echo "ipv6 on" || echo "ipv6 off"',
        f'  for c in {" ".join(repr(c).replace(chr(39), chr(34)) for c in chains)}; do set -- $c; '
        'echo "first $1 $2 $($S "$1" -w -S "$2" 2>/dev/null | sed -n 2p)"; done',
        'fi',
    ]


def parse_probe(output: str) -> dict[str, Any]:
    """Sections of probe_script's output: {'user': 'root', 'os-release': '<text>', 'gpu': [...], ...}."""
    sections: dict[str, list[str]] = {}
    heads: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("@@"):
            key, _, value = line[2:].partition(" ")
            heads[key] = value.strip()
            sections[key] = []
            current = key
        elif current is not None:
            sections[current].append(line)
    disk_line = next((line for line in sections.get("disk", []) if line.strip()), "")
    fields = disk_line.split()
    available = int(fields[3]) if len(fields) >= 6 and fields[3].isdigit() else None
    return {
        "complete": "end" in heads,
        "user": heads.get("user", "?"),
        "sudo": heads.get("sudo", "no"),
        "machine": heads.get("machine", "unknown"),
        "os-release": "\n".join(sections.get("os-release", [])),
        "gpu": [line.strip() for line in sections.get("gpu", []) if line.strip()],
        "disk_path": heads.get("disk", "/"),
        "disk_available_kib": available,
        "curl": heads.get("curl") == "yes",
        "backup": heads.get("backup", ""),
        "cvat_tags": ([line.strip() for line in sections.get("cvat-tags", []) if line.strip()]
                      if heads.get("cvat-tags") == "checkout" else None),
        "firewall": [line.strip() for line in sections.get("firewall", []) if line.strip()],
    }


def timing_script(urls: list[tuple[str, str]]) -> str:
    """curl each URL from the host: one ranged GET (bytes 0-0), redirects followed, at most 10 s each."""
    lines = ["LC_ALL=C; export LC_ALL", 't=$(mktemp 2>/dev/null || echo /tmp/labforge-doctor.$$)']
    for index, (_, url) in enumerate(urls):
        lines.append(f"r=$(curl -sS -L -o /dev/null -r 0-0 --max-time {CURL_MAX_TIME} -w '%{{http_code}} %{{time_total}}' "
                     f'{shlex.quote(url)} 2>"$t"); rc=$?')
        lines.append(f'echo "@@url {index} $rc $r $(head -c 300 "$t" | tr "\\n" " ")"')
    lines += ['rm -f "$t"', 'echo "@@end"', ""]
    return "\n".join(lines)


def parse_timings(output: str, urls: list[tuple[str, str]]) -> list[Timing]:
    found: dict[int, Timing] = {}
    for line in output.splitlines():
        if not line.startswith("@@url "):
            continue
        parts = line[len("@@url "):].split(" ", 4)
        if len(parts) < 2 or not parts[0].isdigit() or int(parts[0]) >= len(urls):
            continue
        index = int(parts[0])
        rc = int(parts[1]) if parts[1].lstrip("-").isdigit() else 1
        code = parts[2] if len(parts) > 2 else "000"
        try:
            seconds = float(parts[3]) if len(parts) > 3 else None
        except ValueError:
            seconds = None
        error = parts[4].strip() if len(parts) > 4 else ""
        found[index] = Timing(urls[index][0], urls[index][1], rc, code, seconds, error)
    return [found.get(i, Timing(label, url, 1, "000", None, "no answer from the host")) for i, (label, url) in enumerate(urls)]




def reach_script(address: str, port: int) -> str:
    """Connect from the host to address:port with bash's /dev/tcp, whose error names the errno (curl's says "Couldn't
    connect" for a refusal and a missing route alike), then ask for /api/functions over HTTP. One `@@reach` line:
    `open <http code>`, `timeout`, or `error <bash's message>`."""
    connect = shlex.quote(f"exec 3<>/dev/tcp/{address}/{port}")
    url = shlex.quote(f"http://{address}:{port}/api/functions")
    return "\n".join([
        "LC_ALL=C; export LC_ALL",
        f"out=$(timeout 5 bash -c {connect} 2>&1); rc=$?",
        f'if [ $rc = 0 ]; then echo "@@reach open $(curl -s -o /dev/null --max-time 5 -w %{{http_code}} {url})"; '
        'elif [ $rc = 124 ]; then echo "@@reach timeout"; else echo "@@reach error $(echo "$out" | tail -n 1)"; fi',
        "",
    ])


def parse_reach(output: str) -> str:
    return next((line[len("@@reach "):].strip() for line in output.splitlines() if line.startswith("@@reach ")), "error")
