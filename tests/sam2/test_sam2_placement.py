"""Where the mask lands in each CVAT release of cvat_stack_compat: our answers through faithful ports of
what the server, cvat-core and the UI do with them (testlab/sam2/cvat_reader.py), with a checkpoint whose masks are
blobs at the prompt (testlab/sam2/placed_checkpoint.py), so that a mask drawn at the frame's corner, or pasted into
a region of interest unshifted, differs from the model's.

Seen failing before the fix (the function answered the compact ``mask`` + ``bounds`` to every release, and 400 to
no prompt): the v2.73.0 cases of the placement tests (saved at the corner), the region cases (HTTP 500) and the
no-prompt cases (400).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labforge import compat, groupdata
from labforge.nuclio_functions import interactor_answer
from testlab.sam2.cvat_reader import RELEASES, CvatError, core_call, mask2rle, roi_response, saved_mask, ui_mask
from testlab.sam2.placed_checkpoint import PLACED_NAME, write_placed_checkpoint
from testlab.sam2.random_checkpoint import TINY_CFG
from testlab.sam2.support import Client, make_context, request_body, synthetic_image

WIDTH, HEIGHT = 640, 480
TABLE = tuple(groupdata.load()["cvat_stack_compat"])
# an ROI exists from v2.70.0 (cvat-ai/cvat#10794)
ROI_RELEASES = tuple(r for r in TABLE if compat.release(r) >= (2, 70, 0))


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_placed_checkpoint(tmp_path_factory.mktemp("sam2-placed") / PLACED_NAME, TINY_CFG)


@pytest.fixture(scope="module")
def clients(placed: Path, function_main) -> Iterator[dict[str, Client]]:
    """The function after init_context with the placed checkpoint, once per answer form (CVAT_INTERACTOR_ANSWER)."""
    made = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODEL", placed.name)
        mp.setenv("MODEL_DIR", str(placed.parent))
        mp.setenv("MODEL_CFG", TINY_CFG)
        for form in ("bounds", "shapes", "full"):
            mp.setenv("CVAT_INTERACTOR_ANSWER", form)
            context = make_context()
            function_main.init_context(context)
            made[form] = Client(function_main, context)
        yield made


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return synthetic_image(WIDTH, HEIGHT, seed=27)


PROMPTS = {  # away from the top-left corner, where a mask drawn at (0, 0) would look right
    "click": {"pos": [(400, 300)]},
    "box": {"bbox": [[380, 280], [480, 380]]},
    "two clicks": {"pos": [(150, 120), (180, 140)]},
    "click near the bottom-right corner": {"pos": [(630, 470)]},
}


def model_mask(client: Client, image: np.ndarray, prompt: dict) -> np.ndarray:
    """What the model itself selects, in the received image's pixels."""
    box = prompt.get("bbox")
    flat = None if box is None else (box[0][0], box[0][1], box[1][0], box[1][1])
    return np.asarray(client.model.handle(image, prompt.get("pos", []), [], flat), dtype=np.uint8)


@pytest.mark.parametrize("release", TABLE)
@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("deployed", [True, False], ids=["deployed form", "full form"])
def test_each_release_saves_the_mask_where_the_model_put_it(clients, frame, release, prompt, deployed):
    client = clients[interactor_answer(release) if deployed else "full"]
    expected = model_mask(client, frame, PROMPTS[prompt])
    assert 0 < expected.sum() < 0.1 * WIDTH * HEIGHT and not expected[0, 0]  # a blob at the prompt, not the frame
    saved = client.saved(release, request_body(frame, **PROMPTS[prompt]))
    assert np.array_equal(saved, expected), f"{release}: saved box {_box(saved)}, the model's {_box(expected)}"


@pytest.mark.parametrize("release", ROI_RELEASES)
@pytest.mark.parametrize("roi", [[300, 200, 560, 420], [360, 260, 441, 341]])
def test_with_a_region_of_interest_the_mask_lands_in_the_region(clients, frame, release, roi):
    client = clients[interactor_answer(release)]
    xtl, ytl, xbr, ybr = roi
    crop = np.ascontiguousarray(frame[ytl:ybr, xtl:xbr])
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    expected[ytl:ybr, xtl:xbr] = model_mask(client, crop, {"pos": [(400 - xtl, 300 - ytl)]})
    assert expected.any()
    saved = client.saved(release, request_body(frame, pos=[(400, 300)]), roi=roi)
    assert np.array_equal(saved, expected), f"{release} {roi}: saved box {_box(saved)}, the model's {_box(expected)}"


