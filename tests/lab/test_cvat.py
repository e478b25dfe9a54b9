"""The CVAT and functions layers on a real lab host: converged as far as the lab allows, then planned.

Containers cannot start in the lab, so `docker compose up`, the admin and the function deploys are
shown by plan (`--dry`): planned on a fresh stack, and not planned once their guards say done. The
guards' answers come from the stand-in docker/nuctl CLIs (tests/lab/standins.py STATE_DIR).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labforge import compose
from labforge.nuclio_functions import HASH_LABEL, SLUG_LABEL, source
from tests.lab import labhosts, runner, standins
from tests.lab.conftest import TEST_LAB_DIR

PASSWORD = {"LABFORGE_CVAT_ADMIN_PASSWORD": "x7!Qm2#pLw9$Tz-lab"}
GPU_FUNCTIONS = ["serverless/openvino/omz/public/yolo-v3-tf", "serverless/openvino/dextr",
                 "serverless/pytorch/facebookresearch/sam", "files/nuclio/sam2"]
START_OPS = {"CVAT | docker compose up -d (CVAT + serverless)", "CVAT | Create CVAT admin 'admin' (once)",
             *(f"Functions | Deploy function {path}" for path in GPU_FUNCTIONS)}


@pytest.fixture(scope="module")
def host(boot_host, mirror):
    lab_host = boot_host("citest-cvat", "127.0.0.14")
    first = runner.deploy(labhosts.hosts_file([lab_host], mirror, TEST_LAB_DIR / "cvat.yml"))
    assert first.returncode == 0, first.stderr[-3000:]
    lab_host.stop()  # the reboot the new NVIDIA driver asks for: GPU functions may deploy from now on
    lab_host.boot()
    return lab_host


def planned(run: runner.DeployRun) -> set[str]:
    assert run.returncode == 0, run.stderr[-3000:]
    return {op["name"] for op in run.plan if op["hosts_with_change"]}


def start_hosts_file(host, mirror, name: str, **extra) -> Path:
    return labhosts.hosts_file([host], mirror, TEST_LAB_DIR / name, cvat_start=True, **extra)


def test_cvat_files_converged_and_second_run_changes_nothing(host, mirror):
    root = host.root
    assert (root / "opt/cvat/.git").is_dir()
    override = (root / "opt/cvat" / compose.OVERRIDE).read_text()
    for service in ("cvat_server", "cvat_worker_import", "cvat_worker_export", "cvat_worker_annotation", "cvat_worker_chunks"):
        assert f"  {service}:\n    volumes:\n      - cvat_share:/home/django/share:ro\n" in override
    assert "device: /mnt/share" in override
    assert (root / "mnt/share").stat().st_mode & 0o7777 == 0o2775
    assert (root / "etc/labforge/cvat.env").read_text().count("CVAT_HOST=") == 1
    again = runner.deploy(TEST_LAB_DIR / "cvat.yml")
    assert again.returncode == 0 and (again.totals.changed, again.totals.errors) == (0, 0), again.totals.changed_ops


def test_stack_admin_and_functions_planned_on_a_fresh_stack(host, mirror):
    run = runner.deploy(start_hosts_file(host, mirror, "start.yml"), dry=True, env=PASSWORD)
    assert planned(run) >= START_OPS
    assert any("function files/nuclio/sam2: deploy planned" in line for line in run.summary_lines())


def write_state(root: Path, functions: dict[str, str]) -> None:
    """What a running lab would answer: every container running, the admin present, functions ready."""
    state = root / standins.STATE_DIR.lstrip("/")
    state.mkdir(parents=True, exist_ok=True)
    ps = [{"Service": s, "State": "running"} for s in [*standins.CVAT_SERVICES, "nuclio"]]
    (state / "compose-ps.json").write_text("\n".join(json.dumps(c) for c in ps) + "\n")
    (state / "cvat-superusers").write_text("admin\n")
    docs = [{"metadata": {"name": path.rsplit("/", 1)[-1], "labels": {SLUG_LABEL: source(path, "/opt/cvat", "v2.51.0", True).slug,
                                                                       HASH_LABEL: digest}},
             "status": {"state": "ready"}} for path, digest in functions.items()]
    (state / "nuclio-functions.json").write_text(json.dumps(docs))


def test_nothing_planned_when_guards_say_done_and_stale_function_redeployed(host, mirror):
    root = host.root
    digest = compose.inputs_digest("v2.51.0", (root / "opt/cvat" / compose.OVERRIDE).read_text(),
                                   (root / "etc/labforge/cvat.env").read_text())
    (root / "etc/labforge/cvat-compose.digest").write_text(digest + "\n")
    current = {path: source(path, "/opt/cvat", "v2.51.0", True).digest for path in GPU_FUNCTIONS}
    write_state(root, current)
    hosts_yml = start_hosts_file(host, mirror, "start.yml")
    run = runner.deploy(hosts_yml, dry=True, env=PASSWORD)
    assert not START_OPS & planned(run)
    assert any("function serverless/openvino/dextr: dextr ready (unchanged)" in line for line in run.summary_lines())

    write_state(root, {**current, "serverless/openvino/dextr": "0000000000000000"})  # its source changed
    assert START_OPS & planned(runner.deploy(hosts_yml, dry=True, env=PASSWORD)) == {
        "Functions | Deploy function serverless/openvino/dextr"}

    (root / "etc/labforge/cvat-compose.digest").write_text("stale\n")  # an input of `compose up` changed
    write_state(root, current)
    assert START_OPS & planned(runner.deploy(hosts_yml, dry=True, env=PASSWORD)) == {
        "CVAT | docker compose up -d (CVAT + serverless)"}


@pytest.mark.parametrize(("password", "reason"), [("", "no CVAT admin password"),
                                                  ("short1!", "shorter than 12 characters"),
                                                  ("password1234", "This is a very common password"),
                                                  ("my-admin-pass-2026", "contains the admin user name")])
def test_missing_or_weak_admin_password_refused_before_change(host, mirror, password, reason):
    (host.root / standins.STATE_DIR.lstrip("/") / "cvat-superusers").unlink(missing_ok=True)  # admin to create
    before = snapshot(host.root)
    run = runner.deploy(start_hosts_file(host, mirror, "weak.yml"), env={"LABFORGE_CVAT_ADMIN_PASSWORD": password})
    assert run.returncode != 0 and reason in run.stderr
    assert snapshot(host.root) == before


def test_release_outside_the_table_refused_while_planning(host, mirror):
    run = runner.deploy(labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "v252.yml", cvat_version="v2.52.0"))
    assert run.returncode != 0
    assert "CVAT v2.52.0 is not in cvat_stack_compat" in run.stderr


def test_a_wrong_table_row_is_caught_by_the_tags_own_files_and_checkout_kept(host, mirror):
    """cvat_stack_compat claims v2.52.0 runs dashboard 1.13.0; the fetched tag's serverless file says 1.15.9."""
    wrong = {**standins.pins()["cvat_stack_compat"], "v2.52.0": {"nuclio_dashboard": "1.13.0", "docker_api": "1.42"}}
    run = runner.deploy(labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "v252.yml", cvat_version="v2.52.0",
                                            cvat_stack_compat=wrong))
    assert run.returncode != 0
    assert "CVAT v2.52.0 runs Nuclio dashboard 1.15.x but nuctl is 1.13.23" in run.stderr
    assert "v2.51.0" in (host.ssh("git -C /opt/cvat tag --points-at HEAD").stdout.split())
    back = runner.deploy(TEST_LAB_DIR / "cvat.yml")  # the pinned release still converges with no change
    assert back.returncode == 0 and back.totals.changed == 0, back.totals.changed_ops


def snapshot(root: Path) -> dict[str, float]:
    watched = [root / "etc/labforge", root / "opt/cvat", root / "root", root / "mnt/share"]
    return {str(p): p.stat().st_mtime for top in watched for p in [top, *top.rglob("*")] if ".git" not in p.parts}
