"""Hosts without GPUs: the GPU layers are skipped even if an NVIDIA card is present."""

# Never apply the driver/toolkit/CUDA layers to these hosts.
gpu = False
