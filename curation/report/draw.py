"""Pictures of pairs: before | after with the person's skeleton and box drawn (OpenCV)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from schemas.records import KP, Pose17

# COCO-17 limbs; left side drawn in one colour, right in another, so a swapped side is visible
LIMBS = [
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
    ("right_shoulder", "right_hip"),
    ("left_shoulder", "right_shoulder"),
    ("left_hip", "right_hip"),
    ("nose", "left_eye"),
    ("nose", "right_eye"),
]
LEFT = (255, 140, 0)  # RGB: orange
RIGHT = (0, 160, 255)  # RGB: blue
MIDDLE = (240, 240, 240)
BOX = (60, 220, 60)


def _colour(a: str, b: str) -> tuple[int, int, int]:
    if a.startswith("left") and b.startswith("left"):
        return LEFT
    if a.startswith("right") and b.startswith("right"):
        return RIGHT
    return MIDDLE


def draw_pose(image: np.ndarray, pose: Pose17 | None, min_conf: float = 0.5, scale: float = 1.0) -> np.ndarray:
    """A copy of an RGB image with the pose's box, limbs and keypoints (joints under min_conf left out)."""
    out = np.ascontiguousarray(image.copy())
    if pose is None:
        return out
    thick = max(1, round(2 * scale))
    x1, y1, x2, y2 = (v * scale for v in pose.box)
    cv2.rectangle(out, (round(x1), round(y1)), (round(x2), round(y2)), BOX, thick)

    def pt(name: str) -> tuple[int, int] | None:
        x, y, c = pose.keypoints[KP[name]]
        if c < min_conf or not (math.isfinite(x) and math.isfinite(y)):
            return None
        return round(x * scale), round(y * scale)

    for a, b in LIMBS:
        pa, pb = pt(a), pt(b)
        if pa and pb:
            cv2.line(out, pa, pb, _colour(a, b), thick, cv2.LINE_AA)
    for name in KP:
        p = pt(name)
        if p:
            colour = LEFT if name.startswith("left") else RIGHT if name.startswith("right") else MIDDLE
            cv2.circle(out, p, thick + 1, colour, -1, cv2.LINE_AA)
    return out


def side_by_side(
    before: np.ndarray,
    after: np.ndarray,
    before_pose: Pose17 | None,
    after_pose: Pose17 | None,
    height: int = 256,
    min_conf: float = 0.5,
) -> np.ndarray:
    """before | after, each scaled to `height` pixels high, skeletons drawn at that size."""
    tiles = []
    for img, pose in ((before, before_pose), (after, after_pose)):
        s = height / img.shape[0]
        small = cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=cv2.INTER_AREA)
        tiles.append(draw_pose(small, pose, min_conf, s))
    gap = np.full((height, 4, 3), 255, np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1]], axis=1)
