"""Run the real deploy (`pyinfra -y --json inventory.py deploy.py`) against a hosts file; shared by tests and bench."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labforge import totals

REPO = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


@dataclass
class DeployRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def totals(self) -> totals.RunTotals:
        return totals.parse(self.stdout)

    @property
    def plan(self) -> list[dict]:
        return totals.document(self.stdout)["plan"]

    def summary_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("[labforge]")]


def deploy(hosts_file: Path, *extra: str, dry: bool = False, timeout: float = 900, env: dict | None = None) -> DeployRun:
    # no -y on --dry: with -y pyinfra skips change detection and the plan would list nothing
    cmd = [PYINFRA, "--json", *(["--dry"] if dry else ["-y"]), *extra, "inventory.py", "deploy.py"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {}), "LAB_HOSTS": str(hosts_file)}, capture_output=True,
                          text=True, timeout=timeout)
    return DeployRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
