"""Check a real inventory before a run: one line per host, exit 1 if any host fails a check.

    ./lab doctor [--hosts-file hosts.yml] [--min-free-gib 40] [--slow-seconds 2] [--connect-timeout 5]
    python -m labforge.doctor ...            (the same, from the repository root)

For every host of the hosts file (the deploy's: LAB_HOSTS, else hosts.yml beside inventory.py) it checks, over SSH with the host's
ssh_user / ssh_port / ssh_key from that file (plain `ssh`, BatchMode and ConnectTimeout; paramiko
for entries with ssh_password):

- SSH reachable;
- root, or passwordless `sudo -n true`;
- the distro and architecture are supported (labforge.platform.detect on /etc/os-release, `uname -m`);
- gpu_servers: an NVIDIA display PCI device (labforge.facts.NvidiaGpuDevices' command), unless
  gpu_require_pci_device is false;
- free space where Docker keeps images (/var/lib/docker, or the nearest existing parent) is at
  least --min-free-gib;
- the upstreams (or mirrors) the deploy would download from answer, timed from the HOST with curl:
  Docker's key under docker_repo_url, nuctl_url, and on GPU hosts the toolkit key under
  nvidia_container_toolkit_repo_url and the cuda-keyring package under cuda_repo_url.

Variables are merged the way the deploy sees them: group_data/all.py, the group's file, the hosts
file's `vars:`, the host's `data:`. Slow upstreams only warn; everything else fails.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labforge import groupdata
from labforge.facts import NvidiaGpuDevices
from labforge.hostsfile import GROUPS, HostsFileError, load, resolve
from labforge.platform import Platform, UnsupportedHost, detect

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3
DEFAULT_MIN_FREE_GIB = 40.0
DEFAULT_SLOW_SECONDS = 2.0
DEFAULT_CONNECT_TIMEOUT = 5.0
CURL_MAX_TIME = 10
DOCKER_DIR = "/var/lib/docker"


# --- what the deploy would see --------------------------------------------------------------------------


def group_data(group: str, group_data_dir: Path = REPO / "group_data") -> dict[str, Any]:
    """Variables of group_data/all.py overridden by group_data/<group>.py (plain values only)."""
    return groupdata.load(group, group_data_dir)


@dataclass(frozen=True)
class Target:
    """One host of the hosts file with the data the deploy would use for it."""

    name: str
    group: str
    data: dict[str, Any]

    @property
    def address(self) -> str:
        return str(self.data.get("ssh_hostname") or self.name)

    @property
    def where(self) -> str:
        port = self.data.get("ssh_port")
        return f"{self.address}:{port}" if port and int(port) != 22 else self.address

    @property
    def gpu_layers(self) -> bool | None:
        """True/False as the deploy decides from `gpu`; None: follow the hardware."""
        value = self.data.get("gpu")
        return None if value is None else bool(value)


def targets(hosts_file: str | Path, group_data_dir: Path = REPO / "group_data") -> list[Target]:
    """Every host of the hosts file, in file order, with all.py < group file < vars < host data merged."""
    groups = load(hosts_file)
    defaults = {group: group_data(group, group_data_dir) for group in GROUPS}
    return [Target(name, group, {**defaults[group], **data}) for group in GROUPS for name, data in groups[group]]


# --- pure checks (unit-tested) --------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """/etc/os-release (shell-style KEY=value lines, optionally quoted) -> {KEY: value}."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if not key.replace("_", "").isalnum():
            continue
        try:
            words = shlex.split(value, comments=False, posix=True)
        except ValueError:  # unbalanced quotes: keep what is there
            words = [value.strip().strip("\"'")]
        values[key] = " ".join(words)
    return values


@dataclass
class Report:
    """What doctor found on one host: facts (fine), warnings (slow) and failures."""

    name: str
    where: str
    facts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "FAIL" if self.failures else "WARN" if self.warnings else "OK"

    def line(self) -> str:
        """`OK   gpu1 (192.168.1.15): ssh ok, root, ...`; problems first, then what was fine."""
        problems = "; ".join([*self.failures, *self.warnings])
        fine = ", ".join(self.facts)
        detail = "; ".join(part for part in (problems, fine) if part)
        return f"{self.status:<4} {self.name} ({self.where}): {detail}"


