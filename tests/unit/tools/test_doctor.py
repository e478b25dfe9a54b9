"""`./lab doctor`'s pure parts: os-release parsing, the checks, the probe parsers, the line format, the merge."""

import datetime
import http.server
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from labforge import exposure, tls
from labforge.platform import Platform
from labforge.tools import doctor
from labforge.tools.doctor import checks, probes, remote
from tests.unit.test_tls import NAMES, issued

NOBLE = """PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
"""
FOCAL = 'NAME="Ubuntu"\nVERSION_ID="20.04"\nID=ubuntu\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n'
NOBLE_X86 = Platform("ubuntu", "24.04", "noble", "x86_64", "amd64", "x86_64")


# --- os-release ---------------------------------------------------------------------------------


def test_os_release_quoted_and_bare_values():
    release = checks.parse_os_release(NOBLE)
    assert release["ID"] == "ubuntu" and release["VERSION_ID"] == "24.04"
    assert release["PRETTY_NAME"] == "Ubuntu 24.04.1 LTS"
    assert release["VERSION"] == "24.04.1 LTS (Noble Numbat)"


def test_os_release_comments_blank_lines_single_quotes_and_escapes():
    text = "# comment\n\nID='debian'\nVERSION_ID=12\nNAME=\"A \\\"quoted\\\" name\"\n  BROKEN=\"unbalanced\nnot a line\n"
    release = checks.parse_os_release(text)
    assert release == {"ID": "debian", "VERSION_ID": "12", "NAME": 'A "quoted" name', "BROKEN": "unbalanced"}


def test_os_release_feeds_platform_detect():
    p, text = checks.check_distro(checks.parse_os_release(NOBLE), "x86_64", "gpu1")
    assert p == NOBLE_X86 and text == "Ubuntu 24.04 amd64"
    p, text = checks.check_distro(checks.parse_os_release("ID=debian\nVERSION_ID=\"12\"\n"), "aarch64", "h")
    assert p.cuda_arch == "sbsa" and text == "Debian 12 arm64"


def test_unsupported_distro_and_arch_are_one_line_without_host_prefix():
    p, text = checks.check_distro(checks.parse_os_release(FOCAL), "x86_64", "gpu2")
    assert p is None
    assert text.startswith("unsupported distro 'Ubuntu 20.04.6 LTS'; labforge supports Ubuntu 22.04")
    assert "gpu2" not in text and "Nothing was changed" not in text
    p, text = checks.check_distro(checks.parse_os_release(NOBLE), "riscv64", "gpu3")
    assert p is None and text.startswith("unsupported architecture 'riscv64'")


# --- disk ---------------------------------------------------------------------------------------


def test_disk_threshold_is_inclusive_and_rounds_down():
    gib_kib = 1024 * 1024
    assert checks.check_disk(40 * gib_kib, "/", 40) == (True, "40 GiB free")
    assert checks.check_disk(40 * gib_kib - 1, "/", 40) == (False, "only 39 GiB free (need 40 GiB for CVAT's images)")
    assert checks.check_disk(120 * gib_kib + 5, "/var/lib/docker", 40) == (True, "120 GiB free on /var/lib/docker")
    assert checks.check_disk(3 * gib_kib, "/var/lib", 2.5) == (True, "3 GiB free on /var/lib")
    assert checks.check_disk(2 * gib_kib, "/", 2.5)[0] is False


# --- sudo, GPU, upstreams -----------------------------------------------------------------------


def test_sudo():
    assert checks.check_sudo("root", "root") == (True, "root")
    assert checks.check_sudo("yes", "ubuntu") == (True, "passwordless sudo (ubuntu): run pyinfra with --sudo")
    ok, text = checks.check_sudo("no", "ubuntu")
    assert not ok and "'ubuntu'" in text and "sudo -n true" in text


def test_gpu():
    assert checks.check_gpu(["0000:01:00.0"], True, True) == (True, "GPU 1 device")
    assert checks.check_gpu(["0000:01:00.0", "0000:02:00.0"], True, True) == (True, "GPU 2 devices")
    assert checks.check_gpu([], False, True) == (True, None)  # CPU host: nothing to say
    assert checks.check_gpu([], True, False) == (True, "no NVIDIA GPU (not required: gpu_require_pci_device is false)")
    assert checks.check_gpu([], None, True) == (True, "no NVIDIA GPU (GPU layers skipped)")
    ok, text = checks.check_gpu([], True, True)
    assert not ok and text.startswith("no NVIDIA GPU") and "refuse" in text


