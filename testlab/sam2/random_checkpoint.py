"""A real SAM 2.1 checkpoint file with seeded random weights, for tests and the benchmark.

Why: the real weights cannot be downloaded here (no model hubs), but the function must be
exercised through its production loading path. So we build the real architecture from the
config packaged with sam2, and save it in the format Meta ships (``{"model": state_dict}``,
what ``sam2.build_sam._load_checkpoint`` reads, strictly: every key, nothing extra).
Latency equals that of the real weights (same tensors, same shapes); the masks are meaningless.

Sensitive to the video memory: with PyTorch's default initialisation the memory attention's
cross-attention is nearly uniform (one head, query.key logits of std ~0.3 over ~7000 memory tokens) and the
object pointers' temporal encoding is tiny, so which pointers a frame attends to, and at which distance, barely
moves its logits: a tracker feeding SAM 2 the wrong temporal encoding changed them by 4e-6 (logits peak at 0.28).
So the checkpoint scales, by ``MEMORY_GAINS``, the weights of the cross-attention's query and key projections
(attention logits x9: sharper, position-dependent attention) and of ``obj_ptr_tpos_proj`` (the pointers' temporal
encoding x10). That wrong encoding then moves the logits by ~1e-2, a dropped pointer by ~4e-4
(tests/sam2/test_sam2_tracker.py's controls). Only the video memory path changes: the image predictor (the
interactor) never runs memory attention nor uses object pointers (sam2/sam2_image_predictor.py: ``set_image``
adds ``no_mem_embed`` to the image features, ``_predict`` calls the prompt encoder and ``sam_mask_decoder``
only), so its masks are those of the unscaled weights.
"""

from __future__ import annotations

import re
from pathlib import Path

TINY_CFG = "configs/sam2.1/sam2.1_hiera_t.yaml"
TINY_NAME = "sam2.1_hiera_tiny_random.pt"
# module name pattern -> factor applied to its weight (sam2/modeling/memory_attention.py MemoryAttentionLayer
# .cross_attn_image, a RoPEAttention; sam2/modeling/sam2_base.py SAM2Base.obj_ptr_tpos_proj)
MEMORY_GAINS = {r"^memory_attention\.layers\.\d+\.cross_attn_image\.(q|k)_proj$": 3.0, r"^obj_ptr_tpos_proj$": 10.0}


def write_random_checkpoint(path: str | Path, config: str = TINY_CFG, seed: int = 0, memory_gains: dict[str, float] | None = None) -> Path:
    """Build ``config`` with weights from ``torch.manual_seed(seed)``, scale them by ``memory_gains``
    (default ``MEMORY_GAINS``; ``{}`` for PyTorch's initialisation as it is) and save it to ``path``."""
    import torch

    from sam2.build_sam import build_sam2

    gains = [(re.compile(p), f) for p, f in (MEMORY_GAINS if memory_gains is None else memory_gains).items()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2(config, ckpt_path=None, device="cpu")
    scaled = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            for pattern, factor in gains:
                if pattern.search(name):
                    module.weight.mul_(factor)
                    scaled.add(pattern.pattern)
    missing = {p.pattern for p, _ in gains} - scaled
    if missing:
        raise ValueError(f"{config} has no module matching {sorted(missing)}")
    torch.save({"model": model.state_dict()}, path)
    return path
