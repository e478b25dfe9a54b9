"""What each CVAT release of cvat_stack_compat makes of an interactor's answer: where the mask it saves lies.

Ports, line by line, of the code between our function and the mask an annotator saves, at the two pinned commits
of CVAT (v2.51.0 = dfd505e7, v2.73.0 = 7972cb4f2; read with ``git show COMMIT:PATH``):

- the server: v2.51.0 passes an interactor's answer through (cvat/apps/lambda_manager/views.py ``invoke``
  post-processes only detectors and trackers); v2.73.0 crops the frame to a region of interest, shifts the prompts
  (views.py 485-516, cvat/apps/lambda_manager/utils.py 56-70 and 130-141) and moves the answer back
  (views.py 689-695, utils.py 144-200);
- cvat-core's ``lambda.call`` (cvat-core/src/lambda-manager.ts 82-93 at dfd505e7, 84-122 at 7972cb4f2) with its
  ``mask2Rle`` (cvat-core/src/rle-utils.ts 12-38 at 7972cb4f2; object-utils.ts 320-342 at dfd505e7);
- the UI's reading of the result (tools-control.tsx 411-427 at dfd505e7; 544-567 and 1157-1167 with
  opencv-wrapper.ts 188-206 and rle2Mask, rle-utils.ts 46-65, at 7972cb4f2).

Each function raises ``CvatError`` where CVAT fails: an exception the server turns into HTTP 500, or one the UI
shows as its "Interaction error occurred" notification. Not ported: OpenCV's contour tracing (the UI's polygon
preview); the mask a release saves is the RLE it holds, which is what these functions return.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

RELEASES = ("v2.51.0", "v2.73.0")


class CvatError(Exception):
    """Where CVAT fails on an answer: HTTP 500 from the server, or the UI's error notification."""


def mask2rle(flat: list[int]) -> list[int]:
    """rle-utils.ts ``mask2Rle`` (12-38 at 7972cb4f2): runs of equal values (``===``), starting with a 0-run."""
    acc = [0]  # 14
    if len(flat) == 0:  # 15-17
        return acc
    if flat[0] > 0:  # 20-25
        acc.append(1)
    else:
        acc[0] = 1
    for idx in range(1, len(flat)):  # 28-35
        if flat[idx - 1] == flat[idx]:
            acc[-1] += 1
        else:
            acc.append(1)
    return acc


def rle2mask(rle: list[int], width: int, height: int) -> np.ndarray:
    """rle-utils.ts ``rle2Mask`` (46-65 at 7972cb4f2): alternate 0/1 runs into ``width * height`` values."""
    decoded = np.zeros(width * height, dtype=np.uint8)  # 47
    index, value = 0, 0
    for count in rle:  # 53-62
        if index + count > decoded.size:  # JS writes past the end of the array; the mask would not match its box
            raise CvatError(f"RLE runs of {index + count} pixels exceed the {width}x{height} box")
        decoded[index : index + count] = value
        index += count
        value = 1 - value
    return decoded.reshape(height, width)


def roi_request(body: dict[str, Any], roi: list[int]) -> tuple[dict[str, Any], dict[str, int]]:
    """v2.73.0's server with ``roi`` set: crop the frame and shift the prompts into the crop (views.py 485-516:
    ``_get_roi`` crops with utils.py ``parse_roi`` 24-54 and ``crop_image`` 56-70, prompts by
    ``translate_prompt_points`` 130-141). Returns the function's body and the parsed region with the image size
    (views.py 704-707)."""
    xtl, ytl, xbr, ybr = roi
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in roi) or min(roi) < 0 or xbr <= xtl or ybr <= ytl:
        raise ValueError(f"CVAT refuses the region {roi} (HTTP 400, utils.py 31-53)")
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as image:
        if xbr > image.width or ybr > image.height:
            raise ValueError(f"CVAT refuses the region {roi}: outside the {image.width}x{image.height} image (utils.py 65-66)")
        parsed = {"xtl": xtl, "ytl": ytl, "xbr": xbr, "ybr": ybr, "image_width": image.width, "image_height": image.height}
        crop = image.crop((xtl, ytl, xbr, ybr))
        out = io.BytesIO()
        crop.save(out, format=image.format or "PNG")

    def shift(points: Any) -> Any:
        return None if points is None else [[x - xtl, y - ytl] for x, y in points]

    sent = {**body, "image": base64.b64encode(out.getvalue()).decode()}
    for key in ("pos_points", "neg_points", "obj_bbox"):
        if key in body:
            sent[key] = shift(body[key])
    return sent, parsed


