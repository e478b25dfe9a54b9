"""A fresh host as it is today, on real booted lab hosts (issue: "A fresh Ubuntu GPU server today converges into a
working lab"): the whole plan on a bare host, verified downloads, nuctl pinned on first use, the real NVIDIA
branch, a Docker newer than the pin, GPU functions held until the reboot, apt locked by another process, and
pins outside the compatibility table. Upstreams are the stand-in mirror (testlab/standins/)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from labforge import compat
from testlab import labhosts, runner, standins
from testlab.standins import packages
from tests.lab.conftest import TEST_LAB_DIR
from tests.lab.test_converge import _snapshot

PASSWORD = {"LABFORGE_CVAT_ADMIN_PASSWORD": "x7!Qm2#pLw9$Tz-lab"}


def mirror_file(mirror, relative: str) -> Path:
    return Path(mirror.lab_dir) / "mirror" / relative


class Tampered:
    """Serve other bytes at a mirror path for the duration of a with-block (the mirror is shared by the session)."""

    def __init__(self, path: Path, content: bytes):
        self.path, self.content = path, content

    def __enter__(self):
        self.original = self.path.read_bytes()
        self.path.write_bytes(self.content)
        return self

    def __exit__(self, *exc):
        self.path.write_bytes(self.original)


def hosts_yml(hosts, mirror, name: str, group: str = "gpu_servers", **extra) -> Path:
    return labhosts.hosts_file(hosts, mirror, TEST_LAB_DIR / f"{name}.yml", group, **extra)


def nuctl_path(mirror) -> Path:
    v = compat.nuctl_version(labhosts.lab_pins())
    return mirror_file(mirror, f"nuclio/releases/download/{v}/nuctl-{v}-linux-amd64")


# --- a bare host: the whole plan, then a real converge --------------------------------------------------------


@pytest.fixture(scope="module")
def fresh(boot_host, mirror):
    """A GPU-marked host converged once (CVAT files only), with its own lock file for nuctl."""
    lab_host = boot_host("reality1", "127.0.0.20")
    lock = TEST_LAB_DIR / "reality1.lock"
    path = hosts_yml([lab_host], mirror, "reality1", download_lock_file=str(lock))
    plan = runner.deploy(hosts_yml([lab_host], mirror, "reality1-start", download_lock_file=str(lock), cvat_start=True),
                         dry=True, env=PASSWORD)
    first = runner.deploy(path)
    assert first.returncode == 0, first.stderr[-3000:]
    return lab_host, path, lock, plan, first


def test_a_bare_host_plans_the_whole_deploy_without_error(fresh):
    _, _, _, plan, _ = fresh
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "Traceback" not in plan.stderr
    names = {op["name"] for op in plan.plan if op["hosts_with_change"]}
    assert "Nuclio | nuctl 1.13.23: first download, checked with `nuctl version` (pin on first use)" in names
    assert {"Functions | Deploy function serverless/openvino/dextr", "CVAT | docker compose up -d (CVAT + serverless)"} <= names
    # our SAM 2 has a GPU variant and the driver is installed by this very run: it waits for the reboot
    assert any("function files/nuclio/sam2: waits for the reboot" in line for line in plan.summary_lines())


def test_nuctl_is_pinned_on_first_use_in_the_lock_file(fresh, mirror):
    lab_host, path, lock, _, first = fresh
    sha = hashlib.sha256(nuctl_path(mirror).read_bytes()).hexdigest()
    assert json.loads(lock.read_text()) == {"nuctl": {"1.13.23": {"amd64": sha}}}
    assert any(f"nuctl 1.13.23 (amd64) pinned on first use: sha256 {sha}" in line for line in first.summary_lines())
    assert lab_host.ssh("sha256sum /usr/local/bin/nuctl").stdout.split()[0] == sha
    assert not lab_host.ssh("ls -a /usr/local/bin").stdout.count(".nuctl")  # nothing staged left behind
    again = runner.deploy(path)
    assert again.returncode == 0 and again.totals.changed == 0, again.totals.changed_ops


def test_the_driver_is_branch_550_because_of_the_pin(fresh):
    lab_host, *_ = fresh
    installed = lab_host.ssh("dpkg-query -W -f '${Package} ${Version}\\n' nvidia-driver nvidia-kernel-dkms cuda-drivers-550").stdout
    assert sorted(installed.split("\n")[:-1]) == ["cuda-drivers-550 550.163.01-1", "nvidia-driver 550.163.01-1",
                                                   "nvidia-kernel-dkms 550.163.01-1"]
    # the mirror offers a newer branch that the open-ended dependency would take without the pin
    unpinned = lab_host.ssh("apt-cache -o Dir::Etc::PreferencesParts=/nonexistent policy nvidia-driver").stdout
    pinned = lab_host.ssh("apt-cache policy nvidia-driver").stdout
    assert f"Candidate: {packages.DRIVER_NEWER}" in unpinned
    assert f"Candidate: {packages.DRIVER_550}" in pinned
    held = lab_host.ssh("apt-mark showhold").stdout.split()
    assert {"cuda-drivers-550", "nvidia-driver", "nvidia-kernel-dkms"} <= set(held)


def test_end_of_life_branch_notice(fresh):
    *_, first = fresh
    assert any("notice: NVIDIA driver branch 550 is end-of-life" in line for line in first.summary_lines())


# --- verified before in place ---------------------------------------------------------------------------------------


def test_a_tampered_key_is_refused_and_the_trusted_one_stays(fresh, mirror):
    """A key rotation (a new pin) meets a tampered upstream: the old key stays byte-identical, still trusted."""
    lab_host, _, lock, _, _ = fresh
    key = lab_host.root / "etc/apt/keyrings/docker.asc"
    before = key.read_bytes()
    new_key = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nrotated\n"
    with Tampered(mirror_file(mirror, "docker/linux/debian/gpg"), b"-----BEGIN PGP PUBLIC KEY BLOCK-----\ntampered\n"):
        path = hosts_yml([lab_host], mirror, "reality1-rotated", download_lock_file=str(lock),
                         docker_gpg_sha256=hashlib.sha256(new_key).hexdigest())
        run = runner.deploy(path)
    assert run.returncode != 0
    assert "labforge: /etc/apt/keyrings/docker.asc: sha256 mismatch" in run.stderr
    assert any("FAILED in: Docker (apt key /etc/apt/keyrings/docker.asc)" in line for line in run.summary_lines())
    assert key.read_bytes() == before
    assert sorted(p.name for p in key.parent.iterdir()) == ["docker.asc", "nvidia-container-toolkit.asc"]


def test_a_tampered_nuctl_is_refused_and_the_old_one_stays(fresh, mirror):
    lab_host, _, lock, _, _ = fresh
    nuctl = lab_host.root / "usr/local/bin/nuctl"
    before = nuctl.read_bytes()
    with Tampered(nuctl_path(mirror), b"#!/bin/sh\necho tampered\n"):
        path = hosts_yml([lab_host], mirror, "reality1-nuctl", download_lock_file=str(lock),
                         nuctl_sha256={"amd64": "0" * 64})
        run = runner.deploy(path)
    assert run.returncode != 0 and "labforge: /usr/local/bin/nuctl: sha256 mismatch" in run.stderr
    assert nuctl.read_bytes() == before
    assert not [p.name for p in nuctl.parent.iterdir() if ".labforge-" in p.name]  # no temporary file left


def test_a_download_other_than_the_lock_files_pin_is_refused(boot_host, mirror):
    lab_host = boot_host("reality-lock", "127.0.0.21")
    lock = TEST_LAB_DIR / "reality-lock.lock"
    lock.write_text(json.dumps({"nuctl": {"1.13.23": {"amd64": "f" * 64}}}))
    run = runner.deploy(hosts_yml([lab_host], mirror, "reality-lock", "cpu_servers", download_lock_file=str(lock)))
    assert run.returncode != 0
    assert f"labforge: /usr/local/bin/nuctl: sha256 mismatch (expected {'f' * 64}" in run.stderr
    assert not (lab_host.root / "usr/local/bin/nuctl").exists()
    assert json.loads(lock.read_text()) == {"nuctl": {"1.13.23": {"amd64": "f" * 64}}}  # the record is never rewritten


# --- GPU functions after the reboot ---------------------------------------------------------------------------


def test_gpu_functions_wait_for_the_reboot_then_deploy(fresh, mirror):
    lab_host, _, lock, _, _ = fresh
    start = hosts_yml([lab_host], mirror, "reality1-start", download_lock_file=str(lock), cvat_start=True)

    def planned_functions() -> tuple[set[str], list[str]]:
        run = runner.deploy(start, dry=True, env=PASSWORD)
        assert run.returncode == 0, run.stderr[-3000:]
        names = {op["name"] for op in run.plan if op["hosts_with_change"] and op["name"].startswith("Functions | Deploy")}
        return names, run.summary_lines()

    names, summary = planned_functions()
    assert names == {"Functions | Deploy function serverless/openvino/omz/public/yolo-v3-tf",
                     "Functions | Deploy function serverless/openvino/dextr"}
    for path in ("serverless/pytorch/facebookresearch/sam", "files/nuclio/sam2", "files/nuclio/sam2-tracker"):
        assert any(f"function {path}: waits for the reboot (NVIDIA driver not loaded yet)" in line for line in summary)
    lab_host.stop()  # a real restart of the host: /run (and the reboot marker in it) starts empty
    lab_host.boot()
    names, summary = planned_functions()
    assert {"Functions | Deploy function serverless/pytorch/facebookresearch/sam",
            "Functions | Deploy function files/nuclio/sam2", "Functions | Deploy function files/nuclio/sam2-tracker"} <= names
    assert not any("waits for the reboot" in line for line in summary)


# --- apt locked by another process ------------------------------------------------------------------------------


HOLD = "nohup python3 -c \"import fcntl, time; f = open('{lock}', 'w'); fcntl.lockf(f, fcntl.LOCK_EX); time.sleep({seconds})\" " \
       ">/dev/null 2>&1 &"


def test_a_converge_waits_for_the_dpkg_lock(fresh):
    lab_host, path, *_ = fresh
    lab_host.ssh(HOLD.format(lock="/var/lib/dpkg/lock-frontend", seconds=20))
    start = time.monotonic()
    run = runner.deploy(path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert time.monotonic() - start >= 15
    assert run.totals.errors == 0


def test_a_lock_held_past_the_timeout_gets_one_line_naming_the_process(fresh, mirror):
    lab_host, _, lock, _, _ = fresh
    lab_host.ssh(HOLD.format(lock="/var/lib/apt/lists/lock", seconds=60))
    before = _snapshot(lab_host.root)
    run = runner.deploy(hosts_yml([lab_host], mirror, "reality1-locked", download_lock_file=str(lock), apt_lock_timeout=6))
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if "apt is locked" in line and not line.startswith("[labforge]")]
    assert len(lines) == 1
    assert "/var/lib/apt/lists/lock is held by process" in lines[0] and "(python3) for more than 6s" in lines[0]
    assert _snapshot(lab_host.root) == before
    lab_host.ssh("pkill -f 'fcntl[.]lockf' || true")


# --- another branch already installed; a newer Docker; pins outside the table ---------------------------------


def install_from_mirror(lab_host, mirror, debs: list[str]) -> None:
    urls = " ".join(f"{mirror.url}/{d}" for d in debs)
    lab_host.ssh(f"cd /tmp && for u in {urls}; do curl -fsSLO \"$u\"; done && dpkg -i {' '.join(Path(d).name for d in debs)}")


def test_a_driver_of_another_branch_is_refused_with_one_line(boot_host, mirror):
    lab_host = boot_host("reality-580", "127.0.0.22")
    v = packages.DRIVER_NEWER
    install_from_mirror(lab_host, mirror, [f"cuda/repos/debian12/x86_64/nvidia-kernel-dkms_{v}_amd64.deb",
                                           f"cuda/repos/debian12/x86_64/nvidia-driver_{v}_amd64.deb"])
    before = _snapshot(lab_host.root)
    run = runner.deploy(hosts_yml([lab_host], mirror, "reality-580"))
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if "not on branch 550" in line and not line.startswith("[labforge]")]
    assert len(lines) == 1 and f"nvidia-driver {v}, nvidia-kernel-dkms {v}" in lines[0]
    assert _snapshot(lab_host.root) == before


def test_a_newer_docker_is_kept_and_told_to_accept_the_stacks_api(boot_host, mirror):
    lab_host = boot_host("reality-docker29", "127.0.0.23")
    newer = [f"{packages.NEWER_DOCKER_DIR}/{name}_{version.split(':')[-1]}{packages.DOCKER_SUFFIX}_amd64.deb"
             for name, version in packages.NEWER_DOCKER_VERSIONS.items()]
    install_from_mirror(lab_host, mirror, newer)
    path = hosts_yml([lab_host], mirror, "reality-docker29", "cpu_servers")
    first = runner.deploy(path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert any("notice: Docker 29.1.3 is newer than the pin 28.5.2: kept, not downgraded" in line for line in first.summary_lines())
    assert lab_host.ssh("dpkg-query -W -f '${Version}' docker-ce").stdout == "5:29.1.3-1" + packages.DOCKER_SUFFIX
    assert json.loads(lab_host.ssh("cat /etc/docker/daemon.json").stdout) == {"min-api-version": "1.42"}
    assert lab_host.ssh("docker version --format '{{.Server.MinAPIVersion}}'").stdout.strip() == "1.42"
    assert "docker-ce" in lab_host.ssh("apt-mark showhold").stdout.split()
    again = runner.deploy(path)
    assert again.returncode == 0 and again.totals.changed == 0, again.totals.changed_ops


@pytest.fixture(scope="module")
def pins_host(boot_host):
    return boot_host("reality-pins", "127.0.0.24")


@pytest.mark.parametrize(("pins", "line"), [
    ({"cvat_version": "v2.52.0"}, "CVAT v2.52.0 is not in cvat_stack_compat"),
    ({"nuctl_version": "1.15.9"}, "nuctl 1.15.9 does not match CVAT v2.51.0's Nuclio dashboard 1.13.0"),
    ({"docker_package_versions": {**standins.pins()["docker_package_versions"], "docker-ce": "5:30.0.1-1"}},
     "Docker Engine 30.0.1 is not in docker_default_min_api"),
])
def test_raising_one_pin_alone_is_refused_before_anything_changes(pins_host, mirror, pins, line):
    before = _snapshot(pins_host.root)
    run = runner.deploy(hosts_yml([pins_host], mirror, "reality-pins", "cpu_servers", **pins))
    assert run.returncode != 0
    assert len([x for x in run.stderr.splitlines() if line in x and not x.startswith("[labforge]")]) == 1, run.stderr[-2000:]
    (summary,) = run.summary_lines()
    assert summary.startswith(f"[labforge] reality-pins: refused: {line}") and summary.endswith("; nothing was changed")
    assert _snapshot(pins_host.root) == before
