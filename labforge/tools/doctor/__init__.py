"""The doctor: check a real inventory before a run: one line per host, exit 1 if any host fails a check.

    ./lab doctor [--hosts-file hosts.yml] [--min-free-gib 40] [--slow-seconds 2] [--connect-timeout 5]
    python -m labforge.tools.doctor ...      (the same, from the repository root)

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
  nvidia_container_toolkit_repo_url and the cuda-keyring package under cuda_repo_url;
- the CVAT release the deploy would run (cvat_version, else the release of the checkout at cvat_dir, else the newest
  row): a checkout at no release of the table fails, an older release than the newest warns with the security fixes
  it lacks (labforge/releases.py);
- a split lab's CVAT host reaches its inference host's Nuclio dashboard (port 8070), from the CVAT host: no answer
  fails, a refused connection only warns (the inference host's first converge starts the dashboard).

Variables are merged the way the deploy sees them: group_data/all.py, the group's file, the hosts
file's `vars:`, the host's `data:`. Slow upstreams only warn; everything else fails.

Its parts: checks.py (pure judgements of what a host reported), probes.py (the scripts that run on the host and
their parsers), remote.py (the targets from the hosts file, and SSH or paramiko to reach them).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from labforge import split
from labforge.hostsfile import HostsFileError, resolve
from labforge.tools.doctor.checks import (
    Report,
    check_backup,
    check_dashboard,
    check_disk,
    check_distro,
    check_firewall,
    check_gpu,
    check_release,
    check_served_certificate,
    check_sudo,
    check_upstreams,
    dashboard_address,
    parse_os_release,
    upstream_urls,
)
from labforge.tools.doctor.probes import (
    CURL_MAX_TIME,
    parse_probe,
    parse_reach,
    parse_timings,
    probe_script,
    reach_script,
    timing_script,
)
from labforge.tools.doctor.remote import Target, _last_line, run_remote, targets

DEFAULT_MIN_FREE_GIB = 40.0
DEFAULT_SLOW_SECONDS = 2.0
DEFAULT_CONNECT_TIMEOUT = 5.0

@dataclass(frozen=True)
class Settings:
    min_free_gib: float = DEFAULT_MIN_FREE_GIB
    slow_seconds: float = DEFAULT_SLOW_SECONDS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


def check_host(target: Target, settings: Settings) -> Report:
    report = Report(target.name, target.where)
    script = probe_script(str(target.data.get("cvat_dir") or "/opt/cvat"))
    result = run_remote(target, script, settings.connect_timeout, timeout=settings.connect_timeout + 30)
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

    ok, text = check_backup(probe["backup"])
    if text:
        (report.facts if ok else report.warnings).append(text)
    ok, text = check_firewall(probe["firewall"])
    if text:
        (report.facts if ok else report.failures).append(text)
    release, failures, warnings = check_release(target.data, probe["cvat_tags"])
    report.failures += failures
    report.warnings += warnings
    if release:
        report.facts.append(f"CVAT {release}")

    if platform is None:
        return report  # the URLs depend on the distro; nothing more to learn
    if not probe["curl"]:
        report.warnings.append("upstreams not timed: no curl on the host")
        return report
    gpu_layers = target.gpu_layers if target.gpu_layers is not None else bool(probe["gpu"])
    urls = upstream_urls({**target.data, "cvat_version": release}, platform, gpu_layers)
    timed = run_remote(target, timing_script(urls), settings.connect_timeout,
                       timeout=settings.connect_timeout + CURL_MAX_TIME * len(urls) + 15)
    failures, warnings, fact = check_upstreams(parse_timings(timed.stdout, urls), settings.slow_seconds)
    report.failures += failures
    report.warnings += warnings
    if fact:
        report.facts.append(fact)
    if target.data.get("cvat_tls", "off") != "off" and target.data.get("cvat_start") and split.role(target.data) != "inference":
        name = str(target.data.get("cvat_host") or target.address)
        der, error = served_certificate(target.address, name, settings.connect_timeout)
        verdict, text = check_served_certificate(der, error, name, int(target.data.get("cvat_tls_renew_days") or 30))
        {"ok": report.facts, "warn": report.warnings, "fail": report.failures}[verdict].append(text)
    if split.role(target.data) == "cvat":  # a split lab: CVAT calls its inference host's dashboard
        address, port = dashboard_address(target.data)
        answer = run_remote(target, reach_script(address, port), settings.connect_timeout, timeout=settings.connect_timeout + 20)
        verdict, text = check_dashboard(parse_reach(answer.stdout), str(target.data.get("inference_host")),
                                        f"http://{address}:{port}")
        {"ok": report.facts, "warn": report.warnings, "fail": report.failures}[verdict].append(text)
    return report


def served_certificate(address: str, name: str, timeout: float) -> tuple[bytes | None, str | None]:
    """The certificate the host serves on 443 for `name` (SNI), unverified: the check judges it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, 443), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=name) as conn:
            return conn.getpeercert(binary_form=True), None
    except OSError as exc:
        return None, str(exc) or type(exc).__name__


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

