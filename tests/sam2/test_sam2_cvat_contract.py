"""Our SAM 2 function against what CVAT v2.51.0 really sends (tests/sam2/cvat_contract.py), and against
sam2's own reference path (SAM2ImagePredictor.predict, called the way sam2 documents it)."""

from __future__ import annotations

import json
from pathlib import Path

import cvat_contract
import numpy as np
import pytest
import torch
from equivalence import INTERACTOR_CONTROLS, applies, assert_interactor_control_fails
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from testlab.sam2.random_checkpoint import TINY_CFG
from testlab.sam2.support import encode_image, frame_mask

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

WIDTH, HEIGHT = 320, 240


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> SAM2ImagePredictor:
    """sam2's own predictor, built independently from the same checkpoint file (no shared model object)."""
    return SAM2ImagePredictor(build_sam2(TINY_CFG, str(checkpoint), device="cpu"))


def reference_mask(predictor: SAM2ImagePredictor, image: np.ndarray, pos=(), neg=(), box=None) -> np.ndarray:
    """How sam2 documents the call (README "Image prediction"; predict()'s docstring in
    sam2/sam2_image_predictor.py, facebookresearch/sam2 commit 2b90b9f, the same file as PyPI sam2 1.1.0):
    set_image under inference_mode, then predict. An ambiguous prompt (clicks only) asks for three
    masks and keeps the one with the best predicted quality score; a box is a non-ambiguous prompt:
    multimask_output=False."""
    with torch.inference_mode():
        predictor.set_image(image)
    return reference_predict(predictor, pos, neg, box)


def reference_predict(predictor: SAM2ImagePredictor, pos=(), neg=(), box=None) -> np.ndarray:
    """reference_mask's predict, on the image the predictor holds."""
    coords = np.array([*pos, *neg], dtype=np.float32) if len(pos) + len(neg) else None
    labels = np.array([1] * len(pos) + [0] * len(neg), dtype=np.int32) if coords is not None else None
    with torch.inference_mode():
        masks, scores, _ = predictor.predict(
            point_coords=coords,
            point_labels=labels,
            box=None if box is None else np.array(box, dtype=np.float32),
            multimask_output=box is None,
        )
    return masks[int(np.argmax(scores))].astype(np.uint8)


def clamped_prompt(payload: dict, width: int, height: int) -> tuple[list, list, list | None]:
    """The prompt the annotator meant on this frame: clicks onto the frame, a box cut to it."""
    pos = [[max(x, 0.0), max(y, 0.0)] for x, y in payload["pos_points"]]
    neg = [[max(x, 0.0), max(y, 0.0)] for x, y in payload["neg_points"]]
    box = None
    if payload["obj_bbox"]:
        (x1, y1), (x2, y2) = payload["obj_bbox"]
        box = [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]
    return pos, neg, box


