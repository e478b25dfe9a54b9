"""What one request to the SAM 2 tracker (files/nuclio/sam2-tracker) can cost, through its handler with the real
SAM 2.1 tiny model (random weights) on the CPU: a cap on shapes per call, and sessions that one caller cannot
use to evict everyone else's.

CVAT v2.51.0 sends a tracker no user, job or task (cvat/apps/lambda_manager/views.py at dfd505e7,
LambdaFunction.invoke: the payload is image, shapes, states), so a caller is a tracking run, the sessions that
travel together in calls (tracker.Sessions has the lines read). Small limits here (3 shapes per call, 6 sessions)
keep the model work to a few encoder runs.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from testlab.sam2 import support
from testlab.sam2.support import REPO, make_context, make_event

TRACKER_DIR = REPO / "files" / "nuclio" / "sam2-tracker"
WIDTH, HEIGHT = 160, 120
BOXES = [[10.0, 10.0, 40.0, 40.0], [50.0, 10.0, 80.0, 40.0], [90.0, 10.0, 120.0, 40.0], [10.0, 60.0, 40.0, 90.0]]
MAX_SHAPES, MAX_SESSIONS = 3, 6


def load_main():
    return support.load_tracker_main("labforge_sam2_tracker_main_bounds")


def frame(seed: int) -> str:
    """A red square over a fixed noise background, moved by ``seed`` (a video's next frame), as JPEG base64."""
    image = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[40:80, 20 + 3 * seed:60 + 3 * seed] = (200, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def main(checkpoint: Path):
    """The tracker loaded by init_context from its env, with SAM2_TRACKER_MAX_SHAPES / _MAX_SESSIONS set small."""
    module = load_main()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"MODEL": checkpoint.name, "MODEL_DIR": str(checkpoint.parent), "SAM2_DEVICE": "cpu",
                           "MODEL_CFG": "configs/sam2.1/sam2.1_hiera_t.yaml",
                           "SAM2_TRACKER_MAX_SHAPES": str(MAX_SHAPES), "SAM2_TRACKER_MAX_SESSIONS": str(MAX_SESSIONS)}.items():
            mp.setenv(key, value)
        context = make_context()
        module.init_context(context)
    tracker = context.user_data.tracker
    # 512 px instead of 1024, as test_sam2_tracker.py does: 4x less encoder work, the same code paths.
    from sam2.build_sam import build_sam2_video_predictor

    tracker.predictor = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(checkpoint), device="cpu",
                                                   hydra_overrides_extra=["++model.image_size=512"])
    module.test_context = context
    return module


@pytest.fixture
def tracker(main):
    """The worker's tracker (its sessions as init_context made them, emptied), and a count of image-encoder runs."""
    tracker = main.test_context.user_data.tracker
    for held in (tracker.sessions._tracks, getattr(tracker.sessions, "_caller", {})):
        held.clear()
    tracker.encodings = []
    forward_image = tracker.predictor.forward_image
    tracker.predictor.forward_image = lambda image: tracker.encodings.append(1) or forward_image(image)
    yield tracker
    del tracker.predictor.forward_image


def call(main, body) -> tuple[int, dict]:
    response = main.handler(main.test_context, make_event(json.dumps(body)))
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


def start(main, *boxes, seed: int = 0) -> list[dict]:
    status, answer = call(main, {"image": frame(seed), "shapes": [{"type": "rectangle", "points": b} for b in boxes], "states": []})
    assert status == 200, answer
    return answer["states"]


def step(main, states: list, seed: int = 1, new: tuple = ()) -> list[dict]:
    """A next frame for ``states``; ``new`` boxes start in the same call (the form CVAT keeps for old UIs)."""
    body = {"image": frame(seed), "shapes": [None] * len(states) + [{"type": "rectangle", "points": b} for b in new],
            "states": [*states, *([None] * len(new))]}
    status, answer = call(main, body)
    assert status == 200, answer
    return answer["states"]