def test_upstream_urls_follow_the_deploys_variables():
    data = {**remote.group_data("gpu_servers"), "cvat_version": "v2.51.0"}
    urls = dict(checks.upstream_urls(data, NOBLE_X86, gpu_layers=True))
    keyring, nuctl = data["cuda_keyring_version"], "1.13.23"  # cvat_stack_compat's for v2.51.0
    assert urls == {
        "docker": "https://download.docker.com/linux/ubuntu/gpg",
        "nvidia-container-toolkit": "https://nvidia.github.io/libnvidia-container/gpgkey",
        "cuda": f"https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_{keyring}_all.deb",
        "nuctl": f"https://github.com/nuclio/nuclio/releases/download/{nuctl}/nuctl-{nuctl}-linux-amd64",
    }
    cpu = [label for label, _ in checks.upstream_urls(data, NOBLE_X86, gpu_layers=False)]
    assert cpu == ["docker", "nuctl"]
    mirrored = dict(checks.upstream_urls({**data, "docker_repo_url": "http://mirror.lab/docker"}, NOBLE_X86, False))
    assert mirrored["docker"] == "http://mirror.lab/docker/ubuntu/gpg"


def test_upstreams_ok_slow_and_failed():
    fast = checks.Timing("docker", "u1", 0, "200", 0.21)
    ranged = checks.Timing("nuctl", "u2", 0, "206", 0.05)
    assert checks.check_upstreams([fast, ranged], 2) == ([], [], "upstreams 0.21s max")
    slow = checks.Timing("cuda", "u3", 0, "200", 3.5)
    failures, warnings, fact = checks.check_upstreams([fast, slow], 2)
    assert failures == [] and warnings == ["slow upstream cuda 3.50s (> 2s) (u3)"] and fact == "upstreams 3.50s max"
    missing = checks.Timing("nuctl", "u4", 0, "404", 0.1)
    down = checks.Timing("docker", "u5", 7, "000", 0.0, "curl: (7) Failed to connect")
    failures, _, fact = checks.check_upstreams([missing, down], 2)
    assert failures == ["upstream nuctl answered HTTP 404 (u4)", "upstream docker unreachable: curl: (7) Failed to connect (u5)"]
    assert fact is None


# --- the host's answers -------------------------------------------------------------------------


def test_parse_probe_sections():
    out = ("@@user ubuntu\n@@sudo yes\n@@machine x86_64\n@@os-release\n" + NOBLE + "@@gpu\n0000:01:00.0\n\n"
           "@@disk /var/lib\n/dev/sda1 102400000 1000 52428800 2% /\n@@curl yes\n@@end\n")
    probe = probes.parse_probe(out)
    assert probe["complete"] and probe["user"] == "ubuntu" and probe["sudo"] == "yes"
    assert checks.parse_os_release(probe["os-release"])["VERSION_ID"] == "24.04"
    assert probe["gpu"] == ["0000:01:00.0"]
    assert (probe["disk_path"], probe["disk_available_kib"], probe["curl"]) == ("/var/lib", 52428800, True)
    truncated = probes.parse_probe("@@user root\n@@sudo root\n")
    assert not truncated["complete"] and truncated["disk_available_kib"] is None


def test_probe_script_reuses_the_gpu_fact_command():
    from labforge.facts import NvidiaGpuDevices

    script = probes.probe_script()
    assert NvidiaGpuDevices().command() in script and "sudo -n true" in script and "/var/lib/docker" in script


def test_timing_script_quotes_urls_and_parse_timings():
    urls = [("docker", "http://127.0.0.1:1/a b"), ("nuctl", "http://127.0.0.1:1/n")]
    script = probes.timing_script(urls)
    assert "'http://127.0.0.1:1/a b'" in script and "--max-time 10" in script
    out = "@@url 0 0 200 0.012345 \n@@url 1 7 000 0.000912 curl: (7) Failed to connect to 127.0.0.1 port 1 \n@@end\n"
    docker, nuctl = probes.parse_timings(out, urls)
    assert (docker.curl_rc, docker.http_code, docker.seconds) == (0, "200", 0.012345)
    assert nuctl.curl_rc == 7 and nuctl.error.startswith("curl: (7) Failed to connect")
    (lost,) = probes.parse_timings("", urls[:1])
    assert lost.curl_rc != 0 and lost.error == "no answer from the host"


