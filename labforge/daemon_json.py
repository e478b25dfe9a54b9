"""/etc/docker/daemon.json as several layers share it: never rewritten wholesale, each key merged in."""

from __future__ import annotations

import json
from io import StringIO

from pyinfra.operations import files

PATH = "/etc/docker/daemon.json"


def has_nvidia_runtime(daemon_config: dict | None) -> bool:
    """nvidia-ctk's `runtime configure --runtime=docker` registers runtimes.nvidia; nothing else does."""
    return bool(daemon_config and "nvidia" in (daemon_config.get("runtimes") or {}))


def get(config: dict | None, key: str):
    return (config or {}).get(key)


def put(config: dict | None, key: str, value, name: str):
    """Write daemon.json with ``key`` set and every other key kept (the op; callers compare first)."""
    merged = {**(config or {}), key: value}
    return files.put(name=name, src=StringIO(json.dumps(merged, indent=4) + "\n"), dest=PATH, mode="0644",
                     create_remote_dir=True)
