"""What CVAT v2.51.0 (commit dfd505e7) really sends an interactor: request bodies built the way its
canvas, UI and server build them, step by step, each step citing the source it reproduces.

This is the test fixture that encodes CVAT's side of the contract. It was read from the sources, not
from what our function accepts; earlier fixtures encoded our own belief (``obj_bbox: null`` for a
click) and every test passed while every real click got HTTP 400. The three steps:

1. The canvas (cvat-canvas/src/typescript/interactionHandler.ts, ``prepareResult``) turns each
   drawn SVG shape into ``{points, shapeType, button}``: a click circle becomes
   ``[cx - offset, cy - offset]`` with button 0 (green, positive) or 2 (red, negative); the box
   becomes ``[x, y, x + width, y + height] - offset`` from the rectangle's ``getBBox()``, never
   clamped to the frame. A click is only taken while ``Math.round(x - offset)`` lies in
   ``[0, width)`` (``isWithinFrame``), so x can be as low as -0.5.
2. The UI (cvat-ui/src/components/annotation-page/standard-workspace/controls-side-bar/
   tools-control.tsx, ``onInteraction``) sends ``{frame, obj_bbox, pos_points, neg_points}``, each list
   from ``convertShapesForInteractor(shapes, type, button)`` (cvat-ui/src/cvat-canvas-wrapper.ts):
   the matching shapes' points, flattened and re-paired. So ``obj_bbox`` is ``[]`` when no box was
   drawn. cvat-core (src/lambda-manager.ts, ``call``) adds ``task``; the UI adds ``job``.
3. The server (cvat/apps/lambda_manager/views.py, ``LambdaFunction.invoke``, interactor branch)
   drops every key whose value is null, forwards a truthy ``threshold``, and POSTs the function
   ``{image, pos_points, neg_points, obj_bbox}``: ``image`` is the base64 of the frame's stored
   bytes (``_get_image``) in place of ``frame``; ``pos_points``/``neg_points`` are mandatory;
   ``obj_bbox`` is ``data.get("obj_bbox", None)``. ``frame``, ``job`` and ``task`` go no further.

Each fixture below is one interaction an annotator performs in the v2.51.0 UI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The canvas draws the image at this offset inside its SVG (cvat-canvas geometry.offset); shapes are
# drawn in SVG coordinates and prepareResult subtracts it again. Its value does not matter to the
# result, but keeping it makes the arithmetic the canvas does visible.
CANVAS_OFFSET = 1000.0


def click(x: float, y: float, negative: bool = False) -> dict[str, Any]:
    """A click circle as prepareResult returns it (circle center minus the canvas offset)."""
    cx, cy = x + CANVAS_OFFSET, y + CANVAS_OFFSET
    return {"points": [cx - CANVAS_OFFSET, cy - CANVAS_OFFSET], "shapeType": "points", "button": 2 if negative else 0}


def dragged_box(x: float, y: float, width: float, height: float) -> dict[str, Any]:
    """A rectangle as prepareResult returns it: getBBox() x, y, x + w, y + h, minus the offset, unclamped."""
    bx, by = x + CANVAS_OFFSET, y + CANVAS_OFFSET
    corners = [bx, by, bx + width, by + height]
    return {"points": [c - CANVAS_OFFSET for c in corners], "shapeType": "rectangle", "button": 0}


def within_frame(x: float, y: float, width: int, height: int) -> bool:
    """The canvas' isWithinFrame: Math.round (halves round up, i.e. floor(v + 0.5)), then [0, width) x [0, height)."""
    return 0 <= math.floor(x + 0.5) < width and 0 <= math.floor(y + 0.5) < height


def convert_shapes_for_interactor(shapes: list[dict[str, Any]], shape_type: str, button: int) -> list[list[float]]:
    """cvat-canvas-wrapper.ts convertShapesForInteractor: filter, flatten the points, pair them up."""
    flat = [p for s in shapes if s["button"] == button and s["shapeType"] == shape_type for p in s["points"]]
    return [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]


