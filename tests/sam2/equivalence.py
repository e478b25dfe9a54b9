"""How tests/sam2 compares our SAM 2 functions with sam2's own predictors, and the record of the negative controls.

Tolerance: none. On the CPU our path and sam2's reference run the same sam2 code on the same tensors, in the same
order, so the results are bit-identical, and the tests ask for exactly that: the tracker's mask logits
(``np.testing.assert_array_equal``, 0.0 on every frame) and the interactor's masks (pixel for pixel). Why no
tolerance is needed was measured, not assumed: the one difference there was (the tracker normalised its frames in
float64, sam2 in float32) moved the logits by 3e-7, about 10 float32 ulps of the largest logit, and was removed.

Negative controls: each equivalence comparison is also run on a deliberately wrong path (a monkeypatch of the
function under test, never a change to files/) and must fail there. A control must also fail by a wide margin:
the tracker's by at least ``CONTROL_ULPS`` ulps of the largest reference logit, i.e. still caught if the exact
comparison ever had to become a tolerance of 100 times that measured rounding difference; the interactor's by at
least one pixel of the answer on every prompt it applies to. Each control records its margin; the terminal
summary of a run prints the table (docs/sam2.md, "Equivalence tests", has the measured one).

The interactor's comparison is on its answer, a 0/1 mask: SAM 2's logits thresholded at 0, so a defect that moves
no logit across 0 on the test frame would go unseen. Its controls therefore count changed answer pixels, and must
change at least one on every prompt they apply to (measured: 1194 px of 76800 at the least).

Mutants that are not defects (measured, and so not controls): a tracker window one or two frames smaller than
Track's (Track keeps two outputs more than sam2 reads: test_sam2_tracker.memory_window_one_frame_short), and a box
answered with the best of SAM 2's three masks instead of its single one (build_sam2 turns on the mask decoder's
``dynamic_multimask_via_stability``, sam2/modeling/sam/mask_decoder.py: an unstable single mask, as every one of
the random model's is, is replaced by the best of the three, so both give the same mask).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import numpy as np
import pytest

CONTROL_ULPS = 1000


@dataclass(frozen=True)
class Margin:
    control: str
    comparison: str
    control_difference: str  # the smallest difference the control makes (on what the comparison compares)
    our_difference: str  # the largest difference between our path and the reference, in the same units
    tolerance: str


MARGINS: list[Margin] = []


def max_abs_differences(ours: list[np.ndarray], theirs: list[np.ndarray]) -> list[float]:
    """Per item, the largest absolute difference (0.0 when bit-identical)."""
    assert len(ours) == len(theirs)
    return [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) for a, b in zip(ours, theirs, strict=True)]


def ulp(values: list[np.ndarray]) -> float:
    """The float32 spacing at the largest magnitude in ``values``: the size of one rounding step there."""
    return float(np.spacing(np.float32(max(float(np.max(np.abs(v))) for v in values))))


# ---------------------------------------------------------------- the interactor's controls
# Each takes (monkeypatch, the function's main module, its ModelHandler) and plants one defect in our path.


class _NumpyArgmaxIsArgmin:
    """numpy as model_handler sees it, except that argmax answers argmin."""

    argmax = staticmethod(np.argmin)

    def __getattr__(self, name: str):
        return getattr(np, name)


def multimask_by_the_worst_score(mp, function_main, handler) -> None:
    """Clicks only: ModelHandler.handle keeps the one of SAM 2's three masks with the best predicted IoU
    (``masks[np.argmax(scores)]``); planted: it keeps the worst (model_handler's numpy answers argmax with argmin)."""
    mp.setattr(sys.modules[type(handler).__module__], "np", _NumpyArgmaxIsArgmin())


def box_passed_unclamped(mp, function_main, handler) -> None:
    """A box past the frame's edges (CVAT sends it unclamped): main.fit_to_frame cuts it to the frame; planted: the
    box reaches SAM 2 as the request drew it (clicks are still clamped)."""
    original = function_main.fit_to_frame
    mp.setattr(function_main, "fit_to_frame",
               lambda prompt, *, width, height: dataclasses.replace(original(prompt, width=width, height=height), box=prompt.box))


def applies(control, pos, box, width: int, height: int) -> bool:
    """Whether ``control``'s defect is on the path of this prompt (``box`` as the request sent it: x1, y1, x2, y2)."""
    if control is multimask_by_the_worst_score:
        return box is None and len(pos) > 0
    if control is box_passed_unclamped:
        return box is not None and (min(box[0], box[1]) < 0 or box[2] > width or box[3] > height)
    raise ValueError(control)


INTERACTOR_CONTROLS = {f.__name__: f for f in (multimask_by_the_worst_score, box_passed_unclamped)}


def assert_interactor_control_fails(control: str, comparison: str, planted: np.ndarray, expected: np.ndarray,
                                    ours: np.ndarray) -> None:
    """The planted path's mask must differ from the reference's; the margin (pixels it changed, beside ours) is kept."""
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(planted, expected)
    MARGINS.append(Margin(control, comparison, f"{int((planted != expected).sum())} px of {expected.size}",
                          f"{int((ours != expected).sum())} px", "0 px (exact)"))
