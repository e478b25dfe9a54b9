"""The stand-in nuctl (nuctl_program.py), as the mirror serves it at nuctl's GitHub release URL."""

from __future__ import annotations

from pathlib import Path


def program(version: str) -> str:
    return (Path(__file__).parent / "nuctl_program.py").read_text().replace("__VERSION__", version)
