"""Functions layer: the enabled Nuclio functions deployed the way CVAT's serverless/deploy_{cpu,gpu}.sh do.

Redeploying rebuilds the image and replaces the container, so it must never happen needlessly: the
decision (labforge.nuclio_functions.is_current) rests on Nuclio's own report and our source-hash label.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Directory
from pyinfra.operations import files, server

from labforge import compose, gpu, inference, report, split
from labforge.facts import EphemeralPortRange, NuclioFunctions
from labforge.nuclio_functions import (
    CONFIG_PROGRAM,
    DEFAULT_EPHEMERAL,
    REPO,
    RUNTIME,
    SYNC_EXCLUDE,
    deploy_commands,
    extract_command,
    from_settings,
    http_ports,
    is_current,
    taken_ports,
)
from labforge.report import Refused


@deploy("Functions")
def functions() -> None:
    data = host.data
    role = split.role(data)
    if not data.get("cvat_start") or role == "cvat":  # a split lab's CVAT host: its functions run on its inference host
        return
    on_inference = role == "inference"
    env = data.get("nuclio_function_env") or {}
    network, ready, sources = compose.NETWORK, compose.WAIT_API, data.get("cvat_dir")
    if on_inference:
        env = inference.function_env(env)
        network, ready, sources = inference.NETWORK, f"docker network inspect {inference.NETWORK} >/dev/null", inference.SOURCES
        if any(not path.startswith("files/") for path in data.get("nuclio_functions") or []) and \
                not host.get_fact(Directory, path=inference.SOURCES):
            server.shell(name=f"CVAT's git objects for the functions' sources ({inference.SOURCES}, no checkout)",
                         commands=[inference.sources_command(data.get("cvat_repo_url"))])
    on_gpu = gpu.enabled()
    awaiting_reboot = on_gpu and report.driver_awaits_reboot()
    paths = list(data.get("nuclio_functions") or [])
    try:
        ports = http_ports(paths, data.get("nuclio_function_ports") or {},
                           host.get_fact(EphemeralPortRange) or DEFAULT_EPHEMERAL, taken_ports(data))
    except ValueError as exc:  # a function without a port, or one another container could take
        raise Refused(str(exc)) from exc
    if paths:
        files.put(name="Function configuration program (labforge/function_config.py)",
                  src=str(REPO / "labforge" / "function_config.py"), dest=CONFIG_PROGRAM, mode="0755",
                  create_remote_dir=True)
    deployed = host.get_fact(NuclioFunctions)
    for path in paths:
        try:
            fn = from_settings(path, data, on_gpu, ports[path])
        except ValueError as exc:  # a CVAT function without a memory limit, or not a quantity
            raise Refused(str(exc)) from exc
        if fn.is_local:
            files.sync(name=f"Upload {path}", src=str(REPO / path), dest=fn.yaml_dir, delete=True,
                       exclude=list(SYNC_EXCLUDE), exclude_dir=["__pycache__"])
            files.put(name=f"Upload {RUNTIME.name} into {path}", src=str(REPO / RUNTIME), dest=f"{fn.yaml_dir}/{RUNTIME.name}")
        current = is_current(fn, deployed)
        if current:
            report.function_state(path, f"{current['name']} ready (unchanged)")
            continue
        gpu_variant = gpu.function_needs_gpu(fn) if awaiting_reboot else False
        if gpu_variant:  # Nuclio would start it with --gpus all before the new driver is loaded
            report.function_state(path, f"{report.WAITS} (NVIDIA driver not loaded yet)")
            continue
        if fn.root and fn.root != data.get("cvat_dir") and not host.get_fact(Directory, path=fn.yaml_dir):
            why = "no CVAT checkout on an inference host" if on_inference and fn.source_tag == data.get("cvat_version") \
                else "removed from later releases"
            server.shell(name=f"{path} from CVAT {fn.source_tag}'s tree ({why})", commands=[extract_command(fn, sources)])
        op = server.shell(name=f"Deploy function {path}",
                          commands=deploy_commands(fn, data.get("cvat_dir"), env, reboot_guard=gpu_variant is None,
                                                   network=network, ready=ready))
        report.function_state(path, "deployed, ready", op)