def check_sudo(section: str, user: str) -> tuple[bool, str]:
    if section == "root":
        return True, "root"
    if section == "yes":
        return True, f"passwordless sudo ({user}): run pyinfra with --sudo"
    return False, f"user '{user}' is not root and `sudo -n true` fails (the deploy needs root or passwordless sudo)"


def check_distro(release: dict[str, str], machine: str, name: str) -> tuple[Platform | None, str]:
    """(Platform, 'Ubuntu 24.04 amd64') or (None, 'unsupported distro ...') via labforge.platform.detect."""
    try:
        p = detect(release, machine, name)
    except UnsupportedHost as exc:
        text = str(exc).removeprefix(f"{name}: ").removesuffix(" Nothing was changed.").rstrip(".")
        return None, text
    return p, f"{p.distro.capitalize()} {p.version} {p.deb_arch}"


def check_gpu(devices: list[str], gpu_layers: bool | None, required: bool) -> tuple[bool, str | None]:
    """(ok, text); text None when there is nothing to say (CPU host)."""
    if gpu_layers is False:
        return True, None
    count = len(devices)
    if count:
        return True, f"GPU {count} device{'s' if count != 1 else ''}"
    if gpu_layers is None:
        return True, "no NVIDIA GPU (GPU layers skipped)"
    if not required:
        return True, "no NVIDIA GPU (not required: gpu_require_pci_device is false)"
    return False, "no NVIDIA GPU (PCI vendor 0x10de, class 0x03) on a GPU host; the deploy would refuse it"


def check_disk(available_kib: int, path: str, min_free_gib: float) -> tuple[bool, str]:
    """Free space where Docker keeps images against the threshold (whole GiB, rounded down)."""
    available = available_kib * 1024
    shown = available // GIB
    where = "" if path in ("/", "") else f" on {path}"
    if available >= min_free_gib * GIB:
        return True, f"{shown} GiB free{where}"
    return False, f"only {shown} GiB free{where} (need {min_free_gib:g} GiB for CVAT's images)"


def upstream_urls(data: dict[str, Any], p: Platform, gpu_layers: bool) -> list[tuple[str, str]]:
    """(label, URL) of the files the deploy downloads on this host, from the same variables."""
    urls = [("docker", f"{data.get('docker_repo_url')}/{p.distro}/gpg")]
    if gpu_layers:
        urls.append(("nvidia-container-toolkit", f"{data.get('nvidia_container_toolkit_repo_url')}/gpgkey"))
        urls.append(("cuda", f"{data.get('cuda_repo_url')}/{p.cuda_distro}/{p.cuda_arch}/"
                             f"cuda-keyring_{data.get('cuda_keyring_version')}_all.deb"))
    nuctl_url = data.get("nuctl_url")
    if nuctl_url:
        urls.append(("nuctl", str(nuctl_url).format(version=data.get("nuctl_version"), arch=p.deb_arch)))
    return urls


@dataclass(frozen=True)
class Timing:
    label: str
    url: str
    curl_rc: int
    http_code: str
    seconds: float | None
    error: str = ""


def check_upstreams(timings: list[Timing], slow_seconds: float) -> tuple[list[str], list[str], str | None]:
    """(failures, warnings, fact): unreachable or non-2xx fail; slower than slow_seconds warns."""
    failures, warnings = [], []
    for t in timings:
        if t.curl_rc != 0:
            failures.append(f"upstream {t.label} unreachable: {t.error or f'curl exit {t.curl_rc}'} ({t.url})")
        elif t.http_code not in ("200", "206"):
            failures.append(f"upstream {t.label} answered HTTP {t.http_code} ({t.url})")
        elif t.seconds is not None and t.seconds > slow_seconds:
            warnings.append(f"slow upstream {t.label} {t.seconds:.2f}s (> {slow_seconds:g}s) ({t.url})")
    times = [t.seconds for t in timings if t.seconds is not None and t.curl_rc == 0]
    fact = f"upstreams {max(times):.2f}s max" if times and not failures else None
    return failures, warnings, fact


