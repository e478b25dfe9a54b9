"""The CVAT and functions layers executed for real on a lab host: a real Docker Engine and Docker Compose v2 run
CVAT v2.51.0's compose structure from the stand-in repo with stand-in images (tests/lab/standins), and the
stand-in nuctl runs one container per function on that engine.

The first tests need CVAT's files only (refusals before any change); the rest bring the stack up and prove
what real Compose does: the read-only share, CVAT_HOST in traefik's rule, the admin created once, changed=0 on
the next run, a stopped container started again, a moved share (a named volume's options never change after
creation), a new cvat_host, functions skipped when current and redeployed when stale, GPU functions held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labforge import compose
from labforge.nuclio_functions import HASH_LABEL, SLUG_LABEL, from_settings
from testlab import labhosts, runner, standins
from testlab.standins import cvat
from tests.lab.conftest import TEST_LAB_DIR

PASSWORD = {"LABFORGE_CVAT_ADMIN_PASSWORD": "x7!Qm2#pLw9$Tz-lab"}
SHARE_SERVICES = ["cvat_server", "cvat_worker_import", "cvat_worker_export", "cvat_worker_annotation", "cvat_worker_chunks"]
COMPOSE_UP = "CVAT | docker compose up -d (CVAT + serverless)"


@pytest.fixture(scope="module")
def host(boot_host, mirror):
    """A GPU-marked host with CVAT's files (cvat_start off) and a real Docker Engine, its driver awaiting a reboot."""
    lab_host = boot_host("citest-cvat", "127.0.0.14")
    first = runner.deploy(labhosts.hosts_file([lab_host], mirror, TEST_LAB_DIR / "cvat.yml"))
    assert first.returncode == 0, first.stderr[-3000:]
    return lab_host


def start_yml(host, mirror, name: str = "start.yml", **extra) -> Path:
    return labhosts.hosts_file([host], mirror, TEST_LAB_DIR / name, cvat_start=True, **extra)


def snapshot(root: Path) -> dict[str, float]:
    watched = [root / "etc/labforge", root / "opt/cvat", root / "root", root / "mnt/share"]
    return {str(p): p.stat().st_mtime for top in watched for p in [top, *top.rglob("*")] if ".git" not in p.parts}


# --- with CVAT's files only ---------------------------------------------------------------------------------------


def test_cvat_files_converged_and_second_run_changes_nothing(host):
    root = host.root
    assert (root / "opt/cvat/.git").is_dir()
    override = (root / "opt/cvat" / compose.OVERRIDE).read_text()
    for service in SHARE_SERVICES:
        assert f"  {service}:\n    volumes:\n      - cvat_share:/home/django/share:ro\n" in override
    assert "device: /mnt/share" in override
    assert (root / "mnt/share").stat().st_mode & 0o7777 == 0o2775
    assert (root / "etc/labforge/cvat.env").read_text().count("CVAT_HOST=citest-cvat.lab") == 1
    again = runner.deploy(TEST_LAB_DIR / "cvat.yml")
    assert again.returncode == 0 and (again.totals.changed, again.totals.errors) == (0, 0), again.totals.changed_ops


@pytest.mark.parametrize(("password", "reason"), [("", "no CVAT admin password"),
                                                  ("short1!", "shorter than 12 characters"),
                                                  ("password1234", "This is a very common password"),
                                                  ("my-admin-pass-2026", "contains the admin user name")])
def test_missing_or_weak_admin_password_refused_before_change(host, mirror, password, reason):
    before = snapshot(host.root)
    run = runner.deploy(start_yml(host, mirror, "weak.yml"), env={"LABFORGE_CVAT_ADMIN_PASSWORD": password})
    assert run.returncode != 0 and reason in run.stderr
    assert snapshot(host.root) == before
    assert host.ssh("docker ps -q").stdout == ""  # nothing started either


def test_release_outside_the_table_refused_while_planning(host, mirror):
    run = runner.deploy(labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "v252.yml", cvat_version="v2.52.0"))
    assert run.returncode != 0
    assert "CVAT v2.52.0 is not in cvat_stack_compat" in run.stderr


