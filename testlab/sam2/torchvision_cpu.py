"""Let torchvision import next to a CPU-only torch (the test and bench environment only).

Why: the tests install torch 2.13.0's CPU build (a 1 GB venv instead of a 5.6 GB CUDA one), but
PyPI's torchvision wheels are CUDA builds whose compiled ops (``torchvision/_C.so``) link
``libtorch_cuda.so``; they cannot load next to a CPU torch. torchvision then still registers fake
kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally and its import dies with
``RuntimeError: operator torchvision::nms does not exist`` (pytorch/vision#9085; the guard proposed
in pytorch/vision#9086 was not merged; ``torchvision/_meta_registrations.py`` lines 163 and 177 in
torchvision 0.28.0).

SAM 2 needs only torchvision's pure-Python transforms (``sam2/utils/transforms.py`` imports
``Normalize, Resize, ToTensor``); the image and video predictors never call a compiled op. So,
only when the import fails with exactly that error, this declares the two operators' schemas
(with no kernel behind them: calling one raises) and imports torchvision again. Production images
(``pytorch/pytorch:2.5.1-cuda12.4-*``) carry a matching torchvision and never load this module.
"""

from __future__ import annotations

import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # kept alive: the declarations last as long as this Library object


def allow_import() -> None:
    """Import torchvision; on the CPU-torch failure above, declare the ops and import it again."""
    global _library
    try:
        import torchvision
        return
    except RuntimeError as exc:
        if "operator torchvision::nms does not exist" not in str(exc):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)
    import torchvision  # noqa: F401
