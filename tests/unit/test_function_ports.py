"""Steady function ports: the host port each function gets (labforge.nuclio_functions.http_ports), the on-host program
that writes it into the function's configuration (labforge/function_config.py, run for real), and the deploy command
that uses it, run by a real shell with a recording nuctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labforge import function_config
from labforge.groupdata import load
from labforge.nuclio_functions import (
    CONFIG_DIR,
    CONFIG_PROGRAM,
    SLUG_LABEL,
    deploy_commands,
    from_settings,
    http_ports,
    source,
)
from labforge.paths import REPO

GPU = load("gpu_servers")
EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range
TAKEN = {8080: "CVAT", 8070: "the Nuclio dashboard"}
PROGRAM = REPO / "labforge" / "function_config.py"
# The shape of CVAT's function YAMLs (serverless/openvino/dextr/nuclio/function.yaml at dfd505e7): one HTTP trigger
# named myHttpTrigger with workers and a request-size attribute, annotations holding a JSON spec string.
CVAT_LIKE = """\
metadata:
  name: openvino-dextr
  namespace: cvat
  annotations:
    name: DEXTR
    type: interactor
    spec: |
      [ {"id": 0, "name": "object"} ]
spec:
  description: Deep Extreme Cut
  runtime: 'python:3.8'
  handler: main:handler
  eventTimeout: 30s
  triggers:
    myHttpTrigger:
      maxWorkers: 2
      kind: 'http'
      workerAvailabilityTimeoutMilliseconds: 10000
      attributes:
        maxRequestBodySize: 33554432 # 32MB
  platform:
    attributes:
      restartPolicy:
        name: always
        maximumRetryCount: 3