# --- the line -----------------------------------------------------------------------------------


def test_line_format():
    ok = checks.Report("gpu1", "192.168.1.15", facts=["ssh ok", "root", "Ubuntu 24.04 amd64", "GPU 1 device",
                                                       "120 GiB free", "upstreams 0.21s max"])
    assert ok.line() == ("OK   gpu1 (192.168.1.15): ssh ok, root, Ubuntu 24.04 amd64, GPU 1 device, 120 GiB free, "
                         "upstreams 0.21s max")
    warn = checks.Report("cpu1", "10.0.0.2", facts=["ssh ok"], warnings=["slow upstream nuctl 3.00s (> 2s) (u)"])
    assert warn.status == "WARN" and warn.line() == "WARN cpu1 (10.0.0.2): slow upstream nuctl 3.00s (> 2s) (u); ssh ok"
    fail = checks.Report("gpu2", "10.0.0.3:2222", facts=["ssh ok", "root"], failures=["unsupported distro 'Ubuntu 20.04.6 LTS'"],
                         warnings=["w"])
    assert fail.status == "FAIL"
    assert fail.line() == "FAIL gpu2 (10.0.0.3:2222): unsupported distro 'Ubuntu 20.04.6 LTS'; w; ssh ok, root"
    gone = checks.Report("gone", "127.0.0.59:2222", failures=["ssh failed: Connection refused"])
    assert gone.line() == "FAIL gone (127.0.0.59:2222): ssh failed: Connection refused"


# --- the inventory ------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_targets_merge_like_the_deploy(tmp_path):
    hosts = write(tmp_path / "hosts.yml", """
vars: {docker_repo_url: "http://mirror.lab/docker", nuctl_version: "9.9.9"}
gpu_servers:
  - host: 192.168.1.15
    name: gpu1
    ssh_user: ubuntu
    ssh_port: 2222
    data: {nuctl_version: "1.0.0", gpu_require_pci_device: false}
cpu_servers:
  - 192.168.1.20
""")
    gpu1, cpu = remote.targets(hosts)
    assert (gpu1.name, gpu1.group, gpu1.address, gpu1.where) == ("gpu1", "gpu_servers", "192.168.1.15", "192.168.1.15:2222")
    assert gpu1.gpu_layers is True and gpu1.data["gpu_require_pci_device"] is False
    assert gpu1.data["nuctl_version"] == "1.0.0"  # host data beats vars
    assert gpu1.data["docker_repo_url"] == "http://mirror.lab/docker"  # vars beat all.py
    assert gpu1.data["cuda_repo_url"].startswith("https://developer.download.nvidia.com")  # all.py default
    assert (cpu.name, cpu.where, cpu.gpu_layers, cpu.data["nuctl_version"]) == ("192.168.1.20", "192.168.1.20", False, "9.9.9")


def test_ssh_command_never_prompts_and_uses_the_entry(tmp_path):
    target = remote.Target("gpu1", "gpu_servers", {"ssh_hostname": "10.0.0.5", "ssh_user": "ubuntu", "ssh_port": 2222,
                                                   "ssh_key": "~/.ssh/lab", "ssh_strict_host_key_checking": "off",
                                                   "ssh_known_hosts_file": "/tmp/kh"})
    cmd = remote.ssh_command(target, connect_timeout=5)
    joined = " ".join(cmd)
    assert cmd[0] == "ssh" and cmd[-2:] == ["10.0.0.5", "sh -s"]
    for part in ("BatchMode=yes", "ConnectTimeout=5", "StrictHostKeyChecking=no", "UserKnownHostsFile=/tmp/kh",
                 "-p 2222", "-l ubuntu", f"-i {Path('~/.ssh/lab').expanduser()}"):
        assert part in joined
    bare = " ".join(remote.ssh_command(remote.Target("h", "cpu_servers", {"ssh_hostname": "h"}), 3))
    assert "StrictHostKeyChecking=accept-new" in bare and "-p" not in bare.split() and "-l" not in bare.split()
    # YAML 1.1 reads a bare `off` as False
    assert remote._strict_option(False) == "no" and remote._strict_option("yes") == "yes"


