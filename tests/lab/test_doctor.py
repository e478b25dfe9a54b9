"""`./lab doctor` against real lab hosts: a healthy one, one with Ubuntu 20.04's os-release, one nobody answers on.

The upstream timing only ever reaches the stand-in mirror on 127.0.0.1: the lab hosts file's vars
point every URL variable at it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labforge import groupdata, releases
from testlab import labhosts, runner
from tests.lab.conftest import TEST_LAB_DIR

FOCAL_OS_RELEASE = 'NAME="Ubuntu"\nVERSION_ID="20.04"\nID=ubuntu\nVERSION_CODENAME=focal\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n'
LINE = re.compile(r"^(OK|WARN|FAIL) +(\S+) \(([^)]*)\): (.*)$")


@pytest.fixture(scope="module")
def ok_host(boot_host):
    return boot_host("doctor-ok", "127.0.0.41")


@pytest.fixture(scope="module")
def focal_host(boot_host):
    return boot_host("doctor-focal", "127.0.0.42", os_release=FOCAL_OS_RELEASE)


NEWEST = releases.newest(groupdata.load()["cvat_stack_compat"])  # where a host without CVAT starts
GONE = labhosts.LabHost("doctor-gone", "127.0.0.59")  # never booted: nothing listens on 127.0.0.59:2222


def hosts_yml(name: str, hosts, mirror, group: str = "gpu_servers", entry: dict | None = None, **extra_vars) -> Path:
    """The lab's hosts file (URLs on the stand-in mirror), optionally with changed host entries. cvat_version unset,
    as a new lab's: these hosts have no CVAT checkout, so the doctor settles on the newest release (no lag to warn of)."""
    extra_vars.setdefault("cvat_version", None)
    path = labhosts.hosts_file(hosts, mirror, TEST_LAB_DIR / f"{name}.yml", group, **extra_vars)
    if entry:
        doc = yaml.safe_load(path.read_text())
        for item in doc[group]:
            for key, value in entry.items():
                if value is None:
                    item.pop(key, None)
                else:
                    item[key] = value
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def doctor(hosts_file: Path, *args: str, via_lab: bool = False) -> tuple[int, dict[str, tuple[str, str, str]], str]:
    """Run the doctor; return (exit status, {host: (status, where, detail)}, stderr), asserting one line per host."""
    cmd = ([str(runner.REPO / "lab"), "doctor"] if via_lab else [sys.executable, "-m", "labforge.tools.doctor"])
    proc = subprocess.run([*cmd, "--hosts-file", str(hosts_file), *args], cwd=runner.REPO, capture_output=True,
                          text=True, timeout=180)
    lines = proc.stdout.splitlines()
    parsed = {}
    for line in lines:
        match = LINE.match(line)
        assert match, f"not a doctor line: {line!r}\nstderr: {proc.stderr}"
        status, name, where, detail = match.groups()
        parsed[name] = (status, where, detail)
    assert len(parsed) == len(lines), proc.stdout
    return proc.returncode, parsed, proc.stderr


def test_healthy_unsupported_and_unreachable_one_line_each(ok_host, focal_host, mirror):
    path = hosts_yml("doctor-three", [ok_host, focal_host, GONE], mirror)
    started = time.monotonic()
    rc, lines, err = doctor(path, "--min-free-gib", "1", via_lab=True)
    elapsed = time.monotonic() - started
    print("\n".join(f"{s:<4} {n} ({w}): {d}" for n, (s, w, d) in lines.items()))
    assert rc == 1, err
    assert list(lines) == ["doctor-ok", "doctor-focal", "doctor-gone"]  # hosts-file order

    status, where, detail = lines["doctor-ok"]
    assert (status, where) == ("OK", "127.0.0.41:2222"), detail
    assert re.fullmatch(r"ssh ok, root, Debian 12 amd64, no NVIDIA GPU \(not required: gpu_require_pci_device is false\), "
                        rf"\d+ GiB free on /var/lib, CVAT {re.escape(NEWEST)}, upstreams \d+\.\d\ds max", detail), detail

    status, where, detail = lines["doctor-focal"]
    assert (status, where) == ("FAIL", "127.0.0.42:2222")
    assert detail.startswith("unsupported distro 'Ubuntu 20.04.6 LTS'; labforge supports"), detail
    assert "ssh ok, root" in detail and "upstreams" not in detail  # no URLs without a supported distro

    status, where, detail = lines["doctor-gone"]
    assert (status, where) == ("FAIL", "127.0.0.59:2222")
    assert detail.startswith("ssh failed: ") and "127.0.0.59" in detail and "2222" in detail, detail
    assert elapsed < 60
    assert "3 hosts, 2 failed" in err


def test_gpu_host_without_gpu_fails_when_a_gpu_is_required(ok_host, mirror):
    strict = hosts_yml("doctor-strict", [ok_host], mirror, gpu_require_pci_device=True)
    rc, lines, _ = doctor(strict, "--min-free-gib", "1")
    status, _, detail = lines["doctor-ok"]
    assert rc == 1 and status == "FAIL"
    assert detail.startswith("no NVIDIA GPU (PCI vendor 0x10de, class 0x03) on a GPU host"), detail
    assert "Debian 12 amd64" in detail and "upstreams" in detail  # the other checks still ran

    cpu = hosts_yml("doctor-cpu", [ok_host], mirror, group="cpu_servers", gpu_require_pci_device=True)
    rc, lines, _ = doctor(cpu, "--min-free-gib", "1")
    status, _, detail = lines["doctor-ok"]
    assert (rc, status) == (0, "OK") and "GPU" not in detail, detail


