"""Function sources, their labels and hashes, and the skip/redeploy decision."""

import dataclasses
import shlex
import subprocess
from pathlib import Path

import pytest

from labforge import inference
from labforge.compose import WAIT_API
from labforge.nuclio_functions import (
    HASH_LABEL,
    SLUG_LABEL,
    deploy_commands,
    extract_command,
    from_settings,
    is_current,
    source,
)

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
    runtime = tmp_path / functions.RUNTIME
    runtime.parent.mkdir(parents=True)
    runtime.write_text("A = 1\n")
    monkeypatch.setattr(functions, "REPO", tmp_path)
    before = source("files/nuclio/demo", CVAT, "v2.51.0", True)
    assert before.is_local and before.yaml_dir == "/opt/labforge/functions/demo"
    (fn_dir / "__pycache__").mkdir()
    (fn_dir / "__pycache__/main.cpython-311.pyc").write_bytes(b"\x00")
    assert source("files/nuclio/demo", CVAT, "v2.51.0", True).digest == before.digest
    (fn_dir / "main.py").write_text("print(2)\n")
    changed = source("files/nuclio/demo", CVAT, "v2.51.0", True).digest
    assert changed != before.digest
    runtime.write_text("A = 2\n")  # the shared runtime is part of every one of our functions' build directory
    assert source("files/nuclio/demo", CVAT, "v2.51.0", True).digest != changed


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


def test_nuclios_onbuild_images_are_pulled_only_when_missing_and_nuctl_then_pulls_none(tmp_path):
    """nuctl without --no-pull runs `docker pull` on its onbuild images at every build (nuclio 59fa1656,
    containerimagebuilderpusher/docker.go ensureImagesExist): a registry outage failed every deploy, and a lab that
    loaded them could not build. The deploy now pulls each one only when `docker image inspect` misses it."""
    fn = source("serverless/openvino/dextr", CVAT, "v2.51.0", False, nuctl="1.13.23")
    commands = deploy_commands(fn, CVAT, {})
    pulls = next(c for c in commands if "onbuild" in c)
    assert commands.index(pulls) < next(i for i, c in enumerate(commands) if "nuctl deploy" in c)
    assert "quay.io/nuclio/handler-builder-python-onbuild:1.13.23-$arch quay.io/nuclio/uhttpc:0.0.1-$arch" in pulls
    script = pulls.replace("dpkg --print-architecture", "echo amd64")
    here = "quay.io/nuclio/handler-builder-python-onbuild:1.13.23-amd64"
    for registry, code in ((True, 0), (False, 1)):  # a stand-in docker: inspect knows one image, pull works or not
        log = tmp_path / f"docker-{registry}"
        docker = (f'docker() {{ echo "$@" >> {log}; if [ "$1" = image ]; then [ "$3" = {here} ]; else {str(registry).lower()}; '
                  'fi; }; export -f docker; ')
        assert subprocess.run(["bash", "-c", docker + script]).returncode == code
        assert log.read_text().splitlines() == [f"image inspect {here}", "image inspect quay.io/nuclio/uhttpc:0.0.1-amd64",
                                                "pull -q quay.io/nuclio/uhttpc:0.0.1-amd64"]
    assert "--no-pull" in nuctl_deploy_args(commands)
    unknown = dataclasses.replace(fn, nuctl="")  # no nuctl version known: nuctl pulls them itself, as before
    assert not any("onbuild" in c for c in deploy_commands(unknown, CVAT, {}))
    assert "--no-pull" not in nuctl_deploy_args(deploy_commands(unknown, CVAT, {}))


def group_data_setting(name, group=None):
    from labforge import groupdata

    return groupdata.load(group)[name]


def nuctl_deploy_args(commands):
    deploy = next(c for c in commands if "nuctl deploy" in c)
    return shlex.split(deploy.split("nuctl deploy", 1)[1])