def test_main_bad_hosts_file_exits_2(tmp_path, capsys):
    assert doctor.main(["--hosts-file", str(tmp_path / "missing.yml")]) == 2
    assert "cannot read hosts file" in capsys.readouterr().err
    hosts = write(tmp_path / "h.yml", "cpu_servers: [10.0.0.1]\n")
    assert doctor.main(["--hosts-file", str(hosts), "--host", "nope"]) == 2
    assert "no host named nope" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--min-free-gib", "x"], ["--slow-seconds", "-"]])
def test_main_rejects_bad_numbers(argv):
    with pytest.raises(SystemExit):
        doctor.main(argv)


def test_the_last_backup_is_reported():
    assert checks.check_backup("") == (True, None)
    ok = '{"result": "ok", "name": "cvat-20261201T020000Z", "at": "2026-12-01T02:00:09Z", "bytes": 5, "cvat_down_seconds": 3.1}'
    assert checks.check_backup(ok) == (True, "last backup cvat-20261201T020000Z at 2026-12-01T02:00:09Z ok")
    failed, text = checks.check_backup('{"result": "failed", "name": "cvat-20261202T020000Z", "at": "2026-12-02T02:00:01Z"}')
    assert not failed and "FAILED" in text and "cvat-20261202T020000Z" in text
    probe = probes.parse_probe("@@user root\n@@backup " + ok + "\n@@end\n")
    assert checks.check_backup(probe["backup"])[1].startswith("last backup cvat-20261201T020000Z")


def test_a_backup_too_old_for_its_schedule_is_a_warning():
    """Seen failing before: the doctor read only the last result, never its age, so a dead timer looked healthy."""
    last = ('{"result": "ok", "name": "cvat-20261201T020000000Z", "at": "2026-12-01T02:00:09Z", '
            '"last_good": {"name": "cvat-20261201T020000000Z", "at": "2026-12-01T02:00:09Z"}, "schedule_period_seconds": 86400}')
    day = datetime.datetime(2026, 12, 2, 3, 0, tzinfo=datetime.timezone.utc)
    assert checks.check_backup(last, now=day)[0] is True
    ok, text = checks.check_backup(last, now=day + datetime.timedelta(days=3))
    assert not ok and "h old, the schedule runs every 24.0 h" in text, text
    failed = json.loads(last) | {"result": "failed", "name": "cvat-20261204T020000000Z", "why": "not enough free space"}
    ok, text = checks.check_backup(json.dumps(failed), now=day + datetime.timedelta(days=3))
    assert not ok and "not enough free space" in text and "h old" in text


