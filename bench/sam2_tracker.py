#!/usr/bin/env python3
"""Per-frame cost of the SAM 2 tracker (files/nuclio/sam2-tracker) as CVAT calls it, on this machine.

Every timed call is a full ``handler(context, event)``, the path a Nuclio worker runs: base64 decode, the
frame decoded and resized as SAM 2's video loader does, SAM 2 (image encoder, memory attention, mask
decoder, memory encoder), the rectangle from the mask, the JSON answer. The first call prompts with the
rectangle; each next call carries only the state CVAT would return. Reported: milliseconds per call (first
and tracked frames), the answer's and the state's bytes, what a session holds after the window slid, and
peak RSS. Random weights (the tests' helper) have the same cost as the real checkpoint; pass
--checkpoint/--config for real weights. Runs on CUDA when torch sees a GPU, else CPU.

    .venv/bin/python -m bench.sam2_tracker                      # tiny, random weights, 1920x1080, 30 frames
    .venv/bin/python -m bench.sam2_tracker --frames 60 --width 3840 --height 2160
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

from labforge.paths import REPO

TRACKER_DIR = REPO / "files" / "nuclio" / "sam2-tracker"
sys.path[:0] = [str(TRACKER_DIR)]  # tracker.py imports its siblings as Nuclio loads them
warnings.filterwarnings("ignore")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} logical cores, load avg {os.getloadavg()[0]:.2f}"


def frames(count: int, width: int, height: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    background = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    side = height // 4
    out = []
    for t in range(count):
        image = background.copy()
        x = width // 8 + t * width // (2 * count)
        image[height // 3:height // 3 + side, x:x + side] = (200, 30, 30)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def tensor_bytes(value, seen=None) -> int:
    """Bytes of the distinct tensor storages a session's state reaches (shared ones, such as sam2's cached
    position encoding, counted once)."""
    import torch

    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(value, dict):
        return sum(tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in value)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--checkpoint", help="a real checkpoint (default: tiny with seeded random weights)")
    parser.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    args = parser.parse_args()

    from testlab.sam2.torchvision_cpu import allow_import

    allow_import()
    import torch

    from testlab.sam2.random_checkpoint import write_random_checkpoint
    from testlab.sam2.support import make_context, make_event

    workdir = Path(tempfile.mkdtemp(prefix="sam2-tracker-bench-"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else write_random_checkpoint(workdir / "tiny.pt", args.config, seed=0)
    os.environ.update({"MODEL": str(checkpoint), "MODEL_CFG": args.config})
    spec = importlib.util.spec_from_file_location("sam2_tracker_main", TRACKER_DIR / "main.py")
    handler_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler_module)
    context = make_context()
    started = time.perf_counter()
    handler_module.init_context(context)
    load_s = time.perf_counter() - started
    load_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    video = frames(args.frames, args.width, args.height)
    box = [args.width / 8, args.height / 3, args.width / 8 + args.height / 4, args.height / 3 + args.height / 4]
    times, answers, states = [], [], []
    for index, frame in enumerate(video):
        image = base64.b64encode(frame).decode()
        body = ({"image": image, "shapes": [{"type": "rectangle", "points": box}], "states": []} if index == 0
                else {"image": image, "shapes": [None], "states": states})
        started = time.perf_counter()
        response = handler_module.handler(context, make_event(json.dumps(body)))
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            print(f"frame {index}: HTTP {response.status_code} {response.body}")
            return 1
        answers.append(len(response.body))
        states = json.loads(response.body)["states"]

    tracker = context.user_data.tracker
    track = tracker.sessions.get(states[0]["session"])
    held = sorted(track.state["output_dict_per_obj"][0]["non_cond_frame_outputs"])
    tracked = times[1:]
    print("SAM 2 tracker benchmark (files/nuclio/sam2-tracker, full handler calls)")
    print(f"  machine: {machine()}; python {platform.python_version()}, torch {torch.__version__}, sam2 {metadata.version('sam2')}")
    print(f"  device:  {tracker.predictor.device}; model {args.config} ({'random weights' if not args.checkpoint else checkpoint.name}),"
          f" loaded in {load_s:.1f} s")
    kib = statistics.mean(len(f) for f in video) / 1024
    print(f"  video:   {args.frames} frames of {args.width}x{args.height} JPEG ({kib:.0f} KiB each)")
    print(f"  first call (prompt):       {times[0]:.0f} ms")
    print(f"  tracked frame, median:     {statistics.median(tracked):.0f} ms (min {min(tracked):.0f}, max {max(tracked):.0f})")
    print(f"  answer bytes per frame:    {max(answers)} (max); state bytes: {len(json.dumps(states[0], separators=(',', ':')))}")
    pixels = 0 if track.frames.newest is None else 1
    print(f"  session holds:             {len(held)} frame outputs (frames {held[0]}..{held[-1]} of {args.frames}), "
          f"{pixels} frame of pixels, {len(track.state['cached_features'])} cached feature sets, "
          f"{tensor_bytes(track.state) / 2**20:.1f} MiB of tensors")
    print(f"  peak RSS:                  {load_rss_mib:.0f} MiB after loading the model, "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