# --- what runs on the host ------------------------------------------------------------------------------


def probe_script() -> str:
    """One shell script, sections marked `@@name value`; every command exits 0."""
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
        'echo "@@end"',
        "",
    ])


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


# --- SSH ------------------------------------------------------------------------------------------------


def _strict_option(value: Any) -> str:
    if value is False or str(value).lower() in ("off", "no", "false"):
        return "no"
    if value is True or str(value).lower() in ("yes", "true", "on"):
        return "yes"
    return str(value) if value else "accept-new"  # pyinfra's default


def ssh_command(target: Target, connect_timeout: float) -> list[str]:
    """`ssh` for a hosts-file entry: BatchMode (never prompts), ConnectTimeout, the entry's user/port/key."""
    data = target.data
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(connect_timeout))}",
           "-o", "LogLevel=ERROR", "-o", f"StrictHostKeyChecking={_strict_option(data.get('ssh_strict_host_key_checking'))}"]
    if data.get("ssh_known_hosts_file"):
        cmd += ["-o", f"UserKnownHostsFile={os.path.expanduser(str(data['ssh_known_hosts_file']))}"]
    if data.get("ssh_port"):
        cmd += ["-p", str(data["ssh_port"])]
    if data.get("ssh_key"):
        cmd += ["-i", os.path.expanduser(str(data["ssh_key"])), "-o", "IdentitiesOnly=yes"]
    if data.get("ssh_user"):
        cmd += ["-l", str(data["ssh_user"])]
    return [*cmd, target.address, "sh -s"]