def ui_request(frame: int, shapes: list[dict[str, Any]], job: int = 1, task: int = 1) -> dict[str, Any]:
    """tools-control.tsx onInteraction + cvat-core lambda.call: the body POSTed to /api/lambda/functions/<id>."""
    return {
        "frame": frame,
        "obj_bbox": convert_shapes_for_interactor(shapes, "rectangle", 0),
        "pos_points": convert_shapes_for_interactor(shapes, "points", 0),
        "neg_points": convert_shapes_for_interactor(shapes, "points", 2),
        "job": job,
        "task": task,
    }


class MissingArgument(ValueError):
    """views.py mandatory_arg: the server answers 400 before the function is called."""


def server_payload(data: dict[str, Any], frame_bytes_b64: str) -> dict[str, Any]:
    """views.py LambdaFunction.invoke for FunctionKind.INTERACTOR: what reaches the function."""
    data = {k: v for k, v in data.items() if v is not None}
    payload: dict[str, Any] = {}
    if data.get("threshold"):
        payload["threshold"] = data["threshold"]
    for name in ("frame", "pos_points", "neg_points"):
        if name not in data:
            raise MissingArgument(name)
    payload.update({
        "image": frame_bytes_b64,
        "pos_points": data["pos_points"],
        "neg_points": data["neg_points"],
        "obj_bbox": data.get("obj_bbox"),
    })
    return payload


@dataclass(frozen=True)
class Interaction:
    """One thing an annotator does in the v2.51.0 UI, as the shapes the canvas holds when a request goes out."""

    name: str
    shapes: tuple[dict[str, Any], ...]
    why: str

    def payload(self, frame_bytes_b64: str) -> dict[str, Any]:
        return server_payload(ui_request(0, list(self.shapes)), frame_bytes_b64)


def interactions(width: int, height: int) -> list[Interaction]:
    """The interactions of the v2.51.0 UI on a width x height frame (coordinates scale with the frame)."""
    w, h = float(width), float(height)
    return [
        Interaction(
            "click",
            (click(0.5 * w, 0.5 * h),),
            "One positive click: obj_bbox is [] because no rectangle was drawn (convertShapesForInteractor).",
        ),
        Interaction(
            "clicks and negatives",
            (click(0.5 * w, 0.5 * h), click(0.55 * w, 0.45 * h), click(0.1 * w, 0.1 * h, negative=True),
             click(0.9 * w, 0.85 * h, negative=True)),
            "Positive and negative clicks (buttons 0 and 2); obj_bbox [].",
        ),
        Interaction(
            "box first",
            (dragged_box(0.2 * w, 0.25 * h, 0.5 * w, 0.45 * h),),
            "'Start with a bounding box' (shown for startswith_box_optional, tools-control.tsx): the first "
            "request goes out at the rectangle's drawstop with no clicks yet: pos_points [], neg_points [].",
        ),
        Interaction(
            "box and clicks",
            (dragged_box(0.2 * w, 0.25 * h, 0.5 * w, 0.45 * h), click(0.45 * w, 0.5 * h),
             click(0.22 * w, 0.27 * h, negative=True)),
            "Clicks added after the box: every request carries the box again.",
        ),
        Interaction(
            "box past the right and bottom edges",
            (dragged_box(0.6 * w, 0.55 * h, 0.55 * w + 37.3, 0.6 * h + 12.7),),
            "Dragged beyond the frame: getBBox() is not clamped, so x2 > width and y2 > height.",
        ),
        Interaction(
            "box past the left and top edges",
            (dragged_box(-23.4, -11.6, 0.4 * w + 23.4, 0.35 * h + 11.6), click(0.15 * w, 0.15 * h)),
            "Dragged up-left from inside the frame past its corner: negative x1 and y1, then a click.",
        ),
        Interaction(
            "click on the first pixel, rounded in",
            (click(-0.4, -0.3), click(0.3 * w, 0.3 * h)),
            "isWithinFrame rounds before comparing, so a click at x = -0.4 is on the frame for the canvas.",
        ),
    ]
