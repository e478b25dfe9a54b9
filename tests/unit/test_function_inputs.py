"""What a function's build fetches (labforge/function_inputs.py), read from real configurations: ours in files/nuclio,
and CVAT's shapes (an OpenVINO function whose deploy builds Dockerfiles first, a PyTorch one installing from PyPI and
from git) written here as CVAT's YAMLs and Dockerfiles have them at dfd505e7 and 7972cb4f2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from labforge import function_inputs as fi
from labforge.paths import REPO

CHECKPOINTS = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
SAM2_PIP = ["https://pypi.org/simple/setuptools/", "https://pypi.org/simple/wheel/", "https://pypi.org/simple/sam2/"]

# serverless/pytorch/facebookresearch/sam/nuclio/function-gpu.yaml at 7972cb4f2, its build part
CVAT_SAM = """
metadata: {name: pth-facebookresearch-sam-vit-h, annotations: {animated_gif: "https://raw.githubusercontent.com/x.gif"}}
spec:
  runtime: 'python:3.10'
  build:
    image: cvat.pth.facebookresearch.sam.vit_h:latest-gpu
    baseImage: ubuntu:22.04
    directives:
      preCopy:
        - kind: ENV
          value: DEBIAN_FRONTEND=noninteractive
        - kind: RUN
          value: pip3 install torch torchvision torchaudio pycocotools matplotlib onnxruntime onnx --no-cache-dir
        - kind: RUN
          value: pip3 install git+https://github.com/facebookresearch/segment-anything.git --no-cache-dir
        - kind: RUN
          value: curl -O https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth
"""
# serverless/openvino/dextr at dfd505e7: its YAML names the image its Dockerfile builds; the Dockerfile builds on
# serverless/openvino/base's
DEXTR = """
metadata: {name: openvino-dextr}
spec:
  runtime: 'python:3.8'
  build: {image: cvat.openvino.dextr, baseImage: cvat.openvino.dextr.base}
"""
DEXTR_DOCKERFILE = """FROM openvino/ubuntu20_dev:2022.3.0 AS build
USER root
RUN apt-get update \\
    && apt-get -y --no-install-recommends install patch
