#!/usr/bin/env python3
"""Latency and answer size of the SAM 2 interactor (files/nuclio/sam2) as CVAT sees it, on this machine.

Every timed click is a full ``handler(context, event)`` call, the path a Nuclio worker runs:
base64 + JPEG decode, pixel hash, SAM 2 (encoder on a new frame, decoder always), answer JSON.
Each click runs twice, A/B: once with the function's compact answer (the mask cropped to its set
pixels plus ``bounds``, what CVAT v2.51.0's UI reads) and once with the full-frame answer this
function sent before (``{"mask": H x W rows}``, emulated here by swapping the encoder).

Random weights give meaningless masks, so the size goal is measured on the answer for a real
object's shape: an ellipse filling a 300 x 300-pixel box at the frame's centre, encoded by the
function's own ``answer_json``. The sizes of the random-weight answers are reported as well.

Without arguments it builds SAM 2.1 hiera-tiny with seeded random weights (the helper the tests
use; real weights cannot be downloaded here), which has the same latency as the real checkpoint.
Pass --checkpoint/--config to time real weights. Runs on CUDA when torch sees a GPU, else CPU.

    .venv/bin/python -m bench.sam2_latency                  # tiny, random weights, 1920x1080 and 3840x2160
    .venv/bin/python -m bench.sam2_latency --check-goals    # exit 1 below 20x (1080p) / 60x (4K), or if larger
    .venv/bin/python -m bench.sam2_latency --checkpoint /opt/models/sam2.1_hiera_large.pt \\
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

from labforge.paths import REPO

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script deprecation inside sam2
warnings.filterwarnings("ignore", category=DeprecationWarning)

# Issue 8's goals for a 300 x 300-pixel object: the compact answer this many times smaller than the full frame.
GOALS = {(1920, 1080): 20.0, (3840, 2160): 60.0}
OBJECT_SIZE = 300


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


def object_mask(width: int, height: int, size: int = OBJECT_SIZE):
    """An ellipse filling a size x size box at the frame's centre: the shape of a real object's mask."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy, r = width / 2, height / 2, size / 2
    return (((xx + 0.5 - cx) / r) ** 2 + ((yy + 0.5 - cy) / r) ** 2 <= 1.0).astype(np.uint8)


