"""The Nuclio function end to end: init_context + handler, driven with nuclio-sdk's Context/Event/Response,
on a real (random-weight) SAM 2.1 tiny model loaded from a checkpoint file through MODEL/MODEL_CFG."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
import torch
from equivalence import INTERACTOR_CONTROLS, applies, assert_interactor_control_fails
from sam2.sam2_image_predictor import SAM2ImagePredictor

from testlab.sam2.support import Client, encode_image, frame_mask, make_context, request_body, synthetic_image

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


class EncoderCounter:
    """Counts real forward passes of the model's image encoder (a forward hook, no stand-in)."""

    def __init__(self, client: Client) -> None:
        self.calls = 0
        self._handle = client.model.predictor.model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_args: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture
def encoder_counter(client: Client):
    counter = EncoderCounter(client)
    yield counter
    counter.close()


@pytest.fixture
def decoder_modes(client: Client):
    """The multimask_output flag of every real mask-decoder call (a forward pre-hook)."""
    modes: list[bool] = []

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        modes.append(bool(kwargs["multimask_output"]))

    handle = client.model.predictor.model.sam_mask_decoder.register_forward_pre_hook(hook, with_kwargs=True)
    yield modes
    handle.remove()


@pytest.fixture(scope="module")
def reference_a(client: Client, frame_a: np.ndarray) -> SAM2ImagePredictor:
    """A separate, cache-free SAM2ImagePredictor on the same weights, with frame A set."""
    predictor = SAM2ImagePredictor(client.model.predictor.model)
    with torch.inference_mode():
        predictor.set_image(frame_a)
    return predictor


def reference_mask(predictor: SAM2ImagePredictor, pos=(), neg=(), box=None, multimask: bool = True) -> np.ndarray:
    """What SAM 2 itself answers: best of the multimask outputs by score, or the single mask."""
    coords = np.array([*pos, *neg], dtype=np.float32) if len(pos) + len(neg) else None
    labels = np.array([1] * len(pos) + [0] * len(neg), dtype=np.int32) if coords is not None else None
    with torch.inference_mode():
        masks, scores, _ = predictor.predict(
            point_coords=coords,
            point_labels=labels,
            box=None if box is None else np.array(box, dtype=np.float32),
            multimask_output=multimask,
        )
    if multimask:
        assert masks.shape[0] == 3
    return (masks[int(np.argmax(scores))] > 0).astype(np.uint8)


def assert_binary_frame_mask(mask: np.ndarray, image: np.ndarray) -> None:
    assert mask.shape == image.shape[:2]
    assert set(np.unique(mask).tolist()) <= {0, 1}


# ---------------------------------------------------------------- good requests


# The prompts of the four comparisons below (on frame A), shared with their negative controls.
PROMPTS = {
    "clicks": {"pos": [(160.0, 120.0), (170.5, 110.25)]},
    "clicks and negatives": {"pos": [(160, 120)], "neg": [(20, 20), (300, 220)]},
    "box": {"bbox": [[40, 30], [250, 200]]},  # CVAT's form: two opposite corners; pos_points empty (box-first mode)
    "box and clicks": {"pos": [(120, 100)], "neg": [(45, 35)], "bbox": [[40, 30], [250, 200]]},
}


def answered(client, frame_a, name: str) -> np.ndarray:
    """Our answer to PROMPTS[name] on frame A."""
    prompt = PROMPTS[name]
    return client.mask(request_body(frame_a, pos=prompt.get("pos", []), neg=prompt.get("neg", []), bbox=prompt.get("bbox")))


def expected_mask(reference_a, name: str) -> np.ndarray:
    """sam2's own mask for PROMPTS[name] (reference_a shares the model: call it after checking decoder_modes)."""
    prompt, box = PROMPTS[name], _box(PROMPTS[name])
    return reference_mask(reference_a, pos=prompt.get("pos", []), neg=prompt.get("neg", []), box=box, multimask=box is None)