def roi_response(answer: dict[str, Any], roi: dict[str, int]) -> dict[str, Any]:
    """utils.py ``translate_interactor_response`` (182-200 at 7972cb4f2): ``mask`` pasted into a zero frame at the
    region, as is (a mask of another size is numpy's ValueError, which no handler catches: views.py 1274-1301,
    an HTTP 500); a ``shapes`` mask's last four numbers shifted by the region's corner (164-168, 197-198)."""
    answer = dict(answer)
    if "mask" in answer:  # 191-195
        crop = np.array(answer["mask"])
        full = np.zeros((roi["image_height"], roi["image_width"]), dtype=crop.dtype)
        try:
            full[roi["ytl"] : roi["ybr"], roi["xtl"] : roi["xbr"]] = crop
        except ValueError as exc:
            raise CvatError(f"HTTP 500: {exc}") from exc
        answer["mask"] = full.tolist()
    if "shapes" in answer and isinstance(answer["shapes"], list):  # 197-198
        shapes = []
        for shape in answer["shapes"]:
            shape = dict(shape)
            if shape.get("type") == "mask" and "points" in shape:  # 164-168
                *runs, x1, y1, x2, y2 = shape["points"]
                shape["points"] = [*runs, x1 + roi["xtl"], y1 + roi["ytl"], x2 + roi["xtl"], y2 + roi["ytl"]]
            elif shape.get("type") != "tag" and "points" in shape:  # 159-162
                shape["points"] = [v + (roi["xtl"] if i % 2 == 0 else roi["ytl"]) for i, v in enumerate(shape["points"])]
            shapes.append(shape)
        answer["shapes"] = shapes
    return answer


def core_call(release: str, answer: Any) -> Any:
    """cvat-core's ``lambda.call`` for an interactor: unchanged at dfd505e7 (82-93); at 7972cb4f2 (92-121) a
    ``mask`` answer becomes one mask shape at ``[0, 0, w-1, h-1]`` (``bounds`` and ``points`` unread), a ``shapes``
    answer keeps each item's points."""
    if _known(release) == "v2.51.0" or not isinstance(answer, dict):
        return answer
    if "mask" in answer:  # 93-104
        try:
            height, width = len(answer["mask"]), len(answer["mask"][0])  # 95-96: mask[0] of [] is a TypeError
        except (IndexError, TypeError) as exc:
            raise CvatError(f"cvat-core: {exc}") from exc
        rle = mask2rle([v for row in answer["mask"] for v in row])  # 97: result.mask.flat()
        rle = [0, 0, 0, 0, 0] if len(rle) < 2 else [*rle, 0, 0, width - 1, height - 1]  # 98-102
        return {"shapes": [{"points": rle, "type": "mask", "attributes": []}]}
    if isinstance(answer.get("shapes"), list):  # 106-118
        return {"shapes": [{"points": item["points"], "type": "mask" if item.get("type") is None else item["type"],
                            "attributes": item["attributes"] if _attributes_ok(item.get("attributes")) else []}
                           for item in answer["shapes"]]}
    return answer  # 121


def _attributes_ok(attributes: Any) -> bool:
    """lambda-manager.ts 110-114 at 7972cb4f2: kept only when every entry is {spec_id: number, value: string}."""
    return isinstance(attributes, list) and all(
        isinstance(a, dict) and isinstance(a.get("spec_id"), (int, float)) and not isinstance(a.get("spec_id"), bool)
        and isinstance(a.get("value"), str) for a in attributes)


