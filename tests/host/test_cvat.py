"""testinfra checks for the CVAT and functions layers. The live checks skip where the stack cannot run."""

from __future__ import annotations

import json

import pytest

from labforge import compose, report
from labforge.compose import compose_args
from labforge.facts import ComposeServiceStates, CvatSuperusers, NuclioFunctions
from labforge.nuclio_functions import SLUG_LABEL, is_current, source


@pytest.fixture(scope="module")
def cvat_dir(pins) -> str:
    return pins["cvat_dir"]


def test_checkout_at_pinned_tag(host, pins, cvat_dir):
    assert pins["cvat_version"] in host.check_output(f"git -C {cvat_dir} tag --points-at HEAD").split()
    assert host.run(f"git -C {cvat_dir} status --porcelain --untracked-files=no").stdout.strip() == "", "CVAT's files edited"


def test_override_mounts_share_read_only(host, pins, cvat_dir):
    override = host.file(f"{cvat_dir}/{compose.OVERRIDE}")
    assert override.mode == 0o644
    text = override.content_string
    assert "cvat_share:/home/django/share:ro" in text and f"device: {pins['share_path']}" in text


def test_share_is_group_writable_never_world(host, pins):
    share = host.file(pins["share_path"])
    assert share.is_directory and share.group == pins["share_group"] and share.mode == 0o2775


def test_cvat_host_env_file(host):
    assert host.file("/etc/labforge/cvat.env").contains("^CVAT_HOST=.")


@pytest.fixture(scope="module")
def running(host, pins, cvat_dir):
    """Only where the stack is up (real servers, the Vagrant VM, a lab host converged with cvat_start)."""
    fact = ComposeServiceStates()
    states = fact.process(host.run(fact.command("cvat", cvat_dir, compose_args())).stdout.splitlines())
    if not states:
        pytest.skip("CVAT's containers are not running here (docker compose ps has no answer)")
    return states


def test_all_cvat_containers_running(running):
    assert {s: st for s, st in running.items() if st != "running"} == {}
    assert {"cvat_server", "cvat_ui", "traefik", "nuclio"} <= set(running)


def test_share_mounted_read_only_in_each_service(host, pins, running):
    for service in compose.share_services(pins["cvat_share_services"], None):
        if service not in running:
            continue
        mounts = json.loads(host.check_output(f"docker inspect --format '{{{{json .Mounts}}}}' {service}"))
        share = [m for m in mounts if m["Destination"] == "/home/django/share"]
        assert share and share[0]["RW"] is False, service


def test_api_answers_on_8080(host, running):
    address = host.file("/etc/labforge/cvat.env").content_string.split("CVAT_HOST=")[1].split()[0]
    about = json.loads(host.check_output(f"curl -fsS -H 'Host: {address}' http://127.0.0.1:8080/api/server/about"))
    assert about["version"]


def test_admin_exists(host, pins, running):
    fact = CvatSuperusers()
    assert pins["cvat_admin_user"] in (fact.process(host.run(fact.command()).stdout.splitlines()) or [])


def test_enabled_functions_ready(host, pins, running, gpu_role):
    """Every enabled function is current, except a GPU function while the driver awaits its reboot: that one
    must not be deployed at all (Nuclio would start it with `--gpus all` before the driver is loaded)."""
    fact = NuclioFunctions()
    deployed = fact.process(host.run(fact.command()).stdout.splitlines())
    awaiting_reboot = gpu_role and host.file(report.REBOOT_MARKER).exists
    for path in pins["nuclio_functions"]:
        fn = source(path, pins["cvat_dir"], pins["cvat_version"], gpu_role)
        if awaiting_reboot and host.file(f"{fn.yaml_dir}/function-gpu.yaml").exists:
            assert not any((f["labels"] or {}).get(SLUG_LABEL) == fn.slug for f in deployed), f"{path} deployed before the reboot"
            continue
        assert is_current(fn, deployed), path
