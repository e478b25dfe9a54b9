"""Helpers shared by tests/sam2 and bench/sam2_latency.py: load the function, build events the way
Nuclio's python runtime does, make synthetic frames."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import logging
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import nuclio_sdk
import numpy as np
from PIL import Image

from labforge.paths import REPO

FUNCTION_DIR = REPO / "files" / "nuclio" / "sam2"
# sam2_runtime.py, which the Functions layer puts beside each SAM 2 function's main.py (labforge.nuclio_functions.RUNTIME)
RUNTIME_DIR = REPO / "files" / "nuclio-runtime"

# main.py imports model_handler and sam2_runtime as top-level modules, as it does inside the Nuclio container.
for _directory in (RUNTIME_DIR, FUNCTION_DIR):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))


@contextlib.contextmanager
def _no_bytecode() -> Iterator[None]:
    """Import the function's modules without leaving __pycache__ in files/nuclio/sam2 (nuctl ships that dir)."""
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = saved


with _no_bytecode():
    import model_handler  # noqa: F401  (later `import model_handler` finds this module in sys.modules)
    import sam2_runtime  # noqa: F401


def load_function_main() -> ModuleType:
    """Import files/nuclio/sam2/main.py under a unique name (Nuclio imports it as ``main``)."""
    name = "labforge_sam2_function_main"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FUNCTION_DIR / "main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with _no_bytecode():
        spec.loader.exec_module(module)
    return module


TRACKER_DIR = REPO / "files" / "nuclio" / "sam2-tracker"


def load_tracker_main(name: str = "labforge_sam2_tracker_main") -> ModuleType:
    """Import files/nuclio/sam2-tracker/main.py afresh under `name`, with its siblings importable as Nuclio's python
    runtime has them (tracker.py is a top-level module there) and no __pycache__ left behind (nuctl ships the dir)."""
    if str(TRACKER_DIR) not in sys.path:
        sys.path.insert(0, str(TRACKER_DIR))
    spec = importlib.util.spec_from_file_location(name, TRACKER_DIR / "main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with _no_bytecode():
        spec.loader.exec_module(module)
    return module


def synthetic_image(width: int, height: int, seed: int) -> np.ndarray:
    """A frame with a few flat shapes on a noisy background (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 2)), y0 + int(rng.integers(height // 8, height // 2))
        img[y0:y1, x0:x1] = rng.integers(80, 255, size=3, dtype=np.uint8)
    return img


def encode_image(image: np.ndarray, fmt: str = "PNG", **save_args: Any) -> str:
    """base64 of the frame encoded as CVAT would store it (PNG by default: lossless, so pixels match)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **save_args)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def request_body(
    image: np.ndarray | str,
    pos: Any = (),
    neg: Any = (),
    bbox: Any = None,
) -> dict[str, Any]:
    """The JSON object CVAT's server posts to an interactor."""
    return {
        "image": image if isinstance(image, str) else encode_image(image),
        "pos_points": [list(p) for p in pos],
        "neg_points": [list(p) for p in neg],
        "obj_bbox": bbox,
    }


def make_event(body: Any, content_type: str = "application/json", *, via_runtime: bool = True) -> nuclio_sdk.Event:
    """An Event built the way Nuclio's python wrapper builds it.

    With ``via_runtime`` bytes/str bodies go through nuclio-sdk's own event deserializer, as the
    HTTP request body does in production: JSON arrives as a dict, anything undecodable stays bytes.
    Otherwise (and for non-bytes bodies) the body is handed to the handler as it is.
    """
    if via_runtime and isinstance(body, str):
        body = body.encode("utf-8")
    if via_runtime and isinstance(body, bytes):
        message = {
            "body": body,
            "content_type": content_type,
            "trigger": {"kind": "http", "name": "myHttpTrigger"},
            "fields": {},
            "headers": {"Content-Type": content_type},
            "id": "test-event",
            "method": "POST",
            "path": "/",
            "size": len(body),
            "timestamp": 0,
            "url": "",
            "shard_id": 0,
            "num_shards": 0,
            "type": "",
            "type_version": "",
            "version": "",
        }
        return nuclio_sdk.EventDeserializerKinds.msgpack.value.deserialize(message)
    return nuclio_sdk.Event(body=body, content_type=content_type, method="POST", path="/")


LOGGER_NAME = "labforge-sam2"


