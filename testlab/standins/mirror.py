"""The stand-in mirror: GPG-signed apt repositories and download files with the real layouts and URL paths of
Docker's, NVIDIA's and CUDA's repositories and nuctl's GitHub releases, served by the lab on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from email.utils import formatdate
from pathlib import Path

from testlab.standins import CACHE, CODENAME, CUDA_ARCH, CUDA_DISTRO, DEB_ARCH, DISTRO, STANDIN_MARK, _sha256, nuctl, pins
from testlab.standins.packages import (
    DOCKER_SUFFIX,
    NEWER_DOCKER_DIR,
    NEWER_DOCKER_VERSIONS,
    NVIDIA_CTK,
    StandinPackage,
    _nvcc,
    driver_packages,
    engine_packages,
    scripted_docker_packages,
)


class SigningKey:
    """A throwaway GPG key that signs the stand-in repos (never a real vendor key)."""

    def __init__(self, home: Path):
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--quick-gen-key", f"{STANDIN_MARK} mirror <mirror@labforge.invalid>", "ed25519", "sign", "never")

    def _gpg(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes", "--pinentry-mode", "loopback",
                               "--passphrase", "", *args], check=True, capture_output=True, **kw)

    def export(self, armor: bool) -> bytes:
        return self._gpg(*(["--armor"] if armor else []), "--export").stdout

    def sign_release(self, release: Path) -> None:
        self._gpg("--clearsign", "-o", str(release.parent / "InRelease"), str(release))
        self._gpg("--armor", "--detach-sign", "-o", str(release.parent / "Release.gpg"), str(release))


def _write_index(repo_dir: Path, debs_dir: Path, index_dir: Path, signer: SigningKey, suite: str | None) -> None:
    """Packages(.gz) for the .debs under debs_dir, then a signed Release/InRelease in repo_dir."""
    scan = subprocess.run(["dpkg-scanpackages", "--multiversion", os.path.relpath(debs_dir, repo_dir), "/dev/null"],
                          cwd=repo_dir, check=True, capture_output=True, text=True).stdout
    if suite is None:  # flat repo: apt resolves Filename relative to the repo dir
        scan = scan.replace("Filename: ./", "Filename: ")
    index_dir.mkdir(parents=True, exist_ok=True)
    (index_dir / "Packages").write_text(scan)
    (index_dir / "Packages.gz").write_bytes(gzip.compress(scan.encode()))
    lines = [f"Origin: {STANDIN_MARK}", f"Label: {STANDIN_MARK}", f"Date: {formatdate(usegmt=True)}",
             f"Architectures: {DEB_ARCH} all"]
    if suite:
        lines += [f"Suite: {suite}", f"Codename: {suite}", "Components: stable"]
    lines.append("SHA256:")
    release_dir = index_dir if suite is None else repo_dir / "dists" / suite
    for name in ("Packages", "Packages.gz"):
        data = (index_dir / name).read_bytes()
        rel = os.path.relpath(index_dir / name, release_dir)
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {rel}")
    release = release_dir / "Release"
    release.write_text("\n".join(lines) + "\n")
    signer.sign_release(release)



def build_mirror(root: Path, base_url: str) -> dict:
    """Build every stand-in under root (served at base_url); return the data that points the deploy at it."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    p = pins()
    signer = SigningKey(root.parent / (root.name + "-gnupg"))
    armored = signer.export(armor=True)

    # Docker: https://download.docker.com/linux/debian  (dists/bookworm/stable + pool, key at /gpg), every package at
    # the pinned version with Docker's per-distro suffix. A newer engine (29.x) is built too, outside the index,
    # for tests of a host that already runs a newer Docker (NEWER_DOCKER_DIR; install it with dpkg -i).
    docker_root = root / "docker/linux" / DISTRO
    pool = docker_root / "pool/stable"
    pool.mkdir(parents=True)
    (docker_root / "gpg").write_bytes(armored)
    for pkg in engine_packages(p["docker_package_versions"], DOCKER_SUFFIX):
        pkg.build(pool, CACHE / "standin-debs")
    _write_index(docker_root, pool, docker_root / f"dists/{CODENAME}/stable/binary-{DEB_ARCH}", signer, CODENAME)
    newer = root / NEWER_DOCKER_DIR
    newer.mkdir(parents=True)
    for pkg in scripted_docker_packages(NEWER_DOCKER_VERSIONS, DOCKER_SUFFIX):
        pkg.build(newer)

    # NVIDIA container toolkit: https://nvidia.github.io/libnvidia-container/stable/deb/amd64 (flat), key at /gpgkey
    ctk_root = root / "libnvidia-container"
    ctk_repo = ctk_root / "stable/deb" / DEB_ARCH
    ctk_repo.mkdir(parents=True)
    (ctk_root / "gpgkey").write_bytes(armored)
    v = p["nvidia_container_toolkit_version"]
    ctk_script = (NVIDIA_CTK[0].replace("{version}", v.split("-")[0]), NVIDIA_CTK[1])
    for pkg in (
        StandinPackage("libnvidia-container1", v),
        StandinPackage("libnvidia-container-tools", v, depends=f"libnvidia-container1 (= {v})"),
        StandinPackage("nvidia-container-toolkit-base", v, files={"/usr/bin/nvidia-ctk": ctk_script}),
        StandinPackage("nvidia-container-toolkit", v,
                       depends=f"nvidia-container-toolkit-base (= {v}), libnvidia-container-tools (= {v})"),
    ):
        pkg.build(ctk_repo)
    _write_index(ctk_repo, ctk_repo, ctk_repo, signer, None)

    # CUDA: https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/ (flat) + cuda-keyring deb
    cuda_repo = root / "cuda/repos" / CUDA_DISTRO / CUDA_ARCH
    cuda_repo.mkdir(parents=True)
    cuda_url = f"{base_url}/cuda/repos/{CUDA_DISTRO}/{CUDA_ARCH}/"
    keyring = StandinPackage(
        "cuda-keyring", p["cuda_keyring_version"], arch="all",
        files={
            "/usr/share/keyrings/cuda-archive-keyring.gpg": (signer.export(armor=False), 0o644),
            f"/etc/apt/sources.list.d/cuda-{CUDA_DISTRO}-{CUDA_ARCH}.list":
                (f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {cuda_url} /\n", 0o644),
        },
    )
    keyring_deb = keyring.build(cuda_repo)
    cuda_v = p["cuda_version"]
    StandinPackage(f"cuda-toolkit-{cuda_v.replace('.', '-')}", f"{cuda_v}.1-1", files={
        f"/usr/local/cuda-{cuda_v}/bin/nvcc": _nvcc(cuda_v),
        f"/usr/local/cuda-{cuda_v}/lib64/{STANDIN_MARK.replace(' ', '-')}": ("", 0o644),
    }).build(cuda_repo)
    for pkg in driver_packages():
        pkg.build(cuda_repo)
    _write_index(cuda_repo, cuda_repo, cuda_repo, signer, None)

    # nuctl: https://github.com/nuclio/nuclio/releases/download/<v>/nuctl-<v>-linux-amd64
    for row in p["cvat_stack_compat"].values():  # every release of the table: an upgrade takes the next row's nuctl
        nv = row["nuctl"]
        nuctl_file = root / f"nuclio/releases/download/{nv}/nuctl-{nv}-linux-{DEB_ARCH}"
        nuctl_file.parent.mkdir(parents=True)
        nuctl_file.write_text(nuctl.program(nv))

    return {
        "docker_repo_url": f"{base_url}/docker/linux",
        "docker_gpg_sha256": _sha256(docker_root / "gpg"),
        "nvidia_container_toolkit_repo_url": f"{base_url}/libnvidia-container",
        "nvidia_container_toolkit_gpg_sha256": _sha256(ctk_root / "gpgkey"),
        "cuda_repo_url": f"{base_url}/cuda/repos",
        "cuda_keyring_sha256": {f"{CUDA_DISTRO}/{CUDA_ARCH}": _sha256(keyring_deb)},
        "nuctl_url": f"{base_url}/nuclio/releases/download/{{version}}/nuctl-{{version}}-linux-{{arch}}",
    }