@dataclass(frozen=True)
class RemoteResult:
    returncode: int
    stdout: str
    stderr: str


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_ssh(target: Target, script: str, connect_timeout: float, timeout: float) -> RemoteResult:
    try:
        proc = subprocess.run(ssh_command(target, connect_timeout), input=script, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return RemoteResult(255, "", f"no answer within {timeout:.0f}s")
    except FileNotFoundError:
        return RemoteResult(255, "", "the ssh client is not installed on this machine")
    return RemoteResult(proc.returncode, proc.stdout, proc.stderr)


def run_paramiko(target: Target, script: str, connect_timeout: float, timeout: float) -> RemoteResult:
    """For entries with ssh_password (BatchMode ssh cannot type a password)."""
    import paramiko

    data = target.data
    client = paramiko.SSHClient()
    known_hosts = data.get("ssh_known_hosts_file")
    try:
        if known_hosts and Path(os.path.expanduser(str(known_hosts))).exists():
            client.load_host_keys(os.path.expanduser(str(known_hosts)))
        else:
            client.load_system_host_keys()
        strict = _strict_option(data.get("ssh_strict_host_key_checking"))
        client.set_missing_host_key_policy(paramiko.RejectPolicy() if strict == "yes" else paramiko.AutoAddPolicy())
        client.connect(target.address, port=int(data.get("ssh_port") or 22), username=data.get("ssh_user"),
                       password=str(data["ssh_password"]),
                       key_filename=os.path.expanduser(str(data["ssh_key"])) if data.get("ssh_key") else None,
                       timeout=connect_timeout, banner_timeout=connect_timeout, auth_timeout=connect_timeout)
        stdin, stdout, stderr = client.exec_command("sh -s", timeout=timeout)
        stdin.write(script)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return RemoteResult(stdout.channel.recv_exit_status(), out, err)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return RemoteResult(255, "", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()


def run_remote(target: Target, script: str, connect_timeout: float, timeout: float) -> RemoteResult:
    runner = run_paramiko if target.data.get("ssh_password") else run_ssh
    return runner(target, script, connect_timeout, timeout)


# --- one host -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    min_free_gib: float = DEFAULT_MIN_FREE_GIB
    slow_seconds: float = DEFAULT_SLOW_SECONDS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


def check_host(target: Target, settings: Settings) -> Report:
    report = Report(target.name, target.where)
    result = run_remote(target, probe_script(), settings.connect_timeout, timeout=settings.connect_timeout + 30)
    probe = parse_probe(result.stdout)
    if result.returncode != 0 or not probe["complete"]:
        reason = _last_line(result.stderr) or f"exit status {result.returncode}"
        report.failures.append(f"ssh failed: {reason}")
        return report
    report.facts.append("ssh ok (password)" if target.data.get("ssh_password") else "ssh ok")

    ok, text = check_sudo(probe["sudo"], probe["user"])
    (report.facts if ok else report.failures).append(text)

    platform, text = check_distro(parse_os_release(probe["os-release"]), probe["machine"], target.name)
    (report.facts if platform else report.failures).append(text)

    ok, text = check_gpu(probe["gpu"], target.gpu_layers, bool(target.data.get("gpu_require_pci_device", True)))
    if text:
        (report.facts if ok else report.failures).append(text)

    if probe["disk_available_kib"] is None:
        report.failures.append(f"cannot read free space on {probe['disk_path']} (df)")
    else:
        ok, text = check_disk(probe["disk_available_kib"], probe["disk_path"], settings.min_free_gib)
        (report.facts if ok else report.failures).append(text)

    if platform is None:
        return report  # the URLs depend on the distro; nothing more to learn
    if not probe["curl"]:
        report.warnings.append("upstreams not timed: no curl on the host")
        return report
    gpu_layers = target.gpu_layers if target.gpu_layers is not None else bool(probe["gpu"])
    urls = upstream_urls(target.data, platform, gpu_layers)
    timed = run_remote(target, timing_script(urls), settings.connect_timeout,
                       timeout=settings.connect_timeout + CURL_MAX_TIME * len(urls) + 15)
    failures, warnings, fact = check_upstreams(parse_timings(timed.stdout, urls), settings.slow_seconds)
    report.failures += failures
    report.warnings += warnings
    if fact:
        report.facts.append(fact)
    return report


def check_all(hosts: list[Target], settings: Settings) -> list[Report]:
    """All hosts in parallel; reports in hosts-file order."""
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(hosts)))) as pool:
        return list(pool.map(lambda t: check_host(t, settings), hosts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts-file", default=None,
                        help="hosts file to check (default: the deploy's: $LAB_HOSTS, else hosts.yml beside inventory.py)")
    parser.add_argument("--min-free-gib", type=float, default=DEFAULT_MIN_FREE_GIB,
                        help=f"free space needed where Docker keeps images (default {DEFAULT_MIN_FREE_GIB:g})")
    parser.add_argument("--slow-seconds", type=float, default=DEFAULT_SLOW_SECONDS,
                        help=f"warn when an upstream takes longer than this (default {DEFAULT_SLOW_SECONDS:g})")
    parser.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT,
                        help=f"SSH connect timeout in seconds (default {DEFAULT_CONNECT_TIMEOUT:g})")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="check only this host (repeatable)")
    args = parser.parse_args(argv)
    try:
        args.hosts_file = resolve(args.hosts_file)
        if args.hosts_file is None:
            raise HostsFileError("no hosts file (LAB_HOSTS is unset and there is no hosts.yml), so the deploy would target "
                                 "the running Vagrant VM; doctor checks hosts files: write one for the VM (docs/ci.md, 'CI with Vagrant')")
        hosts = targets(args.hosts_file)
    except HostsFileError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 2
    if args.host:
        unknown = sorted(set(args.host) - {t.name for t in hosts})
        if unknown:
            print(f"doctor: {args.hosts_file}: no host named {', '.join(unknown)}", file=sys.stderr)
            return 2
        hosts = [t for t in hosts if t.name in args.host]
    reports = check_all(hosts, Settings(args.min_free_gib, args.slow_seconds, args.connect_timeout))
    for report in reports:
        print(report.line(), flush=True)
    failed = [r.name for r in reports if r.status == "FAIL"]
    warned = [r.name for r in reports if r.status == "WARN"]
    print(f"doctor: {len(reports)} hosts, {len(failed)} failed, {len(warned)} with warnings", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
