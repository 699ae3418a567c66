"""Synthetic COCO-17 poses for unit tests of the pure motion and caption logic."""

from __future__ import annotations

import numpy as np

from schemas.records import KP, Pose17

# a standing person facing the camera (their left on the image's right), torso 100 px, y down
STANDING = {
    "nose": (200, 100),
    "left_eye": (210, 90),
    "right_eye": (190, 90),
    "left_ear": (220, 95),
    "right_ear": (180, 95),
    "left_shoulder": (240, 150),
    "right_shoulder": (160, 150),
    "left_elbow": (250, 210),
    "right_elbow": (150, 210),
    "left_wrist": (255, 265),
    "right_wrist": (145, 265),
    "left_hip": (225, 250),
    "right_hip": (175, 250),
    "left_knee": (228, 330),
    "right_knee": (172, 330),
    "left_ankle": (230, 410),
    "right_ankle": (170, 410),
}


def make_pose(
    moves: dict[str, tuple[float, float]] | None = None,
    shift=(0.0, 0.0),
    scale=1.0,
    conf=0.9,
    score=0.9,
    low: tuple[str, ...] = (),
) -> Pose17:
    pts = dict(STANDING)
    for k, v in (moves or {}).items():
        pts[k] = v
    kps = []
    for name in sorted(KP, key=KP.get):
        x, y = pts[name]
        kps.append([x * scale + shift[0], y * scale + shift[1], 0.1 if name in low else conf])
    xs = np.array([k[0] for k in kps])
    ys = np.array([k[1] for k in kps])
    return Pose17(
        keypoints=kps,
        frame_width=640,
        frame_height=480,
        box=[float(xs.min() - 10), float(ys.min() - 20), float(xs.max() + 10), float(ys.max() + 10)],
        score=score,
    )


RIGHT_ARM_UP = {"right_elbow": (150, 100), "right_wrist": (145, 45)}  # wrist above the head
KNEES_BENT = {"left_knee": (250, 310), "right_knee": (150, 310), "left_ankle": (230, 380), "right_ankle": (170, 380)}
