"""A limb the pose model placed over something that hides it: what the other frame of the pair shows there.

The pose model places a leg behind a barrier, a counter or a rail where a leg would be, with fair
confidence, and the detector's box runs on to the feet seen below it, so neither the box nor the leg's
length (stages/body.py) shows that the thighs are hidden. The pair's other frame does: once the person
has moved on, it shows what stands at that spot. Where a limb is drawn over pixels that look as the
other frame's do there (the same textured thing, unchanged once the camera is taken out), the frame
does not show the limb; the keypoints were guessed through whatever is in front of it.

A limb of the background's own shade (a white sleeve on a white wall) also matches the other frame,
so only a spot with texture in the other frame (HIDDEN_TEXTURE) whose pixels correlate with this
frame's (HIDDEN_MATCH) is judged: a barrier's edges, a shelf, a floor's pattern. Pure functions over
frames and detections.
"""

from __future__ import annotations

import cv2
import numpy as np

from schemas.records import KP, Pose17

from .. import geometry
from .silhouette import body_shapes

HIDDEN_LEVEL = 20.0  # gray levels (after a 5x5 blur): a pixel this close to the other frame's is unchanged
HIDDEN_TEXTURE = 5.0  # the other frame's gray-level spread under a limb for the spot to say anything
HIDDEN_MATCH = 0.8  # correlation of the two frames' pixels there: the same thing seen, not a limb over it
BAND = (0.2, 0.8, 0.2)  # a limb's band: from 0.2 to 0.8 of its length, 0.2 torso lengths wide
SIDES = ("left", "right")
ARMS = tuple((f"{s}_{a}", f"{s}_{b}") for s in SIDES for a, b in (("shoulder", "elbow"), ("elbow", "wrist")))
LEGS = tuple((f"{s}_{a}", f"{s}_{b}") for s in SIDES for a, b in (("hip", "knee"), ("knee", "ankle")))


def _band(shape: tuple[int, int], p: np.ndarray, q: np.ndarray, torso: float) -> np.ndarray:
    """The limb p -> q's band (BAND: its middle, so many torso lengths wide; square ends), bool."""
    start, end, width = BAND
    d = q - p
    n = np.array([-d[1], d[0]]) / max(float(np.linalg.norm(d)), 1e-6) * max(1.5, width * torso / 2)
    a, b = p + start * d, p + end * d
    band = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(band, np.round([a - n, b - n, b + n, a + n]).astype(np.int32), 255)
    return band > 0


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY), (5, 5), 0)


def hidden_limb(
    a: np.ndarray, b: np.ndarray, pose_a: Pose17, pose_b: Pose17, to_b: np.ndarray, kp_conf: float, legs: bool = True
) -> float | None:
    """The largest share of a limb's band, in either frame, that shows what the other frame shows there:
    unchanged pixels (the background's median exposure change taken out) where the other frame's body
    figure is not, counted where that frame has texture there and the two correlate (else 0: the limb
    is seen over it). Limbs: the upper arms and forearms, and with `legs` the thighs and shins, each
    with both joints at kp_conf and at least half its band (20 px or more) off the other frame's body.
    a, b: RGB frames; to_b: a -> b in their pixels (the camera taken out). None when no limb could be
    judged (the person stayed where he was)."""
    h, w = b.shape[:2]
    ga = cv2.warpAffine(_gray(a), to_b, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)
    valid = cv2.warpAffine(np.full(a.shape[:2], 255, np.uint8), to_b, (w, h), flags=cv2.INTER_NEAREST) == 255
    gb = _gray(b).astype(np.float32)
    # the bodies alone (not the hands' disks for what they hold), grown by 2 px
    kernel = np.ones((5, 5), np.uint8)
    figure_a = body_shapes((h, w), [pose_a], [], to_b, 1.0, held=False)[0] == 0
    figure_b = body_shapes((h, w), [], [pose_b], np.eye(2, 3), 1.0, held=False)[0] == 0
    figure_a, figure_b = (cv2.dilate(f.astype(np.uint8), kernel) > 0 for f in (figure_a, figure_b))
    off = valid & ~figure_a & ~figure_b
    shift = float(np.median(ga[off] - gb[off])) if off.any() else 0.0  # an exposure change
    same = np.abs(ga - gb - shift) < HIDDEN_LEVEL
    k_a = np.asarray(pose_a.keypoints, np.float64).copy()
    k_a[:, :2] = k_a[:, :2] @ to_b[:, :2].T + to_b[:, 2]
    k_b = np.asarray(pose_b.keypoints, np.float64)
    worst = None
    for k, own, other, other_figure in ((k_a, ga, gb, figure_b), (k_b, gb, ga, figure_a)):
        torso = geometry.torso_length(k)
        if not (np.isfinite(torso) and torso > 2):
            continue
        for i, j in ARMS + (LEGS if legs else ()):
            p, q = k[KP[i]], k[KP[j]]
            if not (p[2] >= kp_conf and q[2] >= kp_conf) or not np.isfinite(k[[KP[i], KP[j]], :2]).all():
                continue  # (a NaN confidence is not shown either)
            band = _band((h, w), p[:2], q[:2], torso) & valid
            free = band & ~other_figure
            if free.sum() < max(20, 0.5 * band.sum()):
                continue
            seen, there = own[free], other[free]
            share = 0.0
            if there.std() >= HIDDEN_TEXTURE and seen.std() > 1e-3:
                if float(np.corrcoef(seen, there)[0, 1]) >= HIDDEN_MATCH:
                    share = float(same[free].mean())
            worst = share if worst is None else max(worst, share)
    return worst