def make_context() -> nuclio_sdk.Context:
    """A worker's context as Nuclio's python wrapper creates it (logger, user_data, Response)."""
    return nuclio_sdk.Context(logger=nuclio_sdk.Logger(logging.DEBUG, name=LOGGER_NAME), worker_id=0)


class Client:
    """Calls the function the way the Nuclio runtime does and decodes its answers."""

    def __init__(self, main: ModuleType, context: nuclio_sdk.Context) -> None:
        self.main = main
        self.context = context

    @property
    def model(self) -> Any:
        return self.context.user_data.model

    def call(self, body: Any, *, via_runtime: bool = True) -> nuclio_sdk.Response:
        response = self.main.handler(self.context, make_event(body, via_runtime=via_runtime))
        assert isinstance(response, nuclio_sdk.Response)
        assert response.content_type == "application/json"
        return response

    def json(self, response: nuclio_sdk.Response) -> dict[str, Any]:
        payload = json.loads(response.body)
        assert isinstance(payload, dict)
        return payload

    def mask(self, body: Any, *, via_runtime: bool = True) -> np.ndarray:
        """The full-frame 0/1 mask the v2.51.0 UI takes from the answer (checked with frame_mask)."""
        response = self.call(body, via_runtime=via_runtime)
        assert response.status_code == 200, response.body
        width, height = frame_size(body)
        return frame_mask(self.json(response), width, height)

    def saved(self, release: str, body: dict[str, Any], roi: list[int] | None = None) -> np.ndarray:
        """The full-frame mask CVAT ``release`` saves from this function's answer to ``body`` (cvat_reader.saved_mask)."""
        from testlab.sam2.cvat_reader import saved_mask

        def call(sent: dict[str, Any]) -> dict[str, Any]:
            response = self.call(sent)
            assert response.status_code == 200, response.body
            return self.json(response)

        width, height = frame_size(body)
        return saved_mask(release, call, body, width, height, roi)

    def error(self, body: Any) -> str:
        response = self.call(body)
        assert response.status_code == 400, (response.status_code, response.body)
        payload = self.json(response)
        assert set(payload) == {"error"}
        assert isinstance(payload["error"], str) and payload["error"]
        return payload["error"]




def frame_size(body: Any) -> tuple[int, int]:
    """(width, height) of the frame inside a request body (dict, or its JSON as str/bytes)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode()
    if isinstance(body, str):
        body = json.loads(body)
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as img:
        return img.size


def frame_mask(answer: dict[str, Any], width: int, height: int) -> np.ndarray:
    """Check an interactor answer against what CVAT v2.51.0's UI reads, and return the full-frame mask.

    The UI (cvat-ui .../controls-side-bar/tools-control.tsx at dfd505e7, ``runInteractionRequest``)
    reads ``mask`` as rows of numbers (``mask2Rle`` compares neighbours with ===, so 0 and 1 exactly)
    and an optional inclusive ``bounds`` [x1, y1, x2, y2]: the mask then spans
    ``x2 - x1 + 1`` columns and ``y2 - y1 + 1`` rows (``right - left + 1`` in cvat-canvas); without
    ``bounds`` it is the whole frame. ``points``, when present, is used instead of tracing the mask.
    """
    assert set(answer) <= {"mask", "bounds", "points"}, answer.keys()
    rows = answer["mask"]
    assert isinstance(rows, list) and rows and all(isinstance(r, list) and r for r in rows)
    assert len({len(r) for r in rows}) == 1, "ragged mask rows"
    assert all(type(v) is int and v in (0, 1) for r in rows for v in r)
    crop = np.array(rows, dtype=np.uint8)
    if "bounds" in answer:
        bounds = answer["bounds"]
        assert isinstance(bounds, list) and len(bounds) == 4 and all(type(v) is int for v in bounds)
        x1, y1, x2, y2 = bounds
        assert 0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height, (bounds, width, height)
        assert crop.shape == (y2 - y1 + 1, x2 - x1 + 1), (crop.shape, bounds)
    else:
        x1, y1 = 0, 0
        assert crop.shape == (height, width), (crop.shape, width, height)
    if "points" in answer:  # only the empty answer carries points: [] (nothing to trace)
        assert answer["points"] == [] and not crop.any()
    full = np.zeros((height, width), dtype=np.uint8)
    full[y1 : y1 + crop.shape[0], x1 : x1 + crop.shape[1]] = crop
    return full