def test_every_cvat_function_deployed_by_default_gets_a_memory_limit():
    limits = group_data_setting("nuclio_function_memory_limit")
    paths = {*group_data_setting("nuclio_functions"), *group_data_setting("nuclio_functions", "gpu_servers")}
    for path in sorted(p for p in paths if p.startswith("serverless/")):
        for on_gpu in (False, True):
            args = nuctl_deploy_args(deploy_commands(source(path, CVAT, "v2.51.0", on_gpu, limits), CVAT, {}))
            # nuctl 1.13: --resource-limit <name>=<quantity> into spec.resources.limits (pkg/nuctl/command/deploy.go)
            assert args[args.index("--resource-limit") + 1] == f"memory={limits[path]}", path
            assert args.count("--resource-limit") == 1 and args.index("--resource-limit") < args.index("--labels")


def test_memory_limit_flag_keeps_the_other_flags_and_changes_the_source_hash():
    path = "serverless/pytorch/facebookresearch/sam"
    fn = source(path, CVAT, "v2.51.0", True, {path: "8Gi"})
    assert fn.memory_limit == "8Gi"
    commands = deploy_commands(fn, CVAT, {"CVAT_FUNCTIONS_REDIS_HOST": "cvat_redis_ondisk"})
    deploy = next(c for c in commands if "nuctl deploy" in c)
    assert "--resource-limit memory=8Gi --labels" in deploy and "--env CVAT_FUNCTIONS_REDIS_HOST=cvat_redis_ondisk" in deploy
    # a new limit redeploys (the hash label differs); without the setting the hash is the one deployed before
    assert fn.digest != source(path, CVAT, "v2.51.0", True, {path: "10Gi"}).digest
    unset = source(path, CVAT, "v2.51.0", True)
    assert unset.digest != fn.digest and unset.memory_limit is None
    assert "--resource-limit" not in next(c for c in deploy_commands(unset, CVAT, {}) if "nuctl deploy" in c)


def test_a_cvat_function_without_a_memory_limit_or_with_a_bad_one_is_refused():
    with pytest.raises(ValueError, match=r"no memory limit for serverless/openvino/dextr: add it to nuclio_function_memory_limit"):
        source("serverless/openvino/dextr", CVAT, "v2.51.0", False, {"serverless/pytorch/facebookresearch/sam": "8Gi"})
    for bad in ("8 GB", "-1Gi", "0", "8gib", 8):
        with pytest.raises(ValueError, match="is not a memory quantity"):
            source("serverless/openvino/dextr", CVAT, "v2.51.0", False, {"serverless/openvino/dextr": bad})
    for good in ("2Gi", "1536Mi", "4G", "2147483648"):
        assert source("serverless/openvino/dextr", CVAT, "v2.51.0", False, {"serverless/openvino/dextr": good}).memory_limit == good


def test_our_functions_keep_their_yaml_memory_limit_unless_the_setting_names_them():
    limits = group_data_setting("nuclio_function_memory_limit")
    for path in ("files/nuclio/sam2", "files/nuclio/sam2-tracker"):
        own = source(path, CVAT, "v2.51.0", True, limits)
        assert own.memory_limit is None and "--resource-limit" not in nuctl_deploy_args(deploy_commands(own, CVAT, {}))
        override = source(path, CVAT, "v2.51.0", True, {**limits, path: "12Gi"})
        args = nuctl_deploy_args(deploy_commands(override, CVAT, {}))
        assert args[args.index("--resource-limit") + 1] == "memory=12Gi" and override.digest != own.digest


SOURCES = {"serverless/openvino/dextr": "v2.51.0", "serverless/openvino/omz/public/yolo-v3-tf": "v2.51.0"}