def test_a_wrong_table_row_is_caught_by_the_tags_own_files_and_checkout_kept(host, mirror):
    """cvat_stack_compat claims v2.52.0 runs dashboard 1.13.0; the fetched tag's serverless file says 1.15.9."""
    wrong = {**standins.pins()["cvat_stack_compat"], "v2.52.0": {"nuclio_dashboard": "1.13.0", "nuctl": "1.13.23",
                                                                  "docker_api": "1.42"}}
    run = runner.deploy(labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "v252.yml", cvat_version="v2.52.0",
                                            cvat_stack_compat=wrong))
    assert run.returncode != 0
    assert "CVAT v2.52.0 runs Nuclio dashboard 1.15.x but nuctl is 1.13.23" in run.stderr
    assert "v2.51.0" in (host.ssh("git -C /opt/cvat tag --points-at HEAD").stdout.split())
    back = runner.deploy(TEST_LAB_DIR / "cvat.yml")  # the pinned release still converges with no change
    assert back.returncode == 0 and back.totals.changed == 0, back.totals.changed_ops


# --- which release, with cvat_version unset (labforge/releases.py) ------------------------------------------------


UNSET_NOTICE = ("notice: CVAT v2.51.0 (its checkout's release; cvat_version is unset) lacks 11 security fixes CVAT shipped "
                "up to v2.73.0 (v2.53.0: GHSA-3g7v-xjh7-xmqx; v2.55.0: ")


def test_a_lab_on_v2_51_keeps_it_when_cvat_version_is_unset_and_is_told_what_it_lacks(host, mirror):
    """The product's default (None) on a host converged at v2.51.0: no move, nothing changed, one notice."""
    run = runner.deploy(labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "unset.yml", cvat_version=None))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.totals.changed == 0, run.totals.changed_ops
    assert host.ssh("git -C /opt/cvat tag --points-at HEAD").stdout.split() == ["v2.51.0"]
    (line,) = run.summary_lines()
    assert UNSET_NOTICE in line and line.count("notice: CVAT") == 1, line


def test_a_new_lab_starts_on_the_current_release(boot_host, mirror):
    """The same default on a host without CVAT: v2.73.0's checkout and its nuctl, and no notice."""
    new = boot_host("citest-release", "127.0.0.17")
    run = runner.deploy(labhosts.hosts_file([new], mirror, TEST_LAB_DIR / "new.yml", group="cpu_servers",
                                            cvat_version=None))
    assert run.returncode == 0, run.stderr[-3000:]
    assert new.ssh("git -C /opt/cvat tag --points-at HEAD").stdout.split() == ["v2.73.0"]
    assert "1.16.3" in new.ssh("nuctl version").stdout
    (line,) = run.summary_lines()
    assert "notice: CVAT" not in line, line
    again = runner.deploy(TEST_LAB_DIR / "new.yml")
    assert again.returncode == 0 and again.totals.changed == 0, again.totals.changed_ops


# --- the stack, for real --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(host, mirror):
    """The stand-in images loaded into the host's engine, then the first converge with cvat_start on."""
    cvat.load_images(host, labhosts.base_tarball())
    run = runner.deploy(start_yml(host, mirror), env=PASSWORD)
    assert run.returncode == 0, run.stderr[-3000:]
    print(f"first converge with the stack: {run.totals.operations} ops, changed={run.totals.changed}, {run.seconds:.1f}s")
    return run


def containers(host) -> dict[str, dict]:
    names = host.ssh("docker ps -a --format '{{.Names}}'").stdout.split()
    return {c["Name"].lstrip("/"): c for c in json.loads(host.ssh(f"docker inspect {' '.join(names)}").stdout)}


def test_compose_up_runs_every_service_and_the_summary_says_where_cvat_is(host, stack):
    running = {name for name, c in containers(host).items() if c["State"]["Running"]}
    assert {*cvat.CVAT_SERVICES, "nuclio"} <= running
    (line,) = stack.summary_lines()
    assert "CVAT at http://citest-cvat.lab:8080 (admin user 'admin')" in line
    assert "function serverless/openvino/dextr: deployed, ready" in line
    assert "function serverless/openvino/omz/public/yolo-v3-tf: deployed, ready" in line