def row(name: str, values: list[float], sizes: list[int] | None = None, note: str = "") -> str:
    size = f"{statistics.median(sizes):>12,.0f}" if sizes else f"{'':>12}"
    return (f"| {name:<42} | {len(values):>3} | {statistics.median(values):>9.1f} | {min(values):>8.1f} | "
            f"{max(values):>8.1f} | {size} | {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="real checkpoint file (default: build tiny with random weights)")
    parser.add_argument("--config", default=None, help="MODEL_CFG for --checkpoint (default: the tiny 2.1 config)")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(1920, 1080), (3840, 2160)],
                        help="frame sizes WIDTHxHEIGHT (default 1920x1080 3840x2160)")
    parser.add_argument("--first", type=int, default=3, help="first clicks per answer form, each on a new frame (default 3)")
    parser.add_argument("--clicks", type=int, default=10, help="later clicks on a cached frame, per answer form (default 10)")
    parser.add_argument("--boxes", type=int, default=5, help="box-only requests on a cached frame (default 5)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    parser.add_argument("--check-goals", action="store_true",
                        help="exit 1 if the 300x300 object's answer misses the size goal or any compact answer is larger")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from testlab.sam2.random_checkpoint import TINY_CFG
    from testlab.sam2.support import LOGGER_NAME, load_function_main, make_context, make_event, synthetic_image
    from testlab.sam2.torchvision_cpu import allow_import

    allow_import()
    with tempfile.TemporaryDirectory(prefix="sam2-bench-") as tmp:
        if args.checkpoint:
            checkpoint, config, weights = Path(args.checkpoint).resolve(), args.config or TINY_CFG, "from --checkpoint"
        else:
            # Built in a child process so that this process's peak RSS is the function's alone.
            checkpoint, config = Path(tmp) / "sam2.1_hiera_tiny_random.pt", TINY_CFG
            build = "import sys, testlab.sam2.random_checkpoint as r; r.write_random_checkpoint(sys.argv[1])"
            subprocess.run(
                [sys.executable, "-c", build, checkpoint],
                check=True,
                cwd=REPO,
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

    compact_answer = function.answer_json

    def full_frame_answer(mask: Any) -> str:
        """What the function answered before bounds: the whole frame's rows."""
        return '{"mask":' + function.rows_json(np.asarray(mask)) + "}"

    def jpeg_b64(img: np.ndarray) -> str:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        return base64.b64encode(buf.getvalue()).decode()

    def sync() -> None:
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    def click(body: dict[str, Any], answer: Callable[[Any], str]) -> tuple[float, str]:
        function.answer_json = answer
        try:
            ms, response = timed(lambda: (function.handler(context, make_event(json.dumps(body).encode())), sync())[0])
        finally:
            function.answer_json = compact_answer
        if response.status_code != 200:
            raise SystemExit(f"unexpected {response.status_code}: {response.body[:200]}")
        return ms, response.body

    device = str(model.device)
    if model.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(model.device)}, bf16 autocast: {model.use_bf16})"
    print("SAM 2 interactor: latency and answer size (files/nuclio/sam2, full handler calls)")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"  cpu:     {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, load avg {load}")
    print(f"  python:  {platform.python_version()}   torch {torch.__version__}   sam2 {metadata.version('sam2')}")
    print(f"  device:  {device}")
    print(f"  model:   {config}, weights {weights}; model build (init_context) {build_ms:.0f} ms")

    forms = {"compact": compact_answer, "full-frame": full_frame_answer}

    def as_full_frame(text: str, width: int, height: int) -> np.ndarray:
        payload = json.loads(text)
        crop = np.array(payload["mask"], dtype=np.uint8)
        x1, y1 = (payload.get("bounds") or [0, 0])[:2]
        full = np.zeros((height, width), dtype=np.uint8)
        full[y1 : y1 + crop.shape[0], x1 : x1 + crop.shape[1]] = crop
        return full

    def run_size(width: int, height: int, rng: np.random.Generator) -> tuple[str, list[str]]:
        """Time and size every answer form on one frame size; print its table; return (summary, failures)."""
        frames = [jpeg_b64(synthetic_image(width, height, seed=100 + i)) for i in range(2 * args.first)]
        times: dict[tuple[str, str], list[float]] = {}
        sizes: dict[tuple[str, str], list[int]] = {}
        larger = answers = 0
        for i, b64 in enumerate(frames):  # alternate the answer forms over new frames: each one runs the encoder
            form = "compact" if i % 2 == 0 else "full-frame"
            bodies = [("first", form, {"image": b64, "pos_points": [[width / 2, height / 2]], "neg_points": [], "obj_bbox": []})]
            runs = model.stats["encoder_runs"]
            ms, text = click(bodies[0][2], forms[form])
            assert model.stats["encoder_runs"] == runs + 1, "a first click must run the encoder"
            times.setdefault(("first", form), []).append(ms)
            sizes.setdefault(("first", form), []).append(len(text))
        cached = [("cached", {"image": frames[-1], "obj_bbox": [],
                              "pos_points": [[float(rng.uniform(0, width)), float(rng.uniform(0, height))]],
                              "neg_points": [[float(rng.uniform(0, width)), float(rng.uniform(0, height))]]})
                  for _ in range(args.clicks)]
        boxes = []
        for _ in range(args.boxes):
            x1, y1 = float(rng.uniform(0, width / 2)), float(rng.uniform(0, height / 2))
            boxes.append(("box", {"image": frames[-1], "pos_points": [], "neg_points": [],
                                  "obj_bbox": [[x1, y1], [x1 + width / 3, y1 + height / 3]]}))
        runs = model.stats["encoder_runs"]
        for kind, body in cached + boxes:
            for form, answer in forms.items():
                ms, text = click(body, answer)
                times.setdefault((kind, form), []).append(ms)
                sizes.setdefault((kind, form), []).append(len(text))
                if form == "compact":  # the same mask as a full-frame answer, for "never larger"
                    answers += 1
                    larger += len(text) > len(full_frame_answer(as_full_frame(text, width, height)))
        assert model.stats["encoder_runs"] == runs, "clicks on a cached frame must not run the encoder"

        obj = object_mask(width, height)
        encode = {form: [timed(lambda a=answer: a(obj))[0] for _ in range(5)] for form, answer in forms.items()}
        obj_compact, obj_full = len(compact_answer(obj)), len(full_frame_answer(obj))
        ratio = obj_full / obj_compact

        print()
        print(f"frame {width}x{height} JPEG (base64 {len(frames[-1]) / 1e3:.0f} kB)")
        print(f"| {'step':<42} | {'n':>3} | {'median ms':>9} | {'min ms':>8} | {'max ms':>8} | {'answer bytes':>12} | note")
        print(f"|{'-' * 44}|{'-' * 5}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 14}|{'-' * 30}")
        labels = {"first": "first click (encoder+decoder)", "cached": "cached click", "box": "box only (cached)"}
        for kind, label in labels.items():
            for form in forms:
                note = "new frame each time" if kind == "first" else "random-weight mask"
                print(row(f"{label}, {form}", times[kind, form], sizes[kind, form], note))
        for form, answer in forms.items():
            print(row(f"answer encode, {form}", encode[form], [len(answer(obj))], f"{OBJECT_SIZE}x{OBJECT_SIZE} object"))
        first_c, first_f = statistics.median(times["first", "compact"]), statistics.median(times["first", "full-frame"])
        cached_c, cached_f = statistics.median(times["cached", "compact"]), statistics.median(times["cached", "full-frame"])
        goal = GOALS.get((width, height))
        verdict = "" if goal is None else f" (goal >= {goal:g}x: {'met' if ratio >= goal else 'MISSED'})"
        print(f"answer for a {OBJECT_SIZE}x{OBJECT_SIZE}-pixel object: full-frame {obj_full:,} B, compact {obj_compact:,} B, "
              f"{ratio:.1f}x smaller{verdict}")
        print(f"compact answers larger than full-frame: {larger} of {answers}")
        print(f"server-side median per click, compact vs full-frame: first {first_c:.0f} vs {first_f:.0f} ms, "
              f"cached {cached_c:.0f} vs {cached_f:.0f} ms; cached/first speedup (compact) {first_c / cached_c:.1f}x")
        failures = []
        if goal is not None and ratio < goal:
            failures.append(f"{width}x{height}: {ratio:.1f}x < {goal:g}x")
        if larger:
            failures.append(f"{width}x{height}: {larger} compact answers larger than full-frame")
        return (f"{width}x{height}: object answer {ratio:.1f}x smaller ({obj_full:,} -> {obj_compact:,} B), "
                f"cached click {cached_c:.0f} ms compact vs {cached_f:.0f} ms full-frame"), failures

    rng = np.random.default_rng(0)
    summary, failures = [], []
    for width, height in args.sizes:
        line, failed = run_size(width, height, rng)
        summary.append(line)
        failures += failed

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print()
    print(f"peak RSS {peak_rss_mib:.0f} MiB" + (f", peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
                                                if model.device.type == "cuda" else ""))
    for line in summary:
        print(line)
    if args.check_goals and failures:
        print("FAIL: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