def test_a_function_cvat_removed_is_built_from_the_tag_that_had_it_once_cvat_is_newer():
    at_old = source("serverless/openvino/dextr", CVAT, "v2.51.0", False, None, "1.13.23", SOURCES)
    assert (at_old.root, at_old.yaml_dir, at_old.source_tag) == (CVAT, f"{CVAT}/serverless/openvino/dextr/nuclio", "v2.51.0")
    at_new = source("serverless/openvino/dextr", CVAT, "v2.73.0", False, None, "1.16.3", SOURCES)
    root = "/opt/labforge/functions/cvat-v2.51.0"
    assert (at_new.root, at_new.yaml_dir, at_new.source_tag) == (root, f"{root}/serverless/openvino/dextr/nuclio", "v2.51.0")
    commands = deploy_commands(at_new, CVAT, {})
    assert f"docker build -t cvat.openvino.base {root}/serverless/openvino/base" in " ".join(commands)
    assert f"--path {root}/serverless/openvino/dextr/nuclio" in " ".join(commands)


def test_a_new_nuctl_redeploys_every_function_even_one_from_an_older_tree():
    old = source("serverless/openvino/dextr", CVAT, "v2.73.0", False, None, "1.13.23", SOURCES)
    assert old.digest != source("serverless/openvino/dextr", CVAT, "v2.73.0", False, None, "1.16.3", SOURCES).digest


def test_the_older_tree_is_extracted_from_the_checkouts_git_objects_under_a_temporary_name():
    fn = source("serverless/openvino/dextr", CVAT, "v2.73.0", False, None, "1.16.3", SOURCES)
    command = extract_command(fn, CVAT)
    assert f"git -C {CVAT} fetch --quiet --depth 1 origin tag v2.51.0" in command
    assert f"git -C {CVAT} archive v2.51.0 serverless/openvino/base serverless/openvino/dextr" in command
    assert command.endswith(f"mv {fn.root}.partial {fn.root}")


def test_an_inference_host_builds_cvat_functions_from_their_tags_tree_with_the_same_source_hash():
    """No checkout on a split lab's inference host: the tag's tree is extracted (like an older tag's) and the function
    joins the inference host's network, after that network exists instead of after CVAT's API answers."""
    data = {"cvat_dir": CVAT, "cvat_version": "v2.51.0", "lab_role": "inference", "nuclio_function_memory_limit":
            {"serverless/openvino/dextr": "2Gi"}, "cvat_stack_compat": {"v2.51.0": {"nuclio_dashboard": "1.13.0", "docker_api": "1.42",
                                                                                    "nuctl": "1.13.23"}}}
    on_inference = from_settings("serverless/openvino/dextr", data, False)
    all_in_one = from_settings("serverless/openvino/dextr", {**data, "lab_role": "all"}, False)
    root = "/opt/labforge/functions/cvat-v2.51.0"
    assert (on_inference.root, on_inference.source_tag) == (root, "v2.51.0")
    assert all_in_one.root == CVAT and on_inference.digest == all_in_one.digest
    commands = " ".join(deploy_commands(on_inference, CVAT, {}, network=inference.NETWORK, ready="true"))
    assert '{"attributes": {"network": "labforge_nuclio"}}' in commands and "cvat_cvat" not in commands
    assert f"--path {root}/serverless/openvino/dextr/nuclio" in commands and WAIT_API not in commands
    assert inference.function_env({"CVAT_FUNCTIONS_REDIS_HOST": "cvat_redis_ondisk", "CVAT_FUNCTIONS_REDIS_PORT": "6666",
                                   "OTHER": "1"}) == {"OTHER": "1"}


