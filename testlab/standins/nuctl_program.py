#!/usr/bin/python3
"""TEST STAND-IN (labforge test stand-in) for nuctl __VERSION__ with `--platform local`: it runs one labelled container per
function on the host's real Docker Engine, as Nuclio's local platform does, and answers for them. It builds no
processor image (the function runs the stand-in image's `function` role).

What it reproduces, from nuclio's 1.13.x branch:
- the container: named nuclio-<namespace>-<name> (pkg/platform/local/platform.go GetFunctionContainerName; the
  namespace is nuctl's --namespace, "nuclio" by default, so CVAT's functions run as nuclio-nuclio-<name>),
  labelled nuclio.io/platform=local, nuclio.io/namespace, nuclio.io/function-name, nuclio.io/function-spec plus
  the function's own labels (compileDeployFunctionLabels; --labels and the project name, which nuctl keeps as
  nuclio.io/project-name), on the network of --platform-config's attributes.network, and `--gpus all` when the
  spec has an nvidia.com/gpu limit (platform.go, "gpus = all" for PositiveGPUResourceLimit): that fails on a host
  whose NVIDIA driver is not loaded;
- the HTTP port, published on EVERY interface as Nuclio does (branch 1.13.x, commit 59fa1656): platform.go
  getFunctionHTTPPort (lines 1102-1127) takes the port the spec configures (functionconfig/types.go GetHTTPPort: an
  http trigger's attributes.port), else the previous deployment's, else RunOptionsRandomPort, and
  pkg/dockerclient/shell.go RunContainer (lines 217-226) turns that into `--publish '<port>:8080'` or
  `--publish '8080'`: no host address, so Docker binds 0.0.0.0 (and [::]). (Until
  this round this stand-in published on 127.0.0.1 only, which hid that every function answered the LAN.)
- metadata.annotations as the YAML sets them (CVAT's functions keep name, type and spec there), reported back;
- `get functions -o json` (pkg/nuctl/command/get.go renderFunctionConfigWithStatus): one JSON object with
  metadata, spec and status for one function, a list for several, and "No functions found" for none;
- projects: `get project NAME` fails when it does not exist, `create project NAME` creates it.
- the memory limit: the YAML's spec.resources.limits.memory, replaced by `--resource-limit memory=<q>`
  (pkg/nuctl/command/deploy.go parseResourceAllocations), run as `docker run --memory <bytes>b`
  (pkg/platform/local/platform.go resolveFunctionSpecRequestMemory, pkg/dockerclient/shell.go);
- --file read as YAML (python3-yaml is a base package): metadata.name and annotations, the GPU and memory limits and
  the HTTP trigger's port (labforge writes each function's configuration with its port: labforge/function_config.py).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

VERSION = "__VERSION__"
STATE = Path("/var/lib/labforge-standin/nuclio")
IMAGE = "labforge-standin/function:latest"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and proc.returncode:
        sys.exit(f"Error - {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def option(args: list[str], name: str, default: str = "") -> str:
    return args[args.index(name) + 1] if name in args else default


def options(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == name]


UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(value: str) -> int:
    """A Kubernetes-style quantity (as nuctl's resource.ParseQuantity takes it) in bytes."""
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", value.strip().strip("'\""))
    if not match:
        sys.exit(f"Error - invalid memory quantity {value!r}")
    return int(float(match.group(1)) * UNITS[match.group(2) or ""])


def read_config(path: Path) -> dict:
    """--file as nuctl reads it (YAML, or JSON: pkg/nuctl/command/common/helpers.go GetUnmarshalFunc), with python3-yaml,
    a base package of every labforge host."""
    import yaml

    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not (config.get("metadata") or {}).get("name"):
        sys.exit(f"Error - {path}: no metadata.name")
    return config


def annotation_text(value) -> str:
    """An annotation as Nuclio's string map holds it (sigs.k8s.io/yaml turns YAML scalars into strings there)."""
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def configured_port(config: dict) -> int:
    """functionconfig/types.go GetHTTPPort: the attributes.port of a trigger of kind http, else 0."""
    for trigger in ((config.get("spec") or {}).get("triggers") or {}).values():
        if (trigger or {}).get("kind") == "http" and "port" in (trigger.get("attributes") or {}):
            return int(trigger["attributes"]["port"])
    return 0


def deploy(args: list[str]) -> int:
    namespace = option(args, "--namespace", "nuclio")
    path = Path(option(args, "--path"))
    spec_file = Path(option(args, "--file") or path / "function.yaml")
    config = read_config(spec_file)
    name = str(config["metadata"]["name"])
    limits = ((config.get("spec") or {}).get("resources") or {}).get("limits") or {}
    gpu = int(limits.get("nvidia.com/gpu") or 0) > 0
    annotations = {key: annotation_text(value) for key, value in (config["metadata"].get("annotations") or {}).items()}
    memory = limits.get("memory")
    labels = {"nuclio.io/platform": "local", "nuclio.io/namespace": namespace, "nuclio.io/function-name": name,
              "nuclio.io/function-spec": json.dumps({"file": str(spec_file), "gpu": gpu, "annotations": annotations}),
              "nuclio.io/project-name": option(args, "--project-name", "default")}
    for item in option(args, "--labels").split(","):
        if "=" in item:
            key, value = item.split("=", 1)
            labels[key] = value
    network = json.loads(option(args, "--platform-config", "{}") or "{}").get("attributes", {}).get("network", "")
    container = f"nuclio-{namespace}-{name}"
    print(f"Deploying function {name} ({container})")
    previous = docker("port", container, "8080/tcp", check=False).stdout.split()
    previous_port = previous[0].rsplit(":", 1)[1] if previous else ""
    docker("rm", "-f", container, check=False)
    port = configured_port(config) or previous_port  # getFunctionHTTPPort: configured, else previous, else random
    publish = f"{port}:8080" if port else "8080"  # shell.go: --publish '<port>:8080' / '8080'
    run = ["run", "-d", "--name", container, "--restart", "always", "--publish", publish,
           "-e", f"LABFORGE_STANDIN_FUNCTION={name}"]
    run += [f"--network={network}"] if network else []
    run += ["--gpus", "all"] if gpu else []
    for item in options(args, "--resource-limit"):
        key, _, value = item.partition("=")
        if key == "memory":
            memory = value
    run += ["--memory", f"{quantity_bytes(memory)}b"] if memory else []
    for env in options(args, "--env"):
        run += ["-e", env]
    for key, value in labels.items():
        run += ["--label", f"{key}={value}"]
    docker(*run, IMAGE)
    print(f"Function deploy complete: {name}")
    return 0


def functions() -> list[dict]:
    names = docker("ps", "-a", "--filter", "label=nuclio.io/function-name", "--format", "{{.Names}}").stdout.split()
    if not names:
        return []
    found = []
    for c in json.loads(docker("inspect", *names).stdout):
        labels = c["Config"]["Labels"]
        ports = (c["NetworkSettings"].get("Ports") or {}).get("8080/tcp") or []
        found.append({
            "metadata": {"name": labels["nuclio.io/function-name"], "namespace": labels["nuclio.io/namespace"],
                         "labels": {k: v for k, v in labels.items() if k not in ("nuclio.io/function-spec",)}},
            "spec": json.loads(labels.get("nuclio.io/function-spec", "{}")),
            "status": {"state": "ready" if c["State"]["Running"] else "error",
                       "httpPort": int(ports[0]["HostPort"]) if ports else 0},
        })
    return found


def main(args: list[str]) -> int:
    if args[:1] == ["version"]:
        print(f'Client version:\n"Label: {VERSION}, Git commit: labforge test stand-in, OS: linux, Arch: amd64"')
        return 0
    if args[:2] == ["get", "functions"]:
        found = functions()
        if not found:
            print("No functions found")
        elif option(args, "-o", option(args, "--output")) == "json":
            print(json.dumps(found[0] if len(found) == 1 else found, indent=4))
        else:
            for f in found:
                print(f["metadata"]["namespace"], f["metadata"]["name"], f["status"]["state"])
        return 0
    if args[:2] == ["get", "project"]:
        return 0 if (STATE / "projects" / args[2]).exists() else 1
    if args[:2] == ["create", "project"]:
        (STATE / "projects").mkdir(parents=True, exist_ok=True)
        (STATE / "projects" / args[2]).touch()
        return 0
    if args[:1] == ["deploy"]:
        return deploy(args[1:])
    print(f"labforge test stand-in: 'nuctl {' '.join(args)}' is not implemented", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
