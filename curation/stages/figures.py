"""The motion figures of two poses of one person: how far the limbs moved against the body's root and
size, whether the motion is enough for a pair, whether two detections are the same person; and how alike
two frames' scenes are. Pure functions; the body's root and torso are curation/geometry.py's."""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from schemas.records import COCO17_FLIP, KP, Pose17

from .. import geometry
from ..config import MotionConfig
from . import quality

FACE = [KP["nose"], KP["left_eye"], KP["right_eye"]]
EARS = [KP["left_ear"], KP["right_ear"]]


def mirrored(pose: Pose17) -> Pose17:
    """The same keypoints with their left and right labels swapped."""
    k = np.asarray(pose.keypoints, np.float64)[list(COCO17_FLIP)]
    return pose.model_copy(update={"keypoints": k.tolist()})


def labels_flipped(a: Pose17, b: Pose17, kp_conf: float, min_separation: float, face_conf: float) -> bool:
    """The left/right labels say the body faces the other way in b than in a, and nothing shows a turn:
    a turn from front to back hides the face (nose and eyes under face_conf, mean confidence) in one
    frame while the back of the head is seen there (an ear at kp_conf). A face seen in both frames, or
    a head not seen at all (in the dark, cut by the border), leaves the detector's flipped labels (as
    it flips them for a body seen in the dark or with the head cut off): the pose did not turn."""
    fa, fb = (quality.facing(p, kp_conf, min_separation) for p in (a, b))
    if fa is None or fb is None or fa == fb:
        return False
    for p in (a, b):
        k = np.asarray(p.keypoints, np.float64)
        if float(np.mean(k[FACE, 2])) < face_conf and float(k[EARS, 2].max()) >= kp_conf:
            return False  # the face turned away, the back of the head is there: a turn
    return True


def _hips_visible(min_conf: float, *poses: Pose17) -> bool:
    return all(p.visible("left_hip", min_conf) and p.visible("right_hip", min_conf) for p in poses)


def root_and_torso(pose: Pose17, use_hips: bool = True) -> tuple[np.ndarray, float]:
    """Body root and size in pixels (curation/geometry.py, every joint as placed): hip centre and torso
    length; without hips (upper-body footage), shoulder centre and shoulder width."""
    return geometry.root_and_torso(geometry.keypoints(pose), use_hips)


# the joints whose motion makes an edit; face and torso points barely move relative to the hips and
# would only dilute the mean
LIMB_MASK = np.zeros(17, bool)
LIMB_MASK[[KP[f"{s}_{j}"] for s in ("left", "right") for j in ("elbow", "wrist", "knee", "ankle")]] = True


class PoseChange(NamedTuple):
    """How far two poses of one person differ, against the body's root, in torso lengths."""

    mean: float  # mean root-relative displacement of the limb joints seen in both
    max_joint: float  # the largest of any joint seen in both
    translation: float  # the root's own movement
    torso_px: float  # torso length of the first pose, pixels
    compared: int  # keypoints seen in both
    limb: float  # the largest limb joint's displacement


def pose_change(a: Pose17, b: Pose17, cfg: MotionConfig) -> PoseChange:
    """Root-relative displacement (mean over visible limb joints, max over all visible joints), root
    translation (all / torso length), torso length of `a` in pixels, the number of keypoints compared,
    and the largest limb joint's displacement."""
    hips = _hips_visible(cfg.keypoint_conf, a, b)
    ra, ta = root_and_torso(a, hips)
    rb, tb = root_and_torso(b, hips)
    torso = (ta + tb) / 2
    if not (torso > 1e-6 and math.isfinite(torso)):
        return PoseChange(0.0, 0.0, 0.0, ta, 0, 0.0)
    ka = np.asarray(a.keypoints, dtype=np.float64)
    kb = np.asarray(b.keypoints, dtype=np.float64)
    both = (ka[:, 2] >= cfg.keypoint_conf) & (kb[:, 2] >= cfg.keypoint_conf)
    both &= np.isfinite(ka[:, :2]).all(1) & np.isfinite(kb[:, :2]).all(1)
    if not both.any():
        return PoseChange(0.0, 0.0, float(np.linalg.norm(rb - ra) / torso), ta, 0, 0.0)
    d = np.linalg.norm((kb[:, :2] - rb) - (ka[:, :2] - ra), axis=1) / torso
    limbs = both & LIMB_MASK
    mean = float(d[limbs].mean()) if limbs.any() else 0.0
    limb = float(d[limbs].max()) if limbs.any() else 0.0
    return PoseChange(mean, float(d[both].max()), float(np.linalg.norm(rb - ra) / torso), ta, int(both.sum()), limb)


