"""The lab's cache (/var/cache/labforge: the Debian root, the stand-in packages, Compose) is filled by two pytest-xdist
workers, which are processes, and by the split lab's two image builds, which are threads: whoever fills it holds
testlab.standins.cache_lock, so nobody builds it twice or reads a file another is still writing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labforge.paths import REPO
from testlab import labhosts
from testlab.standins import packages

HOLD = """
import sys, time
from testlab import standins
with standins.cache_lock():
    print(f"held {time.monotonic()}", flush=True)
    time.sleep(float(sys.argv[1]))
    print(f"released {time.monotonic()}", flush=True)
"""


def holder(cache: Path, seconds: float) -> subprocess.Popen:
    """Another process (as another pytest worker) holding the cache lock for `seconds`."""
    return subprocess.Popen([sys.executable, "-c", HOLD, str(seconds)], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            env={**os.environ, "LABFORGE_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)})


def stamp(proc: subprocess.Popen, word: str) -> float:
    line = proc.stdout.readline().split()
    assert line[0] == word, line
    return float(line[1])


def test_a_second_process_waits_for_the_one_filling_the_cache(tmp_path):
    """Seen failing before: without the lock both ran at once (the second held it while the first still did)."""
    first = holder(tmp_path, 1.5)
    stamp(first, "held")
    second = holder(tmp_path, 0)
    got_it = stamp(second, "held")
    released = stamp(first, "released")
    assert got_it >= released, (got_it, released)
    assert first.wait(10) == 0 and second.wait(10) == 0


def test_threads_take_turns_and_one_thread_may_nest(tmp_path, monkeypatch):
    from testlab import standins

    monkeypatch.setattr(standins, "CACHE", tmp_path)
    inside, most = [], []
    lock = threading.Lock()

    def fill() -> None:
        with standins.cache_lock(), standins.cache_lock():  # a filler that calls another filler
            with lock:
                inside.append(1)
                most.append(len(inside))
            time.sleep(0.2)
            with lock:
                inside.pop()

    threads = [threading.Thread(target=fill) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "a nested cache_lock deadlocked"
    assert most == [1, 1, 1]


@pytest.mark.parametrize("fill", [packages.debian_engine, packages.compose_binary, packages.debian_postgresql,
                                  packages.StandinPackage.build], ids=lambda f: f.__qualname__)
def test_every_filler_of_the_cache_holds_the_lock(fill):
    assert getattr(fill, "__wrapped__", None) is not None, f"{fill.__qualname__} fills the cache without cache_lock"


def test_the_lab_root_and_key_are_made_under_the_lock_and_read_without_it(tmp_path, monkeypatch):
    """The Debian root and the lab's SSH key are read at every boot and ssh call: made under the lock (checked again
    inside it), read without it once whole."""
    from testlab import standins

    monkeypatch.setattr(standins, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(labhosts, "LAB_DIR", tmp_path / "lab")
    first = holder(tmp_path / "cache", 1.0)
    stamp(first, "held")
    started = time.monotonic()
    key = labhosts.ssh_key()  # waits for the holder, then makes the key
    assert time.monotonic() - started >= 0.5 and key.with_suffix(".pub").exists()
    started = time.monotonic()
    first = holder(tmp_path / "cache", 2.0)
    stamp(first, "held")
    assert labhosts.ssh_key() == key and time.monotonic() - started < 1.9  # whole: no wait
    first.wait(10)