def sessions_of(states: list[dict]) -> list[str]:
    return [s["session"] for s in states]


def test_more_shapes_than_the_cap_is_400_before_any_model_work_and_leaves_sessions_alone(main, tracker):
    held = start(main, BOXES[0])
    track = tracker.sessions.get(held[0]["session"])
    before = (list(tracker.sessions._tracks), len(track.frames), track.touched, len(tracker.encodings))
    error = f"{MAX_SHAPES + 1} shapes in one call, more than the {MAX_SHAPES} this tracker follows at once: track fewer objects"
    status, answer = call(main, {"image": frame(2), "shapes": [{"type": "rectangle", "points": b} for b in BOXES], "states": []})
    assert (status, answer) == (400, {"error": error})
    # states too: refused before any session is looked up (not a 410 for the unknown ones, no step of the held one)
    unknown = {**held[0], "session": "0" * 32}
    status, answer = call(main, {"image": frame(2), "shapes": [None] * 4, "states": [held[0], unknown, unknown, unknown]})
    assert (status, answer) == (400, {"error": error})
    assert (list(tracker.sessions._tracks), len(track.frames), track.touched, len(tracker.encodings)) == before
    assert [s["frames"] for s in step(main, held)] == [2]  # the held session still tracks
    assert len(start(main, *BOXES[:MAX_SHAPES])) == MAX_SHAPES  # and the cap itself is allowed
    assert (tracker.max_shapes, tracker.sessions.max_sessions, tracker.sessions.per_caller) == (MAX_SHAPES, MAX_SESSIONS, MAX_SHAPES)


def test_one_caller_starting_ever_more_shapes_cannot_evict_the_other_callers(main, tracker):
    a = step(main, start(main, BOXES[0]))           # annotator A follows one object
    b = step(main, start(main, *BOXES[1:3]))        # annotator B two
    c = start(main, *BOXES[:MAX_SHAPES], seed=3)    # caller C starts the most one call allows ...
    for round_ in range(4):                         # ... then keeps adding objects while stepping one of its own
        c = step(main, c[:1], seed=4 + round_, new=BOXES[:2])
    assert len(tracker.sessions) <= MAX_SESSIONS
    assert [s["frames"] for s in step(main, a, seed=9)] == [3]               # A's and B's sessions are all still there
    assert [s["frames"] for s in step(main, b, seed=9)] == [3, 3]
    assert sorted(tracker.sessions.callers().values()) == [1, 2, MAX_SHAPES]  # C holds its quota, no more
    for state in c:  # C lost its own oldest ones: the last call's sessions are what it holds
        tracker.sessions.get(state["session"])


def test_past_the_global_cap_the_caller_holding_most_loses_its_oldest_never_a_single_sessions_owner(main, tracker):
    a = step(main, start(main, BOXES[0]))                     # A: one session, the oldest of all
    b = step(main, start(main, *BOXES[1:4]))                  # B: three
    b = step(main, b, seed=2)
    others = start(main, *BOXES[:3], seed=5)                  # D: three more, one past the cap of six
    assert len(tracker.sessions) == MAX_SESSIONS
    assert [s["frames"] for s in step(main, a, seed=6)] == [3]  # A's only session survived although least recently used
    assert sessions_of(step(main, others, seed=6)) == sessions_of(others)
    status, answer = call(main, {"image": frame(6), "shapes": [None] * 3, "states": b})
    assert status == 410 and answer["error"].startswith("shape 1: ")  # B, the largest, lost one (its first; all were used together)


def test_a_refused_call_stores_none_of_the_sessions_it_started(main, tracker):
    held = start(main, BOXES[0])
    other = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(other, "PNG")
    body = {"image": base64.b64encode(other.getvalue()).decode(), "shapes": [{"type": "rectangle", "points": [1, 1, 30, 30]}, None],
            "states": [None, held[0]]}  # shape 1 starts, shape 2 is on a frame of another size: 422
    status, answer = call(main, body)
    assert status == 422 and answer["error"].startswith("shape 2: ")
    assert list(tracker.sessions._tracks) == sessions_of(held)


