"""Property: whatever body arrives, the handler answers 200 or 400 (never 500, never an exception),
and malformed bodies are turned away before the image encoder runs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testlab.sam2.support import encode_image, frame_mask

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

# Any JSON value (NaN and infinities included: Python's json emits and accepts them).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
# Numbers around and beyond the 64 x 48 frame, plus things that are not numbers.
coordinates = st.one_of(
    st.integers(-5, 70),
    st.floats(-5, 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, False, None, "10", [10], {"x": 1}]),
)
points = st.one_of(
    st.lists(st.lists(coordinates, min_size=2, max_size=2), max_size=4),
    st.lists(st.lists(coordinates, max_size=3), max_size=3),
    json_values,
)
boxes = st.one_of(
    st.none(),
    st.just([]),
    st.lists(st.lists(coordinates, min_size=2, max_size=2), min_size=2, max_size=2),
    st.lists(coordinates, min_size=4, max_size=4),
    json_values,
)


def image_fields(valid_b64: str) -> st.SearchStrategy[Any]:
    raw = base64.b64decode(valid_b64)
    return st.one_of(
        st.just(valid_b64),
        st.text(max_size=40),
        st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        st.integers(1, len(raw) - 1).map(lambda n: base64.b64encode(raw[:n]).decode()),  # truncated PNG
        st.integers(0, len(valid_b64) - 1).map(lambda i: valid_b64[:i] + "*" + valid_b64[i + 1 :]),  # one bad char
        json_values,
    )


# Clicks on the frame (edges and CVAT's half-pixel tolerance included) and boxes overlapping it
# (past its edges too, as CVAT sends them): these requests must get a mask.
on_frame = st.tuples(st.floats(-0.5, 64), st.floats(-0.5, 48)).map(list)
frame_boxes = st.tuples(st.floats(-20, 31), st.floats(-20, 23), st.floats(33, 90), st.floats(25, 70)).map(
    lambda b: [[b[0], b[1]], [b[2], b[3]]]
)


def bodies(valid_b64: str) -> st.SearchStrategy[tuple[Any, bool]]:
    anything = st.fixed_dictionaries(
        {"image": image_fields(valid_b64)},
        optional={"pos_points": points, "neg_points": points, "obj_bbox": boxes, "threshold": json_values},
    )
    valid = st.fixed_dictionaries(
        {
            "image": st.just(valid_b64),
            "pos_points": st.lists(on_frame, min_size=1, max_size=3),
            "neg_points": st.lists(on_frame, max_size=2),
            "obj_bbox": st.none() | st.just([]) | frame_boxes,
        }
    )
    # One bad field in an otherwise valid request.
    one_bad = st.one_of(
        valid.flatmap(lambda d: image_fields(valid_b64).map(lambda v: {**d, "image": v})),
        valid.flatmap(lambda d: points.map(lambda v: {**d, "pos_points": v})),
        valid.flatmap(lambda d: points.map(lambda v: {**d, "neg_points": v})),
        valid.flatmap(lambda d: boxes.map(lambda v: {**d, "obj_bbox": v})),
    )
    request = st.one_of(valid, one_bad, anything)
    as_wire = st.one_of(
        request.map(lambda d: json.dumps(d).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=80),
        st.text(max_size=80).map(str.encode),
    )
    # (body, via_runtime): through nuclio-sdk's deserializer as on the wire, or handed over as is.
    return st.one_of(
        st.tuples(as_wire, st.just(True)),
        st.tuples(request, st.just(False)),
        st.tuples(as_wire.map(lambda b: b.decode("utf-8", "replace")), st.just(False)),
    )


def test_no_body_makes_the_handler_fail(client, small_image):
    valid_b64 = encode_image(small_image)
    assert client.mask({"image": valid_b64, "pos_points": [[30, 20]], "neg_points": []}).shape == (48, 64)
    encoder_runs = client.model.stats["encoder_runs"]  # the frame is cached now
    seen = {200: 0, 400: 0}

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=bodies(valid_b64))
    def check(case: tuple[Any, bool]) -> None:
        body, via_runtime = case
        response = client.call(body, via_runtime=via_runtime)
        assert response.status_code in (200, 400), (response.status_code, response.body)
        payload = json.loads(response.body)
        seen[response.status_code] += 1
        if response.status_code == 400:
            assert set(payload) == {"error"} and isinstance(payload["error"], str) and payload["error"]
        else:
            frame_mask(payload, 64, 48)  # an answer the v2.51.0 UI reads

    check()
    assert seen[200] > 0 and seen[400] > 0
    # Only the one valid frame can get past validation, and it is cached: the encoder never ran.
    assert client.model.stats["encoder_runs"] == encoder_runs
