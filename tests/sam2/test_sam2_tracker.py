"""The SAM 2 tracker function (files/nuclio/sam2-tracker) through its production path (env -> init_context ->
handler), with the real SAM 2.1 tiny model (random weights) on the CPU.

Correct by equivalence: frame by frame through CVAT's tracker protocol, it reproduces sam2's own
``SAM2VideoPredictor`` (``init_state`` on the frames, the same box on frame 0, ``propagate_in_video``) on every
frame of a video longer than SAM 2's memory window (7 mask memories, 16 object pointers), while holding only
that window. The request and state shapes are CVAT v2.51.0's (cvat/apps/lambda_manager/views.py at dfd505e7,
LambdaFunction.invoke for FunctionKind.TRACKER: first call shapes + states [], later calls states + shapes
padded with null, shapes {"type", "points"} because the function declares supported_shape_types).
"""

from __future__ import annotations

import base64
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from equivalence import CONTROL_ULPS, MARGINS, Margin, max_abs_differences, ulp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from testlab.sam2 import support
from testlab.sam2.support import REPO, make_context, make_event

TRACKER_DIR = REPO / "files" / "nuclio" / "sam2-tracker"
FRAMES = 20  # > 16 object pointers and 7 mask memories: the window is exercised and slides
WIDTH, HEIGHT = 160, 120
BOX = [20.0, 40.0, 60.0, 80.0]


def load_tracker_main():
    return support.load_tracker_main("labforge_sam2_tracker_main")


def video(frames: int = FRAMES) -> list[bytes]:
    """A red square moving right over a fixed noise background, as JPEG files (what CVAT's frames are)."""
    background = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = []
    for t in range(frames):
        image = background.copy()
        image[40:80, 20 + 3 * t:60 + 3 * t] = (200, 30, 30)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


@pytest.fixture(scope="module")
def main(checkpoint: Path):
    module = load_tracker_main()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"MODEL": checkpoint.name, "MODEL_DIR": str(checkpoint.parent),
                           "MODEL_CFG": "configs/sam2.1/sam2.1_hiera_t.yaml", "SAM2_DEVICE": "cpu"}.items():
            mp.setenv(key, value)
        context = make_context()
        module.init_context(context)
    tracker = context.user_data.tracker
    assert tracker.predictor.image_size == 1024 and str(tracker.predictor.device) == "cpu"  # the production loading path
    # The same weights read at 512 px instead of 1024: the image encoder, nearly all of the CPU time, runs 4x fewer
    # pixels, so these tests take ~1 min instead of ~5. Equivalence does not depend on the input size (both paths use
    # this predictor); at 1024 px the 20-frame comparison also gave identical logits.
    from sam2.build_sam import build_sam2_video_predictor

    tracker.predictor = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(checkpoint), device="cpu",
                                                   hydra_overrides_extra=["++model.image_size=512"])
    module.test_context = context
    return module


def call(main, body) -> tuple[int, dict]:
    response = main.handler(main.test_context, make_event(json.dumps(body) if not isinstance(body, bytes) else body))
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


def first_call(frame: bytes, *boxes: list[float]) -> dict:
    return {"image": base64.b64encode(frame).decode(), "shapes": [{"type": "rectangle", "points": b} for b in boxes], "states": []}


def next_call(frame: bytes, states: list) -> dict:
    return {"image": base64.b64encode(frame).decode(), "shapes": [None] * len(states), "states": states}


def reference_logits(predictor, frames: list[bytes], folder: Path) -> list[np.ndarray]:
    """sam2's offline path, called the way its video example calls it."""
    folder.mkdir()
    for index, frame in enumerate(frames):
        (folder / f"{index:05d}.jpg").write_bytes(frame)
    with torch.inference_mode():
        state = predictor.init_state(str(folder))
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.asarray(BOX, dtype=np.float32))
        return [masks[0, 0].float().numpy() for _, _, masks in predictor.propagate_in_video(state)]


@dataclass
class Stream:
    """What the production path answered for video(), tracked through CVAT's protocol."""

    logits: list[np.ndarray]  # frames 1.., as Track.step computed them
    shapes: list[dict]  # frames 1.., the rectangles answered
    states: list[dict]  # the last call's states