class Idle:
    """A session's track as Sessions sees it: only its last use."""

    def __init__(self) -> None:
        self.touched = time.monotonic()


def test_eviction_order_over_many_callers():
    load_main()
    sessions_module = sys.modules["tracker"]
    sessions = sessions_module.Sessions(max_sessions=5, ttl_seconds=60, per_caller=3)
    a = sessions.commit((), [Idle()])                # a caller of one
    b = sessions.commit((), [Idle(), Idle(), Idle()])  # a caller of three
    c = sessions.commit((), [Idle()])                # one more single: five, the cap
    d = sessions.commit((), [Idle(), Idle()])        # two new: b, the largest, pays twice
    assert sorted(sessions.callers().values()) == [1, 1, 1, 2]
    held = set(sessions._tracks)
    assert set(a + c + d) <= held and b[2] in held and not {b[0], b[1]} & held
    e = sessions.commit((), [Idle()])                # past the cap again: d (two) pays with its older one
    assert d[0] not in sessions._tracks and {d[1], *a, *c, *e, b[2]} == set(sessions._tracks)
    f = sessions.commit((), [Idle()])                # all singles now: the one idle longest goes (a's)
    assert a[0] not in sessions._tracks and len(sessions) == 5 and f[0] in sessions._tracks
    # stepping sessions of two callers in one call makes them one caller (three, within the quota); past the
    # cap the single idle longest (b's last) goes, not the merged caller's
    sessions.commit([c[0], d[1]], [Idle()])
    assert sessions.caller_of(c[0]) == sessions.caller_of(d[1]) and sorted(sessions.callers().values()) == [1, 1, 3]
    assert b[2] not in sessions._tracks


def test_the_cap_cannot_exceed_the_sessions_it_must_fit_in():
    load_main()
    tracker_module = sys.modules["tracker"]
    with pytest.raises(ValueError, match=r"SAM2_TRACKER_MAX_SHAPES \(65\) must be from 1 to SAM2_TRACKER_MAX_SESSIONS \(64\)"):
        tracker_module.Tracker.from_env({"SAM2_TRACKER_MAX_SHAPES": "65"})


@pytest.mark.parametrize("name", ["function.yaml", "function-gpu.yaml"])
def test_the_specs_set_the_cap_within_the_sessions(name):
    import yaml

    spec = yaml.safe_load((TRACKER_DIR / name).read_text())
    env = {item["name"]: item["value"] for item in spec["spec"]["env"]}
    assert 1 <= int(env["SAM2_TRACKER_MAX_SHAPES"]) <= int(env["SAM2_TRACKER_MAX_SESSIONS"])
    assert int(env["SAM2_TRACKER_MAX_SHAPES"]) == (8 if name == "function.yaml" else 16)


def test_both_functions_refuse_cuda_where_torch_sees_none(tmp_path):
    """One runtime (sam2_runtime.py): the tracker let SAM2_DEVICE=cuda through on a CPU host (its own device_from),
    and every request then failed; now both stop at start with the same sentence."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    load_main()
    tracker_module = sys.modules["tracker"]
    import model_handler

    (tmp_path / "m.pt").write_bytes(b"")
    env = {"MODEL": "m.pt", "MODEL_DIR": str(tmp_path), "MODEL_CFG": "configs/sam2.1/sam2.1_hiera_t.yaml", "SAM2_DEVICE": "cuda"}
    for build in (tracker_module.Tracker.from_env, model_handler.ModelHandler.from_env):
        with pytest.raises(RuntimeError, match="SAM2_DEVICE='cuda' but torch sees no CUDA device"):
            build(env)
    assert tracker_module.model_settings is sys.modules["sam2_runtime"].model_settings
