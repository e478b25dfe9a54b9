"""testinfra fixtures: the pins the deploy used (group_data/all.py + the hosts file's vars) and the host's role."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from labforge import groupdata, hostsfile, releases, split
from labforge.facts import NvidiaGpuDevices


def pytest_collection_modifyitems(config, items):
    """Without --hosts these tests would inspect the machine running pytest: skip them, saying how to run them."""
    if config.getoption("hosts", default=None):
        return
    skip = pytest.mark.skip(reason="host checks need a target: pytest tests/host --hosts=ssh://user@server")
    for item in items:
        if "tests/host/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def pins(host, gpu_role) -> dict:
    """What the deploy was told: group_data (all + the host's group), then the LAB_HOSTS file's `vars:`, then this
    host's own `data:` there as the loader reads it (a split lab's roles and addresses included), when it is in it.
    With cvat_version unset, the release the deploy settled on: the checkout's, or the newest row on a host without
    one (a split lab's inference host follows its CVAT host's checkout, which it cannot read: set cvat_version)."""
    values = groupdata.load("gpu_servers" if gpu_role else "cpu_servers")
    if os.environ.get("LAB_HOSTS"):
        values.update((yaml.safe_load(Path(os.environ["LAB_HOSTS"]).read_text()) or {}).get("vars") or {})
        target = getattr(host.backend, "hostname", None)
        for entries in hostsfile.load(os.environ["LAB_HOSTS"]).values():
            for name, data in entries:
                if target in (name, data.get("ssh_hostname")):
                    values.update(data)
    if not values.get("cvat_version"):  # unset: the release the deploy settled on (labforge/releases.py)
        checkout = values["cvat_dir"]
        tags = host.run(f"git -C {checkout} tag --points-at HEAD").stdout.split() \
            if host.file(f"{checkout}/.git").is_directory else None
        values["cvat_version"] = releases.resolve(None, tags, values["cvat_stack_compat"], checkout)
    return values


@pytest.fixture(scope="module")
def lab_role(pins) -> str:
    """"all" (an all-in-one lab), or a split lab's "cvat" or "inference" host (labforge/split.py)."""
    return split.role(pins)


@pytest.fixture(scope="module")
def cvat_here(lab_role):
    if lab_role == "inference":
        pytest.skip("a split lab's inference host: no CVAT here")


@pytest.fixture(scope="module")
def gpu_role(host, request) -> bool:
    role = request.config.getoption("role")
    if role == "auto":
        return bool(host.run(NvidiaGpuDevices().command()).stdout.strip())
    return role == "gpu"


@pytest.fixture(scope="module")
def gpu_host(gpu_role):
    if not gpu_role:
        pytest.skip("not a GPU host (--role=cpu, or no NVIDIA PCI device)")


@pytest.fixture(scope="module")
def real_gpu(host, gpu_host):
    """Checks that need the physical GPU and the loaded driver; skipped in VMs and the test lab."""
    if not host.exists("nvidia-smi") or not host.file("/dev/nvidia0").exists:
        pytest.skip("no loaded NVIDIA driver/GPU on this host (nvidia-smi or /dev/nvidia0 missing)")


@pytest.fixture(scope="module")
def distro(host) -> str:
    return host.system_info.distribution
