"""The doctor's judgements: pure functions of what a host reported (unit-tested), each one line."""

from __future__ import annotations

import datetime
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from labforge import compat, exposure, releases, split
from labforge.data_program import staleness
from labforge.platform import Platform, UnsupportedHost, detect

GIB = 1024**3

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
        return None, exc.reason
    return p, f"{p.distro.capitalize()} {p.version} {p.deb_arch}"


def check_backup(last: str, now: datetime.datetime | None = None) -> tuple[bool, str | None]:
    """The last backup's result (labforge.backups.LAST_RESULT, written by every backup, scheduled or not): its age
    against the schedule it was taken under (labforge.data_program.staleness), a warning when it failed or the last
    good one is too old, nothing when no backup ran yet."""
    if not last.strip():
        return True, None
    try:
        result = json.loads(last)
    except ValueError:
        return False, "the last backup's result file is unreadable"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    good = result.get("last_good") or ({"name": result.get("name"), "at": result.get("at")} if result.get("result") == "ok" else {})
    age = None
    if good.get("at"):
        at = datetime.datetime.strptime(good["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
        age = (now - at).total_seconds()
    stale = staleness(age, result.get("schedule_period_seconds"))
    if result.get("result") != "ok":
        why = result.get("why") or "see journalctl -u labforge-backup"
        return False, f"the last backup ({result.get('name')}, {result.get('at')}) FAILED: {why}" + (f"; {stale}" if stale else "")
    if stale:
        return False, f"{stale} (last good: {good.get('name')}): is labforge-backup.timer running? journalctl -u labforge-backup"
    return True, f"last backup {result.get('name')} at {result.get('at')} ok"


def check_firewall(lines: list[str]) -> tuple[bool, str | None]:
    """labforge's firewall (labforge/exposure.py), where a converge installed it: the unit active, and each of its
    chains the first rule of the chain it must lead, in both families. Docker Requires= the unit, so a failed unit
    is also why Docker is down: the line says so, with the unit's last log line."""
    if not lines:
        return True, None
    fields = {}
    firsts = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if key == "first":
            family, chain, rule = [*value.split(" ", 2), "", ""][:3]
            firsts[(family, chain)] = rule
        else:
            fields[key] = value
    if fields.get("unit") != "active":
        why = fields.get("why") or "journalctl -u labforge-firewall says why"
        return False, (f"{exposure.FIREWALL_UNIT} is {fields.get('unit') or 'not active'}, so Docker does not start "
                       f"(it Requires= the rules): {why}")
    wanted = [(family, chain, target) for version, family in ((4, "iptables"), (6, "ip6tables"))
              if version == 4 or fields.get("ipv6") == "on" for chain, target in exposure.jumps(version)]
    if all(not rule for rule in firsts.values()):
        return True, "firewall active (its chains not read: no root)"
    missing = [f"{family} {chain}" for family, chain, target in wanted if firsts.get((family, chain)) != f"-A {chain} -j {target}"]
    if missing:
        return False, f"labforge's rules are not first in {', '.join(missing)}: converge again (systemctl restart {exposure.FIREWALL_UNIT})"
    return True, "firewall active, first in " + ", ".join(sorted({chain for _, chain, _ in wanted})) + \
        (" (IPv4 and IPv6)" if fields.get("ipv6") == "on" else " (IPv4; IPv6 off)")


def check_served_certificate(der: bytes | None, error: str | None, name: str, renew_days: int) -> tuple[str, str]:
    """The certificate CVAT serves on 443, as a browser on the control machine's network gets it: (verdict, line).
    Nothing answering only warns (the first converge starts CVAT)."""
    from cryptography import x509

    from labforge import tls

    if der is None:
        return "warn", f"no TLS answer on 443 for {name} from here ({error}): CVAT is not up yet, or this machine is not allowed"
    problem = tls.served_problem(x509.load_der_x509_certificate(der), name, renew_days)
    if problem:
        return "fail", problem
    cert = x509.load_der_x509_certificate(der)
    return "ok", f"TLS certificate served for {name} valid until {cert.not_valid_after_utc:%Y-%m-%d}"


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


def check_release(data: dict[str, Any], tags: list[str] | None) -> tuple[str | None, list[str], list[str]]:
    """The CVAT release the deploy would settle on (labforge/releases.py) from the checkout's tags the probe read:
    (release or None, failures, warnings); a warning names the security fixes an older release lacks."""
    table, setting = data.get("cvat_stack_compat") or {}, data.get("cvat_version")
    try:
        release = releases.resolve(setting, tags, table, str(data.get("cvat_dir")))
    except releases.ReleaseUnknown as exc:
        return None, [str(exc)], []
    if release not in table:
        return release, [], []  # the deploy refuses it while planning, with its own line
    lag = releases.lag_notice(release, table, data.get("cvat_security_fixes"), chosen=bool(setting))
    return release, [], [lag] if lag else []


def upstream_urls(data: dict[str, Any], p: Platform, gpu_layers: bool) -> list[tuple[str, str]]:
    """(label, URL) of the files the deploy downloads on this host, from the same variables."""
    urls = [("docker", f"{data.get('docker_repo_url')}/{p.distro}/gpg")]
    if gpu_layers:
        urls.append(("nvidia-container-toolkit", f"{data.get('nvidia_container_toolkit_repo_url')}/gpgkey"))
        urls.append(("cuda", f"{data.get('cuda_repo_url')}/{p.cuda_distro}/{p.cuda_arch}/"
                             f"cuda-keyring_{data.get('cuda_keyring_version')}_all.deb"))
    nuctl_url = data.get("nuctl_url")
    try:
        nuctl = compat.nuctl_version(data)
    except compat.Incompatible:  # the deploy refuses this pair while planning, with its own line
        nuctl = None
    if nuctl_url and nuctl:
        urls.append(("nuctl", str(nuctl_url).format(version=nuctl, arch=p.deb_arch)))
    return urls


@dataclass(frozen=True)
class Timing:
    label: str
    url: str
    curl_rc: int
    http_code: str
    seconds: float | None
    error: str = ""


def dashboard_address(data: dict[str, Any]) -> tuple[str, int]:
    """What a split lab's CVAT host calls: its inference host's Nuclio dashboard (labforge/split.py)."""
    return str(data.get("inference_address")), split.DASHBOARD_PORT


def check_dashboard(reach: str, inference_host: str, where: str) -> tuple[str, str]:
    """("ok" | "warn" | "fail", line) for the CVAT host's reach to its inference host's dashboard (probes.reach_script's
    answer). A refused connection means the host is there and nothing listens yet (its first converge starts the
    dashboard); no answer, or no route, means this host cannot get there, or a firewall drops its address."""
    state, _, detail = reach.partition(" ")
    if state == "open" and detail == "200":
        return "ok", f"reaches {inference_host}'s Nuclio dashboard ({where})"
    if state == "open":
        return "warn", f"{inference_host}'s Nuclio dashboard at {where} answered HTTP {detail or '?'}"
    if state == "error" and "connection refused" in detail.lower():
        return "warn", (f"nothing answers at {where} yet: {inference_host}'s first converge starts its Nuclio dashboard "
                        "(after one, check `docker ps` there)")
    why = "no answer within 5 s" if state == "timeout" else (detail.strip() or "no answer from the host")
    return "fail", (f"cannot reach {inference_host}'s Nuclio dashboard at {where} ({why}): this host needs a route to it, "
                    f"and {inference_host} must let this host's address in")


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