def _box(prompt: dict) -> list[float] | None:
    return None if prompt.get("bbox") is None else [*prompt["bbox"][0], *prompt["bbox"][1]]


def test_positive_points_give_best_of_three_masks_at_frame_size(client, frame_a, reference_a, decoder_modes):
    mask = answered(client, frame_a, "clicks")
    assert decoder_modes == [True]
    assert_binary_frame_mask(mask, frame_a)
    np.testing.assert_array_equal(mask, expected_mask(reference_a, "clicks"))


def test_positive_and_negative_points(client, frame_a, reference_a):
    mask = answered(client, frame_a, "clicks and negatives")
    assert_binary_frame_mask(mask, frame_a)
    np.testing.assert_array_equal(mask, expected_mask(reference_a, "clicks and negatives"))


def test_box_only_is_box_to_mask(client, frame_a, reference_a, decoder_modes):
    mask = answered(client, frame_a, "box")
    assert decoder_modes == [False]
    assert_binary_frame_mask(mask, frame_a)
    np.testing.assert_array_equal(mask, expected_mask(reference_a, "box"))


def test_box_and_points_use_single_mask_output(client, frame_a, reference_a, decoder_modes):
    mask = answered(client, frame_a, "box and clicks")
    assert decoder_modes == [False]
    assert_binary_frame_mask(mask, frame_a)
    np.testing.assert_array_equal(mask, expected_mask(reference_a, "box and clicks"))


CONTROL_CASES = [(c, p) for c, control in INTERACTOR_CONTROLS.items() for p, prompt in PROMPTS.items()
                 if applies(control, prompt.get("pos", []), _box(prompt), 320, 240)]


@pytest.mark.parametrize(("control", "prompt"), CONTROL_CASES, ids=[f"{c}-{p}" for c, p in CONTROL_CASES])
def test_negative_control_a_planted_defect_fails_the_comparison(client, frame_a, reference_a, control, prompt, monkeypatch):
    """The click comparisons above, on our path with one planted defect (tests/sam2/equivalence.py), fail on every
    prompt the defect is on the path of. The boxes here lie inside the frame, so box_passed_unclamped is on no path;
    the box comparisons' control is in test_sam2_cvat_contract.py (boxes past the frame's edges)."""
    ours, expected = answered(client, frame_a, prompt), expected_mask(reference_a, prompt)
    INTERACTOR_CONTROLS[control](monkeypatch, client.main, client.model)
    planted = answered(client, frame_a, prompt)
    assert_interactor_control_fails(control, f"interactor mask vs SAM2ImagePredictor (shared model), prompt {prompt!r}",
                                    planted, expected, ours)


def test_box_forms_and_corner_order_are_equivalent(client, frame_a):
    cvat_form = client.mask(request_body(frame_a, bbox=[[40, 30], [250, 200]]))
    flat_form = client.mask(request_body(frame_a, bbox=[40, 30, 250, 200]))
    reversed_corners = client.mask(request_body(frame_a, bbox=[[250, 30], [40, 200]]))
    np.testing.assert_array_equal(cvat_form, flat_form)
    np.testing.assert_array_equal(cvat_form, reversed_corners)


def test_points_on_the_far_edges_are_inside(client, frame_a):
    height, width = frame_a.shape[:2]
    mask = client.mask(request_body(frame_a, pos=[(width, height), (0, 0)]))
    assert_binary_frame_mask(mask, frame_a)


def test_negative_points_alone_select_nothing_but_warm_the_cache(client, frame_b, encoder_counter):
    client.model.clear_cache()
    mask = client.mask(request_body(frame_b, neg=[(10, 10)]))
    assert_binary_frame_mask(mask, frame_b)
    assert not mask.any()
    assert encoder_counter.calls == 1
    # The following positive click on the same frame only runs the decoder.
    client.mask(request_body(frame_b, pos=[(100, 75)], neg=[(10, 10)]))
    assert encoder_counter.calls == 1