@pytest.mark.parametrize("release", TABLE)
@pytest.mark.parametrize("prompts", [{}, {"bbox": []}, {"bbox": None}], ids=["nothing", "empty box", "null box"])
def test_no_prompt_is_an_empty_answer_shown_quietly(clients, frame, release, prompts):
    """v2.73.0's UI calls the function with no prompt once the annotator deletes the last one."""
    client = clients[interactor_answer(release)]
    body = request_body(frame, **prompts)
    runs = client.model.stats["encoder_runs"]
    assert not client.saved(release, body).any()  # 200 (Client.saved checks it), nothing saved, no error
    for roi in ([100, 100, 300, 250],) if release in ROI_RELEASES else ():
        assert not client.saved(release, body, roi=roi).any()
    assert client.model.stats["encoder_runs"] == runs, "the encoder ran for a request with nothing to segment"


def test_a_bad_image_without_prompts_is_still_a_400(clients):
    message = clients["shapes"].error({"image": "not base64!", "pos_points": [], "neg_points": [], "obj_bbox": []})
    assert "not valid base64" in message


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("form", ["bounds", "shapes", "full"])
def test_an_empty_mask_is_shown_quietly_in_every_form(function_main, release, form):
    answer = json.loads(function_main.answer_json(np.zeros((HEIGHT, WIDTH), dtype=np.uint8), form))
    if release == "v2.51.0" and form == "shapes":
        return  # never deployed there: interactor_answer("v2.51.0") == "bounds"
    assert not ui_mask(release, core_call(release, answer), WIDTH, HEIGHT).any()


def test_the_compact_mask_answer_lands_at_the_corner_on_v273_and_fails_with_a_region(clients, frame):
    """The negative control: today's compact answer, read by v2.73.0 (what v2.73.0's real UI showed: the mask at the frame's corner)."""
    client = clients["bounds"]
    expected = model_mask(client, frame, PROMPTS["click"])
    saved = client.saved("v2.73.0", request_body(frame, **PROMPTS["click"]))
    assert _box(saved)[:2] == [0, 0] and not np.array_equal(saved, expected)
    with pytest.raises(CvatError, match="HTTP 500"):
        client.saved("v2.73.0", request_body(frame, **PROMPTS["click"]), roi=[300, 200, 560, 420])
    # and the shapes form is not read by v2.51.0 at all: interactor_answer must tell them apart
    with pytest.raises(CvatError):
        clients["shapes"].saved("v2.51.0", request_body(frame, **PROMPTS["click"]))


@pytest.mark.parametrize("seed", range(20))
def test_mask_rle_is_cvat_cores_mask2rle(function_main, seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
    mask = (rng.random(shape) < rng.random()).astype(np.uint8)
    assert function_main.mask_rle(mask) == mask2rle(mask.ravel().tolist())


def test_a_shapes_answer_names_its_box_in_the_received_image(function_main):
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[2:5, 3:9] = 1
    mask[4, 3] = 0
    answer = json.loads(function_main.answer_json(mask, "shapes"))
    (shape,) = answer["shapes"]
    assert shape["type"] == "mask" and shape["attributes"] == [] and shape["points"][-4:] == [3, 2, 8, 4]
    assert np.array_equal(ui_mask("v2.73.0", core_call("v2.73.0", answer), 12, 10), mask)
    moved = roi_response(answer, {"xtl": 5, "ytl": 7, "xbr": 17, "ybr": 17, "image_width": 30, "image_height": 20})
    assert moved["shapes"][0]["points"][-4:] == [8, 9, 13, 11]


def test_a_bad_answer_form_stops_the_worker_at_start(function_main):
    with pytest.raises(ValueError, match="CVAT_INTERACTOR_ANSWER must be one of bounds, shapes, full"):
        function_main.answer_form_from_env({"CVAT_INTERACTOR_ANSWER": "polygon"})
    assert function_main.answer_form_from_env({}) == "full"


def test_saved_mask_refuses_a_region_on_a_release_without_one():
    with pytest.raises(ValueError, match="no region of interest"):
        saved_mask("v2.51.0", lambda body: {}, {"image": ""}, 1, 1, roi=[0, 0, 1, 1])


def _box(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if len(xs) else None


def test_the_deploy_and_the_function_agree_on_the_variable_and_its_values(function_main):
    """labforge cannot be imported inside the function, so the name and the forms live on both sides."""
    from labforge import nuclio_functions

    assert function_main.ANSWER_ENV == nuclio_functions.ANSWER_ENV
    assert {interactor_answer(release) for release in TABLE} <= set(function_main.ANSWER_FORMS)