def ui_mask(release: str, response: Any, width: int, height: int) -> np.ndarray:
    """The full-frame 0/1 mask the UI would save from ``response`` (what ``core_call`` returned): all zeros when it
    shows nothing; raises CvatError where it shows its error notification."""
    if not isinstance(response, dict):
        raise CvatError(f"the UI cannot read {type(response).__name__}")
    return (_ui_v251 if _known(release) == "v2.51.0" else _ui_v273)(response, width, height)


def _known(release: str) -> str:
    """Only the releases read here: a new row of cvat_stack_compat needs its own reading of the code first."""
    if release not in RELEASES:
        raise ValueError(f"CVAT {release} is not ported here (ported: {', '.join(RELEASES)}); read its code and add it")
    return release


def _ui_v251(response: dict[str, Any], width: int, height: int) -> np.ndarray:
    """tools-control.tsx 411-427 at dfd505e7: ``mask`` at ``bounds[0..1]``, or at (0, 0) without ``bounds``."""
    if not isinstance(response.get("mask"), list):  # 419-420 read response.mask / points of undefined
        raise CvatError("v2.51.0's UI reads response.mask, absent here")
    crop = np.array(response["mask"])
    if "points" not in response and not crop.any():  # 412-415: findContours finds no polygon, polygons[0] undefined
        raise CvatError("v2.51.0's UI cannot trace an empty mask without points")
    full = np.zeros((height, width), dtype=np.uint8)
    if "points" in response and not response["points"]:
        return full  # 451: nothing approximated, the canvas is not updated and N creates nothing (491-492)
    left, top = (response["bounds"][0], response["bounds"][1]) if response.get("bounds") else (0, 0)
    right, bottom = (response["bounds"][2], response["bounds"][3]) if response.get("bounds") else \
        (crop.shape[1] - 1, crop.shape[0] - 1)  # 421-427: the RLE's box
    box = rle2mask(mask2rle(crop.ravel().tolist()), right - left + 1, bottom - top + 1)
    return _paste(full, box, left, top)


def _ui_v273(response: dict[str, Any], width: int, height: int) -> np.ndarray:
    """tools-control.tsx 544-567 and 1157-1167 at 7972cb4f2, opencv-wrapper.ts 188-206: each mask shape's RLE decoded
    in its own box ``points[-4:]``; shorter than 6 numbers is skipped, a box with no set pixel is an error."""
    shapes = response.get("shapes")
    if not isinstance(shapes, list):  # 544: for (const item of response.shapes) over undefined
        raise CvatError("v2.73.0's UI iterates response.shapes, absent here")
    full = np.zeros((height, width), dtype=np.uint8)
    for item in shapes:
        if item.get("type") != "mask":  # 545
            continue
        points = [int(v) for v in item["points"]]  # 547: Int32Array.from
        if len(points) < 6:  # 1162-1165
            continue
        left, top, right, bottom = points[-4:]
        box = rle2mask(points[:-4], right - left + 1, bottom - top + 1)  # opencv-wrapper 189-196
        if not box.any():
            raise CvatError("Empty contour received from state")  # opencv-wrapper 206
        full = _paste(full, box, left, top)
    return full


def _paste(full: np.ndarray, box: np.ndarray, left: int, top: int) -> np.ndarray:
    """Draw ``box`` at (left, top) on the frame, clipped to it as the canvas clips (pixels outside are not shown)."""
    height, width = full.shape
    out = full.copy()
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + box.shape[0], height), min(left + box.shape[1], width)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] |= box[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def saved_mask(release: str, call: Any, body: dict[str, Any], width: int, height: int,
               roi: list[int] | None = None) -> np.ndarray:
    """The mask ``release`` saves when its UI sends ``body`` (and ``roi``): ``call(function_body)`` returns the
    function's decoded JSON answer, which goes through the server, cvat-core and the UI as above."""
    if roi is not None and release == "v2.51.0":
        raise ValueError("v2.51.0 has no region of interest (added in v2.70.0, cvat-ai/cvat#10794)")
    parsed = None
    if roi is not None:
        body, parsed = roi_request(body, roi)
    answer = call(body)
    if parsed is not None:
        answer = roi_response(answer, parsed)
    return ui_mask(release, core_call(release, answer), width, height)
