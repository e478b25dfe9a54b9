"""Our Nuclio functions as the functions layer deploys them: where their files are, their labels and
source hash, the skip/redeploy decision, and the commands CVAT's serverless/deploy_{cpu,gpu}.sh run.

A function is skipped when Nuclio reports it `ready` with our source-hash label; it is redeployed
when its source changed (CVAT tag, our files, or the CPU/GPU variant).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from labforge.compose import WAIT_API
from labforge.report import REBOOT_MARKER, WAITS

REPO = Path(__file__).resolve().parents[1]
LOCAL_FUNCTIONS_DIR = "/opt/labforge/functions"
SLUG_LABEL, HASH_LABEL = "labforge-function", "labforge-src-hash"


@dataclass(frozen=True)
class FunctionSource:
    path: str  # "serverless/..." in the CVAT checkout, or "files/..." in this repo
    yaml_dir: str  # directory holding function(.gpu).yaml on the host
    digest: str
    gpu: bool

    @property
    def slug(self) -> str:
        """Label value naming the function: <=63 chars of [A-Za-z0-9._-], as Kubernetes-style labels require."""
        return self.path.replace("/", ".")[-63:].strip(".-")

    @property
    def is_local(self) -> bool:
        return self.path.startswith("files/")


def local_digest(path: Path, variant: str) -> str:
    sha = hashlib.sha256(variant.encode())
    for item in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        sha.update(str(item.relative_to(path)).encode() + b"\0" + item.read_bytes())
    return sha.hexdigest()[:16]


def source(path: str, cvat_dir: str, cvat_version: str, on_gpu: bool) -> FunctionSource:
    variant = "gpu" if on_gpu else "cpu"
    if path.startswith("files/"):
        return FunctionSource(path, f"{LOCAL_FUNCTIONS_DIR}/{Path(path).name}", local_digest(REPO / path, variant), on_gpu)
    digest = hashlib.sha256(f"{cvat_version}:{path}:{variant}".encode()).hexdigest()[:16]
    return FunctionSource(path, f"{cvat_dir}/{path}/nuclio", digest, on_gpu)


def is_current(fn: FunctionSource, deployed: list[dict] | None) -> dict | None:
    for item in deployed or []:
        labels = item.get("labels") or {}
        if labels.get(SLUG_LABEL) == fn.slug and labels.get(HASH_LABEL) == fn.digest and item.get("state") == "ready":
            return item
    return None


def deploy_commands(fn: FunctionSource, cvat_dir: str, env: dict[str, str], reboot_guard: bool = False) -> list[str]:
    """What deploy_{cpu,gpu}.sh run for one function, plus our labels and a readiness check.

    With ``reboot_guard`` (a GPU host whose driver awaits its reboot, where the planner could not yet see
    whether this function has a GPU variant) it becomes one command that deploys nothing when the
    function turns out to need the GPU (Nuclio starts those with `--gpus all`, which fails until the
    new driver is loaded: nuclio 1.13.x pkg/platform/local/platform.go) and says so.
    """
    yaml_choice = (f'f={fn.yaml_dir}/function-gpu.yaml; [ -f "$f" ] || f={fn.yaml_dir}/function.yaml' if fn.gpu
                   else f"f={fn.yaml_dir}/function.yaml")
    env_args = " ".join(f"--env {shlex.quote(f'{k}={v}')}" for k, v in env.items())
    platform_config = shlex.quote(json.dumps({"attributes": {"network": "cvat_cvat"}}))
    commands = [WAIT_API,
                "nuctl get project cvat --platform local >/dev/null 2>&1 || nuctl create project cvat --platform local"]
    if fn.path.startswith("serverless/openvino/"):
        commands.append(f"DOCKER_BUILDKIT=1 docker build -t cvat.openvino.base {cvat_dir}/serverless/openvino/base")
    if not fn.is_local:  # deploy_cpu.sh builds a function's own base image when its nuclio dir has a Dockerfile
        base = "cvat." + fn.path.removeprefix("serverless/").replace("/", ".") + ".base"
        commands.append(f"if [ -f {fn.yaml_dir}/Dockerfile ]; then DOCKER_BUILDKIT=1 docker build -t {base} {fn.yaml_dir}; fi")
    check = ("import json,sys; d=json.load(sys.stdin); d=d if isinstance(d,list) else [d]; "
             f"ok=[f for f in d if f['metadata'].get('labels',{{}}).get('{SLUG_LABEL}')=='{fn.slug}' "
             "and f['status'].get('state')=='ready']; "
             f"sys.exit(0 if ok else 'labforge: function {fn.path} is not ready after deploy (nuctl get functions)')")
    commands += [
        f"{yaml_choice}; nuctl deploy --project-name cvat --path {fn.yaml_dir} --file \"$f\" --platform local "
        f"{env_args} --platform-config {platform_config} --labels {SLUG_LABEL}={fn.slug},{HASH_LABEL}={fn.digest}",
        f"nuctl get functions --platform local -o json | python3 -c {shlex.quote(check)}",
    ]
    if reboot_guard:
        return [f"if [ -f {fn.yaml_dir}/function-gpu.yaml ] && [ -e {REBOOT_MARKER} ]; then "
                f"echo 'labforge: {fn.path} {WAITS} (NVIDIA driver not loaded yet)'; else {' && '.join(commands)}; fi"]
    return commands