def test_raw_json_bodies_are_accepted(client, small_image):
    body = request_body(small_image, pos=[(30, 20)])
    as_dict = client.mask(body, via_runtime=False)
    as_bytes = client.mask(json.dumps(body).encode(), via_runtime=False)
    as_str = client.mask(json.dumps(body), via_runtime=False)
    np.testing.assert_array_equal(as_dict, as_bytes)
    np.testing.assert_array_equal(as_dict, as_str)
    assert as_dict.shape == (48, 64)


def test_response_is_the_compact_answer_cvat_ui_reads(client, frame_a):
    response = client.call(request_body(frame_a, bbox=[[40, 30], [250, 200]]))
    assert response.status_code == 200
    payload = json.loads(response.body)
    full = frame_mask(payload, 320, 240)  # what the v2.51.0 UI reads, checked
    assert full.any(), "random weights gave an empty mask here; pick another box"
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    tight = [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]
    if tight == [0, 0, 319, 239]:
        assert set(payload) == {"mask"}  # the whole frame: no bounds needed
    else:
        assert set(payload) == {"mask", "bounds"} and payload["bounds"] == tight  # cropped to the set pixels
    assert response.body == client.main.answer_json(full)


# ---------------------------------------------------------------- the embedding cache


def test_cache_hit_returns_the_cold_mask_without_running_the_encoder(client, frame_a, frame_b, encoder_counter):
    client.model.clear_cache()
    stats0 = client.model.stats
    request_a = request_body(frame_a, pos=[(160, 120)], neg=[(10, 10)])

    cold = client.call(request_a)
    assert encoder_counter.calls == 1
    other = client.mask(request_body(frame_b, pos=[(100, 75)]))  # another frame in between
    assert other.shape == frame_b.shape[:2]
    assert encoder_counter.calls == 2

    hit = client.call(request_a)
    assert encoder_counter.calls == 2, "a click on a cached frame ran the image encoder"
    assert hit.status_code == cold.status_code == 200
    assert hit.body == cold.body
    assert frame_mask(json.loads(hit.body), 320, 240).shape == frame_a.shape[:2]

    stats = client.model.stats
    assert stats["encoder_runs"] - stats0["encoder_runs"] == 2
    assert stats["cache_hits"] - stats0["cache_hits"] == 1


def test_same_pixels_reencoded_hit_the_cache(client, frame_a, encoder_counter):
    client.mask(request_body(frame_a, pos=[(160, 120)]))  # make sure frame A is cached
    calls = encoder_counter.calls
    png_fast = encode_image(frame_a, "PNG", compress_level=1)
    png_small = encode_image(frame_a, "PNG", compress_level=9, optimize=True)
    assert png_fast != png_small
    first = client.mask(request_body(png_fast, pos=[(160, 120)]))
    second = client.mask(request_body(png_small, pos=[(160, 120)]))
    np.testing.assert_array_equal(first, second)
    assert encoder_counter.calls == calls


# ---------------------------------------------------------------- bad input -> 400, worker keeps serving