def test_a_function_tree_comes_out_of_a_bare_repository_with_no_checkout(tmp_path):
    """The inference host's sources, for real: a bare repository whose origin is CVAT's repo, the tag fetched into
    it, the tree archived out under a temporary name."""
    origin = tmp_path / "cvat"
    (origin / "serverless/openvino/dextr/nuclio").mkdir(parents=True)
    (origin / "serverless/openvino/base").mkdir(parents=True)
    (origin / "serverless/openvino/dextr/nuclio/function.yaml").write_text("metadata: {name: openvino-dextr}\n")
    (origin / "serverless/openvino/base/Dockerfile").write_text("FROM scratch\n")
    (origin / "docker-compose.yml").write_text("services: {}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(origin)]
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    subprocess.run([*git, "tag", "v2.51.0"], check=True)
    bare = tmp_path / "cvat-sources.git"
    fn = source("serverless/openvino/dextr", "", "v2.51.0", False, None, "1.13.23", {})
    root = tmp_path / "functions/cvat-v2.51.0"
    fn = dataclasses.replace(fn, root=str(root), yaml_dir=f"{root}/{fn.path}/nuclio")
    make = inference.sources_command(f"file://{origin}").replace(inference.SOURCES, str(bare))
    subprocess.run(["sh", "-c", f"{make} && mkdir -p {tmp_path / 'functions'} && {extract_command(fn, str(bare))}"], check=True)
    assert (Path(fn.yaml_dir) / "function.yaml").read_text() == "metadata: {name: openvino-dextr}\n"
    assert (root / "serverless/openvino/base/Dockerfile").exists() and not (root / "docker-compose.yml").exists()
    assert not (bare / "docker-compose.yml").exists() and not (root.parent / "cvat-v2.51.0.partial").exists()


def test_interactor_answer_follows_the_release_that_stopped_reading_bounds():
    from labforge.nuclio_functions import interactor_answer

    assert [interactor_answer(v) for v in ("v2.51.0", "v2.59.9", "v2.60.0", "v2.73.0")] == ["bounds", "bounds", "shapes", "shapes"]
    for release in group_data_setting("cvat_stack_compat"):  # every row gets a form the function knows
        assert interactor_answer(release) in ("bounds", "shapes")


def test_only_our_interactor_gets_the_answer_form_and_a_form_change_redeploys_it():
    from labforge.nuclio_functions import ANSWER_ENV

    sam2 = {v: source("files/nuclio/sam2", CVAT, v, False) for v in ("v2.51.0", "v2.55.0", "v2.73.0")}
    assert (sam2["v2.51.0"].answer, sam2["v2.73.0"].answer) == ("bounds", "shapes")
    assert sam2["v2.51.0"].digest == sam2["v2.55.0"].digest != sam2["v2.73.0"].digest  # same form: no redeploy
    args = nuctl_deploy_args(deploy_commands(sam2["v2.73.0"], CVAT, {"A": "1"}))
    envs = [args[i + 1] for i, a in enumerate(args) if a == "--env"]
    assert envs == ["A=1", f"{ANSWER_ENV}=shapes"]
    tracker = {v: source("files/nuclio/sam2-tracker", CVAT, v, False) for v in ("v2.51.0", "v2.73.0")}
    assert tracker["v2.51.0"].answer == "" and tracker["v2.51.0"].digest == tracker["v2.73.0"].digest
    assert ANSWER_ENV not in " ".join(deploy_commands(tracker["v2.73.0"], CVAT, {}))
    dextr = source("serverless/openvino/dextr", CVAT, "v2.73.0", False)
    assert dextr.answer == "" and ANSWER_ENV not in " ".join(deploy_commands(dextr, CVAT, {}))


def test_the_upload_neither_sends_nor_deletes_the_runtime_beside_main_py():
    """pyinfra's files.sync(delete=True) keeps a remote file only when fnmatch(<full remote path>, pattern) holds for a
    pattern of ``exclude`` (pyinfra/operations/files.py, sync's delete loop); a bare "sam2_runtime.py" never matches
    a full path, and the sync then deleted the runtime that the next operation put back: changed on every converge
    (seen in tests/lab/test_cvat.py's second converge)."""
    from fnmatch import fnmatch

    from labforge.nuclio_functions import RUNTIME, SYNC_EXCLUDE

    fn = source("files/nuclio/sam2", CVAT, "v2.73.0", False)
    assert any(fnmatch(f"{fn.yaml_dir}/{RUNTIME.name}", pattern) for pattern in SYNC_EXCLUDE)
    assert any(fnmatch(f"{fn.yaml_dir}/model_handler.cpython-311.pyc", pattern) for pattern in SYNC_EXCLUDE)
    assert not any(fnmatch(f"{fn.yaml_dir}/{name}", pattern) for pattern in SYNC_EXCLUDE for name in ("main.py", "function.yaml"))
