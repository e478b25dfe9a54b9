"""The two Nuclio specs: what nuctl needs, what CVAT reads, and that the build matches the code."""

from __future__ import annotations

import ast
import json
import re
from importlib import metadata
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from sam2_runtime import config_name

from testlab.sam2.support import FUNCTION_DIR, REPO

GPU = "function-gpu.yaml"
CPU = "function.yaml"
SPECS = [GPU, CPU]

VARIANT_CFG = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
CHECKPOINT_RELEASE = {"sam2.1": "092824", "sam2": "072824"}


def load(name: str) -> dict[str, Any]:
    with (FUNCTION_DIR / name).open() as f:
        spec = yaml.safe_load(f)
    assert isinstance(spec, dict)
    return spec


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    env = spec["spec"]["env"]
    assert isinstance(env, list)
    out = {}
    for item in env:
        assert set(item) == {"name", "value"}, item
        assert isinstance(item["name"], str) and isinstance(item["value"], str), f"env values must be strings: {item}"
        out[item["name"]] = item["value"]
    return out


def directives(spec: dict[str, Any]) -> list[dict[str, str]]:
    pre = spec["spec"]["build"]["directives"]["preCopy"]
    assert isinstance(pre, list) and pre
    for item in pre:
        assert set(item) == {"kind", "value"} and item["kind"] in {"ENV", "RUN", "WORKDIR", "ARG"}, item
        assert isinstance(item["value"], str)
    return pre


def build_env(spec: dict[str, Any]) -> dict[str, str]:
    return dict(d["value"].split("=", 1) for d in directives(spec) if d["kind"] == "ENV")


def build_runs(spec: dict[str, Any]) -> str:
    return "\n".join(d["value"] for d in directives(spec) if d["kind"] == "RUN")


def cvat_reads(annotations: dict[str, str]) -> dict[str, Any]:
    """Parse annotations the way CVAT's lambda_manager does (LambdaFunction.__init__ / to_dict)."""
    return {
        "kind": annotations.get("type"),
        "name": annotations.get("name"),
        "labels": json.loads(annotations.get("spec") or "[]"),
        "min_pos_points": int(annotations.get("min_pos_points", 1)),
        "min_neg_points": int(annotations.get("min_neg_points", -1)),
        "startswith_box": bool(annotations.get("startswith_box", False)),
        "startswith_box_optional": bool(annotations.get("startswith_box_optional", False)),
        "version": int(annotations.get("version", "1")),
        "help_message": annotations.get("help_message", ""),
    }