def track_through_cvat(main, frames: list[bytes]) -> Stream:
    """One rectangle tracked over ``frames`` through the handler, recording the logits each production step
    computes (the recorder returns them unchanged)."""
    tracker_module = sys.modules["tracker"]
    seen: list[np.ndarray] = []
    original_step = tracker_module.Track.step

    def observed(self, frame):
        logits = original_step(self, frame)
        seen.append(logits)
        return logits

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracker_module.Track, "step", observed)
        status, answer = call(main, first_call(frames[0], BOX))
        assert status == 200 and answer["shapes"] == [{"type": "rectangle", "points": BOX}]
        states, shapes = answer["states"], []
        for frame in frames[1:]:
            status, answer = call(main, next_call(frame, states))
            assert status == 200, answer
            states = answer["states"]
            shapes.append(answer["shapes"][0])
    return Stream(seen, shapes, states)


@pytest.fixture(scope="module")
def reference(main, tmp_path_factory) -> list[np.ndarray]:
    """sam2's offline logits for video(), computed once for the comparison and for every negative control."""
    predictor = main.test_context.user_data.tracker.predictor
    logits = reference_logits(predictor, video(), tmp_path_factory.mktemp("reference") / "video")
    assert len(logits) == FRAMES
    return logits


def assert_equals_reference(main, stream: Stream, reference: list[np.ndarray]) -> None:
    """Exactly sam2's logits on every frame (no tolerance: tests/sam2/equivalence.py), and the rectangles of
    its masks."""
    assert len(stream.logits) == FRAMES - 1
    for index, (ours, theirs) in enumerate(zip(stream.logits, reference[1:], strict=True), start=1):
        assert ours.shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"frame {index}")
        assert stream.shapes[index - 1] == {"type": "rectangle", "points": main.bounding_box(theirs > 0)}, f"frame {index}"


@pytest.fixture(scope="module")
def ours(main) -> Stream:
    """The production path on video(), run once: compared here, and shown beside each control's margin."""
    return track_through_cvat(main, video())


def test_frame_by_frame_through_cvat_protocol_equals_sam2_video_predictor(main, ours, reference):
    stream = ours
    assert stream.states[0]["frames"] == FRAMES and len(json.dumps(stream.states[0], separators=(",", ":"))) < 120
    assert_equals_reference(main, stream, reference)

    # bounded: only SAM 2's window of per-frame outputs is held between calls, no pixels and no image features
    tracker = main.test_context.user_data.tracker
    track = tracker.sessions.get(stream.states[0]["session"])
    window = max(tracker.predictor.num_maskmem, tracker.predictor.max_obj_ptrs_in_encoder)
    held = track.state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
    assert sorted(held) == list(range(FRAMES - 1 - window, FRAMES))
    assert track.state["cached_features"] == {} and track.frames.newest is None and len(track.frames) == FRAMES
    with pytest.raises(IndexError):
        track.frames[FRAMES - 1]


def stream_length_is_frames_seen(mp, tracker_module, predictor) -> None:
    """The object pointers' temporal encoding of the first 15 frames spaced over the frames seen so far, not
    over sam2's 16 (tracker.stream_length's docstring; sam2/modeling/sam2_base.py,
    _prepare_memory_conditioned_features: ``max_obj_ptrs_in_encoder = min(num_frames, ...)``)."""
    mp.setattr(tracker_module, "stream_length", lambda predictor, frames_seen: frames_seen)


def memory_window_one_frame_short(mp, tracker_module, predictor) -> None:
    """The oldest output sam2 still reads dropped one call too early. For frame t, sam2 reads the mask memories of
    t-1..t-(num_maskmem-1) and the object pointers of t-1..t-(max_obj_ptrs_in_encoder-1)
    (_prepare_memory_conditioned_features), so after answering frame i the next call reads i-14..i. Track keeps
    i-16..i (its window, max(7, 16), counted from i): two more than read, so a window one or two frames smaller
    changes nothing (measured: identical logits). This control drops i-14 as well, by forgetting as if at frame
    i+3."""
    read = max(predictor.num_maskmem, predictor.max_obj_ptrs_in_encoder) - 1  # frames before t that t reads: 15
    kept = max(predictor.num_maskmem, predictor.max_obj_ptrs_in_encoder)  # Track keeps t >= i - kept: 16
    shift = kept - read + 2  # forget t < i + 2 - read: i + 1 - read, the oldest the next call reads, goes too
    original = tracker_module.Track._forget_before
    mp.setattr(tracker_module.Track, "_forget_before", lambda self, index: original(self, index + shift))


