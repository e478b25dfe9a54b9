"""A real SAM 2.1 checkpoint file with seeded random weights, for tests and the benchmark.

Why: the real weights cannot be downloaded here (no model hubs), but the function must be
exercised through its production loading path. So we build the real architecture from the
config packaged with sam2, and save it in the format Meta ships (``{"model": state_dict}``,
what ``sam2.build_sam._load_checkpoint`` reads, strictly: every key, nothing extra).
Latency equals that of the real weights (same tensors, same shapes); the masks are meaningless.
"""

from __future__ import annotations

from pathlib import Path

TINY_CFG = "configs/sam2.1/sam2.1_hiera_t.yaml"
TINY_NAME = "sam2.1_hiera_tiny_random.pt"


def write_random_checkpoint(path: str | Path, config: str = TINY_CFG, seed: int = 0) -> Path:
    """Build ``config`` with weights from ``torch.manual_seed(seed)`` and save it to ``path``."""
    import torch
    from sam2.build_sam import build_sam2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2(config, ckpt_path=None, device="cpu")
    torch.save({"model": model.state_dict()}, path)
    return path