ARG DEXTR_COMMIT=352ccc76067156ebcf7267b07e0a5e43d32e83d5
ADD https://data.vision.ee.ethz.ch/csergi/share/DEXTR/dextr_pascal-sbd.pth ./
ADD https://github.com/scaelles/DEXTR-PyTorch/archive/$DEXTR_COMMIT.zip dextr.zip
FROM cvat.openvino.base
COPY --from=build --chown=root:root /root/dextr.xml /root/dextr.bin /opt/nuclio/
"""
OPENVINO_BASE = """FROM openvino/ubuntu20_runtime:2022.3.0
RUN pip install --no-cache-dir opencv-python-headless pillow pyyaml
"""


def inputs(text: str, dockerfiles: list[str] = (), built: list[str] = ()) -> dict:
    return fi.build_inputs(yaml.safe_load(text), list(dockerfiles), list(built))


@pytest.mark.parametrize("name, base, torch_index, model", [
    ("sam2/function.yaml", "python:3.11-slim", True, "sam2.1_hiera_tiny.pt"),
    ("sam2/function-gpu.yaml", "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", False, "sam2.1_hiera_large.pt"),
    ("sam2-tracker/function.yaml", "python:3.11-slim", True, "sam2.1_hiera_tiny.pt"),
])
def test_our_functions_fetch_their_base_image_wheels_and_checkpoint(name, base, torch_index, model):
    """The ENV directives are expanded into the RUN lines after them: the checkpoint's URL and torch's index come from
    SAM2_CHECKPOINT_BASE_URL/MODEL and TORCH_INDEX_URL, the settings docs/sam2.md tells admins to point at mirrors."""
    found = fi.build_inputs(yaml.safe_load((REPO / "files/nuclio" / name).read_text()), [], [])
    torch = ["https://download.pytorch.org/whl/cpu/torch/", "https://download.pytorch.org/whl/cpu/torchvision/"]
    assert found == {"images": [base], "urls": [*(torch if torch_index else []), *SAM2_PIP, f"{CHECKPOINTS}/{model}"]}


def test_cvats_sam_fetches_from_pypi_from_git_and_its_checkpoint_but_not_its_annotations_urls():
    found = inputs(CVAT_SAM)
    assert found["images"] == ["ubuntu:22.04"]
    assert found["urls"] == [*(f"https://pypi.org/simple/{name}/" for name in
                               ("torch", "torchvision", "torchaudio", "pycocotools", "matplotlib", "onnxruntime", "onnx")),
                             "https://github.com/facebookresearch/segment-anything.git",
                             "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"]


def test_an_openvino_function_fetches_what_its_dockerfiles_do_not_the_images_its_deploy_builds():
    built = ["cvat.openvino.base", "cvat.openvino.dextr.base"]
    found = inputs(DEXTR, [OPENVINO_BASE, DEXTR_DOCKERFILE], built)
    assert found["images"] == ["openvino/ubuntu20_runtime:2022.3.0", "openvino/ubuntu20_dev:2022.3.0"]
    assert found["urls"] == ["https://pypi.org/simple/opencv-python-headless/", "https://pypi.org/simple/pillow/",
                             "https://pypi.org/simple/pyyaml/",
                             "https://data.vision.ee.ethz.ch/csergi/share/DEXTR/dextr_pascal-sbd.pth",
                             "https://github.com/scaelles/DEXTR-PyTorch/archive/352ccc76067156ebcf7267b07e0a5e43d32e83d5.zip"]
    # without the list of what the deploy builds, its own images would be asked of a registry
    assert "cvat.openvino.dextr.base" in inputs(DEXTR, [], [])["images"]


@pytest.mark.parametrize("command, lookups", [
    ("pip install --index-url https://mirror.lab/simple numpy==1.26.4 'Pillow[extra]>=10'",
     ["https://mirror.lab/simple/numpy/", "https://mirror.lab/simple/pillow/"]),
    ("python -m pip install -i https://mirror.lab/simple/ Torch_Vision", ["https://mirror.lab/simple/torch-vision/"]),
    ("pip install --index-url=https://mirror.lab/simple a.b", ["https://mirror.lab/simple/a-b/"]),
    ("pip install --no-index --find-links /wheels numpy", []),
    ("pip install -r requirements.txt -c constraints.txt . ./local", []),
    ("pip install --extra-index-url https://download.pytorch.org/whl/cpu torch && pip3 install six; echo pip install x",
     ["https://pypi.org/simple/torch/", "https://pypi.org/simple/six/"]),
    ("/usr/bin/pip3.10 install requests", ["https://pypi.org/simple/requests/"]),
    ("pip install --resume-retries 3 --use-feature truststore numpy", ["https://pypi.org/simple/numpy/"]),
    ("pip install -qr requirements.txt ./dist/a-1.0-py3-none-any.whl b-1.0-py3-none-any.whl c", ["https://pypi.org/simple/c/"]),
    ("pip install -ihttps://mirror.lab/simple d", ["https://mirror.lab/simple/d/"]),
    ("PIP_INDEX_URL=https://mirror.lab/simple pip install e", ["https://mirror.lab/simple/e/"]),
    ("PIP_NO_INDEX=1 pip install f", []),
])
def test_pip_requirements_are_looked_up_on_the_index_pip_would_use(command, lookups):
    assert fi.command_urls(command) == lookups


def with_directives(*items: str) -> str:
    """A function configuration whose build has these preCopy directives (YAML flow mappings)."""
    return "metadata: {name: f}\nspec:\n  build:\n    directives:\n      preCopy:\n" + "".join(f"        - {i}\n" for i in items)


def test_a_url_whose_value_only_the_build_knows_is_left_out():
    config = with_directives('{kind: ENV, value: "BASE=https://models.lab/v1"}', '{kind: ENV, value: "MODEL model.pt"}',
                             """{kind: RUN, value: 'curl -fsSL "${BASE}/$MODEL" -o m && curl -O "$UNSET_URL/x" && """
                             """wget https://$HOSTNAME/y'}""")
    assert inputs(config)["urls"] == ["https://models.lab/v1/model.pt"]


