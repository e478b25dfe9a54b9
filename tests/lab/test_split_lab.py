"""A split lab on real parts: CVAT on one lab host, its Nuclio dashboard and functions on another, joined by a lab
network (testlab/lan.LabNetwork: 198.51.100.0/24 inside namespaces the test makes, and a third machine there, the
network's own namespace). One converge of the hosts file builds both.

CVAT is the stand-in cvat_server of the test lab, which lists and calls functions as CVAT v2.51.0's lambda manager
does with CVAT_NUCLIO_INVOKE_METHOD=dashboard (cvat/apps/lambda_manager/views.py at dfd505e7, LambdaGateway.list and
_invoke_via_dashboard: GET /api/functions and POST /api/function_invocations on CVAT_NUCLIO_HOST:CVAT_NUCLIO_PORT with
the x-nuclio-* headers; testlab/standins/cvat_image/labforge_standin/server.py). The dashboard is the stand-in
quay.io/nuclio/dashboard, which forwards an invocation to the function's container IP on port 8080 as Nuclio 1.13's
invoker does (pkg/platform/abstract/invoker.go at 59fa1656), so the call only works when the dashboard and the
functions share the inference host's Docker network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from testlab import labhosts, lan, runner
from testlab.standins import cvat
from tests.lab.conftest import TEST_LAB_DIR
from tests.lab.test_doctor import doctor
from tests.unit.tools.test_cvat_check import write_png

PASSWORD = {"LABFORGE_CVAT_ADMIN_PASSWORD": "x7!Qm2#pLw9$Tz-split"}
CVAT_NAME, INFERENCE_NAME = "citest-split-cvat", "citest-split-gpu"
CVAT_ADDRESS = f"{lan.NETWORK_PREFIX}.10"  # the CVAT host's on the lab network (LabNetwork.address: the first host)
FUNCTIONS = {"openvino-omz-public-yolo-v3-tf", "openvino-dextr"}
RUNS: dict[str, runner.DeployRun] = {}
DOCTOR: dict[str, tuple] = {}


def hosts_file(lab, name: str = "split.yml", **extra):
    cvat_host, inference_host, network, mirror = lab
    placed = labhosts.split_lab_placement(cvat_host, inference_host, {h.name: network.address(h) for h in network.hosts},
                                          inference_group="cpu_servers")  # CPU functions: no GPU layers to wait for
    placed[cvat_host.name][1]["cvat_host"] = network.address(cvat_host)  # what users on the lab network type
    return labhosts.hosts_file([cvat_host, inference_host], mirror, TEST_LAB_DIR / name, placed=placed, **extra)


@pytest.fixture(scope="module")
def lab(boot_host, mirror):
    cvat_host = boot_host(CVAT_NAME, "127.0.0.60")
    inference_host = boot_host(INFERENCE_NAME, "127.0.0.61")
    network = lan.LabNetwork([cvat_host, inference_host], index=3).attach()
    built = (cvat_host, inference_host, network, mirror)
    files = runner.deploy(hosts_file(built, "split-files.yml"))  # Docker, nuctl and CVAT's files; nothing started
    assert files.returncode == 0, files.stderr[-3000:]
    DOCTOR["before"] = doctor(hosts_file(built, "split-files.yml"), "--min-free-gib", "0", "--host", CVAT_NAME)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda args: cvat.load_images(*args), [(cvat_host, labhosts.base_tarball()),
                                                             (inference_host, labhosts.base_tarball(), (), cvat.INFERENCE_IMAGES)]))
    RUNS["first"] = runner.deploy(hosts_file(built, cvat_start=True), env=PASSWORD)
    yield built
    network.detach()


def api(host, method: str, path: str, body: dict | None = None):
    data = f"-d '{json.dumps(body)}' -H 'Content-Type: application/json' " if body is not None else ""
    proc = host.ssh(f"curl -sS --max-time 60 -X {method} {data}-H 'Host: {CVAT_ADDRESS}' -w '\\n%{{http_code}}' "
                    f"http://127.0.0.1:8080{path}", check=False)
    text, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), json.loads(text) if text.strip().startswith(("{", "[")) else text


def function_containers(host) -> set[str]:
    return set(host.ssh("docker ps -a --filter label=nuclio.io/function-name --format '{{.Names}}'").stdout.split())


def test_one_converge_builds_both_and_says_who_serves_whom(lab):
    first = RUNS["first"]
    assert first.returncode == 0, first.stderr[-3000:]
    totals = first.totals
    print(f"split lab converge: {totals.operations} operations, changed={totals.changed}, errors={totals.errors}, "
          f"{first.seconds:.0f} s")
    print("\n".join(first.summary_lines()))
    cvat_line, = [line for line in first.summary_lines() if line.startswith(f"[labforge] {CVAT_NAME}:")]
    gpu_line, = [line for line in first.summary_lines() if line.startswith(f"[labforge] {INFERENCE_NAME}:")]
    _, _, network, _ = lab
    inference_address = network.address(lab[1])
    assert f"functions from the Nuclio dashboard of {INFERENCE_NAME} at http://{inference_address}:8070" in cvat_line
    assert f"serves {CVAT_NAME}: Nuclio dashboard at http://{inference_address}:8070, answering " \
           f"{network.address(lab[0])} only" in gpu_line
    assert all(f"function {path}: deployed, ready" in gpu_line
               for path in ("serverless/openvino/omz/public/yolo-v3-tf", "serverless/openvino/dextr"))


def test_the_doctor_checks_that_the_cvat_host_reaches_the_dashboard(lab):
    _, inference_host, network, _ = lab
    where = f"http://{network.address(inference_host)}:8070"
    rc, lines, _ = DOCTOR["before"]  # Docker there, no dashboard yet: the host answers, nothing listens
    status, _, detail = lines[CVAT_NAME]
    print(f"before the first converge: {status} {detail}")
    assert (rc, status) == (0, "WARN") and f"nothing answers at {where} yet" in detail, detail
    rc, lines, _ = doctor(hosts_file(lab), "--min-free-gib", "0", "--host", CVAT_NAME)
    status, _, detail = lines[CVAT_NAME]
    assert rc == 0 and f"reaches {INFERENCE_NAME}'s Nuclio dashboard ({where})" in detail, detail
    # the lab's CVAT is LAB_RELEASE (v2.51.0, set in cvat_version): its only warning is the security fixes it lacks
    assert status == "WARN" and detail.startswith(f"CVAT {labhosts.LAB_RELEASE} (set in cvat_version) lacks "), detail
    assert "nothing answers" not in detail, detail


def test_cvat_on_host1_lists_and_calls_the_functions_on_host2(lab):
    cvat_host, inference_host, network, _ = lab
    code, listed = api(cvat_host, "GET", "/api/lambda/functions")
    assert code == 200, listed
    assert {f["id"] for f in listed} == FUNCTIONS
    code, answer = api(cvat_host, "POST", "/api/lambda/functions/openvino-dextr", {"task": 1, "frame": 0})
    print(f"cross-host call: HTTP {code}, {answer}")
    assert (code, answer["function"]) == (200, "openvino-dextr")
    # the way it went: CVAT's Nuclio settings point at the guard on host 1, which forwards to host 2's dashboard,
    # which reached the function on its network
    env = cvat_host.ssh("docker exec cvat_server env").stdout.split()
    assert {"CVAT_NUCLIO_INVOKE_METHOD=dashboard", "CVAT_NUCLIO_HOST=nuclio_guard", "CVAT_NUCLIO_PORT=8070"} <= set(env)
    guard = cvat_host.ssh("docker exec nuclio_guard env").stdout.split()
    assert f"LABFORGE_NUCLIO_UPSTREAM={network.address(inference_host)}:8070" in guard
    on_network = inference_host.ssh("docker network inspect labforge_nuclio --format "
                                    "'{{range .Containers}}{{.Name}} {{end}}'").stdout.split()
    assert {"nuclio", "nuclio-nuclio-openvino-dextr", "nuclio-nuclio-openvino-omz-public-yolo-v3-tf"} <= set(on_network)


def test_cvat_check_proves_it_through_cvats_api_from_a_machine_on_the_lab_network(lab, tmp_path):
    """labforge.tools.cvat_check, as an admin runs it after a converge, from the lab network's third machine: it logs
    in, finds the functions in CVAT's list, and clicks once on a frame with DEXTR, which runs on host 2."""
    _, _, network, _ = lab
    image = write_png(tmp_path / "frame.png", 64, 48)
    proc = network.run(sys.executable, "-m", "labforge.tools.cvat_check", "--url", f"http://{CVAT_ADDRESS}:8080",
                       *[arg for name in sorted(FUNCTIONS) for arg in ("--expect", name)], "--interactor", "openvino-dextr",
                       "--image", str(image), "--timeout", "60", timeout=120, env={**os.environ, **PASSWORD}, cwd=runner.REPO)
    print(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "[cvat-check] openvino-dextr" in proc.stdout and "a polygon of 1 points" in proc.stdout, proc.stdout


def test_host1_runs_no_function_containers_and_no_nuclio(lab):
    cvat_host, inference_host, _, _ = lab
    assert function_containers(cvat_host) == set()
    names = set(cvat_host.ssh("docker ps -a --format '{{.Names}}'").stdout.split())
    assert "cvat_server" in names and "nuclio" not in names
    assert cvat_host.ssh("test -e /usr/local/bin/nuctl", check=False).returncode != 0
    assert function_containers(inference_host) == {f"nuclio-nuclio-{name}" for name in FUNCTIONS}
    assert inference_host.ssh("test -e /opt/cvat", check=False).returncode != 0  # no CVAT checkout there


def test_host2s_dashboard_answers_host1_and_refuses_a_third_machine(lab):
    cvat_host, inference_host, network, _ = lab
    address = network.address(inference_host)
    reach = cvat_host.ssh(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 5 http://{address}:8070/api/functions",
                          check=False)
    assert (reach.returncode, reach.stdout) == (0, "200"), reach.stderr
    function_ports = {int(port) for port in lan.PUBLISHED.findall(inference_host.ssh(
        "docker ps --filter label=nuclio.io/function-name --format '{{.Ports}}'").stdout)}
    assert len(function_ports) == len(FUNCTIONS)
    from_outside = network.probe(address, {8070, *function_ports})
    print(f"from the third machine: {from_outside}")
    assert all(state != "open" for state in from_outside.values()), from_outside
    functions_from_host1 = cvat_host.ssh(
        "for p in " + " ".join(map(str, sorted(function_ports))) + f"; do curl -s -o /dev/null --max-time 3 "
        f"http://{address}:$p/ && echo open || echo closed; done").stdout.split()
    assert set(functions_from_host1) == {"closed"}  # the functions' ports answer nobody outside host 2


def test_host2s_dashboard_is_closed_over_ipv6_and_to_host1s_local_accounts(lab):
    """Before this round the inference host's dashboard and function ports answered anyone on the segment over
    IPv6 link-local (docker-proxy binds [::]), and any account on the CVAT host reached the dashboard."""
    cvat_host, inference_host, network, _ = lab
    function_ports = {int(port) for port in lan.PUBLISHED.findall(inference_host.ssh(
        "docker ps --filter label=nuclio.io/function-name --format '{{.Ports}}'").stdout)}
    over_ipv6 = network.probe(network.link_local(inference_host), {8070, labhosts.SSH_PORT, *function_ports})
    print(f"from the third machine over IPv6 link-local: {over_ipv6}")
    assert all(state != "open" for port, state in over_ipv6.items() if port != labhosts.SSH_PORT), over_ipv6
    url = f"http://{network.address(inference_host)}:8070/api/functions"
    as_nobody = cvat_host.ssh(f"setpriv --reuid=nobody --regid=nogroup --clear-groups curl -sS --max-time 5 {url}", check=False)
    print(f"host 1's nobody -> {url}: rc={as_nobody.returncode} {as_nobody.stderr.strip()}")
    assert as_nobody.returncode != 0, as_nobody.stdout


def test_a_second_converge_of_both_changes_nothing(lab):
    again = runner.deploy(hosts_file(lab, cvat_start=True), env=PASSWORD)
    assert again.returncode == 0, again.stderr[-3000:]
    totals = again.totals
    print(f"second converge: {totals.operations} operations, changed={totals.changed}, {again.seconds:.0f} s")
    assert (totals.changed, totals.errors) == (0, 0), totals.changed_ops


def test_with_cvat_version_unset_both_hosts_stay_on_the_cvat_hosts_release(lab):
    """The product's default (None) on this split lab, converged at v2.51.0: the inference host has no checkout and
    follows its CVAT host's (labforge/releases.py); taking the newest row instead would move its dashboard and nuctl
    to 1.16.3. Nothing moves, nothing changes, and each host's summary names what v2.51.0 lacks."""
    run = runner.deploy(hosts_file(lab, "split-unset.yml", cvat_start=True, cvat_version=None), env=PASSWORD)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (run.totals.changed, run.totals.errors) == (0, 0), run.totals.changed_ops
    lines = run.summary_lines()
    assert len(lines) == 2 and all("notice: CVAT v2.51.0 (its checkout's release; cvat_version is unset) lacks 11 "
                                   "security fixes" in line for line in lines), lines


def test_the_testinfra_suite_checks_each_host_for_its_role(lab):
    """tests/host against both hosts (as `./lab verify` runs it): each host's checks follow its role."""
    cvat_host, inference_host, _, _ = lab
    ssh_config = labhosts.ssh_config([cvat_host, inference_host], TEST_LAB_DIR / "split.ssh_config")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/host", f"--hosts=ssh://{CVAT_NAME},ssh://{INFERENCE_NAME}",
         f"--ssh-config={ssh_config}", "--role=cpu", "-q", "-rA"], cwd=runner.REPO,
        env={**os.environ, "LAB_HOSTS": str(hosts_file(lab, cvat_start=True))}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout.split("short test summary info")[0][-4000:]
    passed = {tuple(line.removeprefix("PASSED ").split("::")[-1].split("[")) for line in proc.stdout.splitlines()
              if line.startswith("PASSED ")}
    on = {host: {test for test, where in passed if host in where} for host in (CVAT_NAME, INFERENCE_NAME)}
    assert {"test_all_cvat_containers_running", "test_api_answers", "test_admin_exists",
            "test_a_split_labs_cvat_host_runs_no_nuclio_and_calls_its_inference_host"} <= on[CVAT_NAME], proc.stdout[-3000:]
    assert {"test_enabled_functions_ready", "test_nuctl_is_the_pinned_file", "test_docker_running_and_enabled",
            "test_an_inference_host_runs_its_dashboard_on_the_functions_network_and_no_cvat"} <= on[INFERENCE_NAME], \
        proc.stdout[-3000:]


