"""Nuclio entry points (init_context, handler): CVAT's interactor protocol in front of ModelHandler.

The request, read at CVAT v2.51.0 (commit dfd505e7); v2.73.0 (commit 7972cb4f2) sends the same keys, with the
image cropped and the prompts shifted into the crop when the annotator set a region of interest (views.py 485-516):

Request. The UI (cvat-ui .../controls-side-bar/tools-control.tsx, ``onInteraction``) sends
``{frame, obj_bbox, pos_points, neg_points}`` where each list comes from
``convertShapesForInteractor`` (cvat-ui/src/cvat-canvas-wrapper.ts): ``obj_bbox`` is ``[]`` when no
box was drawn and ``[[x1, y1], [x2, y2]]`` (top-left, then bottom-right) when one was. The canvas
takes that box from the SVG rectangle's ``getBBox()`` without clamping it to the frame
(cvat-canvas/src/typescript/interactionHandler.ts, ``prepareResult``), so a box dragged past an edge
arrives with negative coordinates or ones beyond the frame. Clicks are accepted by the canvas while
``Math.round(x) >= 0`` and ``Math.round(x) < width`` (``isWithinFrame``), so x may be as low as -0.5.
The server (cvat/apps/lambda_manager/views.py, ``LambdaFunction.invoke``) drops keys whose value is
null, then POSTs the function a JSON object (``requests`` ``json=``; Nuclio's python runtime hands the
handler the decoded dict) with exactly::

    {
      "image":      "<base64 of the frame's stored bytes, JPEG or PNG>",   # replaces "frame"
      "pos_points": [[x, y], ...],          # required by the server
      "neg_points": [[x, y], ...],          # required by the server
      "obj_bbox":   [] | null | [[x1, y1], [x2, y2]]
    }
    (+ "threshold" when a caller sent a truthy one; the UI does not, and it is ignored here)

  Accepted here as well, for other clients: ``obj_bbox`` absent, corners in any order, and
  ``[x1, y1, x2, y2]``. Boxes are clamped to the frame; a box entirely outside it, or with zero
  width or height once clamped, is a 400. Coordinates are continuous pixel coordinates: the frame
  spans [0, width] x [0, height]; clicks in [-0.5, width] x [-0.5, height] are accepted (see above)
  and clamped onto the frame.

Response 200. What CVAT does with an answer depends on its release, and nothing in the request says which
release sent it (views.py builds the same payload at dfd505e7 and 7972cb4f2), so the Functions layer tells the
function at deploy time: ``CVAT_INTERACTOR_ANSWER`` (labforge/nuclio_functions.py ``interactor_answer``) is one of

- ``bounds`` (CVAT before v2.60.0, e.g. v2.51.0): the server passes the answer to the UI unchanged (views.py
  ``invoke`` post-processes only detectors and trackers at dfd505e7), and the UI (tools-control.tsx 411-427 at
  dfd505e7) reads ``mask`` (rows of 0/1) and an optional inclusive ``bounds: [x1, y1, x2, y2]``: with ``bounds`` the
  mask covers only that rectangle (the contour is offset by ``bounds[0..1]``, the RLE gets the bounds appended),
  without it the whole frame. So the answer is compact::

    {"mask": [[0, 1, ...], ...], "bounds": [x1, y1, x2, y2]}   # the mask's set pixels' bounding box
    {"mask": [[...full frame...]]}                              # when that box is the whole frame

- ``shapes`` (CVAT v2.60.0 and later, e.g. v2.73.0): cvat-core rewrites any answer holding ``mask`` as a mask
  whose box is ``[0, 0, width - 1, height - 1]`` of the array and never reads ``bounds`` (lambda-manager.ts 92-104
  at 7972cb4f2, since cvat-ai/cvat#10329), so a compact ``mask`` would land at the frame's corner; the ``shapes``
  form is passed through (106-117) and read as an RLE whose last four numbers are its absolute inclusive box
  (cvat-ui opencv-wrapper.ts 188-206). With a region of interest the server shifts exactly those four numbers by
  the region's corner (cvat/apps/lambda_manager/utils.py 164-168 and 197-198), while it would paste a ``mask``
  into the region unshifted and unscaled (191-195: a crop of another size is a numpy error, HTTP 500)::

    {"shapes": [{"type": "mask", "points": [run, run, ..., x1, y1, x2, y2], "attributes": []}]}

  The runs are cvat-core's ``mask2Rle`` of the crop (rle-utils.ts 12-38: row by row, starting with a run of 0s).

- ``full`` (the default when the variable is absent, e.g. a function deployed by hand with nuctl): the whole mask
  of the received image with no ``bounds``, the one answer every release reads in place, with or without a region
  (tools-control.tsx 424-426 at dfd505e7; lambda-manager.ts 101 and utils.py 194 at 7972cb4f2), at the price of
  one number per pixel.

Nothing selected, or no prompt at all (v2.73.0's UI calls the function again when the annotator deletes the last
prompt: interactionHandler.ts 385-412, tools-control.tsx 708-751 at 7972cb4f2), is an empty answer, HTTP 200:
``{"shapes": []}`` in the ``shapes`` form (the UI clears its preview and says "No shapes to display"), otherwise
``{"mask": [[0]], "bounds": [0, 0, 0, 0], "points": []}``: v2.51.0's UI traces a contour only when ``points`` is
absent and tracing an all-zero mask fails there (``findContours`` returns no polygon and ``receivePointsFromMask``
reads ``polygons[0]``), and v2.73.0 turns an all-zero ``mask`` into ``[0, 0, 0, 0, 0]``, which it drops
(lambda-manager.ts 98-99, tools-control.tsx 1162); ``[[0]]`` also fills a region with zeros (utils.py 194).

Errors: HTTP 400 ``{"error": "<one sentence>"}`` for input the caller must fix (not JSON, no image,
not base64, not an image, image above MAX_IMAGE_PIXELS, coordinates that are not numbers or lie outside
the image, a box outside the image or of zero area); HTTP 500
``{"error": "internal error: ..."}`` for failures of ours. The worker keeps serving after either.

Settings: MAX_IMAGE_PIXELS (default 50 000 000) and CVAT_INTERACTOR_ANSWER (above) here; the model's settings are
in model_handler.py.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from model_handler import ModelHandler
from PIL import Image
from sam2_runtime import (
    UNREADABLE,
    BadRequest,
    allow_pixels,
    check_pixels,
    image_bytes,
    internal_error,
    json_type,
    max_image_pixels_from_env,
    parse_body,
    refuse,
    require_image,
    short,
)

NAME = "sam2"
# How CVAT reads an answer, by release (module docstring); the Functions layer sets it at deploy time.
ANSWER_ENV = "CVAT_INTERACTOR_ANSWER"
ANSWER_FORMS = ("bounds", "shapes", "full")
DEFAULT_ANSWER_FORM = "full"  # read in place by every release, with or without a region of interest
# More clicks than any annotator makes; bounds the work a single request can ask for.
MAX_POINTS = 1000


@dataclass(frozen=True)
class Prompt:
    """Validated clicks and box, still in the request's pixel coordinates."""

    pos: list[tuple[float, float]]
    neg: list[tuple[float, float]]
    box: tuple[float, float, float, float] | None

    @property
    def empty(self) -> bool:
        return not self.pos and not self.neg and self.box is None


