"""Functions layer: the enabled Nuclio functions deployed the way CVAT's serverless/deploy_{cpu,gpu}.sh do.

Redeploying rebuilds the image and replaces the container, so it must never happen needlessly: the
decision (labforge.nuclio_functions.is_current) rests on Nuclio's own report and our source-hash label.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from labforge import gpu, report
from labforge.facts import NuclioFunctions
from labforge.nuclio_functions import REPO, deploy_commands, is_current, source


@deploy("Functions")
def functions() -> None:
    data = host.data
    if not data.get("cvat_start"):
        return
    on_gpu = gpu.enabled()
    deployed = host.get_fact(NuclioFunctions)
    for path in data.get("nuclio_functions") or []:
        fn = source(path, data.get("cvat_dir"), data.get("cvat_version"), on_gpu)
        if fn.is_local:
            files.sync(name=f"Upload {path}", src=str(REPO / path), dest=fn.yaml_dir, delete=True,
                       exclude=["*.pyc"], exclude_dir=["__pycache__"])
        current = is_current(fn, deployed)
        if current:
            report.function_state(path, f"{current['name']} ready (unchanged)")
            continue
        op = server.shell(name=f"Deploy function {path}", commands=deploy_commands(fn, data.get("cvat_dir"),
                                                                                    data.get("nuclio_function_env") or {}))
        report.function_state(path, "deployed, ready", op)