def frame_index_one_behind(mp, tracker_module, predictor) -> None:
    """Each new frame numbered one too low: ``propagate_in_video`` runs it at the previous frame's index (the
    features are cached under that index too, so sam2 reads the right pixels at the wrong time). Without the
    cache key moving with it, Frames' guard raises IndexError instead: a 500, which the comparison fails too."""
    original = tracker_module.Frames.append
    mp.setattr(tracker_module.Frames, "append", lambda self, image: original(self, image) - 1)


TRACKER_CONTROLS = {f.__name__: f for f in (stream_length_is_frames_seen, memory_window_one_frame_short, frame_index_one_behind)}


@pytest.mark.parametrize("control", TRACKER_CONTROLS)
def test_negative_control_the_equivalence_fails_on_a_wrong_stream(main, ours, reference, control, monkeypatch):
    """The comparison above, on a path with one known defect, must fail, and by a margin far above rounding."""
    predictor = main.test_context.user_data.tracker.predictor
    TRACKER_CONTROLS[control](monkeypatch, sys.modules["tracker"], predictor)
    stream = track_through_cvat(main, video())
    with pytest.raises(AssertionError):
        assert_equals_reference(main, stream, reference)
    differences = max_abs_differences(stream.logits, reference[1:])
    one_ulp = ulp(reference[1:])
    changed = [d for d in differences if d > 0]
    MARGINS.append(Margin(
        control, "tracker logits vs SAM2VideoPredictor, 19 frames",
        f"max |diff| {max(differences):.2g} ({max(differences) / one_ulp:.0f} ulps; frames changed {len(changed)}, "
        f"smallest change {min(changed):.2g})",
        f"max |diff| {max(max_abs_differences(ours.logits, reference[1:])):.2g}", "0 (exact)"))
    assert max(differences) >= CONTROL_ULPS * one_ulp, (control, differences)


def test_several_shapes_are_separate_sessions_on_one_encoding_per_call(main, monkeypatch):
    predictor = main.test_context.user_data.tracker.predictor
    encodings = []
    forward_image = predictor.forward_image
    monkeypatch.setattr(predictor, "forward_image", lambda image: encodings.append(1) or forward_image(image))  # counts only
    frames = video(2)
    status, answer = call(main, first_call(frames[0], BOX, [100.0, 10.0, 150.0, 50.0]))
    assert status == 200 and len(answer["states"]) == 2 and len(encodings) == 1
    assert answer["states"][0]["session"] != answer["states"][1]["session"]
    status, answer = call(main, next_call(frames[1], answer["states"]))
    assert status == 200 and [s["type"] for s in answer["shapes"]] == ["rectangle", "rectangle"]
    assert [s["frames"] for s in answer["states"]] == [2, 2] and len(encodings) == 2


def test_an_unknown_session_gets_410_with_one_line_to_restart(main):
    state = {"v": 1, "session": "0" * 32, "type": "rectangle", "frames": 3}
    status, answer = call(main, next_call(video(1)[0], [state]))
    assert status == 410
    assert answer == {"error": "shape 1: this tracking session is unknown or has expired: restart tracking from the current frame"}


def test_a_frame_of_another_size_is_refused(main):
    status, answer = call(main, first_call(video(1)[0], BOX))
    other = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(other, "PNG")
    status, answer = call(main, next_call(other.getvalue(), answer["states"]))
    assert status == 422 and "this frame is 64x48 but tracking started on a 160x120 frame" in answer["error"]


@pytest.mark.parametrize(("body", "error"), [
    (b"{not json", "The request body is not valid JSON."),  # the interactor's words: one runtime (sam2_runtime.py)
    ({"shapes": [], "states": []}, "The request has no 'image'; send the frame as a base64 string."),
    ({"image": "%%%", "shapes": [{"type": "rectangle", "points": BOX}], "states": []}, "'image' is not valid base64."),
    ({"image": base64.b64encode(b"GIF89a-not-really").decode(), "shapes": [], "states": []},
     "'image' is not a readable image (JPEG, PNG or another format Pillow reads)."),
    ("frame", "no shapes to track"),
    ("polygon", "this tracker follows rectangles, not 'polygon'"),
    ("outside", "the rectangle [200, 10, 300, 50] has no area inside the 160x120 frame"),
    ("mismatch", "2 shapes but 1 states: send one state per shape, or none to start"),
    ("foreign-state", "a state that is not this tracker's: restart tracking from the current frame"),
])
def test_bad_input_is_400_with_one_sentence(main, body, error):
    frame = base64.b64encode(video(1)[0]).decode()
    if body == "frame":
        body = {"image": frame, "shapes": [], "states": []}
    elif body == "polygon":
        body = {"image": frame, "shapes": [{"type": "polygon", "points": [1, 1, 5, 1, 5, 5]}], "states": []}
    elif body == "outside":
        body = {"image": frame, "shapes": [{"type": "rectangle", "points": [200, 10, 300, 50]}], "states": []}
    elif body == "mismatch":
        body = {"image": frame, "shapes": [None, None], "states": [{"v": 1}]}
    elif body == "foreign-state":
        body = {"image": frame, "shapes": [None], "states": [{"tracker": "siammask", "data": "..."}]}
    status, answer = call(main, body)
    assert (status, answer) == (400, {"error": error})