def _png_header_only(width: int, height: int) -> str:
    """A PNG whose header claims width x height (a decompression-bomb shape); no pixel data needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


def _bad_cases(image_b64: str) -> list[tuple[str, Any, str]]:
    good = {"image": image_b64, "pos_points": [[30, 20]], "neg_points": [], "obj_bbox": None}

    def variant(**changes: Any) -> dict[str, Any]:
        return {**good, **changes}

    truncated_png = base64.b64encode(base64.b64decode(image_b64)[:40]).decode()
    return [
        ("not JSON", b"this is not json", "not valid JSON"),
        ("not UTF-8", b"\xff\xfe\x00garbage", "UTF-8"),
        ("empty body", b"", "empty"),
        ("JSON array", b"[1, 2, 3]", "JSON object"),
        ("JSON string", b'"image"', "JSON object"),
        ("missing image", {"pos_points": [[1, 1]], "neg_points": []}, "no 'image'"),
        ("image not a string", variant(image=12345), "base64 string"),
        ("image not base64", variant(image="this is *not* base64!"), "not valid base64"),
        ("image empty", variant(image=""), "empty"),
        ("image not an image", variant(image=base64.b64encode(b"hello, I am text").decode()), "not a readable image"),
        ("image truncated", variant(image=truncated_png), "not a readable image"),
        ("image over the limit", variant(image=_png_header_only(8000, 7000)), "MAX_IMAGE_PIXELS"),
        ("image far over the limit", variant(image=_png_header_only(20000, 20000)), "MAX_IMAGE_PIXELS"),
        ("x beyond width", variant(pos_points=[[64.5, 10]]), "outside the 64x48 image"),
        ("y beyond height", variant(pos_points=[[10, 48.01]]), "outside the 64x48 image"),
        ("negative coordinate", variant(neg_points=[[-1, 10]]), "outside the 64x48 image"),
        ("past the canvas' half-pixel tolerance", variant(pos_points=[[-0.51, 10]]), "outside the 64x48 image"),
        ("coordinate is a string", variant(pos_points=[["10", 10]]), "not a number"),
        ("coordinate is a boolean", variant(pos_points=[[True, 10]]), "not a number"),
        ("coordinate is null", variant(pos_points=[[None, 10]]), "not a number"),
        ("point with one number", variant(pos_points=[[10]]), "pair [x, y]"),
        ("point with three numbers", variant(pos_points=[[10, 10, 10]]), "pair [x, y]"),
        ("points not a list", variant(pos_points="10,10"), "list of [x, y] pairs"),
        ("flat point list", variant(pos_points=[10, 10]), "pair [x, y]"),
        ("NaN coordinate", json.dumps(good).replace("[[30, 20]]", "[[NaN, 20]]").encode(), "finite"),
        ("infinite coordinate", json.dumps(good).replace("[[30, 20]]", "[[1e400, 20]]").encode(), "finite"),
        ("too many points", variant(pos_points=[[1, 1]] * 1001), "Too many points"),
        ("box not a list", variant(obj_bbox="0,0,10,10"), "obj_bbox must be"),
        ("box with one corner", variant(obj_bbox=[[1, 2]]), "obj_bbox must be"),
        ("box with three numbers", variant(obj_bbox=[1, 2, 3]), "obj_bbox must be"),
        ("box corner with three numbers", variant(obj_bbox=[[1, 2, 3], [4, 5, 6]]), "obj_bbox must be"),
        ("box with zero area", variant(obj_bbox=[[5, 5], [5, 20]]), "zero width or height"),
        ("box right of the image", variant(obj_bbox=[[70, 10], [90, 40]]), "lies entirely outside the 64x48 image"),
        ("box above the image", variant(obj_bbox=[-30, -20, 10, -0.5]), "lies entirely outside the 64x48 image"),
        ("box only touching the right edge", variant(obj_bbox=[[64, 10], [80, 40]]), "zero width or height inside"),
        ("box only touching the top edge", variant(obj_bbox=[[5, -9], [20, 0]]), "zero width or height inside"),
    ]


def test_bad_requests_get_400_with_one_sentence_and_the_worker_keeps_serving(client, small_image):
    image_b64 = encode_image(small_image)
    good = request_body(image_b64, pos=[(30, 20)])
    expected = client.mask(good)  # also caches the frame
    for name, body, fragment in _bad_cases(image_b64):
        runs_before = client.model.stats["encoder_runs"]
        message = client.error(body)
        assert fragment in message, f"{name}: {message!r}"
        assert client.model.stats["encoder_runs"] == runs_before, f"{name}: the encoder ran for a rejected request"
        np.testing.assert_array_equal(client.mask(good), expected, err_msg=f"after {name}")


def test_an_internal_failure_is_a_json_500_and_the_next_request_works(client, small_image):
    body = request_body(small_image, pos=[(30, 20)])
    model = client.context.user_data.model
    client.context.user_data.model = None  # the worker lost its model: a failure of ours, not the caller's
    try:
        response = client.call(body)
    finally:
        client.context.user_data.model = model
    assert response.status_code == 500
    payload = json.loads(response.body)
    assert set(payload) == {"error"}
    assert payload["error"].startswith("internal error: AttributeError")
    assert client.mask(body).shape == (48, 64)


def test_the_image_limit_comes_from_max_image_pixels(function_env, function_main, monkeypatch):
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "3000")
    context = make_context()
    function_main.init_context(context)
    limited = Client(function_main, context)
    message = limited.error(request_body(synthetic_image(64, 48, seed=4), pos=[(1, 1)]))  # 3072 pixels
    assert "3000" in message and "64x48" in message
    exactly = synthetic_image(60, 50, seed=5)  # 3000 pixels: the limit itself is allowed
    assert limited.mask(request_body(exactly, pos=[(30, 25)])).shape == (50, 60)


@pytest.mark.parametrize("raw", ["0", "-5", "lots", "1e9"])
def test_a_bad_max_image_pixels_stops_the_worker_at_start(function_main, raw):
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        function_main.max_image_pixels_from_env({"MAX_IMAGE_PIXELS": raw})


def test_max_image_pixels_default_and_underscores(function_main):
    assert function_main.max_image_pixels_from_env({}) == 50_000_000
    assert function_main.max_image_pixels_from_env({"MAX_IMAGE_PIXELS": "20_000_000"}) == 20_000_000


# ---------------------------------------------------------------- the answer encoder


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 9), (48, 64)])
def test_rows_json_is_exactly_compact_json(function_main, shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.integers(0, 2, size=shape).astype(np.uint8)
    assert function_main.rows_json(mask) == json.dumps(mask.tolist(), separators=(",", ":"))


def test_rows_json_maps_any_nonzero_to_one(function_main):
    assert json.loads(function_main.rows_json(np.array([[0, 2], [True, 0]]))) == [[0, 1], [1, 0]]


def test_answer_is_cropped_to_the_set_pixels_with_inclusive_bounds(function_main):
    mask = np.zeros((1080, 1920), dtype=bool)
    mask[400:700, 900:1200] = True  # a 300 x 300 object
    mask[400, 1199] = mask[699, 900] = True
    text = function_main.answer_json(mask)
    payload = json.loads(text)
    assert payload["bounds"] == [900, 400, 1199, 699]
    assert len(payload["mask"]) == 300 and len(payload["mask"][0]) == 300
    np.testing.assert_array_equal(frame_mask(payload, 1920, 1080), mask)
    full = '{"mask":' + function_main.rows_json(mask) + "}"
    assert len(full) / len(text) > 20


def test_one_pixel_answer(function_main):
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[47, 63] = 1
    payload = json.loads(function_main.answer_json(mask))
    assert payload == {"mask": [[1]], "bounds": [63, 47, 63, 47]}
    np.testing.assert_array_equal(frame_mask(payload, 64, 48), mask)


def test_a_mask_spanning_the_frame_goes_without_bounds(function_main):
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[0, 0] = mask[47, 63] = 1
    text = function_main.answer_json(mask)
    assert text == '{"mask":' + function_main.rows_json(mask) + "}"  # never larger than the full-frame answer
    np.testing.assert_array_equal(frame_mask(json.loads(text), 64, 48), mask)


def test_empty_mask_answer_shows_nothing_in_the_ui(function_main):
    payload = json.loads(function_main.answer_json(np.zeros((1080, 1920), dtype=np.uint8)))
    # points: [] stops the UI from tracing a contour in an empty mask (which fails there); it adds no shape.
    assert payload == {"mask": [[0]], "bounds": [0, 0, 0, 0], "points": []}
    assert not frame_mask(payload, 1920, 1080).any()


@pytest.mark.parametrize("bad", [np.zeros((0, 4)), np.zeros(5), np.zeros((2, 2, 2))])
def test_answer_json_refuses_what_is_not_a_mask(function_main, bad):
    with pytest.raises(ValueError, match="2-D"):
        function_main.answer_json(bad)
