"""Motion alignment from optical flow (after MotionEdit's motion-alignment score, MAS): does the edit move
the person's pixels the way the real motion moved them?

Two dense flows from the unedited input: to the edit (`Vp`) and to the real after-frame (`Vg`), OpenCV's
DIS (medium preset) on grey images at a working size of FLOW_SIZE px on the short side (classical flow
follows displacements up to a few tens of pixels there; an evaluation crop is scaled down to it, never up),
in units of the image diagonal. Inside the person's box (both poses' boxes, padded):
  flow_cosine   the mean cosine between Vp and Vg over the pixels that really move (|Vg| > 1 working px),
                weighted by |Vg|; a pixel the edit leaves still counts 0. 1: every moving pixel went the
                right way, -1: every one the opposite way
  magnitude     sum | |Vp| - |Vg| | / sum |Vg| over the box, capped at 1: motion missing where the person
                moved, or added where they did not
  mas           1 - ((1 - flow_cosine) / 2 + magnitude) / 2, in [0, 1]; an edit whose mean motion in the
                box is under a tenth of the real one moves nothing and scores 0 (the no-edit baseline does)
A target that moves no pixel of the box by a working pixel gives None: there is no motion to align with.
Pure functions (numpy in, floats out). DIS is deterministic and finds no flow between identical images,
so the oracle (the after-frame itself) scores 1 and the no-edit baseline 0, measured like any edit.

Classical flow is a coarse reading of large limb motion: it underestimates displacements longer than a
limb is wide, so MAS ranks edits (right way > wrong way > none) more reliably than it measures them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

FLOW_SIZE = 128  # working short side, px
MOVING_PX = 1.0  # a pixel "really moves" when the target's flow there exceeds this many working px
STILL = 0.1  # an edit whose mean motion in the box is below this share of the target's moves nothing


def working_size(h: int, w: int, size: int = FLOW_SIZE) -> tuple[int, int]:
    s = min(1.0, size / min(h, w))
    return max(8, round(h * s)), max(8, round(w * s))


def _grey(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    g = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    return g if g.shape == hw else cv2.resize(g, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def optical_flow(a: np.ndarray, b: np.ndarray, size: int = FLOW_SIZE) -> np.ndarray:
    """Dense flow from H x W x 3 uint8 `a` to `b` at the working size: (h, w, 2) in working pixels."""
    hw = working_size(*a.shape[:2], size)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_grey(a, hw), _grey(b, hw), None)


def box_region(shape: tuple[int, int], boxes: list[list[float]], image_hw: tuple[int, int], pad: float = 0.1):
    """Boolean (h, w) mask at the working `shape`: the union of the (padded) person boxes, given in the
    pixels of an image of `image_hw`. No usable box: the whole image."""
    h, w = shape
    sy, sx = h / image_hw[0], w / image_hw[1]
    mask = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
            continue
        px, py = pad * (x2 - x1), pad * (y2 - y1)
        top, bottom = max(0, int((y1 - py) * sy)), min(h, math.ceil((y2 + py) * sy))
        left, right = max(0, int((x1 - px) * sx)), min(w, math.ceil((x2 + px) * sx))
        mask[top:bottom, left:right] = True
    return mask if mask.any() else np.ones((h, w), bool)


def motion_alignment(pred_flow: np.ndarray, target_flow: np.ndarray, region: np.ndarray) -> dict[str, float | None]:
    """{"mas", "flow_cosine"} of an edit's flow against the real motion's over `region` (see the module)."""
    none = {"mas": None, "flow_cosine": None}
    diag = math.hypot(*target_flow.shape[:2])
    vp, vg = pred_flow[region] / diag, target_flow[region] / diag
    mp, mg = np.linalg.norm(vp, axis=1), np.linalg.norm(vg, axis=1)
    moving = mg * diag > MOVING_PX
    if not moving.any():
        return none
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(mp > 1e-9, (vp * vg).sum(1) / (mp * mg), 0.0)
    cosine = float((mg[moving] * cos[moving]).sum() / mg[moving].sum())
    if mp.mean() < STILL * mg.mean():
        return {"mas": 0.0, "flow_cosine": cosine}
    magnitude = min(1.0, float(np.abs(mp - mg).sum() / mg.sum()))
    mas = 1.0 - ((1.0 - cosine) / 2.0 + magnitude) / 2.0
    return {"mas": float(np.clip(mas, 0.0, 1.0)), "flow_cosine": cosine}


class FlowScorer:
    """The flow from a case's input to its real after-frame, computed once; each image scored against it."""

    def __init__(self, before: np.ndarray, after: np.ndarray, boxes: list[list[float]], size: int = FLOW_SIZE):
        self.before, self.size = before, size
        self.target = optical_flow(before, after, size)
        self.region = box_region(self.target.shape[:2], boxes, before.shape[:2])

    def __call__(self, image: np.ndarray) -> dict[str, float | None]:
        return motion_alignment(optical_flow(self.before, image, self.size), self.target, self.region)
