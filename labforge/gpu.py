"""Whether the GPU layers apply to this host: an inventory mark, checked against the hardware."""

from __future__ import annotations

from pyinfra import host

from labforge.facts import NvidiaGpuDevices
from labforge.platform import UnsupportedHost


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