def test_no_base_image_means_the_runtimes_python_image():
    assert inputs("metadata: {name: f}\nspec: {runtime: 'python:3.9'}")["images"] == ["python:3.9"]
    assert inputs("metadata: {name: f}\nspec: {}") == {"images": [], "urls": []}


def test_the_host_program_answers_json_and_refuses_what_is_not_a_function_in_one_line():
    program = [sys.executable, str(REPO / "labforge/function_inputs.py")]
    ok = subprocess.run(program, input=json.dumps({"config": DEXTR, "dockerfiles": [OPENVINO_BASE],
                                                   "built": ["cvat.openvino.dextr.base"]}),
                        capture_output=True, text=True, check=True)
    assert json.loads(ok.stdout)["images"] == ["openvino/ubuntu20_runtime:2022.3.0"]
    bad = subprocess.run(program, input=json.dumps({"config": "- a list\n"}), capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr == "labforge: not a Nuclio function configuration (no metadata)\n"


def test_what_docker_and_the_shell_ignore_never_breaks_the_reading():
    """Found by a review: each of these made the host program exit 1, which refused the upgrade in a line the admin
    could not act on ("No closing quotation"), and cvat_upgrade_check_build_downloads did not get past it."""
    dockerfile = ("FROM ubuntu:22.04 AS Builder\nRUN apt-get update && \\\n    # don't keep the lists\n\n"
                  "    curl -fsSLO https://e.org/a.tgz&&tar xf a.tgz # don't\nENV NOTE don't\n"
                  "FROM builder\nRUN echo 'unbalanced https://e.org/b.bin\n")
    images, urls = fi.dockerfile_inputs(dockerfile)
    assert images == ["ubuntu:22.04"]  # `FROM builder` is the stage `AS Builder`, not an image
    assert urls == ["https://e.org/a.tgz", "https://e.org/b.bin"]
    config = """
metadata: {name: f}
spec:
  build:
    directives:
      preCopy:
        - {kind: RUN, value: "curl -O https://ignored.org/x  # commands below replace the directives"}
    commands:
      - "pip install numpy \\\\"
      - "  scipy"
      - "@nuclio.postCopy"
      - "curl -O https://e.org/c.bin"
"""
    assert inputs(config)["urls"] == ["https://pypi.org/simple/numpy/", "https://pypi.org/simple/scipy/", "https://e.org/c.bin"]


@pytest.mark.parametrize("text, url", [
    ("pip3 install 'git+https://github.com/facebookresearch/detectron2@v0.4'", "https://github.com/facebookresearch/detectron2"),
    ("pip install git+https://github.com/a/b.git@main#egg=b", "https://github.com/a/b.git"),
    ("curl -O ${U:-https://e.org/d.bin}", "https://e.org/d.bin"),
    ("python -c \"print('https://e.org/%s' % v)\"", None),
    ("wget https://e.org/x%20y.bin", "https://e.org/x%20y.bin"),
])
def test_urls_are_the_ones_fetched(text, url):
    assert fi.command_urls(text) == ([url] if url else [])


def test_a_from_with_a_default_is_that_image():
    assert fi.dockerfile_inputs("ARG TAG\nFROM ${BASE:-ubuntu:22.04}\nFROM ubuntu:${TAG}\n")[0] == ["ubuntu:22.04"]


def test_an_env_directive_sets_pips_index_for_the_runs_after_it():
    config = with_directives("{kind: ENV, value: PIP_INDEX_URL=https://mirror.lab/simple}", "{kind: RUN, value: pip install numpy}")
    assert inputs(config)["urls"] == ["https://mirror.lab/simple/numpy/"]
