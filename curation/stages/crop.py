"""Person-centred pairs: one crop box for both frames of a pair.

The box is the union of the person's boxes in the two frames, padded, widened or heightened to the
output aspect, and moved (never shrunk below the union) to lie inside the area both frames cover (the
content inside letterbox bars; the common area of a stabilised pair). Both frames are cut with the
same box, so the background stays where it was and only the person's pose differs; keypoints and
boxes are re-expressed in the crop's pixels. The decoded frame's size and the box are kept on the
sample, so a reader can map everything back.
"""

from __future__ import annotations

import math

import numpy as np

from schemas.records import Pose17

Box = tuple[int, int, int, int]


def union(*boxes: list[float]) -> tuple[float, float, float, float]:
    b = np.asarray(boxes, float)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def person_box(boxes: list[list[float]], bounds: Box, pad: float, aspect: float) -> Box:
    """The crop box (x1, y1, x2, y2, integer pixels) around `boxes` inside `bounds`: padded by `pad`
    of the union's larger side on every side, at width / height = `aspect` where the bounds allow
    (where they do not, the crop keeps the person whole and its aspect gives way)."""
    bx1, by1, bx2, by2 = bounds
    x1, y1, x2, y2 = union(*boxes)
    side = max(x2 - x1, y2 - y1)
    x1, y1, x2, y2 = x1 - pad * side, y1 - pad * side, x2 + pad * side, y2 + pad * side
    w, h = x2 - x1, y2 - y1
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    # fit the bounds: a side longer than the bounds is cut to them and the aspect gives way (the
    # person is never cut to keep an aspect: a tall person in a portrait video gets a portrait crop)
    w, h = min(w, bx2 - bx1), min(h, by2 - by1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    nx1 = min(max(cx - w / 2, bx1), bx2 - w)
    ny1 = min(max(cy - h / 2, by1), by2 - h)
    return (
        int(math.floor(max(bx1, nx1))),
        int(math.floor(max(by1, ny1))),
        int(math.ceil(min(bx2, nx1 + w))),
        int(math.ceil(min(by2, ny1 + h))),
    )


def cut(frame: np.ndarray, box: Box) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.ascontiguousarray(frame[y1:y2, x1:x2])


def _moved(pose: Pose17, dx: float, dy: float, width: int, height: int) -> Pose17:
    b = pose.box
    return pose.model_copy(
        update={
            "keypoints": [[x + dx, y + dy, c] for x, y, c in pose.keypoints],
            "box": [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy],
            "frame_width": int(width),
            "frame_height": int(height),
        }
    )


def shift_pose(pose: Pose17, box: Box) -> Pose17:
    """The pose in the crop's pixels."""
    x1, y1, x2, y2 = box
    return _moved(pose, -x1, -y1, x2 - x1, y2 - y1)


def unshift_pose(pose: Pose17, box: Box, width: int, height: int) -> Pose17:
    """A pose found in the crop `box`, in the pixels of the frame (width x height) it was cut from:
    shift_pose undone."""
    return _moved(pose, box[0], box[1], width, height)
