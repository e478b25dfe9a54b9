"""Hosts with NVIDIA GPUs: the driver, container toolkit and CUDA layers apply (and the GPU functions)."""

# Marks the group as GPU hosts; a host here without an NVIDIA PCI device is refused (see all.py).
gpu = True
