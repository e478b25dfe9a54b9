"""/etc/docker/daemon.json as several layers share it: never rewritten wholesale, each key merged in."""

from __future__ import annotations


def has_nvidia_runtime(daemon_config: dict | None) -> bool:
    """nvidia-ctk's `runtime configure --runtime=docker` registers runtimes.nvidia; nothing else does."""
    return bool(daemon_config and "nvidia" in (daemon_config.get("runtimes") or {}))