def test_a_box_past_the_frame_edge_is_clamped(main):
    status, answer = call(main, first_call(video(1)[0], [-30.0, 100.0, 40.0, 500.0]))
    assert status == 200 and answer["shapes"][0]["points"] == [0.0, 100.0, 40.0, 120.0]


KEYS = st.sampled_from(["image", "shapes", "states", "type", "points", "v", "session"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12))
def test_fuzzed_bodies_get_a_4xx_sentence_and_the_worker_survives(main, body):
    response = main.handler(main.test_context, make_event(json.dumps(body, allow_nan=True), via_runtime=True))
    assert 400 <= response.status_code < 500, response.body
    payload = json.loads(response.body)
    assert set(payload) == {"error"} and payload["error"] and "\n" not in payload["error"]


def test_sessions_are_bounded_by_count_and_age():
    load_tracker_main()
    tracker_module = sys.modules["tracker"]

    class Idle:
        touched = time.monotonic()

    sessions = tracker_module.Sessions(max_sessions=2, ttl_seconds=60)
    first, second, third = (sessions.add(Idle()) for _ in range(3))
    with pytest.raises(tracker_module.SessionGone):
        sessions.get(first)  # least recently used, evicted by the third
    assert sessions.get(second) and sessions.get(third) and len(sessions) == 2
    sessions.get(second).touched = time.monotonic() - 61
    with pytest.raises(tracker_module.SessionGone):
        sessions.get(second)
    assert len(sessions) == 1


@pytest.mark.parametrize("name", ["function.yaml", "function-gpu.yaml"])
def test_cvat_lists_it_as_a_rectangle_tracker(name):
    spec = yaml.safe_load((TRACKER_DIR / name).read_text())
    notes = spec["metadata"]["annotations"]
    assert all(isinstance(v, str) for v in notes.values())  # Nuclio keeps annotations as strings
    assert notes["type"] == "tracker" and "rectangle" in [t.strip() for t in notes["supported_shape_types"].split(",")]
    assert spec["spec"]["handler"] == "main:handler" and spec["spec"]["description"]
    env = {item["name"]: item["value"] for item in spec["spec"]["env"]}
    build = {d["value"].split("=", 1)[0]: d["value"].split("=", 1)[1] for d in spec["spec"]["build"]["directives"]["preCopy"]
             if d["kind"] == "ENV"}
    assert env["MODEL"] == build["MODEL"] and env["MODEL_DIR"] == build["MODEL_DIR"]
    expected = "pth-labforge-sam2-tracker" + ("" if name == "function-gpu.yaml" else "-cpu")
    assert spec["metadata"]["name"] == expected
    gpu_functions = __import__("runpy").run_path(str(REPO / "group_data" / "gpu_servers.py"))["nuclio_functions"]
    assert "files/nuclio/sam2-tracker" in gpu_functions


@pytest.mark.parametrize("name", ["function.yaml", "function-gpu.yaml"])
def test_the_name_an_annotator_picks_says_how_many_objects_it_follows_at_once(name):
    """Past SAM2_TRACKER_MAX_SHAPES a call is refused with one line that CVAT never shows (its lambda view answers
    str(HTTPError): "400 Client Error: Bad Request for url: ..."), and its UI shows no help for trackers (the tip is an
    interactor's only: tools-control.tsx at 7972cb4f2), so the tracker's name, listed under AI Tools > Trackers, says it."""
    spec = yaml.safe_load((TRACKER_DIR / name).read_text())
    env = {item["name"]: item["value"] for item in spec["spec"]["env"]}
    cap = int(env["SAM2_TRACKER_MAX_SHAPES"])
    assert spec["metadata"]["annotations"]["name"].endswith(f" {cap} objects at a time)")
    assert cap <= int(env["SAM2_TRACKER_MAX_SESSIONS"])
