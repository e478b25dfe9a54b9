"""CUDA layer (GPU hosts): NVIDIA's CUDA repo via cuda-keyring, cuda-toolkit-12-8 only, PATH in profile.d.

Only `cuda-toolkit-X-Y` is installed: the `cuda` and `cuda-drivers` metapackages pull a newer
driver branch than the pinned 550.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt as pyinfra_apt
from pyinfra.operations import files, server

from labforge import apt, downloads, gpu, platform

KEYRING_DEB_DIR = "/var/cache/labforge"


@deploy("CUDA")
def cuda() -> None:
    if not gpu.enabled():
        return
    p = platform.current()
    data = host.data
    repo_dir = f"{p.cuda_distro}/{p.cuda_arch}"
    version = data.get("cuda_version")
    toolkit = f"cuda-toolkit-{version.replace('.', '-')}"
    repo_ops = []
    if "cuda-keyring" not in (host.get_fact(DebPackages) or {}):
        deb = f"{KEYRING_DEB_DIR}/cuda-keyring_{data.get('cuda_keyring_version')}_all.deb"
        files.directory(name=KEYRING_DEB_DIR, path=KEYRING_DEB_DIR, mode="0755")
        fetched = downloads.verified(
            name=f"cuda-keyring package {deb}",
            src=f"{data.get('cuda_repo_url')}/{repo_dir}/cuda-keyring_{data.get('cuda_keyring_version')}_all.deb",
            dest=deb,
            sha256=gpu.keyring_sha256(repo_dir),
        )
        installed = server.shell(name="Install cuda-keyring (only when missing)",
                                 commands=[f"{apt.wait_command(apt.lock_timeout())}; dpkg -i {deb}"])
        repo_ops = [fetched, installed]
    apt.refresh("CUDA", [toolkit], after=repo_ops)
    pyinfra_apt.packages(name=toolkit, packages=[toolkit], no_recommends=True)
    files.template(
        name="/etc/profile.d/cuda.sh",
        src="templates/cuda.sh.j2",
        dest="/etc/profile.d/cuda.sh",
        mode="0644",
        cuda_home=f"/usr/local/cuda-{version}",
    )
