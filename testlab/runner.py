"""Run the real deploy (`pyinfra -y --json inventory.py deploy.py`) against a hosts file; shared by tests and bench."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labforge.paths import REPO
from labforge.tools import totals

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


def deploy(hosts_file: Path, *extra: str, dry: bool = False, timeout: float = 900, env: dict | None = None,
           script: str = "deploy.py") -> DeployRun:
    """`pyinfra inventory.py <script>` (deploy.py, backup.py, restore.py) against the hosts file."""
    # no -y on --dry: with -y pyinfra skips change detection and the plan would list nothing
    cmd = [PYINFRA, "--json", *(["--dry"] if dry else ["-y"]), *extra, "inventory.py", script]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {}), "LAB_HOSTS": str(hosts_file)}, capture_output=True,
                          text=True, timeout=timeout)
    return DeployRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def deploy_interrupted(hosts_file: Path, when: Callable[[], str | None], then: Callable[[subprocess.Popen], None],
                       env: dict | None = None, timeout: float = 900, script: str = "deploy.py") -> tuple[str | None, DeployRun]:
    """Start the deploy; the moment ``when()`` names what it saw (a process, a file), call ``then(pyinfra)`` and wait
    for pyinfra to end. Returns what was seen (None: the run ended before that point) and the run."""
    cmd = [PYINFRA, "--json", "-y", "inventory.py", script]
    start = time.monotonic()
    seen = None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {}), "LAB_HOSTS": str(hosts_file)},
                                stdout=out, stderr=err, text=True)
        try:
            while proc.poll() is None and time.monotonic() - start < timeout:
                seen = when()
                if seen:
                    then(proc)
                    break
                time.sleep(0.02)
            proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        return seen, DeployRun(proc.returncode, out.read(), err.read(), time.monotonic() - start)


def kill(proc: subprocess.Popen) -> None:
    """As an admin's lost SSH session or a `kill -9` would end it: no chance to clean up."""
    os.kill(proc.pid, signal.SIGKILL)
