"""Our Nuclio functions as the functions layer deploys them: where their files are, their labels and
source hash, the skip/redeploy decision, and the commands CVAT's serverless/deploy_{cpu,gpu}.sh run.

A function is skipped when Nuclio reports it `ready` with our source-hash label; it is redeployed
when its source changed (CVAT tag, our files, the CPU/GPU variant, the memory limit or host port the deploy sets, or,
for ours, the interactor answer form the CVAT release reads).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from labforge import compat, exposure, split
from labforge.compose import NETWORK, WAIT_API
from labforge.paths import REPO
from labforge.report import REBOOT_MARKER, WAITS

LOCAL_FUNCTIONS_DIR = "/opt/labforge/functions"
# What our functions share (files/nuclio-runtime/sam2_runtime.py), put into each one's build directory beside main.py.
RUNTIME = Path("files/nuclio-runtime/sam2_runtime.py")
# What the upload of our function's directory (files.sync with delete) must neither send nor delete: pyinfra 3.10
# deletes a remote file unless fnmatch(<its full remote path>, pattern) holds for a pattern (operations/files.py,
# ``sync``, the delete loop), so the runtime put beside main.py needs a pattern that matches a full path.
SYNC_EXCLUDE = ("*.pyc", f"*/{RUNTIME.name}")
SLUG_LABEL, HASH_LABEL = "labforge-function", "labforge-src-hash"
# A memory quantity as nuctl parses it (Kubernetes' resource.ParseQuantity): bytes, or binary/decimal units.
MEMORY_QUANTITY = re.compile(r"[1-9][0-9]*(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?")
# Our functions' environment variable naming the interactor answer the lab's CVAT reads (files/nuclio/sam2/main.py).
ANSWER_ENV = "CVAT_INTERACTOR_ANSWER"
# The first release whose cvat-core rewrites an interactor's ``mask`` answer and ignores ``bounds``
# (cvat-ai/cvat#10329, CHANGELOG 2.60.0: "Unified the expected interactor interface").
SHAPES_ANSWER_SINCE = (2, 60, 0)
# The program that writes a function's configuration with its host port (labforge/function_config.py), and where.
CONFIG_PROGRAM = "/usr/local/lib/labforge/function-config"
CONFIG_DIR = "/var/lib/labforge/functions"
# Docker's and the kernel's ephemeral ports when /proc/sys/net/ipv4/ip_local_port_range cannot be read (Linux's
# default; moby's portallocator reads the same file).
DEFAULT_EPHEMERAL = (32768, 60999)
# The images Nuclio's builder copies the processor and the python handler's wheels from (nuclio at 59fa1656:
# pkg/processor/build/runtime/python/runtime.go GetProcessorDockerfileInfo, "<registry>/nuclio/handler-builder-python-
# onbuild:<nuctl's version label>-<arch>", the registry quay.io by default: containerimagebuilderpusher/types.go), and
# the health-check client the local platform adds (build/builder.go uhttpcImage). Without --no-pull, nuctl runs
# `docker pull` on each of them on every build, present or not (containerimagebuilderpusher/docker.go
# ensureImagesExist), so a registry outage failed every deploy and a lab could not build from images it loaded: the
# deploy pulls them only when they are not here, then builds with --no-pull (which skips only that pull: the base
# image is still pulled by `docker build` when missing).
ONBUILD_IMAGES = ("quay.io/nuclio/handler-builder-python-onbuild:{nuctl}-{arch}", "quay.io/nuclio/uhttpc:0.0.1-{arch}")
# A function program that reads what a function's build fetches (labforge/function_inputs.py): the upgrade checks it.
INPUTS_PROGRAM = "/usr/local/lib/labforge/function-inputs"


@dataclass(frozen=True)
class FunctionSource:
    path: str  # "serverless/..." in the CVAT checkout, or "files/..." in this repo
    yaml_dir: str  # directory holding function(.gpu).yaml on the host
    digest: str
    gpu: bool
    memory_limit: str | None = None  # set at deploy (nuctl --resource-limit); None: the YAML's own
    root: str = ""  # the CVAT tree it is built from (holding serverless/openvino/base): the checkout, or an older tag's
    source_tag: str = ""  # the CVAT tag of that tree
    answer: str = ""  # ours only: the interactor answer form the lab's CVAT reads (interactor_answer), passed as ANSWER_ENV
    port: int = 0  # the host port labforge gives it (nuclio_function_ports); 0: Nuclio's choice (previous, else random)
    nuctl: str = ""  # the nuctl version that deploys it ("": unknown, and nuctl pulls its onbuild images itself)

    @property
    def slug(self) -> str:
        """Label value naming the function: <=63 chars of [A-Za-z0-9._-], as Kubernetes-style labels require."""
        return self.path.replace("/", ".")[-63:].strip(".-")

    @property
    def is_local(self) -> bool:
        return self.path.startswith("files/")


def local_digest(path: Path, variant: str, runtime: Path) -> str:
    """Our function's files and ``runtime`` (REPO / RUNTIME) as its build directory holds them, plus ``variant``."""
    sha = hashlib.sha256(variant.encode())
    files = {str(p.relative_to(path)): p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files[runtime.name] = runtime
    for name, item in sorted(files.items()):
        sha.update(name.encode() + b"\0" + item.read_bytes())
    return sha.hexdigest()[:16]


def interactor_answer(cvat_version: str) -> str:
    """The answer form an interactor must give the CVAT release ``cvat_version`` for its mask to land where it is.

    Before v2.60.0 (v2.51.0, commit dfd505e7) the server hands the answer to the UI unchanged and the UI reads
    ``mask`` with an inclusive ``bounds`` (cvat-ui/.../controls-side-bar/tools-control.tsx 411-427): "bounds", the
    compact crop. From v2.60.0 (v2.73.0, commit 7972cb4f2) cvat-core wraps any ``mask`` answer as a mask at
    ``[0, 0, w-1, h-1]`` and never reads ``bounds`` (cvat-core/src/lambda-manager.ts 92-104), and the server pastes a
    ``mask`` unshifted into a region of interest (cvat/apps/lambda_manager/utils.py 191-195), while a ``shapes`` mask
    keeps its own box, which that code shifts by the region (lambda-manager.ts 106-117; utils.py 164-168,
    197-198): "shapes". The function's default without the variable, "full", is right everywhere but large.
    """
    return "shapes" if compat.release(cvat_version) >= SHAPES_ANSWER_SINCE else "bounds"


def is_interactor(function_dir: Path) -> bool:
    """Whether our function declares CVAT's interactor kind (``metadata.annotations.type``, which CVAT reads:
    views.py ``LambdaFunction.__init__``): only an interactor's answer depends on the release."""
    yaml = function_dir / "function.yaml"
    return yaml.is_file() and re.search(r'^\s+type:\s*"?interactor"?\s*$', yaml.read_text(), re.M) is not None


def memory_limit(path: str, limits: dict[str, str | None]) -> str | None:
    """The memory limit the deploy sets for the function at ``path`` (``nuclio_function_memory_limit``), or None
    to keep its YAML's.

    nuctl 1.13 ``deploy --resource-limit memory=<quantity>`` puts it into the function's ``spec.resources.limits``
    after reading ``--file`` (nuclio pkg/nuctl/command/deploy.go, branch 1.13.x at 59fa1656: the flag at line 227,
    the file read at 119-143, ``parseResourceAllocations`` into ``Spec.Resources.Limits`` at 232-260 and 503-506,
    which sets only that key, so a YAML's ``nvidia.com/gpu`` stays), and the local platform starts the container
    with ``docker run --memory <bytes>b`` (pkg/platform/local/platform.go 963, 979, 1485-1492;
    pkg/dockerclient/shell.go 252-253). CVAT's functions (serverless/...) carry no memory limit in their YAMLs at
    v2.51.0 and we never edit CVAT's files, so each must have an entry; ours (files/nuclio/...) carry theirs in
    their YAMLs, which an entry overrides.
    """
    value = limits.get(path)
    if value is None:
        if path.startswith("files/"):
            return None
        raise ValueError(f"no memory limit for {path}: add it to nuclio_function_memory_limit (e.g. \"4Gi\"); "
                         "every function container gets one, so that one request cannot take the host's memory")
    if not isinstance(value, str) or not MEMORY_QUANTITY.fullmatch(value):
        raise ValueError(f"nuclio_function_memory_limit[{path!r}] = {value!r} is not a memory quantity such as \"2Gi\" or \"1536Mi\"")
    return value


def http_ports(paths: list[str], ports: dict, ephemeral: tuple[int, int], taken: dict[int, str]) -> dict[str, int]:
    """The host port of each function of ``paths`` (``nuclio_function_ports``), checked so that nothing else can hold
    it when the host boots: an entry for each, a TCP port outside the kernel's ephemeral range ``ephemeral`` (where
    Docker picks the ports it publishes at random: labforge/function_config.py says why that breaks after a reboot),
    one per function, and none of ``taken`` (ports labforge publishes for something else -> what). One line else."""
    low, high = ephemeral
    chosen: dict[str, int] = {}
    for path in paths:
        port = ports.get(path)
        if port is None:
            raise ValueError(f"no host port for {path}: add it to nuclio_function_ports, below Docker's ephemeral range "
                             f"{low}-{high} (e.g. {low - 60}), so that a reboot never gives it to another container")
        if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            raise ValueError(f"nuclio_function_ports[{path!r}] = {port!r} is not a TCP port from 1024 to 65535")
        if low <= port <= high:
            raise ValueError(f"nuclio_function_ports[{path!r}] = {port} is in this host's ephemeral range {low}-{high} "
                             "(/proc/sys/net/ipv4/ip_local_port_range), where Docker publishes ports at random: choose "
                             f"one below {low}")
        if port in taken:
            raise ValueError(f"nuclio_function_ports[{path!r}] = {port} is {taken[port]}'s port: choose another")
        other = next((name for name, value in chosen.items() if value == port), None)
        if other:
            raise ValueError(f"nuclio_function_ports gives {port} to both {other} and {path}: one port per function")
        chosen[path] = port
    return chosen


def source(path: str, cvat_dir: str, cvat_version: str, on_gpu: bool,
           memory_limits: dict[str, str | None] | None = None, nuctl: str = "",
           source_tags: dict[str, str] | None = None, port: int = 0) -> FunctionSource:
    """The function at ``path`` as this host deploys it; ``memory_limits`` is ``nuclio_function_memory_limit``
    (None: no limit set at deploy), ``nuctl`` the nuctl that deploys it and ``source_tags``
    ``cvat_function_sources``: a CVAT function removed after a tag is built from that tag's tree (extracted under
    LOCAL_FUNCTIONS_DIR) once cvat_version is newer. The limit, nuctl and the tree are part of the source hash, so
    changing any of them redeploys; so is ``port``, the host port (http_ports; 0: Nuclio's choice)."""
    variant = "gpu" if on_gpu else "cpu"
    memory = None if memory_limits is None else memory_limit(path, memory_limits)
    salt = variant if memory is None else f"{variant}:memory={memory}"
    salt += f":nuctl={nuctl}" if nuctl else ""
    salt += f":port={port}" if port else ""
    if path.startswith("files/"):
        answer = interactor_answer(cvat_version) if is_interactor(REPO / path) else ""
        return FunctionSource(path, f"{LOCAL_FUNCTIONS_DIR}/{Path(path).name}",
                              local_digest(REPO / path, f"{salt}:answer={answer}", REPO / RUNTIME), on_gpu, memory, answer=answer,
                              port=port, nuctl=nuctl)
    tag, root = cvat_version, cvat_dir
    pinned = (source_tags or {}).get(path)
    if pinned and compat.release(cvat_version) > compat.release(pinned):
        tag, root = pinned, f"{LOCAL_FUNCTIONS_DIR}/cvat-{pinned}"
    elif not cvat_dir:  # an inference host: no checkout, the tag's tree is extracted like an older tag's
        root = f"{LOCAL_FUNCTIONS_DIR}/cvat-{tag}"
    digest = hashlib.sha256(f"{tag}:{path}:{salt}".encode()).hexdigest()[:16]
    return FunctionSource(path, f"{root}/{path}/nuclio", digest, on_gpu, memory, root, tag, port=port, nuctl=nuctl)


def from_settings(path: str, data, on_gpu: bool, port: int | None = None) -> FunctionSource:
    """The function at ``path`` as a host with these settings deploys it (the deploy, testinfra and the lab agree); an
    inference host of a split lab has no CVAT checkout: its CVAT functions come from their tag's tree. ``port``: its
    checked host port (http_ports); None reads nuclio_function_ports unchecked (testinfra and the lab, after a deploy
    that checked it)."""
    checkout = "" if split.role(data) == "inference" else data.get("cvat_dir")
    if port is None:
        port = int((data.get("nuclio_function_ports") or {}).get(path) or 0)
    return source(path, checkout, data.get("cvat_version"), on_gpu,
                  data.get("nuclio_function_memory_limit") or {}, compat.nuctl_version(data),
                  data.get("cvat_function_sources") or {}, port)


def extract_command(fn: FunctionSource, cvat_dir: str) -> str:
    """Put a function of an older CVAT tag (and the OpenVINO base image's Dockerfile it builds on) under fn.root,
    from the checkout's git objects: the tag is fetched when the clone lacks it. Written under a temporary name and
    renamed, so a killed run never leaves half a tree that the next run would take as there."""
    parts = " ".join(shlex.quote(p) for p in ("serverless/openvino/base", fn.path))
    tmp = f"{fn.root}.partial"
    return (f"git -C {cvat_dir} rev-parse -q --verify refs/tags/{fn.source_tag} >/dev/null || "
            f"git -C {cvat_dir} fetch --quiet --depth 1 origin tag {fn.source_tag}; "
            f"rm -rf {tmp} && mkdir -p {tmp} && {{ [ ! -d {fn.root} ] || cp -a {fn.root}/. {tmp}/; }} && "
            f"git -C {cvat_dir} archive {fn.source_tag} {parts} | tar -x -C {tmp} && rm -rf {fn.root} && mv {tmp} {fn.root}")


def onbuild_images(nuctl: str, arch: str) -> list[str]:
    """The onbuild images a python function's build with nuctl ``nuctl`` copies from, on Debian arch ``arch`` (Go's
    GOARCH names, which Nuclio's version label uses, are Debian's for amd64 and arm64)."""
    return [template.format(nuctl=nuctl, arch=arch) for template in ONBUILD_IMAGES]


def built_images(path: str) -> dict[str, str]:
    """The images the deploy of CVAT's function ``path`` builds itself before nuctl, as deploy_cpu.sh does: image ->
    its Dockerfile's directory relative to the CVAT tree. The function's own one is built only when its nuclio
    directory has a Dockerfile."""
    if path.startswith("files/"):
        return {}
    built = {"cvat.openvino.base": "serverless/openvino/base"} if path.startswith("serverless/openvino/") else {}
    built["cvat." + path.removeprefix("serverless/").replace("/", ".") + ".base"] = f"{path}/nuclio"
    return built


def is_current(fn: FunctionSource, deployed: list[dict] | None) -> dict | None:
    for item in deployed or []:
        labels = item.get("labels") or {}
        if labels.get(SLUG_LABEL) == fn.slug and labels.get(HASH_LABEL) == fn.digest and item.get("state") == "ready":
            return item
    return None


def deploy_commands(fn: FunctionSource, cvat_dir: str, env: dict[str, str], reboot_guard: bool = False,
                    network: str = NETWORK, ready: str = WAIT_API) -> list[str]:
    """What deploy_{cpu,gpu}.sh run for one function, plus our labels, its memory limit (``fn.memory_limit``, as
    ``--resource-limit memory=<quantity>``: see ``memory_limit``) and a readiness check.

    With ``reboot_guard`` (a GPU host whose driver awaits its reboot, where the planner could not yet see
    whether this function has a GPU variant) it becomes one command that deploys nothing when the
    function turns out to need the GPU (Nuclio starts those with `--gpus all`, which fails until the
    new driver is loaded: nuclio 1.13.x pkg/platform/local/platform.go) and says so.

    ``network`` is the Docker network the function joins (CVAT's, or an inference host's: labforge/inference.py) and
    ``ready`` the command that must succeed first (CVAT's API answers, or the inference host's network exists).
    """
    # one group, so that joined with && (the reboot guard) a failure before it is never followed by a deploy
    yaml_choice = (f'{{ f={fn.yaml_dir}/function-gpu.yaml; [ -f "$f" ] || f={fn.yaml_dir}/function.yaml; }}' if fn.gpu
                   else f"f={fn.yaml_dir}/function.yaml")
    env = {**env, ANSWER_ENV: fn.answer} if fn.answer else env
    env_args = " ".join(f"--env {shlex.quote(f'{k}={v}')}" for k, v in env.items())
    memory_arg = f" --resource-limit {shlex.quote(f'memory={fn.memory_limit}')}" if fn.memory_limit else ""
    platform_config = shlex.quote(json.dumps({"attributes": {"network": network}}))
    onbuild = " ".join(onbuild_images(fn.nuctl, "$arch")) if fn.nuctl else ""
    commands = [ready,
                "nuctl get project cvat --platform local >/dev/null 2>&1 || nuctl create project cvat --platform local"]
    if onbuild:  # present, or pulled now (ONBUILD_IMAGES): nuctl then builds with --no-pull
        commands.append(f"arch=$(dpkg --print-architecture) && for image in {onbuild}; do docker image inspect "
                        f"\"$image\" >/dev/null 2>&1 || docker pull -q \"$image\" >/dev/null || exit 1; done")
    for image, directory in built_images(fn.path).items():  # deploy_cpu.sh builds these first
        context = f"{fn.root or cvat_dir}/{directory}"
        build = f"DOCKER_BUILDKIT=1 docker build -t {image} {context}"
        commands.append(build if directory == "serverless/openvino/base" else f"if [ -f {context}/Dockerfile ]; then {build}; fi")
    check = ("import json,sys; d=json.load(sys.stdin); d=d if isinstance(d,list) else [d]; "
             f"ok=[f for f in d if f['metadata'].get('labels',{{}}).get('{SLUG_LABEL}')=='{fn.slug}' "
             "and f['status'].get('state')=='ready']; "
             f"sys.exit(0 if ok else 'labforge: function {fn.path} is not ready after deploy (nuctl get functions)')")
    config, no_pull = '"$f"', " --no-pull" if onbuild else ""
    if fn.port:  # the configuration with its host port (labforge/function_config.py), then deployed from it
        config = shlex.quote(f"{CONFIG_DIR}/{fn.slug}.yaml")
        yaml_choice += f" && mkdir -p {CONFIG_DIR} && python3 {CONFIG_PROGRAM} \"$f\" {fn.port} {config}"
    commands += [
        f"{yaml_choice} && nuctl deploy --project-name cvat --path {fn.yaml_dir} --file {config} --platform local "
        f"{env_args} --platform-config {platform_config}{memory_arg}{no_pull} --labels {SLUG_LABEL}={fn.slug},{HASH_LABEL}={fn.digest}",
        f"nuctl get functions --platform local -o json | python3 -c {shlex.quote(check)}",
    ]
    if reboot_guard:
        return [f"if [ -f {fn.yaml_dir}/function-gpu.yaml ] && [ -e {REBOOT_MARKER} ]; then "
                f"echo 'labforge: {fn.path} {WAITS} (NVIDIA driver not loaded yet)'; else "
                f"{' && '.join(f'{{ {command}; }}' for command in commands)}; fi"]  # grouped: a || inside ends no chain
    return commands


def taken_ports(data) -> dict[int, str]:
    """Host ports labforge publishes for something else on this host: no function may have one."""
    taken = {port: "CVAT" for port in exposure.cvat_ports(data.get("cvat_tls") or "off")}
    taken[exposure.DASHBOARD_PORT] = "the Nuclio dashboard"
    return taken