def moves(mean: float, limb: float | None, cfg: MotionConfig) -> bool:
    """Enough pose change for a pair: the limbs' mean motion, or one limb's (an arm-only edit)."""
    return mean >= cfg.min_pose_change or (
        cfg.min_limb_change > 0 and limb is not None and math.isfinite(limb) and limb >= cfg.min_limb_change
    )


def same_person(a: Pose17, b: Pose17, cfg: MotionConfig) -> bool:
    """The body centre stays within max_track_jump sizes and the size within max_size_ratio. A body's
    size is the larger of its torso length and its shoulder width (with both shoulders seen in both
    frames): a torso bent toward the camera (a push-up filmed head-on) shortens in the picture while
    the shoulders keep their width. Frames without both hips (a partial body) compare shoulder centres
    and widths."""
    hips = _hips_visible(cfg.keypoint_conf, a, b)
    shoulders = all(p.visible(s, cfg.keypoint_conf) for p in (a, b) for s in ("left_shoulder", "right_shoulder"))
    if not hips and not shoulders:
        return True  # nothing to compare by: no evidence of a switch
    ra, ta = root_and_torso(a, hips)
    rb, tb = root_and_torso(b, hips)
    if not hips:  # shoulder widths vary with turning: allow for it
        ta, tb = max(ta, tb), max(ta, tb)
    elif shoulders:
        ta = max(ta, geometry.shoulder_width(geometry.keypoints(a)) or 0.0)
        tb = max(tb, geometry.shoulder_width(geometry.keypoints(b)) or 0.0)
    if min(ta, tb) <= 1e-6:
        return False
    if max(ta, tb) / min(ta, tb) > cfg.max_size_ratio:
        return False
    return float(np.linalg.norm(rb - ra)) / ((ta + tb) / 2) <= cfg.max_track_jump


def scene_hist(img: np.ndarray) -> np.ndarray:
    """A frame's normalised hue-saturation histogram (what scene_similarity compares)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1], None, [32, 32], [0, 180, 0, 256])
    return cv2.normalize(h, h).flatten()


def hist_similarity(ha: np.ndarray, hb: np.ndarray) -> float:
    return float(cv2.compareHist(ha, hb, cv2.HISTCMP_CORREL))


def scene_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of hue-saturation histograms: near 1 within a shot, low across a cut."""
    return hist_similarity(scene_hist(a), scene_hist(b))


# a frame inside a dissolve is a mix of the shots on either side: at least this share of its difference
# from the nearer neighbour must be the other neighbour's picture
BLEND_EXPLAINED = 0.6
BLEND_LEVEL = 12.0  # gray levels (frames at most 320 px) where the two neighbours count as different


def blend_share(ga: np.ndarray, gx: np.ndarray, gb: np.ndarray, scale: float, people: list[Pose17]) -> float:
    """The share (0 to 0.5) of the farther neighbour's picture in frame x, from a least-squares fit
    x = a * prev + (1 - a) * next over the background (every person's box left out) where the two
    neighbours differ; 0 when the fit explains under BLEND_EXPLAINED of what tells x from the nearer
    one (motion, not a mix). ga, gx, gb: the three frames as quality.small_gray gives them (`scale`:
    small / decoded pixels); 0 for frames of different sizes. Within one shot the middle of smooth
    motion fits a mix too: call it only where the neighbours are two shots (a dissolve from a title
    card leaves a 10 % ghost of it)."""
    if not ga.shape == gx.shape == gb.shape:
        return 0.0
    mask = quality.background_mask(gx.shape, people, scale) > 0
    d = ga.astype(np.float32)[mask] - gb.astype(np.float32)[mask]
    x = gx.astype(np.float32)[mask] - gb.astype(np.float32)[mask]
    use = np.abs(d) > BLEND_LEVEL
    if use.sum() < max(16, 0.01 * mask.size):
        return 0.0
    d, x = d[use], x[use]
    dd = float(np.dot(d, d))
    a = float(np.dot(x, d)) / dd
    rest = float(np.dot(x - a * d, x - a * d)) / dd  # what the mix leaves unexplained
    mix = min(a, 1.0 - a)
    if mix <= 0:
        return 0.0
    return mix if mix * mix / (mix * mix + rest) >= BLEND_EXPLAINED else 0.0
