"""testlab.labhosts._leader finds a lab host's init among systemd-nspawn's children: the one in a PID namespace of its
own. Here a stand-in for nspawn (a real process tree, no nspawn) has a child in its own PID namespace first, as
nspawn's setup child is, and the init-like child in a new PID namespace second."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from testlab import labhosts
from tests.conftest import cannot_run

NSPAWN_LIKE = """
import ctypes, os, sys, time
setup = os.fork()
if setup == 0:  # the setup child: nspawn's PID namespace
    time.sleep(30)
    os._exit(0)
if ctypes.CDLL(None, use_errno=True).unshare(0x20000000) != 0:  # CLONE_NEWPID: the next child is PID 1 of a new one
    sys.exit(f"unshare: errno {ctypes.get_errno()}")
init = os.fork()
if init == 0:
    time.sleep(30)
    os._exit(0)
print(setup, init, flush=True)
time.sleep(30)
"""


def test_the_init_in_its_own_pid_namespace_is_the_leader_not_the_first_child():
    """Seen failing before: _leader took the first child, here the setup child (CI: a host booted with no SSH)."""
    if os.geteuid() != 0:
        cannot_run("a new PID namespace needs root")
    proc = subprocess.Popen([sys.executable, "-c", NSPAWN_LIKE], stdout=subprocess.PIPE, text=True)
    setup, init = (int(x) for x in proc.stdout.readline().split())
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        deadline = time.monotonic() + 10
        while len(children.read_text().split()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert labhosts._leader(proc.pid, timeout=5) == init != setup
    finally:
        for pid in (setup, init, proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        proc.wait()
