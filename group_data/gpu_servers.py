"""Hosts with NVIDIA GPUs: the driver, container toolkit and CUDA layers apply, and the GPU functions."""

# Marks the group as GPU hosts; a host here without an NVIDIA PCI device is refused (see all.py).
gpu = True
# CPU functions plus CVAT's SAM (GPU) and our SAM 2 interactor and tracker (files/nuclio/sam2, sam2-tracker,
# uploaded to the host).
nuclio_functions = [
    "serverless/openvino/omz/public/yolo-v3-tf",
    "serverless/openvino/dextr",
    "serverless/pytorch/facebookresearch/sam",
    "files/nuclio/sam2",
    "files/nuclio/sam2-tracker",
]