def test_disk_threshold(ok_host, mirror):
    path = hosts_yml("doctor-disk", [ok_host], mirror)
    rc, lines, _ = doctor(path, "--min-free-gib", "999999")
    status, _, detail = lines["doctor-ok"]
    assert (rc, status) == (1, "FAIL")
    assert re.match(r"only \d+ GiB free on /var/lib \(need 999999 GiB for CVAT's images\)", detail), detail


def test_slow_upstreams_warn_but_do_not_fail(ok_host, mirror):
    path = hosts_yml("doctor-slow", [ok_host], mirror)
    rc, lines, _ = doctor(path, "--min-free-gib", "1", "--slow-seconds", "0")
    status, _, detail = lines["doctor-ok"]
    assert (rc, status) == (0, "WARN"), detail
    for label in ("docker", "nvidia-container-toolkit", "cuda", "nuctl"):  # a GPU host uses all four
        assert f"slow upstream {label} " in detail
    assert f"({mirror.url}/docker/linux/debian/gpg)" in detail


def test_missing_and_unreachable_upstreams_fail(ok_host, mirror):
    closed = f"http://127.0.0.1:{labhosts.free_port()}"  # nothing listens there
    path = hosts_yml("doctor-upstreams", [ok_host], mirror, docker_repo_url=f"{mirror.url}/no-such-dir",
                     nuctl_url=closed + "/nuctl-{version}-linux-{arch}")
    rc, lines, _ = doctor(path, "--min-free-gib", "1")
    status, _, detail = lines["doctor-ok"]
    assert (rc, status) == (1, "FAIL")
    assert f"upstream docker answered HTTP 404 ({mirror.url}/no-such-dir/debian/gpg)" in detail, detail
    assert "upstream nuctl unreachable: curl: (7)" in detail and closed in detail, detail
    assert "upstream cuda" not in detail and "upstream nvidia" not in detail


def test_non_root_user_needs_passwordless_sudo(ok_host, mirror):
    key = Path(f"{labhosts.ssh_key()}.pub").read_text().strip()
    ok_host.ssh("id labops >/dev/null 2>&1 || useradd -m -s /bin/sh labops; install -d -m 700 -o labops -g labops "
                f"/home/labops/.ssh; echo '{key}' > /home/labops/.ssh/authorized_keys; "
                "chown labops:labops /home/labops/.ssh/authorized_keys; rm -f /etc/sudoers.d/labops")
    path = hosts_yml("doctor-labops", [ok_host], mirror, entry={"ssh_user": "labops"})
    rc, lines, _ = doctor(path, "--min-free-gib", "1")
    status, _, detail = lines["doctor-ok"]
    assert (rc, status) == (1, "FAIL")
    assert detail.startswith("user 'labops' is not root and `sudo -n true` fails"), detail

    ok_host.ssh("echo 'labops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/labops && chmod 440 /etc/sudoers.d/labops")
    rc, lines, _ = doctor(path, "--min-free-gib", "1")
    status, _, detail = lines["doctor-ok"]
    assert (rc, status) == (0, "OK"), detail
    assert detail.startswith("ssh ok, passwordless sudo (labops): run pyinfra with --sudo, Debian 12 amd64"), detail

    # the deploy agrees: without --sudo it refuses with one line naming --sudo; with it, it plans
    refused = runner.deploy(path, dry=True)
    assert refused.returncode != 0
    assert [line for line in refused.summary_lines()] == [
        "[labforge] doctor-ok: refused: connected as 'labops', not root: add --sudo to the pyinfra command (the user needs "
        "passwordless sudo), or connect as root; nothing was changed"]
    planned = runner.deploy(path, "--sudo", dry=True)
    assert planned.returncode == 0, planned.stderr[-2000:]


def test_password_entry_goes_through_paramiko(focal_host, mirror):
    password = "doctor-lab-Passw0rd"
    conf = "/etc/ssh/sshd_config.d/labforge-lab.conf"
    focal_host.ssh(f"echo 'root:{password}' | chpasswd && sed -i -e 's/^PermitRootLogin .*/PermitRootLogin yes/' "
                   f"-e 's/^PasswordAuthentication .*/PasswordAuthentication yes/' {conf} && systemctl reload ssh")
    path = hosts_yml("doctor-password", [focal_host], mirror, entry={"ssh_key": None, "ssh_password": password})
    rc, lines, _ = doctor(path, "--min-free-gib", "1")
    status, _, detail = lines["doctor-focal"]
    assert (rc, status) == (1, "FAIL")
    assert detail.startswith("unsupported distro 'Ubuntu 20.04.6 LTS'") and "ssh ok (password), root" in detail, detail

    wrong = hosts_yml("doctor-password-wrong", [focal_host], mirror, entry={"ssh_key": None, "ssh_password": "wrong-one-123"})
    rc, lines, _ = doctor(wrong, "--min-free-gib", "1")
    status, _, detail = lines["doctor-focal"]
    assert (rc, status) == (1, "FAIL") and detail.startswith("ssh failed: "), detail
