"""STAND-IN handler for YOLO v3 in the CVAT e2e check (not a detector).

It answers in the format CVAT v2.51.0 reads from a detector (cvat/apps/lambda_manager/views.py at dfd505e7:
a list of {"label", "points", "type", "confidence"}, then DetectionResultConverter): one "person" rectangle,
the bounding box of the pixels that differ from the image's corner colour, so the answer depends on the image.
"""

import base64
import io
import json

import numpy as np
from PIL import Image


def init_context(context):
    context.logger.info("yolo-v3 stand-in ready")


def handler(context, event):
    body = event.body if isinstance(event.body, dict) else json.loads(event.body)
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))).convert("RGB")).astype(int)
    differs = np.abs(image - image[0, 0]).sum(axis=2) > 30
    ys, xs = np.nonzero(differs)
    shapes = []
    if xs.size:
        box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
        shapes.append({"label": "person", "points": box, "type": "rectangle", "confidence": "0.99"})
    return context.Response(body=json.dumps(shapes), headers={}, content_type="application/json", status_code=200)
