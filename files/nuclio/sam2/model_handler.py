"""SAM 2 predictor with a per-image embedding cache, for CVAT's interactor protocol.

Why a cache: CVAT sends the whole frame with every click, and the image encoder is nearly
all of the work (hiera-tiny on a 2-core CPU: seconds for the encoder, under 100 ms for the
decoder). The predictor's image state after ``set_image`` is kept in an LRU keyed by a hash
of the decoded pixels, so clicks 2..n on a frame run only the prompt encoder + mask decoder.

Settings (environment, read by ``ModelHandler.from_env``):
  MODEL, MODEL_CFG, MODEL_DIR, SAM2_DEVICE   as both SAM 2 functions read them (sam2_runtime.py)
  SAM2_CACHE_SIZE  images whose embeddings are kept (default 8; 0 disables the cache)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sam2_runtime import DEFAULT_MODEL, DEFAULT_MODEL_CFG, checkpoint_path, config_name, pick_device

DEFAULT_CACHE_SIZE = 8


@dataclass
class _CachedImage:
    """What SAM2ImagePredictor.set_image leaves behind, enough to skip the encoder."""

    features: dict[str, Any]
    orig_hw: list[tuple[int, int]]


@dataclass
class HandlerStats:
    """Counters that make the cache observable (tests, logs, the benchmark)."""

    requests: int = 0
    encoder_runs: int = 0
    cache_hits: int = 0
    cache_evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def image_key(image: np.ndarray) -> str:
    """Hash of the decoded pixels plus their shape: the same frame re-encoded as JPEG again still hits."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


class ModelHandler:
    """One SAM 2 image predictor per worker, plus the embedding cache in front of its encoder."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        model_cfg: str = DEFAULT_MODEL_CFG,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        # Imported here so that importing this module (e.g. for its helpers) stays cheap.
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        if cache_size < 0:
            raise ValueError(f"SAM2_CACHE_SIZE must be >= 0, got {cache_size}")
        self.device = pick_device(device)
        self.checkpoint = checkpoint_path(model, model_dir)
        self.model_cfg = config_name(model_cfg)
        self.cache_size = cache_size
        self.use_bf16 = False
        if self.device.type == "cuda":
            major, _minor = torch.cuda.get_device_capability(self.device)
            if major >= 8:
                # Ampere and newer: TF32 matmuls/convolutions and bfloat16 autocast, as SAM 2's own examples do.
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
                self.use_bf16 = True
        sam = build_sam2(self.model_cfg, str(self.checkpoint), device=str(self.device))
        self.predictor = SAM2ImagePredictor(sam)
        self._cache: OrderedDict[str, _CachedImage] = OrderedDict()
        self._lock = threading.Lock()
        self._stats = HandlerStats()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelHandler:
        """Build from MODEL, MODEL_CFG, MODEL_DIR, SAM2_CACHE_SIZE, SAM2_DEVICE."""
        env = os.environ if environ is None else environ
        raw_cache = env.get("SAM2_CACHE_SIZE", str(DEFAULT_CACHE_SIZE)).strip() or str(DEFAULT_CACHE_SIZE)
        try:
            cache_size = int(raw_cache)
        except ValueError:
            raise ValueError(f"SAM2_CACHE_SIZE must be an integer, got {raw_cache!r}") from None
        return cls(
            model=env.get("MODEL", DEFAULT_MODEL).strip() or DEFAULT_MODEL,
            model_cfg=env.get("MODEL_CFG", DEFAULT_MODEL_CFG).strip() or DEFAULT_MODEL_CFG,
            model_dir=env.get("MODEL_DIR") or None,
            device=env.get("SAM2_DEVICE") or None,
            cache_size=cache_size,
        )

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (a copy: callers cannot disturb them)."""
        with self._lock:
            return {**self._stats.as_dict(), "cached_images": len(self._cache)}

    def clear_cache(self) -> None:
        """Forget every cached embedding (the next click on any frame runs the encoder)."""
        with self._lock:
            self._cache.clear()
            self.predictor.reset_predictor()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.use_bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _set_image(self, image: np.ndarray) -> bool:
        """Make ``image`` the predictor's current image; return True when the cache supplied it.

        Caller holds the lock: the predictor has a single image slot shared by all requests.
        """
        key = image_key(image) if self.cache_size else ""
        cached = self._cache.get(key) if self.cache_size else None
        if cached is not None:
            self._cache.move_to_end(key)
            self.predictor.reset_predictor()
            self.predictor._features = cached.features
            self.predictor._orig_hw = list(cached.orig_hw)
            self.predictor._is_batch = False
            self.predictor._is_image_set = True
            self._stats.cache_hits += 1
            return True
        self.predictor.set_image(image)
        self._stats.encoder_runs += 1
        if self.cache_size:
            features = self.predictor._features
            self._cache[key] = _CachedImage(
                features={"image_embed": features["image_embed"], "high_res_feats": list(features["high_res_feats"])},
                orig_hw=[tuple(hw) for hw in self.predictor._orig_hw],
            )
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
                self._stats.cache_evictions += 1
        return False

    def handle(
        self,
        image: np.ndarray,
        pos_points: Sequence[Sequence[float]],
        neg_points: Sequence[Sequence[float]],
        obj_bbox: Sequence[float] | Sequence[Sequence[float]] | None = None,
    ) -> np.ndarray:
        """Return one H x W uint8 mask (0/1) for the prompts, in the image's own pixel grid.

        ``image`` is H x W x 3 uint8 RGB. Points are ``[x, y]`` pixels; ``obj_bbox`` is
        ``[x1, y1, x2, y2]`` or ``[[x1, y1], [x2, y2]]``. Points only: SAM 2's three
        multimask outputs, best by predicted IoU score. A box (with or without points):
        single-mask output, as SAM 2 recommends for unambiguous prompts. Negative points
        alone select nothing: an all-zero mask (the frame is still encoded and cached so
        the next click is fast).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        pos = np.asarray(pos_points, dtype=np.float32).reshape(-1, 2)
        neg = np.asarray(neg_points, dtype=np.float32).reshape(-1, 2)
        box = None if obj_bbox is None else np.asarray(obj_bbox, dtype=np.float32).reshape(4)
        if not len(pos) and box is None and not len(neg):
            raise ValueError("no prompt: give at least one point or a box")

        coords = np.concatenate([pos, neg]) if len(pos) + len(neg) else None
        labels = np.array([1] * len(pos) + [0] * len(neg), dtype=np.int32) if coords is not None else None
        multimask = box is None
        with self._lock:
            self._stats.requests += 1
            with torch.inference_mode(), self._autocast():
                self._set_image(image)
                if not len(pos) and box is None:
                    return np.zeros(image.shape[:2], dtype=np.uint8)
                masks, scores, _low_res = self.predictor.predict(
                    point_coords=coords,
                    point_labels=labels,
                    box=box,
                    multimask_output=multimask,
                )
        best = masks[int(np.argmax(scores))]
        return (best > 0).astype(np.uint8)
