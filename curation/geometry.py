"""Keypoint geometry of one COCO-17 pose: joints, their centres, the body's root and its size.

The one home of the torso length (shoulder centre to hip centre) and of the body's root (hip centre),
used by the motion figures (stages/figures.py), the body-in-view checks (stages/body.py), the camera's
body figure (stages/camera.py), the caption body frame (captions/body.py, read by captions/offline.py
and captions/agreement.py) and the training metrics (training/metrics.py).

`k` is a (17, 3) array of (x, y, confidence) rows; arithmetic keeps its dtype. The callers differ in
two ways, both kept as parameters:

  min_conf   None: every joint as the model placed it (the stages choose hips or shoulders themselves);
             a number: a joint counts only when its confidence reaches it and it has a location, and a
             centre or a torso without all of its joints is None (captions, training metrics)
  use_hips   True: hip centre and torso length; False: shoulder centre and shoulder width (upper-body
             footage); None: the hips where they are seen, else the shoulders
"""

from __future__ import annotations

import math

import numpy as np

from schemas.records import KP, Pose17

SHOULDERS = ("left_shoulder", "right_shoulder")
HIPS = ("left_hip", "right_hip")


def keypoints(pose: Pose17) -> np.ndarray:
    """A pose's keypoints as a (17, 3) float64 array."""
    return np.asarray(pose.keypoints, dtype=np.float64)


def seen(k: np.ndarray, name: str, min_conf: float) -> bool:
    """The joint's confidence reaches min_conf and it has a location."""
    x, y, c = k[KP[name]]
    return bool(c >= min_conf and math.isfinite(x) and math.isfinite(y))


def joint(k: np.ndarray, name: str, min_conf: float | None = None) -> np.ndarray | None:
    """A joint's (x, y), a copy; with min_conf, None when it is not seen."""
    if min_conf is not None and not seen(k, name, min_conf):
        return None
    return np.array(k[KP[name], :2])


def centre(k: np.ndarray, a: str, b: str, min_conf: float | None = None) -> np.ndarray | None:
    """The midpoint of two joints; with min_conf, None unless both are seen."""
    pa, pb = joint(k, a, min_conf), joint(k, b, min_conf)
    if pa is None or pb is None:
        return None
    return (pa + pb) / 2


def shoulder_centre(k: np.ndarray, min_conf: float | None = None) -> np.ndarray | None:
    return centre(k, *SHOULDERS, min_conf)


def hip_centre(k: np.ndarray, min_conf: float | None = None) -> np.ndarray | None:
    return centre(k, *HIPS, min_conf)


def shoulder_width(k: np.ndarray, min_conf: float | None = None) -> float | None:
    ls, rs = joint(k, SHOULDERS[0], min_conf), joint(k, SHOULDERS[1], min_conf)
    if ls is None or rs is None:
        return None
    return float(np.linalg.norm(ls - rs))


def torso_length(k: np.ndarray, min_conf: float | None = None, min_length: float | None = None) -> float | None:
    """Shoulder centre to hip centre, in k's units. With min_conf: None unless all four joints are seen.
    With min_length: None unless the length exceeds it. Without either (the stages' use) always a float,
    NaN where a joint has no location."""
    s, h = shoulder_centre(k, min_conf), hip_centre(k, min_conf)
    if s is None or h is None:
        return None
    t = float(np.linalg.norm(s - h))
    if min_length is not None and not t > min_length:
        return None
    return t


def root_and_torso(
    k: np.ndarray, use_hips: bool | None = True, min_conf: float | None = None
) -> tuple[np.ndarray | None, float]:
    """The body's root and size: hip centre and torso length; without hips (use_hips False, or None with
    the hips not seen), shoulder centre and shoulder width. (None, NaN) when the shoulders (or, with
    use_hips True, the hips) are not seen under min_conf."""
    shoulders = shoulder_centre(k, min_conf)
    hips = hip_centre(k, min_conf) if use_hips is not False else None
    if shoulders is not None and hips is not None:
        return hips, float(np.linalg.norm(shoulders - hips))
    if shoulders is not None and not use_hips:
        return shoulders, shoulder_width(k, min_conf)
    return None, math.nan
