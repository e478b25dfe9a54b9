"""labforge/apt.py: apt's locks, tested with real POSIX locks read from /proc/locks."""

from __future__ import annotations

import fcntl
import multiprocessing
import subprocess
import time
from pathlib import Path

import pytest

from labforge import apt
from labforge.groupdata import load

DATA = load("gpu_servers")

# --- apt's locks -----------------------------------------------------------------------------------------


def hold(path: Path, seconds: float, ready: multiprocessing.Event) -> None:
    with open(path, "w") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)  # a POSIX lock, as dpkg and apt take
        ready.set()
        time.sleep(seconds)


@pytest.fixture
def locks(tmp_path):
    files = tuple(str(tmp_path / name) for name in ("lock-frontend", "lock", "lists-lock"))
    for f in files:
        Path(f).touch()
    return files


def holder(path: str, seconds: float) -> multiprocessing.Process:
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=hold, args=(Path(path), seconds, ready), name="locker")
    proc.start()
    assert ready.wait(10)
    return proc


def sh(command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)


def test_holders_names_the_process_that_holds_a_lock(locks):
    assert sh(apt.holders_command(locks)).stdout == ""
    proc = holder(locks[1], 5)
    try:
        out = sh(apt.holders_command(locks)).stdout.split()
        assert out[:2] == [locks[1], str(proc.pid)]
        assert out[2] == Path(f"/proc/{proc.pid}/comm").read_text().strip()
    finally:
        proc.terminate()


def test_wait_returns_once_the_lock_is_free(locks):
    proc = holder(locks[0], 3)
    start = time.monotonic()
    result = sh(apt.wait_command(30, locks))
    assert result.returncode == 0, result.stderr
    assert 2 <= time.monotonic() - start < 15
    proc.join()


def test_wait_gives_up_with_one_line_naming_the_holder(locks):
    proc = holder(locks[2], 30)
    try:
        result = sh(apt.wait_command(4, locks))
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"labforge: apt is locked: {locks[2]} is held by process {proc.pid} (")
        assert "for more than 4s (apt_lock_timeout)" in lines[0]
    finally:
        proc.terminate()


def test_the_plan_time_fact_waits_then_reports_what_still_holds(locks):
    fact = apt.AptLockHolders()
    proc = holder(locks[0], 30)
    try:
        start = time.monotonic()
        assert fact.process(sh(fact.command(3, locks)).stdout.splitlines())[0].split()[:2] == [locks[0], str(proc.pid)]
        assert time.monotonic() - start >= 3
    finally:
        proc.terminate()
    proc.join()
    assert fact.process(sh(fact.command(3, locks)).stdout.splitlines()) == []


def test_lock_timeout_conf_is_apts_own_setting():
    assert 'DPkg::Lock::Timeout "600";' in apt.lock_timeout_conf(600)


