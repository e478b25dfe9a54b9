"""Functions layer: the enabled Nuclio functions deployed the way CVAT's serverless/deploy_{cpu,gpu}.sh do.

Redeploying rebuilds the image and replaces the container, so it must never happen needlessly: the
decision (labforge.nuclio_functions.is_current) rests on Nuclio's own report and our source-hash label.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Directory, File
from pyinfra.operations import files, server

from labforge import gpu, report
from labforge.facts import NuclioFunctions
from labforge.nuclio_functions import REPO, deploy_commands, extract_command, from_settings, is_current
from labforge.report import Refused


def needs_gpu(fn) -> bool | None:
    """Whether this function runs on the GPU here (its GPU variant exists); None while CVAT's checkout is not there."""
    if not fn.gpu:
        return False
    if fn.is_local:
        return (REPO / fn.path / "function-gpu.yaml").exists()
    if not host.get_fact(Directory, path=fn.yaml_dir):
        return None
    return bool(host.get_fact(File, path=f"{fn.yaml_dir}/function-gpu.yaml"))


@deploy("Functions")
def functions() -> None:
    data = host.data
    if not data.get("cvat_start"):
        return
    on_gpu = gpu.enabled()
    awaiting_reboot = on_gpu and report.driver_awaits_reboot()
    deployed = host.get_fact(NuclioFunctions)
    for path in data.get("nuclio_functions") or []:
        try:
            fn = from_settings(path, data, on_gpu)
        except ValueError as exc:  # a CVAT function without a memory limit, or not a quantity
            raise Refused(str(exc)) from exc
        if fn.is_local:
            files.sync(name=f"Upload {path}", src=str(REPO / path), dest=fn.yaml_dir, delete=True,
                       exclude=["*.pyc"], exclude_dir=["__pycache__"])
        current = is_current(fn, deployed)
        if current:
            report.function_state(path, f"{current['name']} ready (unchanged)")
            continue
        gpu_variant = needs_gpu(fn) if awaiting_reboot else False
        if gpu_variant:  # Nuclio would start it with --gpus all before the new driver is loaded
            report.function_state(path, f"{report.WAITS} (NVIDIA driver not loaded yet)")
            continue
        if fn.root and fn.root != data.get("cvat_dir") and not host.get_fact(Directory, path=fn.yaml_dir):
            server.shell(name=f"{path} from CVAT {fn.source_tag}'s tree (removed from later releases)",
                         commands=[extract_command(fn, data.get("cvat_dir"))])
        op = server.shell(name=f"Deploy function {path}",
                          commands=deploy_commands(fn, data.get("cvat_dir"), data.get("nuclio_function_env") or {},
                                                   reboot_guard=gpu_variant is None))
        report.function_state(path, "deployed, ready", op)