def answer_form_from_env(environ: dict[str, str] | None = None) -> str:
    """Read CVAT_INTERACTOR_ANSWER; a bad value stops the worker at start, not at the first click."""
    env = os.environ if environ is None else environ
    raw = (env.get(ANSWER_ENV) or "").strip()
    if not raw:
        return DEFAULT_ANSWER_FORM
    if raw not in ANSWER_FORMS:
        raise ValueError(f"{ANSWER_ENV} must be one of {', '.join(ANSWER_FORMS)}, got {raw!r}")
    return raw


def init_context(context: Any) -> None:
    """Load the model once per worker; Nuclio calls this before the first event."""
    max_pixels = max_image_pixels_from_env()
    answer_form = answer_form_from_env()
    allow_pixels(max_pixels)
    started = time.perf_counter()
    model = ModelHandler.from_env()
    context.user_data.model = model
    context.user_data.max_image_pixels = max_pixels
    context.user_data.answer_form = answer_form
    context.logger.info_with(
        "sam2 model loaded",
        checkpoint=str(model.checkpoint),
        config=model.model_cfg,
        device=str(model.device),
        bf16=model.use_bf16,
        cache_size=model.cache_size,
        max_image_pixels=max_pixels,
        answer_form=answer_form,
        seconds=round(time.perf_counter() - started, 2),
    )


