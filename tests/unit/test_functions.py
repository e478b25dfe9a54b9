"""Function sources, their labels and hashes, and the skip/redeploy decision."""

import shlex

from labforge.nuclio_functions import HASH_LABEL, SLUG_LABEL, deploy_commands, is_current, source

CVAT = "/opt/cvat"


def test_cvat_function_hash_follows_release_and_variant():
    a = source("serverless/openvino/dextr", CVAT, "v2.51.0", False)
    assert a.yaml_dir == "/opt/cvat/serverless/openvino/dextr/nuclio" and not a.is_local
    assert a.digest == source("serverless/openvino/dextr", CVAT, "v2.51.0", False).digest
    assert a.digest != source("serverless/openvino/dextr", CVAT, "v2.52.0", False).digest
    assert a.digest != source("serverless/openvino/dextr", CVAT, "v2.51.0", True).digest


def test_local_function_hash_follows_its_files(tmp_path, monkeypatch):
    import labforge.nuclio_functions as functions

    fn_dir = tmp_path / "files/nuclio/demo"
    fn_dir.mkdir(parents=True)
    (fn_dir / "main.py").write_text("print(1)\n")
    monkeypatch.setattr(functions, "REPO", tmp_path)
    before = source("files/nuclio/demo", CVAT, "v2.51.0", True)
    assert before.is_local and before.yaml_dir == "/opt/labforge/functions/demo"
    (fn_dir / "__pycache__").mkdir()
    (fn_dir / "__pycache__/main.cpython-311.pyc").write_bytes(b"\x00")
    assert source("files/nuclio/demo", CVAT, "v2.51.0", True).digest == before.digest
    (fn_dir / "main.py").write_text("print(2)\n")
    assert source("files/nuclio/demo", CVAT, "v2.51.0", True).digest != before.digest


def test_slug_is_a_valid_label_value():
    fn = source("serverless/openvino/omz/public/yolo-v3-tf", CVAT, "v2.51.0", False)
    assert fn.slug == "serverless.openvino.omz.public.yolo-v3-tf" and len(fn.slug) <= 63


def test_is_current_needs_label_hash_and_ready():
    fn = source("serverless/openvino/dextr", CVAT, "v2.51.0", False)
    labels = {SLUG_LABEL: fn.slug, HASH_LABEL: fn.digest}
    assert is_current(fn, [{"name": "openvino-dextr", "state": "ready", "labels": labels}])
    assert not is_current(fn, [{"name": "openvino-dextr", "state": "error", "labels": labels}])
    assert not is_current(fn, [{"name": "openvino-dextr", "state": "ready", "labels": {**labels, HASH_LABEL: "old"}}])
    assert not is_current(fn, [{"name": "openvino-dextr", "state": "ready", "labels": {}}])
    assert not is_current(fn, [])


def test_deploy_commands_use_cvat_flags():
    fn = source("serverless/pytorch/facebookresearch/sam", CVAT, "v2.51.0", True)
    commands = deploy_commands(fn, CVAT, {"CVAT_FUNCTIONS_REDIS_HOST": "cvat_redis_ondisk", "CVAT_FUNCTIONS_REDIS_PORT": "6666"})
    deploy = next(c for c in commands if "nuctl deploy" in c)
    for flag in ("--project-name cvat", "--platform local", "--env CVAT_FUNCTIONS_REDIS_HOST=cvat_redis_ondisk",
                 "--env CVAT_FUNCTIONS_REDIS_PORT=6666", f"--labels {SLUG_LABEL}={fn.slug},{HASH_LABEL}={fn.digest}"):
        assert flag in deploy
    assert shlex.quote('{"attributes": {"network": "cvat_cvat"}}') in deploy
    assert "function-gpu.yaml" in deploy  # GPU variant preferred when the function has one
    assert commands[0].endswith("wait-cvat-api")
    assert not any("docker build" in c for c in commands if "openvino/base" in c)


def test_cpu_openvino_function_builds_base_images_first():
    fn = source("serverless/openvino/dextr", CVAT, "v2.51.0", False)
    commands = deploy_commands(fn, CVAT, {})
    builds = [c for c in commands if "docker build" in c]
    assert "cvat.openvino.base" in builds[0] and "cvat.openvino.dextr.base" in builds[1]
    assert "function-gpu.yaml" not in next(c for c in commands if "nuctl deploy" in c)