def test_a_split_labs_reach_to_the_dashboard_from_real_sockets():
    """probes.reach_script run here, against a listening HTTP server and a closed port on loopback (no route and a
    dropping firewall: tests/lab/test_split_lab.py, with the inference host stopped)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Functions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, never listening: connections are refused
    try:
        answers = {name: probes.parse_reach(subprocess.run(["sh", "-c", probes.reach_script(address, port)],
                                                           capture_output=True, text=True, timeout=30).stdout)
                   for name, (address, port) in {"up": ("127.0.0.1", server.server_address[1]),
                                                 "closed": ("127.0.0.1", closed_port)}.items()}
    finally:
        server.shutdown()
        closed.close()
    assert answers["up"] == "open 200"
    assert checks.check_dashboard(answers["up"], "gpu1", "http://a:8070") == ("ok", "reaches gpu1's Nuclio dashboard (http://a:8070)")
    verdict, line = checks.check_dashboard(answers["closed"], "gpu1", "http://a:8070")
    assert verdict == "warn" and line.startswith("nothing answers at http://a:8070 yet: gpu1's first converge"), answers
    for answer, why in (("timeout", "no answer within 5 s"), ("error bash: connect: No route to host", "bash: connect: No route to host")):
        assert checks.check_dashboard(answer, "gpu1", "http://a:8070") == (
            "fail", f"cannot reach gpu1's Nuclio dashboard at http://a:8070 ({why}): this host needs a route to it, and gpu1 "
                    "must let this host's address in")
    assert checks.dashboard_address({"inference_address": "192.0.2.20"}) == ("192.0.2.20", 8070)


class Functions(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/functions" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


# --- the firewall (labforge/exposure.py): active, first in each chain, or why Docker is down -----------------------

FIRST = [f"first {family} {chain} -A {chain} -j {target}" for version, family in ((4, "iptables"), (6, "ip6tables"))
         for chain, target in exposure.jumps(version)]


def test_the_firewall_active_and_first_everywhere_is_a_fact():
    ok, line = checks.check_firewall(["unit active", "why ", "ipv6 on", *FIRST])
    assert ok and line == "firewall active, first in DOCKER-USER, INPUT, OUTPUT (IPv4 and IPv6)", line
    assert checks.check_firewall([]) == (True, None)  # no labforge firewall on this host yet


def test_a_failed_firewall_says_docker_is_down_and_why():
    ok, line = checks.check_firewall(["unit failed", "why ip6tables-restore: line 3 failed", "ipv6 on", *FIRST])
    assert not ok
    assert line == (f"{exposure.FIREWALL_UNIT} is failed, so Docker does not start (it Requires= the rules): "
                    "ip6tables-restore: line 3 failed")


def test_a_rule_put_before_labforges_is_a_failure_naming_the_chain():
    moved = [line if "ip6tables INPUT" not in line else "first ip6tables INPUT -A INPUT -j ACCEPT" for line in FIRST]
    ok, line = checks.check_firewall(["unit active", "why ", "ipv6 on", *moved])
    assert not ok and "not first in ip6tables INPUT" in line, line
    ok, _ = checks.check_firewall(["unit active", "why ", "ipv6 off", *moved])
    assert ok  # no IPv6 in the kernel: nothing to lead there


def test_the_served_certificate_from_outside(tmp_path):
    """What the doctor says of the certificate CVAT serves: a real one issued by the host's renewal program."""
    ca = tls.lab_ca(tmp_path / "lab-ca", names=NAMES)
    _, cert_pem, _ = issued(tmp_path, ca, "cvat.lab")
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    verdict, line = checks.check_served_certificate(der, None, "cvat.lab", 30)
    assert verdict == "ok" and line.startswith("TLS certificate served for cvat.lab valid until "), line
    assert checks.check_served_certificate(der, None, "other.lab", 30) == (
        "fail", "the certificate served is not valid for other.lab")
    verdict, line = checks.check_served_certificate(None, "Connection refused", "cvat.lab", 30)
    assert verdict == "warn" and "no TLS answer on 443 for cvat.lab from here (Connection refused)" in line


def run_probe(cvat_dir) -> dict:
    """The probe script run for real by sh on this machine (every command of it exits 0), parsed."""
    done = subprocess.run(["sh", "-c", probes.probe_script(str(cvat_dir))], capture_output=True, text=True, timeout=60)
    return probes.parse_probe(done.stdout)


def git_checkout(path, *tags: str) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(path)]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "release"], check=True)
    for tag in tags:
        subprocess.run([*git, "tag", tag], check=True)


def test_the_release_the_deploy_would_run_is_read_from_the_hosts_checkout(tmp_path):
    """cvat_version unset: a host at v2.51.0 stays there and is warned of what it lacks; a host without CVAT would
    start on v2.73.0, whose nuctl the upstream check then times; a checkout at no release of the table fails."""
    data = remote.group_data("gpu_servers")
    old = tmp_path / "old"
    git_checkout(old, "v2.51.0")
    probe = run_probe(old)
    assert probe["complete"] and probe["cvat_tags"] == ["v2.51.0"]
    release, failures, warnings = checks.check_release(data, probe["cvat_tags"])
    assert (release, failures) == ("v2.51.0", []) and len(warnings) == 1
    assert warnings[0].startswith("CVAT v2.51.0 (its checkout's release; cvat_version is unset) lacks 11 security fixes")

    fresh = run_probe(tmp_path / "none")
    assert fresh["cvat_tags"] is None
    assert checks.check_release(data, fresh["cvat_tags"]) == ("v2.73.0", [], [])
    nuctl = dict(checks.upstream_urls({**data, "cvat_version": "v2.73.0"}, NOBLE_X86, gpu_layers=False))["nuctl"]
    assert nuctl.endswith("/1.16.3/nuctl-1.16.3-linux-amd64")

    odd = tmp_path / "odd"
    git_checkout(odd)
    release, failures, _ = checks.check_release(data, run_probe(odd)["cvat_tags"])
    assert release is None and failures[0].startswith("cvat_version is unset and the CVAT checkout /opt/cvat is at a commit")
    assert checks.check_release({**data, "cvat_version": "v2.73.0"}, ["v2.51.0"]) == ("v2.73.0", [], [])