def handler(context: Any, event: Any) -> Any:
    """Answer one interactor request with a mask, an empty answer, a 400 or a 500; never raise."""
    started = time.perf_counter()
    form = getattr(context.user_data, "answer_form", DEFAULT_ANSWER_FORM)
    try:
        request = parse_body(event.body)
        encoded = require_image(request)
        prompt = parse_prompt(request)
        image = decode_image(encoded, context.user_data.max_image_pixels)
        prompt = fit_to_frame(prompt, width=image.shape[1], height=image.shape[0])
        if prompt.empty:  # the annotator deleted every prompt: clear the preview, no error (module docstring)
            return context.Response(body=empty_answer(form), headers={}, content_type="application/json", status_code=200)
    except BadRequest as exc:
        return refuse(context, 400, str(exc), NAME)
    except Exception as exc:  # a bug in validation must not take the worker down
        return internal_error(context, exc, NAME)

    try:
        model = context.user_data.model
        encoder_runs_before = model.stats["encoder_runs"]
        mask = model.handle(image, prompt.pos, prompt.neg, prompt.box)
        cache_hit = model.stats["encoder_runs"] == encoder_runs_before
        body = answer_json(mask, form)
    except Exception as exc:
        return internal_error(context, exc, NAME)

    with contextlib.suppress(Exception):  # logging must never cost the annotator the mask
        context.logger.info_with(
            "sam2 mask",
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            pos=len(prompt.pos),
            neg=len(prompt.neg),
            box=prompt.box is not None,
            cache_hit=cache_hit,
            response_bytes=len(body),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
    return context.Response(body=body, headers={}, content_type="application/json", status_code=200)


def parse_prompt(request: dict[str, Any]) -> Prompt:
    """Validate pos_points, neg_points and obj_bbox (types and counts; ranges need the image)."""
    pos = _points(request.get("pos_points"), "pos_points")
    neg = _points(request.get("neg_points"), "neg_points")
    if len(pos) + len(neg) > MAX_POINTS:
        raise BadRequest(f"Too many points ({len(pos) + len(neg)}); at most {MAX_POINTS} are accepted.")
    return Prompt(pos=pos, neg=neg, box=_box(request.get("obj_bbox")))


def decode_image(value: Any, max_pixels: int) -> np.ndarray:
    """base64 -> H x W x 3 uint8 RGB, checking the pixel count from the header before decoding."""
    raw = image_bytes(value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                check_pixels(*img.size, max_pixels)
                rgb = np.array(img.convert("RGB"), dtype=np.uint8)
    except BadRequest:
        raise
    except Image.DecompressionBombError:
        raise BadRequest(f"The image has more pixels than this function accepts ({max_pixels}, MAX_IMAGE_PIXELS).") from None
    except MemoryError:
        raise
    except Exception:  # PIL raises many types on corrupt input; all mean "not an image we can read"
        raise BadRequest(UNREADABLE) from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise BadRequest("'image' decodes to an empty picture.")
    return rgb


# CVAT's canvas accepts a click while Math.round(x) >= 0 (interactionHandler.ts ``isWithinFrame`` at
# dfd505e7), so a click on the first pixel column or row may come as far out as -0.5.
CLICK_TOLERANCE = 0.5


def fit_to_frame(prompt: Prompt, *, width: int, height: int) -> Prompt:
    """Check the prompt against the frame and clamp it onto [0, width] x [0, height].

    Clicks must lie on the frame (within CVAT's half-pixel tolerance at the left and top edges).
    A box may reach past any edge, as CVAT's canvas sends it unclamped; it is cut to the frame,
    and it must keep a non-zero area once cut.
    """
    points: dict[str, list[tuple[float, float]]] = {}
    for name, given in (("pos_points", prompt.pos), ("neg_points", prompt.neg)):
        points[name] = []
        for i, (x, y) in enumerate(given):
            if not (-CLICK_TOLERANCE <= x <= width and -CLICK_TOLERANCE <= y <= height):
                raise BadRequest(f"{name}[{i}] = [{x:g}, {y:g}] is outside the {width}x{height} image.")
            points[name].append((max(x, 0.0), max(y, 0.0)))
    box = prompt.box
    if box is not None:
        x1, y1, x2, y2 = box
        shown = f"obj_bbox [{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if x2 < 0 or y2 < 0 or x1 > width or y1 > height:
            raise BadRequest(f"{shown} lies entirely outside the {width}x{height} image.")
        box = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise BadRequest(f"{shown} has zero width or height inside the {width}x{height} image.")
    return Prompt(pos=points["pos_points"], neg=points["neg_points"], box=box)


EMPTY_ANSWER = '{"mask":[[0]],"bounds":[0,0,0,0],"points":[]}'
EMPTY_SHAPES = '{"shapes":[]}'


def empty_answer(form: str) -> str:
    """Nothing selected, in the form the deployment's CVAT reads (module docstring)."""
    return EMPTY_SHAPES if form == "shapes" else EMPTY_ANSWER


def answer_json(mask: np.ndarray, form: str = "bounds") -> str:
    """The answer for ``mask`` (0/1, the received image's size) in ``form`` (ANSWER_FORMS; module docstring).

    ``bounds`` and ``shapes`` carry only the set pixels' bounding box; ``bounds`` is never larger than the
    full-frame answer (when that box is the whole frame, the full mask goes without ``bounds``). An empty mask gets
    ``empty_answer(form)``.
    """
    if form not in ANSWER_FORMS:
        raise ValueError(f"answer form must be one of {ANSWER_FORMS}, got {form!r}")
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return empty_answer(form)
    if form == "full":
        return '{"mask":' + rows_json(mask) + "}"
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    crop = mask[top : bottom + 1, left : right + 1]
    if form == "shapes":
        points = ",".join(map(str, [*mask_rle(crop), left, top, right, bottom]))
        return '{"shapes":[{"type":"mask","points":[' + points + '],"attributes":[]}]}'
    height, width = mask.shape
    if (top, left, bottom, right) == (0, 0, height - 1, width - 1):
        return '{"mask":' + rows_json(mask) + "}"
    return '{"mask":' + rows_json(crop) + f',"bounds":[{left},{top},{right},{bottom}]}}'


def mask_rle(mask: np.ndarray) -> list[int]:
    """cvat-core's ``mask2Rle`` (cvat-core/src/rle-utils.ts 12-38 at 7972cb4f2) of a 2-D mask, vectorised.

    Row by row, the lengths of alternating runs of 0s and 1s, always starting with a run of 0s (of length 0 when
    the first pixel is set); any non-zero value counts as 1.
    """
    flat = (np.asarray(mask) != 0).astype(np.int8).ravel()
    if flat.size == 0:
        return [0]
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    return [0, *runs] if flat[0] else runs


def rows_json(mask: np.ndarray) -> str:
    """``json.dumps(mask.tolist(), separators=(",", ":"))`` for a 0/1 mask, built as bytes.

    About two orders of magnitude faster than json.dumps: a 1080p mask is 2 M numbers, and
    json.dumps would spend longer on it than a cached click spends in the model.
    """
    height, width = mask.shape
    digits = (mask != 0).astype(np.uint8) + ord("0")
    rows = np.empty((height, 2 * width + 2), dtype=np.uint8)
    rows[:, 0] = ord("[")
    rows[:, 1 : 2 * width : 2] = digits
    rows[:, 2 : 2 * width - 1 : 2] = ord(",")
    rows[:, 2 * width] = ord("]")
    rows[:, 2 * width + 1] = ord(",")
    return "[" + rows.tobytes()[:-1].decode("ascii") + "]"


def _points(value: Any, name: str) -> list[tuple[float, float]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be a list of [x, y] pairs, got a JSON {json_type(value)}.")
    if len(value) > MAX_POINTS:
        raise BadRequest(f"Too many points in {name} ({len(value)}); at most {MAX_POINTS} are accepted.")
    points = []
    for i, item in enumerate(value):
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise BadRequest(f"{name}[{i}] must be a pair [x, y] of numbers, got {short(item)}.")
        points.append((_coordinate(item[0], f"{name}[{i}]"), _coordinate(item[1], f"{name}[{i}]")))
    return points


def _box(value: Any) -> tuple[float, float, float, float] | None:
    """None for no box: null/absent, or ``[]`` (what CVAT v2.51.0's UI sends when no box was drawn)."""
    if value is None or (isinstance(value, list) and not value):
        return None
    usage = "obj_bbox must be [], null, [[x1, y1], [x2, y2]] or [x1, y1, x2, y2]"
    if not isinstance(value, list):
        raise BadRequest(f"{usage}, got a JSON {json_type(value)}.")
    if len(value) == 2 and all(isinstance(c, (list, tuple)) for c in value):
        if not all(len(c) == 2 for c in value):
            raise BadRequest(f"{usage}, got {short(value)}.")
        flat = [value[0][0], value[0][1], value[1][0], value[1][1]]
    elif len(value) == 4:
        flat = list(value)
    else:
        raise BadRequest(f"{usage}, got {short(value)}.")
    xa, ya, xb, yb = (_coordinate(v, "obj_bbox") for v in flat)
    x1, x2 = sorted((xa, xb))
    y1, y2 = sorted((ya, yb))
    if x1 == x2 or y1 == y2:
        raise BadRequest(f"obj_bbox [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has zero width or height.")
    return (x1, y1, x2, y2)


def _coordinate(value: Any, where: str) -> float:
    # bool is an int subclass in Python; true/false are not coordinates.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{where} has a coordinate that is not a number: {short(value)}.")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise BadRequest(f"{where} has a coordinate that is not a finite number: {short(value)}.")
    return number
