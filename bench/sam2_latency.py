#!/usr/bin/env python3
"""Latency of the SAM 2 interactor (files/nuclio/sam2) as CVAT sees it, on this machine.

Every timed click is a full ``handler(context, event)`` call, the path a Nuclio worker runs:
base64 + JPEG decode, pixel hash, SAM 2 (encoder on a new frame, decoder always), mask JSON.

Without arguments it builds SAM 2.1 hiera-tiny with seeded random weights (the helper the tests
use; real weights cannot be downloaded here), which has the same latency as the real checkpoint.
Pass --checkpoint/--config to time real weights. Runs on CUDA when torch sees a GPU, else CPU
(--device cpu forces the CPU).

    .venv/bin/python bench/sam2_latency.py                       # tiny, random weights, 1920x1080
    .venv/bin/python bench/sam2_latency.py --require-speedup 20  # exit 1 below 20x
    .venv/bin/python bench/sam2_latency.py --checkpoint /opt/models/sam2.1_hiera_large.pt \\
        --config configs/sam2.1/sam2.1_hiera_l.yaml
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "sam2"))  # the checkpoint helper and event builder the tests use

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script deprecation inside sam2


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000.0, result


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="real checkpoint file (default: build tiny with random weights)")
    parser.add_argument("--config", default=None, help="MODEL_CFG for --checkpoint (default: the tiny 2.1 config)")
    parser.add_argument("--size", type=parse_size, default=(1920, 1080), help="frame WIDTHxHEIGHT (default 1920x1080)")
    parser.add_argument("--first", type=int, default=5, help="first clicks, each on a new frame (default 5)")
    parser.add_argument("--clicks", type=int, default=20, help="later clicks on a cached frame (default 20)")
    parser.add_argument("--boxes", type=int, default=10, help="box-only requests on a cached frame (default 10)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    parser.add_argument("--require-speedup", type=float, default=0.0, help="exit 1 when cached/first speedup is below this")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image
    from random_checkpoint import TINY_CFG
    from sam2_support import LOGGER_NAME, load_function_main, make_context, make_event, synthetic_image

    width, height = args.size
    with tempfile.TemporaryDirectory(prefix="sam2-bench-") as tmp:
        if args.checkpoint:
            checkpoint, config, weights = Path(args.checkpoint).resolve(), args.config or TINY_CFG, "from --checkpoint"
        else:
            # Built in a child process so that this process's peak RSS is the function's alone.
            checkpoint, config = Path(tmp) / "sam2.1_hiera_tiny_random.pt", TINY_CFG
            subprocess.run(
                [sys.executable, "-c", "import sys, random_checkpoint as r; r.write_random_checkpoint(sys.argv[1])", checkpoint],
                check=True,
                cwd=REPO / "tests" / "sam2",
                stderr=subprocess.DEVNULL,
            )
            weights = "random (seed 0), real architecture"
        os.environ.update(MODEL=str(checkpoint), MODEL_CFG=config, SAM2_DEVICE=args.device, SAM2_CACHE_SIZE="8")
        os.environ.pop("MAX_IMAGE_PIXELS", None)

        function = load_function_main()
        context = make_context()
        # nuclio-sdk's Logger logs below its level too; keep the per-request lines off the terminal.
        logging.getLogger(LOGGER_NAME).propagate = False
        logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())
        build_ms, _ = timed(lambda: function.init_context(context))
        model = context.user_data.model

    def jpeg_b64(img: np.ndarray) -> str:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        return base64.b64encode(buf.getvalue()).decode()

    def click(body: dict[str, Any]) -> Any:
        response = function.handler(context, make_event(json.dumps(body).encode()))
        if response.status_code != 200:
            raise SystemExit(f"unexpected {response.status_code}: {response.body[:200]}")
        return response

    def sync() -> None:
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    rows: list[tuple[str, list[float], str]] = [("model build (init_context)", [build_ms], "build_sam2 + load checkpoint")]

    frames = [jpeg_b64(synthetic_image(width, height, seed=100 + i)) for i in range(args.first)]
    cx, cy = width / 2, height / 2
    first, runs0 = [], model.stats["encoder_runs"]
    for b64 in frames:
        ms, response = timed(lambda b64=b64: (click({"image": b64, "pos_points": [[cx, cy]], "neg_points": []}), sync())[0])
        first.append(ms)
    assert model.stats["encoder_runs"] - runs0 == len(frames), "first clicks must run the encoder"
    rows.append(("first click (encoder+decoder)", first, "new frame each time"))

    rng = np.random.default_rng(0)
    later, runs1 = [], model.stats["encoder_runs"]
    for _ in range(args.clicks):
        pos = [[float(rng.uniform(0, width)), float(rng.uniform(0, height))]]
        neg = [[float(rng.uniform(0, width)), float(rng.uniform(0, height))]]
        ms, response = timed(lambda p=pos, n=neg: (click({"image": frames[-1], "pos_points": p, "neg_points": n}), sync())[0])
        later.append(ms)
    boxes = []
    for _ in range(args.boxes):
        x1, y1 = float(rng.uniform(0, width / 2)), float(rng.uniform(0, height / 2))
        box = [[x1, y1], [x1 + width / 3, y1 + height / 3]]
        ms, response = timed(lambda b=box: (click({"image": frames[-1], "pos_points": [], "neg_points": [], "obj_bbox": b}), sync())[0])
        boxes.append(ms)
    assert model.stats["encoder_runs"] == runs1, "clicks on a cached frame must not run the encoder"
    rows.append(("later clicks (cache hit)", later, "same frame, 1 pos + 1 neg point"))
    rows.append(("box only (cache hit)", boxes, "same frame, obj_bbox, no points"))

    # High-water mark of the function's own work, before the JSON comparison below allocates big lists.
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    mask = np.array(json.loads(response.body)["mask"], dtype=np.uint8)
    encode = [timed(lambda: function.mask_json(mask))[0] for _ in range(5)]
    naive = [timed(lambda: json.dumps({"mask": mask.tolist()}))[0] for _ in range(2)]
    body_size = len(function.mask_json(mask))
    rows.append(("mask JSON encode (ours)", encode, f"{body_size / 1e6:.2f} MB response body"))
    rows.append(("mask JSON encode (json.dumps)", naive, "for comparison, not used"))

    device = str(model.device)
    if model.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(model.device)}, bf16 autocast: {model.use_bf16})"

    print("SAM 2 interactor latency (files/nuclio/sam2, full handler calls)")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"  cpu:     {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, load avg {load}")
    print(f"  python:  {platform.python_version()}   torch {torch.__version__}   sam2 {metadata.version('sam2')}")
    print(f"  device:  {device}")
    print(f"  model:   {config}, weights {weights}")
    print(f"  frame:   {width}x{height} JPEG (base64 {len(frames[-1]) / 1e3:.0f} kB)")
    print()
    print(f"| {'step':<31} | {'n':>3} | {'median ms':>10} | {'min ms':>9} | {'max ms':>9} | note")
    print(f"|{'-' * 33}|{'-' * 5}|{'-' * 12}|{'-' * 11}|{'-' * 11}|{'-' * 34}")
    for name, values, note in rows:
        print(f"| {name:<31} | {len(values):>3} | {statistics.median(values):>10.1f} | {min(values):>9.1f} | {max(values):>9.1f} | {note}")
    print(f"| {'peak RSS':<31} |     | {peak_rss_mib:>6.0f} MiB |           |           | torch + model + the clicks above")
    if model.device.type == "cuda":
        print(f"| {'peak CUDA memory':<31} |     | {torch.cuda.max_memory_allocated() / 2**20:>6.0f} MiB |           |           |")
    speedup = statistics.median(first) / statistics.median(later)
    print()
    print(
        f"cached/first speedup: {speedup:.1f}x "
        f"(median first click {statistics.median(first):.0f} ms / median cached click {statistics.median(later):.0f} ms)"
    )
    if args.require_speedup and speedup < args.require_speedup:
        print(f"FAIL: speedup below the required {args.require_speedup:g}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