def test_host2_stopped_fails_the_next_converge_with_one_line_and_host1_is_left_as_it_was(lab):
    cvat_host, inference_host, _, _ = lab
    before = cvat_host.ssh("docker ps -a --format '{{.Names}} {{.ID}} {{.State}}' | sort; "
                           "sha256sum /opt/cvat/docker-compose.custom.override.yml /etc/labforge/cvat.env").stdout
    inference_host.stop()
    run = runner.deploy(hosts_file(lab, cvat_start=True), env=PASSWORD)
    assert run.returncode != 0
    lines = run.summary_lines()
    print("\n".join(lines))
    assert [line for line in lines if line.startswith(f"[labforge] {INFERENCE_NAME}:")] == [
        next(line for line in lines if line.startswith(f"[labforge] {INFERENCE_NAME}: unreachable: "))]
    assert f"[labforge] {CVAT_NAME}: refused: its inference host {INFERENCE_NAME} could not be reached" in run.stderr
    assert '{"plan"' not in run.stdout  # pyinfra stopped while planning: no operation ran (no --json document at all)
    assert cvat_host.ssh("docker ps -a --format '{{.Names}} {{.ID}} {{.State}}' | sort; "
                         "sha256sum /opt/cvat/docker-compose.custom.override.yml /etc/labforge/cvat.env").stdout == before
    rc, lines, _ = doctor(hosts_file(lab), "--min-free-gib", "0", "--host", CVAT_NAME)
    status, _, detail = lines[CVAT_NAME]
    print(f"doctor with host 2 stopped: {status} {detail}")
    assert (rc, status) == (1, "FAIL") and f"cannot reach {INFERENCE_NAME}'s Nuclio dashboard" in detail, detail