"""


# --- which port ------------------------------------------------------------------------------------------------------


def test_every_function_a_gpu_host_deploys_by_default_has_its_own_port_outside_dockers_range():
    ports = http_ports(GPU["nuclio_functions"], GPU["nuclio_function_ports"], EPHEMERAL, TAKEN)
    assert set(ports) == set(GPU["nuclio_functions"]) and len(set(ports.values())) == len(ports)
    assert all(1024 <= port < EPHEMERAL[0] for port in ports.values())


@pytest.mark.parametrize(("ports", "ephemeral", "message"), [
    ({}, EPHEMERAL, "no host port for serverless/openvino/dextr: add it to nuclio_function_ports, below Docker's "
                    "ephemeral range 32768-60999"),
    ({"serverless/openvino/dextr": 32769}, EPHEMERAL, "= 32769 is in this host's ephemeral range 32768-60999"),
    ({"serverless/openvino/dextr": 32702}, (1024, 65535), "= 32702 is in this host's ephemeral range 1024-65535"),
    ({"serverless/openvino/dextr": 8080}, EPHEMERAL, "= 8080 is CVAT's port"),
    ({"serverless/openvino/dextr": 8070}, EPHEMERAL, "= 8070 is the Nuclio dashboard's port"),
    ({"serverless/openvino/dextr": "32702"}, EPHEMERAL, "= '32702' is not a TCP port from 1024 to 65535"),
    ({"serverless/openvino/dextr": True}, EPHEMERAL, "is not a TCP port"),
    ({"serverless/openvino/dextr": 80}, EPHEMERAL, "= 80 is not a TCP port from 1024 to 65535"),
])
def test_a_port_another_container_could_hold_is_refused_with_one_line(ports, ephemeral, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("'", "'")):
        http_ports(["serverless/openvino/dextr"], ports, ephemeral, TAKEN)


def test_one_port_for_two_functions_is_refused():
    with pytest.raises(ValueError, match="gives 32702 to both serverless/openvino/dextr and files/nuclio/sam2"):
        http_ports(["serverless/openvino/dextr", "files/nuclio/sam2"],
                   {"serverless/openvino/dextr": 32702, "files/nuclio/sam2": 32702}, EPHEMERAL, TAKEN)


def test_the_port_is_part_of_the_source_hash_and_testinfra_reads_the_same():
    a = source("serverless/openvino/dextr", "/opt/cvat", "v2.51.0", False, port=32702)
    assert a.digest != source("serverless/openvino/dextr", "/opt/cvat", "v2.51.0", False, port=32710).digest
    assert a.digest != source("serverless/openvino/dextr", "/opt/cvat", "v2.51.0", False).digest
    data = {**GPU, "cvat_version": "v2.51.0"}
    for path in GPU["nuclio_functions"]:  # the deploy passes the checked port; testinfra and the lab read the setting
        assert from_settings(path, data, True).digest == from_settings(path, data, True, GPU["nuclio_function_ports"][path]).digest


# --- the configuration with the port (the host program) -----------------------------------------------------------------


def test_the_one_http_trigger_gets_the_port_and_keeps_everything_else():
    config = yaml.safe_load(CVAT_LIKE)
    found = function_config.with_port(config, 32702)
    trigger = found["spec"]["triggers"]["myHttpTrigger"]
    assert trigger == {"maxWorkers": 2, "kind": "http", "workerAvailabilityTimeoutMilliseconds": 10000,
                       "attributes": {"maxRequestBodySize": 33554432, "port": 32702}}
    found["spec"]["triggers"]["myHttpTrigger"]["attributes"].pop("port")
    assert found == config and "port" not in config["spec"]["triggers"]["myHttpTrigger"]["attributes"]  # a copy


@pytest.mark.parametrize("name", ["sam2/function.yaml", "sam2/function-gpu.yaml", "sam2-tracker/function.yaml",
                                  "sam2-tracker/function-gpu.yaml"])
def test_our_functions_configurations_get_the_port_too(name):
    config = yaml.safe_load((REPO / "files/nuclio" / name).read_text())
    found = function_config.with_port(config, 32704)
    (http,) = [t for t in found["spec"]["triggers"].values() if t["kind"] == "http"]
    assert http["attributes"]["port"] == 32704


def test_no_http_trigger_gets_nuclios_default_one_and_two_are_refused():
    bare = {"metadata": {"name": "f"}, "spec": {"handler": "main:handler"}}
    assert function_config.with_port(bare, 32701)["spec"]["triggers"] == {
        "default-http": {"kind": "http", "name": "default-http", "numWorkers": 1, "attributes": {"port": 32701}}}
    two = {"metadata": {"name": "f"}, "spec": {"triggers": {"a": {"kind": "http"}, "b": {"kind": "http"}}}}
    with pytest.raises(function_config.ConfigProblem, match="2 HTTP triggers \\(a, b\\); Nuclio takes one"):
        function_config.with_port(two, 32701)
    with pytest.raises(function_config.ConfigProblem, match="no metadata"):
        function_config.with_port(["not", "a", "config"], 32701)


def test_the_program_writes_yaml_that_differs_from_the_source_only_by_the_port(tmp_path):
    """Values keep their YAML types (CVAT's `version: 2`, `startswith_box_optional: true`: Nuclio's annotation map
    takes them as strings from YAML, and JSON would refuse them), no line is wrapped, and a failure leaves the last
    good file in place."""
    source_yaml, dest = tmp_path / "function.yaml", tmp_path / "out" / "dextr.yaml"
    source_yaml.write_text(CVAT_LIKE.replace("type: interactor", "type: interactor\n    version: 2\n    "
                                             "startswith_box_optional: true\n    help_message: " + "word " * 40))
    dest.parent.mkdir()
    done = subprocess.run([sys.executable, str(PROGRAM), str(source_yaml), "32702", str(dest)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written, original = yaml.safe_load(dest.read_text()), yaml.safe_load(source_yaml.read_text())
    assert written["spec"]["triggers"]["myHttpTrigger"]["attributes"].pop("port") == 32702
    assert written == original
    assert written["metadata"]["annotations"]["version"] == 2 and written["metadata"]["annotations"]["spec"] == \
        '[ {"id": 0, "name": "object"} ]\n'
    assert "  version: 2\n" in dest.read_text() and "startswith_box_optional: true\n" in dest.read_text()
    assert any(line.strip().startswith("help_message: word word") and len(line) > 200 for line in dest.read_text().splitlines())
    assert oct(dest.stat().st_mode & 0o777) == "0o644" and os.listdir(dest.parent) == ["dextr.yaml"]

    source_yaml.write_text("metadata: [unclosed\n")
    bad = subprocess.run([sys.executable, str(PROGRAM), str(source_yaml), "32710", str(dest)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith(f"labforge: {source_yaml}: ")
    assert yaml.safe_load(dest.read_text())["spec"]["triggers"]["myHttpTrigger"]["attributes"]["port"] == 32702  # untouched
    usage = subprocess.run([sys.executable, str(PROGRAM), str(source_yaml)], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: function-config")


# --- the deploy command, run by a real shell ---------------------------------------------------------------------------


def stubbed_shell(tmp_path: Path, command: str, slug: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``command`` with sh, python3 and this repository's function_config.py where the host has them, and a nuctl
    that records its arguments (and answers `get functions` as ready)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "nuctl.log"
    bin_dir.mkdir(exist_ok=True)
    nuctl = bin_dir / "nuctl"
    ready = json.dumps([{"metadata": {"labels": {SLUG_LABEL: slug}}, "status": {"state": "ready"}}])
    nuctl.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                     f"case \"$1\" in get) [ \"$2\" = functions ] && echo '{ready}' ;; esac\nexit 0\n")
    nuctl.chmod(0o755)
    python3 = bin_dir / "python3"
    if not python3.exists():
        python3.symlink_to(sys.executable)
    log.unlink(missing_ok=True)
    command = command.replace(CONFIG_PROGRAM, str(PROGRAM)).replace(CONFIG_DIR, str(tmp_path / "configs"))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    return done, log.read_text().splitlines() if log.exists() else []


def function_tree(tmp_path: Path, gpu_variant: bool) -> str:
    tree = tmp_path / "serverless/pytorch/facebookresearch/sam/nuclio"
    tree.mkdir(parents=True)
    (tree / "function.yaml").write_text(CVAT_LIKE.replace("openvino-dextr", "pth-sam"))
    if gpu_variant:
        (tree / "function-gpu.yaml").write_text(CVAT_LIKE.replace("openvino-dextr", "pth-sam-gpu"))
    return str(tmp_path)


@pytest.mark.parametrize("gpu_variant", [True, False])
def test_the_deploy_reads_the_configuration_with_the_port_from_the_variant_it_picks(tmp_path, gpu_variant):
    root = function_tree(tmp_path, gpu_variant)
    fn = source("serverless/pytorch/facebookresearch/sam", root, "v2.51.0", True, port=32703)
    commands = deploy_commands(fn, root, {}, ready="true")
    done, calls = stubbed_shell(tmp_path, " && ".join(f"{{ {c}; }}" for c in commands if "docker build" not in c), fn.slug)
    assert done.returncode == 0, done.stderr
    (deploy,) = [call for call in calls if call.startswith("deploy")]
    config = tmp_path / "configs" / f"{fn.slug}.yaml"
    assert f"--file {config}" in deploy
    written = yaml.safe_load(config.read_text())
    assert written["metadata"]["name"] == ("pth-sam-gpu" if gpu_variant else "pth-sam")
    assert written["spec"]["triggers"]["myHttpTrigger"]["attributes"]["port"] == 32703


def test_behind_the_reboot_guard_a_failed_step_before_it_deploys_nothing(tmp_path):
    """Joined with && (a GPU host whose driver awaits its reboot), the project step's `||` and the GPU variant's `;`
    each ended the chain: a failure before them (CVAT's API not answering) still ran `nuctl deploy`."""
    root = function_tree(tmp_path, gpu_variant=False)
    fn = source("serverless/pytorch/facebookresearch/sam", root, "v2.51.0", True, port=32703)
    (command,) = deploy_commands(fn, root, {}, reboot_guard=True, ready="false")
    done, calls = stubbed_shell(tmp_path, command.replace("docker build", "true"), fn.slug)
    assert done.returncode != 0
    assert not [call for call in calls if call.startswith("deploy")], calls
    (command,) = deploy_commands(fn, root, {}, reboot_guard=True, ready="true")
    done, calls = stubbed_shell(tmp_path, command.replace("docker build", "true"), fn.slug)
    assert done.returncode == 0, done.stderr
    assert len([call for call in calls if call.startswith("deploy")]) == 1  # and with it answering, the guard deploys
