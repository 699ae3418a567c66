"""The motion-alignment score (optical flow) on a pair made here: scikit-image's astronaut photo whose
right arm a piecewise-affine warp swings out from the shoulder (as the demo clip does), by the target's
angle, by nearly that angle (an edit that moves the arm the right way), the opposite way, or not at all."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.flow import FLOW_SIZE, FlowScorer, motion_alignment, optical_flow

PAD = 200  # room on the person's right (the image's left) for the arm to swing into
# the photo's keypoints as the project's pose model reads them (COCO order, nose .. right wrist)
ASTRONAUT = np.array(
    [[220.9, 121.0], [244.9, 101.9], [204.2, 96.8], [273.6, 120.4], [178.0, 107.0], [311.7, 249.6],
     [104.0, 243.1], [344.7, 412.8], [60.4, 426.1], [321.1, 454.6], [137.9, 497.5]]
)  # fmt: skip
PERSON_BOX = [11.5, 18.4, 360.0, 511.2]
SCALE = 0.25  # made at a quarter of the photo's size: 178 x 128, a training crop's scale


def _rotate(points: np.ndarray, center: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - center) @ r.T + center


@pytest.fixture(scope="module")
def arm():
    """frame(degrees): the photo with its right arm swung out by that angle about the shoulder."""
    from skimage import data
    from skimage.transform import PiecewiseAffineTransform, warp

    photo = cv2.copyMakeBorder(data.astronaut(), 0, 0, PAD, 0, cv2.BORDER_REPLICATE)
    canvas = cv2.resize(photo, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
    k = (ASTRONAUT + [PAD, 0]) * SCALE
    shoulder, elbow, wrist = k[6], k[8], k[10]
    axis = np.concatenate([np.linspace(shoulder, elbow, 5)[1:], np.linspace(elbow, wrist, 4)[1:]])
    limb = []
    for i, p in enumerate(axis):
        along = axis[min(i + 1, len(axis) - 1)] - axis[max(i - 1, 0)]
        normal = np.array([-along[1], along[0]]) / np.linalg.norm(along)
        limb += [p, p + 35 * SCALE * normal, p - 35 * SCALE * normal]
    limb = np.asarray(limb)
    h, w = canvas.shape[:2]
    border = [[x, y] for x in np.linspace(0, w - 1, 7) for y in (0, h - 1)]
    border += [[x, y] for x in (0, w - 1) for y in np.linspace(0, h - 1, 6)]
    fixed = np.concatenate([np.array(border), k[[0, 1, 2, 3, 4, 5, 6, 7, 9]]])

    def frame(degrees: float) -> np.ndarray:
        if degrees == 0:
            return canvas.copy()
        moved = _rotate(limb, shoulder, degrees)
        t = PiecewiseAffineTransform.from_estimate(np.concatenate([moved, fixed]), np.concatenate([limb, fixed]))
        return warp(canvas, t, output_shape=canvas.shape, mode="edge", preserve_range=True).astype(np.uint8)

    box = [(PERSON_BOX[0] + PAD) * SCALE, PERSON_BOX[1] * SCALE, (PERSON_BOX[2] + PAD) * SCALE, PERSON_BOX[3] * SCALE]
    return frame, box


def test_an_arm_moved_the_right_way_scores_above_the_wrong_way_and_both_above_no_edit(arm):
    frame, box = arm
    before, after = frame(0), frame(40)
    assert before.shape[:2] == (128, 178) and np.abs(before.astype(int) - after).mean() > 2
    score = FlowScorer(before, after, [box])
    right, nearly, wrong, none, oracle = (score(frame(d)) for d in (35, 20, -40, 0, 40))
    assert oracle == {"mas": 1.0, "flow_cosine": 1.0}  # the real after-frame, measured like an edit
    assert none["mas"] == 0.0 and none["flow_cosine"] == 0.0  # no edit: no flow at all
    assert right["mas"] > nearly["mas"] > wrong["mas"] > none["mas"], (right, nearly, wrong)
    assert right["mas"] > 0.75 and wrong["mas"] < 0.4
    assert right["flow_cosine"] > 0.8 and wrong["flow_cosine"] < -0.5  # the arm's pixels went the other way


def test_motion_outside_the_person_box_and_a_still_target_do_not_count(arm):
    frame, box = arm
    before = frame(0)
    still = FlowScorer(before, before.copy(), [box])
    assert still(frame(40)) == {"mas": None, "flow_cosine": None}  # nothing to align with
    # the arm moves in a box that holds none of it (the top-right corner): nothing moves there
    h, w = before.shape[:2]
    corner = FlowScorer(before, frame(40), [[0.8 * w, 0, w, 0.2 * h]])
    assert corner(frame(35)) == {"mas": None, "flow_cosine": None}


def test_flow_runs_at_the_working_size_whatever_the_crop():
    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), (0, 0), 3)
    b = np.roll(a, 4, axis=1)  # everything 4 px right: 1 px at the working size
    f = optical_flow(a, b)
    assert f.shape == (FLOW_SIZE, FLOW_SIZE, 2)
    assert np.median(f[..., 0]) == pytest.approx(4 * FLOW_SIZE / 512, abs=0.15)
    region = np.ones(f.shape[:2], bool)
    assert motion_alignment(f, f, region)["mas"] == 1.0
    assert motion_alignment(-f, f, region)["flow_cosine"] == pytest.approx(-1.0)