@pytest.mark.parametrize("name", SPECS)
def test_metadata_and_annotations_cvat_lists_as_an_interactor(name):
    spec = load(name)
    meta = spec["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), meta["name"]
    assert meta["namespace"] == "cvat"
    annotations = meta["annotations"]
    # Nuclio keeps annotations as map[string]string: quoted values mean what CVAT will parse.
    assert all(isinstance(v, str) for v in annotations.values()), annotations
    parsed = cvat_reads(annotations)
    assert parsed["kind"] == "interactor"
    assert parsed["name"] and parsed["help_message"]
    assert parsed["labels"] == []
    assert parsed["version"] >= 2  # the UI warns about interactors below version 2
    assert parsed["min_pos_points"] == 0  # box-only requests carry no positive point
    assert parsed["min_neg_points"] == 0
    assert annotations["startswith_box_optional"] == "true" and parsed["startswith_box_optional"] is True
    # CVAT reads bool("false") as True: the only safe "no" for startswith_box is its absence.
    assert "startswith_box" not in annotations


def test_the_two_specs_are_distinct_functions_with_the_same_protocol():
    gpu, cpu = load(GPU), load(CPU)
    assert gpu["metadata"]["name"] != cpu["metadata"]["name"]
    keep = ("type", "version", "spec", "min_pos_points", "min_neg_points", "startswith_box_optional")
    assert {k: gpu["metadata"]["annotations"][k] for k in keep} == {k: cpu["metadata"]["annotations"][k] for k in keep}


@pytest.mark.parametrize("name", SPECS)
def test_handler_runtime_and_timeout(name):
    spec = load(name)["spec"]
    assert spec["handler"] == "main:handler"
    tree = ast.parse((FUNCTION_DIR / "main.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert [a.arg for a in functions["handler"].args.args] == ["context", "event"]
    assert [a.arg for a in functions["init_context"].args.args] == ["context"]
    assert re.fullmatch(r"python:3\.(1[0-9])", spec["runtime"]), spec["runtime"]
    timeout = re.fullmatch(r"(\d+)s", str(spec["eventTimeout"]))
    assert timeout and int(timeout.group(1)) >= 30
    assert isinstance(spec["description"], str) and spec["description"]


@pytest.mark.parametrize("name", SPECS)
def test_variant_settings_agree_with_each_other_and_the_sam2_package(name):
    spec = load(name)
    env, benv = env_of(spec), build_env(spec)
    model, cfg = env["MODEL"], env["MODEL_CFG"]
    match = re.fullmatch(r"(sam2(?:\.1)?)_hiera_(tiny|small|base_plus|large)\.pt", model)
    assert match, f"MODEL {model!r} is not one of Meta's checkpoint names"
    release, variant = match.groups()
    assert cfg == f"configs/{release}/{release}_hiera_{VARIANT_CFG[variant]}.yaml"
    assert config_name(cfg) == cfg, "MODEL_CFG must exist in the installed sam2 package"
    # The build downloads the checkpoint the runtime loads.
    assert benv["MODEL"] == model and benv["MODEL_DIR"] == env["MODEL_DIR"]
    assert benv["SAM2_CHECKPOINT_BASE_URL"].endswith("/" + CHECKPOINT_RELEASE[release])
    assert benv["SAM2_CHECKPOINT_BASE_URL"].startswith("https://")
    assert "SAM2_CHECKPOINT_SHA256" in benv
    runs = build_runs(spec)
    assert '"$MODEL_DIR/$MODEL" "$SAM2_CHECKPOINT_BASE_URL/$MODEL"' in runs
    assert 'sha256sum -c' in runs
    assert int(env["SAM2_CACHE_SIZE"]) >= 1
    assert int(env["MAX_IMAGE_PIXELS"]) >= 1920 * 1080


def _sam2_pin_from_requirements() -> str:
    pins = [Requirement(line) for line in (REPO / "requirements-sam2.txt").read_text().splitlines() if line and not line.startswith("#")]
    (sam2,) = [r for r in pins if r.name == "sam2"]
    return str(sam2.specifier)


@pytest.mark.parametrize("name", SPECS)
def test_build_installs_the_tested_sam2_on_a_torch_it_accepts(name):
    spec = load(name)
    runs = build_runs(spec)
    tested = metadata.version("sam2")
    assert _sam2_pin_from_requirements() == f"=={tested}"
    assert f"sam2=={tested}" in runs
    assert "SAM2_BUILD_CUDA=0" in runs
    assert "--no-build-isolation" in runs, "an isolated sam2 build downloads a second torch"
    torch_requirement = next(Requirement(r) for r in metadata.requires("sam2") if Requirement(r).name == "torch")
    base = spec["spec"]["build"]["baseImage"]
    if name == GPU:
        image_torch = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda12\.\d+-cudnn\d+-(runtime|devel)", base)
        assert image_torch, base
        torch_version = image_torch.group(1)
    else:
        assert base == f"python:{spec['spec']['runtime'].split(':')[1]}-slim"
        pinned = re.search(r"torch==(\d+\.\d+\.\d+)", runs)
        assert pinned and "download.pytorch.org/whl/cpu" in build_env(spec)["TORCH_INDEX_URL"]
        torch_version = pinned.group(1)
    assert Version(torch_version) in torch_requirement.specifier, f"{base}: torch {torch_version} vs sam2 {torch_requirement}"
    assert f"torch.__version__.startswith('{torch_version}')" in runs, "the build must fail if pip replaced torch"


@pytest.mark.parametrize("name", SPECS)
def test_http_trigger_resources_and_restart_policy(name):
    spec = load(name)["spec"]
    triggers = spec["triggers"]
    assert len(triggers) == 1
    (trigger,) = triggers.values()
    assert trigger["kind"] == "http"
    # Nuclio 1.13.x deprecates maxWorkers for numWorkers (pkg/functionconfig/types.go on branch 1.13.x).
    assert trigger["numWorkers"] == 1 and isinstance(trigger["numWorkers"], int)
    assert "maxWorkers" not in trigger
    assert trigger["attributes"]["maxRequestBodySize"] == 33554432
    policy = spec["platform"]["attributes"]["restartPolicy"]
    assert policy["name"] == "always" and isinstance(policy["maximumRetryCount"], int)
    assert spec["platform"]["attributes"]["mountMode"] == "volume"
    if name == GPU:
        assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["build"]["baseImage"].startswith("pytorch/pytorch:")
    else:
        assert "nvidia.com/gpu" not in json.dumps(spec)


def test_gpu_base_image_comment_explains_the_change_from_the_users_choice():
    text = (FUNCTION_DIR / GPU).read_text()
    assert "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-devel" in text
    assert "torch>=2.5.1" in text



@pytest.mark.parametrize("name", SPECS)
def test_header_deploy_command_uses_the_env_names_cvat_v2_51_passes(name):
    """The comment's nuctl command must match what the functions layer runs (CVAT v2.51.0's
    serverless/deploy_{cpu,gpu}.sh pass CVAT_FUNCTIONS_REDIS_*; CVAT_REDIS_* is an older name)."""
    from labforge import groupdata

    header = "".join(line for line in (FUNCTION_DIR / name).read_text().splitlines(keepends=True) if line.startswith("#"))
    for key, value in groupdata.load()["nuclio_function_env"].items():
        assert f"--env {key}={value}" in header
    assert "CVAT_REDIS_" not in header


FUNCTION_SPECS = sorted((REPO / "files" / "nuclio").glob("*/function*.yaml"))
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
MEASURED_PEAK_RSS = {"tiny": 1424 * 2**20, "large": 2388 * 2**20}  # bench/sam2_tracker.py and sam2_latency.py, on the CPU


def memory_bytes(quantity: str) -> int:
    """A Kubernetes quantity in bytes, as Nuclio reads spec.resources.limits.memory (``Memory().Value()``)."""
    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti)?", quantity)
    assert match, f"memory limit {quantity!r}: write it as <n>Mi or <n>Gi"
    return int(match[1]) * BINARY.get(match[2] or "", 1)


@pytest.mark.parametrize("path", FUNCTION_SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_function_yaml_limits_its_container_memory(path):
    """Nuclio 1.13's local platform turns spec.resources.limits.memory into `docker run --memory <bytes>b`
    (pkg/platform/local/platform.go, resolveFunctionSpecRequestMemory, branch 1.13.x); requests it never reads."""
    assert {f"{p.parent.name}/{p.name}" for p in FUNCTION_SPECS} == {
        "sam2-tracker/function-gpu.yaml", "sam2-tracker/function.yaml", "sam2/function-gpu.yaml", "sam2/function.yaml"}
    spec = yaml.safe_load(path.read_text())["spec"]
    limits = spec["resources"]["limits"]
    memory = memory_bytes(limits["memory"])
    assert "requests" not in spec["resources"]
    env = {item["name"]: item["value"] for item in spec["env"]}
    variant = "large" if "large" in env["MODEL"] else "tiny"
    if path.name == "function-gpu.yaml":
        assert limits["nvidia.com/gpu"] == 1 and variant == "large"
        assert memory >= 3 * MEASURED_PEAK_RSS["large"]  # the CPU-side peak plus CUDA's host memory
    else:
        assert "nvidia.com/gpu" not in limits and variant == "tiny"
        assert memory >= 2 * MEASURED_PEAK_RSS["tiny"]
    text = path.read_text()
    assert "pkg/platform/local/platform.go" in text and "59fa1656" in text  # the comment says where Nuclio applies it
