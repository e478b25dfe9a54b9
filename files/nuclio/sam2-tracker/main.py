"""Nuclio handler: SAM 2 as a CVAT tracker (AI Tools > Trackers), following rectangles with SAM 2's video memory.

CVAT v2.51.0's protocol (cvat/apps/lambda_manager/views.py at commit dfd505e7, LambdaFunction.invoke, kind
tracker; this function declares ``supported_shape_types``, so shapes travel as ``{"type", "points"}``):

    first call on a frame:  {"image": <base64>, "shapes": [{"type": "rectangle", "points": [x1, y1, x2, y2]}, ...],
                             "states": []}
    each next frame:        {"image": <base64>, "shapes": [null, ...], "states": [<our state>, ...]}
    answer:                 {"shapes": [{"type": "rectangle", "points": [...]}, ...], "states": [<our state>, ...]}

CVAT JSON-encodes and signs each state, sends it through the browser and hands it back unsigned on the next
frame (TimestampSigner, max age 8 h). Ours is small: {"v": 1, "session": <32 hex>, "type": "rectangle",
"frames": <frames tracked>}; the object's memory stays here, in the worker (tracker.py), keyed by the
session. The first call answers the annotator's own rectangle (clamped to the frame); every next frame
answers the bounding box of the tracked mask.

Errors, each JSON {"error": "<one sentence>"}; the worker keeps running:
  400  not JSON, no image, not an image, a shape that is not a rectangle or lies outside the frame,
       a state that is not this tracker's, shapes and states that do not pair up, more shapes than
       SAM2_TRACKER_MAX_SHAPES (refused before any model work; the sessions held are untouched)
  410  a session this worker does not hold (evicted, expired, or the function restarted)
  422  the object was lost on this frame
  500  anything else (logged)
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from sam2_runtime import (
    UNREADABLE,
    BadRequest,
    allow_pixels,
    check_pixels,
    image_bytes,
    internal_error,
    max_image_pixels_from_env,
    parse_body,
    refuse,
)
from tracker import SessionGone, Tracker, TrackingError

NAME = "sam2 tracker"
STATE_VERSION = 1
SESSION = re.compile(r"[0-9a-f]{32}")
RESTART = "restart tracking from the current frame"


def init_context(context: Any) -> None:
    started = time.perf_counter()
    context.user_data.max_image_pixels = max_image_pixels_from_env()
    allow_pixels(context.user_data.max_image_pixels)
    context.user_data.tracker = Tracker.from_env()
    predictor = context.user_data.tracker.predictor
    context.logger.info_with("sam2 tracker loaded", device=str(predictor.device), image_size=predictor.image_size,
                             seconds=round(time.perf_counter() - started, 2))


def handler(context: Any, event: Any) -> Any:
    try:
        request = parse_body(event.body)
        encoded, width, height = read_image(request.get("image"), context.user_data.max_image_pixels)
        pairs = pair_up(request.get("shapes"), request.get("states"), context.user_data.tracker.max_shapes)
        prompts = [None if state else parse_rectangle(shape, width, height) for shape, state in pairs]
        states = [None if not state else parse_state(state) for _, state in pairs]
    except BadRequest as exc:
        return refuse(context, 400, str(exc), NAME)
    except Exception as exc:  # a bug in validation must not take the worker down
        return internal_error(context, exc, NAME)
    tracker: Tracker = context.user_data.tracker
    try:
        results = tracker.track(encoded, [state["session"] if state else box for box, state in zip(prompts, states, strict=True)])
        shapes, out_states = [], []
        for number, ((session, logits), box, state) in enumerate(zip(results, prompts, states, strict=True), start=1):
            if state is None:  # the first frame: the rectangle the annotator drew is the answer
                shapes.append({"type": "rectangle", "points": list(box)})
                out_states.append({"v": STATE_VERSION, "session": session, "type": "rectangle", "frames": 1})
                continue
            tracked = bounding_box(logits > 0)
            if tracked is None:
                raise TrackingError(f"shape {number}: SAM 2 lost the object on this frame: {RESTART}")
            shapes.append({"type": "rectangle", "points": tracked})
            out_states.append({**state, "frames": state["frames"] + 1})
    except SessionGone as exc:
        return refuse(context, 410, str(exc), NAME)
    except TrackingError as exc:
        return refuse(context, 422, str(exc), NAME)
    except Exception as exc:
        return internal_error(context, exc, NAME)
    return context.Response(body=json.dumps({"shapes": shapes, "states": out_states}, separators=(",", ":")), headers={},
                            content_type="application/json", status_code=200)


def read_image(value: Any, max_pixels: int) -> tuple[bytes, int, int]:
    """The frame's encoded bytes (what SAM 2 decodes) and its size, refusing what is not an image."""
    encoded = image_bytes(value)
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            width, height = image.size
            check_pixels(width, height, max_pixels)
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        raise BadRequest(UNREADABLE) from None
    return encoded, width, height


def pair_up(shapes: Any, states: Any, max_shapes: int) -> list[tuple[Any, Any]]:
    """(shape, state) per tracked object, as CVAT builds them: states [] on the first call, shapes [null, ...] after;
    at most ``max_shapes`` of them (what one call may cost: each shape runs SAM 2's memory attention, mask decoder
    and memory encoder, and keeps a session)."""
    shapes = [] if shapes is None else shapes
    states = [] if states is None else states
    if not isinstance(shapes, list) or not isinstance(states, list):
        raise BadRequest("'shapes' and 'states' must be lists")
    if states and len(states) != len(shapes):
        raise BadRequest(f"{len(shapes)} shapes but {len(states)} states: send one state per shape, or none to start")
    if not shapes:
        raise BadRequest("no shapes to track")
    if len(shapes) > max_shapes:
        raise BadRequest(f"{len(shapes)} shapes in one call, more than the {max_shapes} this tracker follows at once: track fewer objects")
    return list(zip(shapes, states or [None] * len(shapes), strict=True))


def parse_rectangle(shape: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """A rectangle to start from, clamped to the frame (CVAT sends what the annotator drew, unclamped)."""
    if not isinstance(shape, dict) or shape.get("type") != "rectangle":
        kind = shape.get("type") if isinstance(shape, dict) else type(shape).__name__
        raise BadRequest(f"this tracker follows rectangles, not {kind!r}")
    points = shape.get("points")
    if not (isinstance(points, list) and len(points) == 4 and all(_finite(v) for v in points)):
        raise BadRequest("a rectangle's points must be [x1, y1, x2, y2], four finite numbers")
    x1, x2 = sorted((float(points[0]), float(points[2])))
    y1, y2 = sorted((float(points[1]), float(points[3])))
    box = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        raise BadRequest(f"the rectangle {points} has no area inside the {width}x{height} frame")
    return box


def parse_state(state: Any) -> dict[str, Any]:
    if not (isinstance(state, dict) and state.get("v") == STATE_VERSION and isinstance(state.get("session"), str)
            and SESSION.fullmatch(state["session"]) and state.get("type") == "rectangle"
            and isinstance(state.get("frames"), int) and state["frames"] >= 1):
        raise BadRequest(f"a state that is not this tracker's: {RESTART}")
    return state


def bounding_box(mask: np.ndarray) -> list[float] | None:
    """[x1, y1, x2, y2] around the set pixels (pixel x covers [x, x + 1)); None when no pixel is set."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
