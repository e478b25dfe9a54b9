"""What both SAM 2 functions (files/nuclio/sam2, files/nuclio/sam2-tracker) share: the model's settings, checkpoint
and device, the request body and image checks, and the wording of their error answers.

One module, so that the two cannot drift apart again (they had: two config lookups, two device pickers of which one
let ``SAM2_DEVICE=cuda`` through on a host without CUDA, two image limits of which one was fixed). It is not a function:
the Functions layer puts it into each function's build directory beside ``main.py`` (labforge/nuclio_functions.py
``RUNTIME``; part of each function's source hash), where Nuclio's python runtime imports it as a top-level module, as
it does ``model_handler`` and ``tracker``.

Settings read here: MODEL, MODEL_CFG, MODEL_DIR, SAM2_DEVICE and MAX_IMAGE_PIXELS (see each function's docs/sam2.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import traceback
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "sam2.1_hiera_large.pt"
DEFAULT_MODEL_CFG = "configs/sam2.1/sam2.1_hiera_l.yaml"
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


class BadRequest(ValueError):
    """Input the caller must fix; its message is the one-sentence 400 answer."""


# -- the model ----------------------------------------------------------------------------------------------------

def config_name(name: str) -> str:
    """MODEL_CFG as build_sam2 wants it: a config path inside the installed sam2 package (build_sam2 composes configs
    from the package with hydra), or a bare file name that exactly one packaged config has (the seed's
    ``MODEL_CFG=sam2_hiera_l.yaml`` style)."""
    name = name.strip()
    root = resources.files("sam2")
    if name and root.joinpath(name).is_file():
        return name
    available = sorted(_packaged_configs(root))
    matches = [c for c in available if c.rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"MODEL_CFG {name!r} is not a config in the installed sam2 package; use one of: {', '.join(available)}")


def _packaged_configs(root: Any) -> Iterator[str]:
    def walk(node: Any, prefix: str) -> Iterator[str]:
        for child in node.iterdir():
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                yield from walk(child, rel + "/")
            elif child.name.endswith(".yaml") and "training" not in rel:
                yield rel

    yield from walk(root, "")


def checkpoint_path(model: str, model_dir: str | os.PathLike[str] | None) -> Path:
    """The checkpoint MODEL names (absolute, or inside MODEL_DIR, by default the function's directory)."""
    path = Path(model).expanduser()
    if not path.is_absolute():
        path = (Path(model_dir) if model_dir else Path(__file__).resolve().parent) / path
    if not path.is_file():
        raise FileNotFoundError(f"SAM 2 checkpoint not found: {path} (MODEL={model!r}, MODEL_DIR={str(model_dir or '')!r})")
    return path


def pick_device(requested: str | None = None) -> Any:
    """SAM2_DEVICE: ``auto`` (CUDA when torch sees it, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA
    where torch sees none stops the worker at start instead of failing every request."""
    import torch

    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"SAM2_DEVICE={requested!r} but torch sees no CUDA device")
    return device


def model_settings(environ: Mapping[str, str] | None = None) -> tuple[Path, str, Any]:
    """(checkpoint, config, device) from MODEL, MODEL_DIR, MODEL_CFG and SAM2_DEVICE, each checked."""
    env = os.environ if environ is None else environ
    return (checkpoint_path(env.get("MODEL", DEFAULT_MODEL), env.get("MODEL_DIR")),
            config_name(env.get("MODEL_CFG", DEFAULT_MODEL_CFG)), pick_device(env.get("SAM2_DEVICE")))


def max_image_pixels_from_env(environ: Mapping[str, str] | None = None) -> int:
    """MAX_IMAGE_PIXELS (default 50 000 000); a bad value stops the worker at start, not at the first request."""
    env = os.environ if environ is None else environ
    raw = (env.get("MAX_IMAGE_PIXELS") or "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"MAX_IMAGE_PIXELS must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"MAX_IMAGE_PIXELS must be a positive integer, got {raw!r}")
    return value


def allow_pixels(max_pixels: int) -> None:
    """Pillow refuses images above twice its own limit before we can look at them; lift that limit when ours is
    higher (never lower it: ``check_pixels`` is the check that answers)."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


# -- the request --------------------------------------------------------------------------------------------------

def parse_body(body: Any) -> dict[str, Any]:
    """Accept the dict Nuclio decoded for us, or the same JSON as bytes/str."""
    if isinstance(body, dict):
        return body
    if body is None or (isinstance(body, (bytes, bytearray, memoryview, str)) and len(body) == 0):
        raise BadRequest("The request body is empty; send a JSON object with an image.")
    raw = isinstance(body, (bytes, bytearray, memoryview))
    if raw:
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The request body is not UTF-8 JSON.") from None
    if not isinstance(body, str):
        raise BadRequest(f"The request body must be a JSON object, got a JSON {json_type(body)}.")
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        # A str body is either raw JSON text or a JSON string Nuclio already decoded: say what is sure.
        raise BadRequest("The request body is not valid JSON." if raw else "The request body is not a JSON object.") from None
    if not isinstance(parsed, dict):
        raise BadRequest(f"The request body must be a JSON object, got a JSON {json_type(parsed)}.")
    return parsed


def require_image(request: dict[str, Any]) -> str:
    """The frame must be there before anything else is worth checking."""
    value = request.get("image")
    if value is None:
        raise BadRequest("The request has no 'image'; send the frame as a base64 string.")
    if not isinstance(value, str):
        raise BadRequest(f"'image' must be a base64 string, got a JSON {json_type(value)}.")
    return value


def image_bytes(value: Any) -> bytes:
    """The frame's encoded bytes from its base64 (a data: URL and whitespace tolerated)."""
    text = require_image({"image": value})
    if text.startswith("data:") and "," in text[:100]:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("'image' is not valid base64.") from None
    if not raw:
        raise BadRequest("'image' is empty.")
    return raw


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse a frame above MAX_IMAGE_PIXELS, from its header, before it is decoded."""
    if width * height > max_pixels:
        raise BadRequest(f"The image is {width}x{height} = {width * height} pixels; "
                         f"this function accepts at most {max_pixels} (MAX_IMAGE_PIXELS).")


UNREADABLE = "'image' is not a readable image (JPEG, PNG or another format Pillow reads)."


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the answer ---------------------------------------------------------------------------------------------------

def json_response(context: Any, status: int, payload: dict[str, Any]) -> Any:
    return context.Response(body=json.dumps(payload), headers={}, content_type="application/json", status_code=status)


def refuse(context: Any, status: int, message: str, name: str) -> Any:
    """A 4xx with its one sentence, logged as a warning."""
    log(context, "warn", f"{name}: {status}: {message}")
    return json_response(context, status, {"error": message})


def internal_error(context: Any, exc: BaseException, name: str) -> Any:
    """A failure of ours: the traceback to the log, GPU memory given back, a 500 naming the exception."""
    log(context, "error", f"{name}: 500: " + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    release_gpu_memory()
    message = f"internal error: {type(exc).__name__}: {exc}"
    return json_response(context, 500, {"error": message[:500]})


def release_gpu_memory() -> None:
    """After a failure (typically CUDA out of memory) give cached blocks back so the next request can run."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def log(context: Any, level: str, message: str) -> None:
    with contextlib.suppress(Exception):
        getattr(context.logger, level)(message)
