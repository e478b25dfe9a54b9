"""Converge a real booted Debian 12 host with the full deploy (GPU layers forced on), twice, then verify it.

Upstreams are the stand-in mirror (testlab/standins/); everything else is the production path.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from testlab import labhosts, runner
from tests.lab.conftest import TEST_LAB_DIR


@pytest.fixture(scope="module")
def host(boot_host):
    return boot_host("citest1", "127.0.0.12")


@pytest.fixture(scope="module")
def hosts_yml(host, mirror) -> Path:
    return labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "citest1.yml")


def test_dry_run_plans_every_layer_and_changes_nothing(host, hosts_yml):
    run = runner.deploy(hosts_yml, dry=True)
    assert run.returncode == 0, run.stderr[-2000:]
    planned = {op["name"].split(" | ")[0] for op in run.plan if op["hosts_with_change"]}
    assert {"Base", "Docker", "CUDA", "NVIDIA driver", "NVIDIA container toolkit", "Nuclio"} <= planned
    assert not (host.root / "etc/apt/sources.list.d/docker.sources").exists()
    assert not (host.root / "usr/local/bin/nuctl").exists()
    assert any("would change (plan)" in line for line in run.summary_lines())


def converge(hosts_yml: Path, label: str) -> tuple[runner.DeployRun, object]:
    run = runner.deploy(hosts_yml)
    assert run.returncode == 0, run.stderr[-3000:]
    result = run.totals
    print(f"{label}: {result.operations} ops, changed={result.changed}, errors={result.errors}, {run.seconds:.1f}s")
    return run, result


def test_first_converge_changes_and_says_reboot(hosts_yml):
    run, result = converge(hosts_yml, "first converge")
    assert result.errors == 0 and result.changed > 0
    assert any("REBOOT REQUIRED" in line for line in run.summary_lines())


def test_second_converge_changes_nothing(hosts_yml):
    run, result = converge(hosts_yml, "second converge")
    assert (result.changed, result.errors) == (0, 0), result.changed_ops
    assert result.operations > 0
    # the driver is still waiting for its reboot: say so on every run until it happens
    assert any("REBOOT REQUIRED (NVIDIA driver installed by an earlier run" in line for line in run.summary_lines())


def test_a_converge_days_later_still_changes_nothing(host, hosts_yml):
    """No timing hole in idempotency (the Vagrant CI's second converge, an admin's daily re-run): apt's lists
    aged by two days do not make the base layer refresh them; only an explicit apt_cache_time does."""
    aged = "touch -d '2 days ago' /var/lib/apt/lists/* /var/lib/apt/periodic/update-success-stamp 2>/dev/null; true"
    host.ssh(aged)
    _, result = converge(hosts_yml, "converge two days later")
    assert (result.changed, result.errors) == (0, 0), result.changed_ops
    # the same aged host with the opt-in freshness rule plans the refresh: the check above can fail
    plan = runner.deploy(hosts_yml, "--data", "apt_cache_time=3600", dry=True)
    assert plan.returncode == 0, plan.stderr[-2000:]
    changed = [op["name"] for op in plan.plan if op["hosts_with_change"]]
    assert changed and all("apt update (apt_cache_time)" in name for name in changed), changed


def test_testinfra_suite_passes_on_converged_host(host, hosts_yml):
    ssh_config = labhosts.ssh_config([host], TEST_LAB_DIR / "citest1.ssh_config")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/host", f"--hosts=ssh://{host.name}", f"--ssh-config={ssh_config}",
         "--role=gpu", "-q", "-p", "no:cacheprovider"],
        cwd=runner.REPO, env={**__import__("os").environ, "LAB_HOSTS": str(hosts_yml)},
        capture_output=True, text=True, timeout=600,
    )
    tail = proc.stdout[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail


def test_gpu_host_without_nvidia_device_is_refused_before_change(host, mirror):
    strict = labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "citest1-strict.yml", gpu_require_pci_device=True)
    before = _snapshot(host.root)
    run = runner.deploy(strict)
    assert run.returncode != 0
    assert "no NVIDIA PCI display device was found" in run.stderr
    assert _snapshot(host.root) == before


FOCAL_OS_RELEASE = 'NAME="Ubuntu"\nVERSION_ID="20.04"\nID=ubuntu\nVERSION_CODENAME=focal\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n'


def _snapshot(root: Path) -> dict[str, str]:
    """Hashes of what any layer would touch first: dpkg's database, apt's config, /usr/local/bin."""
    watched = [root / "var/lib/dpkg/status", *sorted((root / "etc/apt").rglob("*")), *sorted((root / "usr/local/bin").rglob("*"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in watched if p.exists()}


def test_unsupported_distro_is_refused_before_any_change(boot_host, mirror):
    focal = boot_host("citest-focal", "127.0.0.13", os_release=FOCAL_OS_RELEASE)
    hosts_yml = labhosts.hosts_file([focal], mirror, TEST_LAB_DIR / "focal.yml")
    before = _snapshot(focal.root)
    run = runner.deploy(hosts_yml)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "unsupported distro" in line and not line.startswith("[labforge]")]
    assert errors and "Ubuntu 20.04.6 LTS" in errors[0] and "Nothing was changed" in errors[0]
    assert run.summary_lines() == ["[labforge] citest-focal: refused: unsupported distro 'Ubuntu 20.04.6 LTS'; labforge supports "
                                   "Ubuntu 22.04, Ubuntu 24.04, Debian 12 on x86_64/aarch64; nothing was changed"]
    assert _snapshot(focal.root) == before