def test_the_share_is_read_only_in_every_share_service(host, stack):
    host.ssh("echo kept > /mnt/share/lab-data.txt")
    found = containers(host)
    for service in SHARE_SERVICES:
        mounts = [m for m in found[service]["Mounts"] if m["Destination"] == "/home/django/share"]
        assert len(mounts) == 1 and mounts[0]["RW"] is False, (service, mounts)
        assert host.ssh(f"docker exec {service} cat /home/django/share/lab-data.txt").stdout == "kept\n"
        write = host.ssh(f"docker exec {service} touch /home/django/share/new", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, service
    print("share mount in cvat_server:", json.dumps([m for m in found["cvat_server"]["Mounts"]
                                                      if m["Destination"] == "/home/django/share"]))


def test_cvat_host_reaches_traefiks_labels_and_the_api_answers_on_8080(host, stack):
    rule = containers(host)["cvat_server"]["Config"]["Labels"]["traefik.http.routers.cvat.rule"]
    assert rule.startswith("Host(`citest-cvat.lab`)")
    about = host.ssh("curl -fsS -H 'Host: citest-cvat.lab' http://127.0.0.1:8080/api/server/about").stdout
    assert json.loads(about)["version"] == "2.51.0"
    other = host.ssh("curl -s -o /dev/null -w '%{http_code}' -H 'Host: localhost' http://127.0.0.1:8080/api/server/about")
    assert other.stdout == "404"


def test_the_admin_is_created_once_through_docker_exec_and_its_credentials_file_is_gone(host, stack):
    users = json.loads(host.ssh("docker exec cvat_server cat /home/django/data/labforge-standin-users.json").stdout)
    assert [(u["username"], u["is_superuser"]) for u in users] == [("admin", True)]
    assert not (host.root / "root/.labforge-cvat-admin.env").exists()


def test_second_converge_changes_nothing_and_everything_runs(host, mirror, stack):
    again = runner.deploy(start_yml(host, mirror), env=PASSWORD)
    assert again.returncode == 0 and (again.totals.changed, again.totals.errors) == (0, 0), again.totals.changed_ops
    print(f"second converge with the stack: {again.totals.operations} ops, changed=0, {again.seconds:.1f}s")
    assert all(c["State"]["Running"] for c in containers(host).values())
    users = json.loads(host.ssh("docker exec cvat_server cat /home/django/data/labforge-standin-users.json").stdout)
    assert len(users) == 1  # no second admin
    # without a password: the admin exists, so none is needed
    assert runner.deploy(start_yml(host, mirror), env={"LABFORGE_CVAT_ADMIN_PASSWORD": ""}).returncode == 0


def test_a_stopped_container_is_started_again_and_nothing_else_is_touched(host, mirror, stack):
    before = {name: c["State"]["StartedAt"] for name, c in containers(host).items()}
    host.ssh("docker stop cvat_worker_chunks")
    run = runner.deploy(start_yml(host, mirror), env=PASSWORD)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [op.split(" on ")[0] for op in run.totals.changed_ops] == [COMPOSE_UP]
    after = {name: c["State"]["StartedAt"] for name, c in containers(host).items()}
    assert after.pop("cvat_worker_chunks") != before.pop("cvat_worker_chunks")
    assert after == before
    assert containers(host)["cvat_worker_chunks"]["State"]["Running"]


def test_a_moved_share_reaches_the_services(host, mirror, stack):
    """A named volume's driver options never change after creation: Compose alone would keep the old directory."""
    host.ssh("mkdir -p /srv/lab-share && echo moved > /srv/lab-share/here.txt")
    run = runner.deploy(start_yml(host, mirror, share_path="/srv/lab-share"), env=PASSWORD)
    assert run.returncode == 0, run.stderr[-2000:]
    for service in SHARE_SERVICES:
        assert host.ssh(f"docker exec {service} cat /home/django/share/here.txt").stdout == "moved\n", service
    device = host.ssh(f"docker volume inspect {compose.SHARE_VOLUME} --format '{{{{index .Options \"device\"}}}}'").stdout
    assert device.strip() == "/srv/lab-share"
    assert (host.root / "mnt/share/lab-data.txt").read_text() == "kept\n"  # the old directory's files are untouched
    again = runner.deploy(start_yml(host, mirror, share_path="/srv/lab-share"), env=PASSWORD)
    assert again.returncode == 0 and again.totals.changed == 0, again.totals.changed_ops
    back = runner.deploy(start_yml(host, mirror), env=PASSWORD)
    assert back.returncode == 0
    assert host.ssh("docker exec cvat_server cat /home/django/share/lab-data.txt").stdout == "kept\n"


def test_a_new_cvat_host_moves_traefiks_rule(host, mirror, stack):
    doc_path = start_yml(host, mirror, "renamed.yml")
    doc = doc_path.read_text().replace("cvat_host: citest-cvat.lab", "cvat_host: annotate.lab")
    doc_path.write_text(doc)
    run = runner.deploy(doc_path, env=PASSWORD)
    assert run.returncode == 0, run.stderr[-2000:]
    code = "curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {}' http://127.0.0.1:8080/api/server/about"
    assert host.ssh(code.format("annotate.lab")).stdout == "200"
    assert host.ssh(code.format("citest-cvat.lab")).stdout == "404"
    assert containers(host)["cvat_server"]["Config"]["Labels"]["traefik.http.routers.cvat.rule"].startswith(
        "Host(`annotate.lab`)")
    assert runner.deploy(start_yml(host, mirror), env=PASSWORD).returncode == 0  # back to the lab's name


# --- functions --------------------------------------------------------------------------------------------------


def test_a_current_function_is_skipped_and_a_stale_one_redeployed(host, mirror, stack):
    dextr = from_settings("serverless/openvino/dextr", labhosts.lab_pins(), True)
    yolo_id = containers(host)["nuclio-nuclio-openvino-omz-public-yolo-v3-tf"]["Id"]
    # as if an older source had been deployed: the same function with another source-hash label
    host.ssh(f"nuctl deploy --project-name cvat --path {dextr.yaml_dir} --file {dextr.yaml_dir}/function.yaml --platform local "
             "--platform-config '{\"attributes\": {\"network\": \"cvat_cvat\"}}' "
             f"--labels {SLUG_LABEL}={dextr.slug},{HASH_LABEL}=0000000000000000")
    run = runner.deploy(start_yml(host, mirror), env=PASSWORD)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [op.split(" on ")[0] for op in run.totals.changed_ops] == ["Functions | Deploy function serverless/openvino/dextr"]
    found = containers(host)
    assert found["nuclio-nuclio-openvino-dextr"]["Config"]["Labels"][HASH_LABEL] == dextr.digest
    assert found["nuclio-nuclio-openvino-omz-public-yolo-v3-tf"]["Id"] == yolo_id  # skipped: current


def test_every_function_container_has_its_memory_limit(host, stack):
    """nuclio_function_memory_limit reaches Docker (--resource-limit -> --memory), so one request cannot make the
    host's OOM killer take PostgreSQL."""
    limits = standins.pins()["nuclio_function_memory_limit"]
    units = {"Gi": 2**30, "Mi": 2**20}
    found = containers(host)
    for path, container in (("serverless/openvino/dextr", "nuclio-nuclio-openvino-dextr"),
                            ("serverless/openvino/omz/public/yolo-v3-tf", "nuclio-nuclio-openvino-omz-public-yolo-v3-tf")):
        value = limits[path]
        assert found[container]["HostConfig"]["Memory"] == int(value[:-2]) * units[value[-2:]], (container, value)


def test_gpu_functions_wait_for_the_reboot_and_would_fail_before_it(host, stack):
    """The driver awaits its reboot: SAM, SAM 2 and the SAM 2 tracker are not deployed. Deployed anyway, Nuclio's `--gpus all` fails."""
    (line,) = stack.summary_lines()
    for path in ("serverless/pytorch/facebookresearch/sam", "files/nuclio/sam2", "files/nuclio/sam2-tracker"):
        assert f"function {path}: waits for the reboot (NVIDIA driver not loaded yet)" in line
    assert "nuclio-nuclio-pth-facebookresearch-sam-vit-h" not in containers(host)
    sam = from_settings("serverless/pytorch/facebookresearch/sam", labhosts.lab_pins(), True)
    forced = host.ssh(f"nuctl deploy --project-name cvat --path {sam.yaml_dir} --file {sam.yaml_dir}/function-gpu.yaml "
                      "--platform local", check=False)
    assert forced.returncode != 0 and "could not select device driver" in forced.stderr
    host.ssh("docker rm -f nuclio-nuclio-pth-facebookresearch-sam-vit-h >/dev/null 2>&1 || true")


def test_the_testinfra_suite_checks_the_live_stack(host, mirror, stack):
    """tests/host against this host: the live checks must run and pass here, not skip."""
    path = start_yml(host, mirror)
    ssh_config = labhosts.ssh_config([host], TEST_LAB_DIR / "cvat.ssh_config")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/host", f"--hosts=ssh://{host.name}", f"--ssh-config={ssh_config}",
         "--role=gpu", "-q", "-rA"], cwd=runner.REPO, env={**os.environ, "LAB_HOSTS": str(path)},
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    passed = {line.split("::")[-1].split("[")[0] for line in proc.stdout.splitlines() if line.startswith("PASSED ")}
    live = {"test_all_cvat_containers_running", "test_share_mounted_read_only_in_each_service", "test_api_answers",
            "test_admin_exists", "test_enabled_functions_ready", "test_docker_daemon_admits_the_stacks_oldest_client"}
    assert live <= passed, f"not passed: {sorted(live - passed)}\n{proc.stdout[-3000:]}"