INTERACTIONS = cvat_contract.interactions(WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def expected_a(reference: SAM2ImagePredictor, frame_a: np.ndarray) -> dict[str, np.ndarray]:
    """sam2's own mask on frame A for every interaction (one set_image, then predict per prompt), computed once
    for the comparison and for the negative controls."""
    with torch.inference_mode():
        reference.set_image(frame_a)
    expected = {}
    for interaction in INTERACTIONS:
        payload = interaction.payload("unused")
        expected[interaction.name] = reference_predict(reference, *clamped_prompt(payload, WIDTH, HEIGHT))
    return expected


def answered_mask(client, frame_a: np.ndarray, interaction: cvat_contract.Interaction) -> np.ndarray:
    """Our function's answer to the interaction on frame A, as the full-frame mask the UI reads."""
    payload = interaction.payload(encode_image(frame_a))
    assert set(payload) == {"image", "pos_points", "neg_points", "obj_bbox"}
    response = client.call(payload)
    assert response.status_code == 200, (interaction.name, response.body)
    return frame_mask(json.loads(response.body), WIDTH, HEIGHT)


@pytest.mark.parametrize("interaction", INTERACTIONS, ids=[i.name for i in INTERACTIONS])
def test_every_request_cvat_sends_gets_a_mask_equal_to_sam2s_own(client, frame_a, expected_a, interaction):
    for shape in interaction.shapes:  # the fixture holds only clicks the canvas accepts
        if shape["shapeType"] == "points":
            assert cvat_contract.within_frame(*shape["points"], WIDTH, HEIGHT), interaction.name
    mask = answered_mask(client, frame_a, interaction)
    np.testing.assert_array_equal(mask, expected_a[interaction.name], err_msg=interaction.name)  # exact: equivalence.py


def _request_box(interaction: cvat_contract.Interaction) -> list[float] | None:
    box = interaction.payload("unused")["obj_bbox"]
    return [box[0][0], box[0][1], box[1][0], box[1][1]] if box else None


CONTROL_CASES = [(name, i) for name, control in INTERACTOR_CONTROLS.items() for i in INTERACTIONS
                 if applies(control, i.payload("unused")["pos_points"], _request_box(i), WIDTH, HEIGHT)]


@pytest.mark.parametrize(("control", "interaction"), CONTROL_CASES, ids=[f"{c}-{i.name}" for c, i in CONTROL_CASES])
def test_negative_control_a_planted_defect_fails_the_comparison(client, frame_a, expected_a, control, interaction,
                                                               monkeypatch):
    """The comparison above, on our path with one planted defect (tests/sam2/equivalence.py), fails on every
    interaction the defect is on the path of."""
    expected = expected_a[interaction.name]
    ours = answered_mask(client, frame_a, interaction)
    INTERACTOR_CONTROLS[control](monkeypatch, client.main, client.model)
    planted = answered_mask(client, frame_a, interaction)
    assert_interactor_control_fails(control, f"interactor mask vs SAM2ImagePredictor, CVAT interaction {interaction.name!r}",
                                    planted, expected, ours)


def test_the_fixtures_reproduce_what_cvat_sends():
    """The facts the fixtures encode, spelled out (a regression here means the fixture drifted from CVAT)."""
    by_name = {i.name: i.payload("IMG") for i in INTERACTIONS}
    assert by_name["click"] == {"image": "IMG", "pos_points": [[160.0, 120.0]], "neg_points": [], "obj_bbox": []}
    assert by_name["box first"]["pos_points"] == [] and by_name["box first"]["neg_points"] == []
    (x1, y1), (x2, y2) = by_name["box first"]["obj_bbox"]
    assert x1 < x2 and y1 < y2  # top-left, then bottom-right
    (_, _), (x2, y2) = by_name["box past the right and bottom edges"]["obj_bbox"]
    assert x2 > WIDTH and y2 > HEIGHT
    (x1, y1), _ = by_name["box past the left and top edges"]["obj_bbox"]
    assert x1 < 0 and y1 < 0
    assert by_name["click on the first pixel, rounded in"]["pos_points"][0] == pytest.approx([-0.4, -0.3])


def test_server_forwards_only_the_interactor_keys_and_drops_nulls():
    ui = cvat_contract.ui_request(3, [cvat_contract.click(5, 6)], job=7, task=9)
    assert set(ui) == {"frame", "obj_bbox", "pos_points", "neg_points", "job", "task"}
    assert cvat_contract.server_payload(ui, "IMG") == {"image": "IMG", "pos_points": [[5.0, 6.0]], "neg_points": [],
                                                       "obj_bbox": []}
    # Another client's null box is dropped by the server and forwarded as data.get("obj_bbox") -> null.
    assert cvat_contract.server_payload({**ui, "obj_bbox": None}, "IMG")["obj_bbox"] is None
    assert cvat_contract.server_payload({**ui, "threshold": 0.5}, "IMG")["threshold"] == 0.5
    assert "threshold" not in cvat_contract.server_payload({**ui, "threshold": 0}, "IMG")
    with pytest.raises(cvat_contract.MissingArgument):
        cvat_contract.server_payload({"frame": 0, "pos_points": []}, "IMG")


def test_a_null_or_absent_box_and_a_threshold_are_fine_too(client, small_image):
    image = encode_image(small_image)
    answers = {
        json.dumps(client.json(client.call({"image": image, "pos_points": [[30, 20]], "neg_points": [], **extra})))
        for extra in ({"obj_bbox": []}, {"obj_bbox": None}, {}, {"obj_bbox": [], "threshold": 0.5})
    }
    assert len(answers) == 1


@pytest.mark.parametrize("cached", [False, True], ids=["uncached frame", "cached frame"])
def test_handler_equals_sam2_reference_path(client, frame_b, reference, encoder_runs, cached):
    """Issue 8 item 5: the uncropped mask equals SAM2ImagePredictor.predict's, on a cold and a warm frame."""
    if cached:
        client.mask({"image": encode_image(frame_b), "pos_points": [[20, 20]], "neg_points": []})
    else:
        client.model.clear_cache()
    before = encoder_runs()
    prompts = [
        {"pos_points": [[100, 75], [120, 60]], "neg_points": [[10, 140]], "obj_bbox": []},
        {"pos_points": [], "neg_points": [], "obj_bbox": [[30, 20], [170, 130]]},
        {"pos_points": [[90, 70]], "neg_points": [], "obj_bbox": [[30, 20], [170, 130]]},
    ]
    for prompt in prompts:
        mask = client.mask({"image": encode_image(frame_b), **prompt})
        pos, neg, box = clamped_prompt(prompt, 200, 150)
        np.testing.assert_array_equal(mask, reference_mask(reference, frame_b, pos, neg, box), err_msg=str(prompt))
    assert encoder_runs() - before == (0 if cached else 1)


@pytest.fixture
def encoder_runs(client):
    return lambda: client.model.stats["encoder_runs"]
