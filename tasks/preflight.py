"""Refuse unsupported hosts while planning, before any layer has changed anything."""

from __future__ import annotations

from pyinfra.api import deploy

from labforge import gpu, platform, report


@deploy("Preflight")
def preflight() -> None:
    report.install()
    platform.current()
    gpu.check()
    report.note_pending_reboot()
