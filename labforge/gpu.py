"""Whether the GPU layers apply to this host: an inventory mark, checked against the hardware."""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.files import Directory, File

from labforge.facts import NvidiaGpuDevices
from labforge.paths import REPO
from labforge.platform import UnsupportedHost
from labforge.report import Refused


def enabled() -> bool:
    """gpu=True/False in data decides; gpu=None (default) follows the NVIDIA PCI devices found."""
    wanted = host.data.get("gpu")
    if wanted is None:
        return bool(host.get_fact(NvidiaGpuDevices))
    return bool(wanted)


def check() -> None:
    """Refuse a host marked as a GPU host that has no NVIDIA GPU, before anything changes."""
    required = host.data.get("gpu") and host.data.get("gpu_require_pci_device", True)
    if required and not host.get_fact(NvidiaGpuDevices):
        raise UnsupportedHost(
            "marked as a GPU host (gpu_servers / gpu=True) but no NVIDIA PCI display device was "
            "found; move it to cpu_servers, or set gpu_require_pci_device=False for a VM or test host"
        )


def keyring_sha256(repo_dir: str) -> str:
    """The pinned sha256 of NVIDIA's cuda-keyring .deb in this CUDA repository directory, or a refusal."""
    pins = host.data.get("cuda_keyring_sha256") or {}
    sha = pins.get(repo_dir)
    if not sha:
        raise Refused(
            f"no sha256 pinned for NVIDIA's cuda-keyring in '{repo_dir}'; add it to "
            "cuda_keyring_sha256 in group_data/all.py"
        )
    return sha


def function_needs_gpu(fn) -> bool | None:
    """Whether this function runs on the GPU here (its GPU variant exists); None while CVAT's checkout is not there."""
    if not fn.gpu:
        return False
    if fn.is_local:
        return (REPO / fn.path / "function-gpu.yaml").exists()
    if not host.get_fact(Directory, path=fn.yaml_dir):
        return None
    return bool(host.get_fact(File, path=f"{fn.yaml_dir}/function-gpu.yaml"))
