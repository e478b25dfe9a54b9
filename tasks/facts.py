"""Facts pyinfra does not ship, each one read-only and exiting 0 so a missing thing never fails a host."""

from __future__ import annotations

import json
import re

from pyinfra.api import FactBase


class NvidiaGpuDevices(FactBase[list[str]]):
    """PCI addresses of NVIDIA display/3D controllers (vendor 0x10de, class 0x03xxxx), from sysfs."""

    def command(self) -> str:
        return (
            "for d in /sys/bus/pci/devices/*; do "
            '[ -r "$d/vendor" ] || continue; '
            '[ "$(cat "$d/vendor")" = 0x10de ] || continue; '
            'case "$(cat "$d/class")" in 0x03*) basename "$d";; esac; '
            "done; true"
        )

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class AptHeldPackages(FactBase[list[str]]):
    """Packages marked `apt-mark hold`, so the hold operation can be a no-op."""

    def command(self) -> str:
        return "apt-mark showhold 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class DockerDaemonConfig(FactBase[dict | None]):
    """/etc/docker/daemon.json parsed (None when absent); raises on invalid JSON so we never build on it."""

    def command(self) -> str:
        return "cat /etc/docker/daemon.json 2>/dev/null || true"

    def process(self, output: list[str]) -> dict | None:
        text = "\n".join(output).strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"/etc/docker/daemon.json is not valid JSON ({exc}); fix it by hand first") from exc
        if not isinstance(value, dict):
            raise ValueError("/etc/docker/daemon.json is not a JSON object; fix it by hand first")
        return value


class NuctlVersion(FactBase[str | None]):
    """Version label printed by an installed nuctl (None when absent or unreadable)."""

    def command(self, path: str = "/usr/local/bin/nuctl") -> str:
        return f"{path} version 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        match = re.search(r"Label:\s*v?([0-9][0-9A-Za-z.\-]*)", "\n".join(output))
        return match.group(1).rstrip(",") if match else None
