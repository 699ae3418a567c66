"""Whole body, shown not guessed: evidence that a joint is in view beyond its confidence.

The pose model places all 17 keypoints for a partial person (legs behind a counter, cut by the frame's
edge, outside a pillarbox) and often with fair confidence. A joint counts as shown only when, besides
its confidence:

  - it lies inside the picture's content (letterbox and pillarbox bars are not picture), away from its
    border;
  - it lies inside the detector's box of the person (padded): the box follows what the detector saw,
    the keypoints beyond it are extrapolated;
  - for the legs: hip -> knee -> ankle spans a length a leg has against the torso (a leg squeezed into
    the box above an occluder is short), measured along the limb, so any orientation (upside down,
    sideways) is judged alike, but for a body lying in the picture (tilt), whose legs, farther from a
    camera in front of it, look shorter: it has its own limit (leg_limit);
  - for the feet (foot_room): the detector's box runs on past each ankle, along its shin or below it,
    where a foot in view is (a box that stops at the ankle saw no foot: a barbell plate over the feet).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from schemas.records import KP, Pose17

from .. import geometry

Box = tuple[int, int, int, int]

HEAD = [KP[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
LEGS = (("left_hip", "left_knee", "left_ankle"), ("right_hip", "right_knee", "right_ankle"))


def content_box(frames: list[np.ndarray], dark: float = 24.0, max_bar: float = 0.35, framed: bool = True) -> Box:
    """The picture inside black letterbox/pillarbox bars, over up to 8 frames of one clip: a border row
    or column belongs to a bar when it is dark in every frame looked at; and (`framed`) inside bands of
    any other shade that frame it (framed_picture)."""
    return picture_boxes(frames, dark, max_bar)[1 if framed else 0]


def picture_boxes(frames: list[np.ndarray], dark: float = 24.0, max_bar: float = 0.35) -> tuple[Box, Box]:
    """(inside the dark bars, inside any bands as well): content_box both ways, the frames (RGB, 3
    channels, or gray; decoded frames are uint8) read once."""
    h, w = frames[0].shape[:2]
    pick = [frames[k] for k in np.linspace(0, len(frames) - 1, min(8, len(frames))).round().astype(int)]
    # the brightest channel (np.maximum: many times faster than a max over the last axis of size 3)
    gray = np.stack([np.maximum(np.maximum(f[..., 0], f[..., 1]), f[..., 2]) if f.ndim == 3 else f for f in pick])

    def brightest(line: np.ndarray) -> float:  # a row or column's 98th percentile, the brightest over frames
        return float(np.percentile(line.astype(np.float32), 98, axis=1).max())

    def bar(line, limit: int) -> tuple[int, int]:  # lines are read from each border in while dark, no further
        lo = 0
        while lo < limit and brightest(line(lo)) < dark:
            lo += 1
        hi = 0
        while hi < limit and brightest(line(-1 - hi)) < dark:
            hi += 1
        return lo, hi

    top, bottom = bar(lambda i: gray[:, i, :], int(max_bar * h))
    left, right = bar(lambda i: gray[:, :, i], int(max_bar * w))
    dark_box = (left, top, w - right, h - bottom)
    # bands of any shade, looked for on the whole frame; a dark bar's own edge stands unless the band
    # found reaches 3 % further in (a caption or a logo on the bar: the dark rule stops at its letters)
    fx1, fy1, fx2, fy2 = framed_picture(pick, (0, 0, w, h))
    left, right = (max(v, f) if v == 0 or f - v > 0.03 * w else v for v, f in ((left, fx1), (right, w - fx2)))
    top, bottom = (max(v, f) if v == 0 or f - v > 0.03 * h else v for v, f in ((top, fy1), (bottom, h - fy2)))
    return dark_box, (left, top, w - right, h - bottom)


EDGE_STEP, EDGE_ROWS, EDGE_SYMMETRY = 6.0, 0.4, 0.02
BANDS_BUSY = 0.16  # share of the bands' pixels on an edge: a blurred copy, a bar with a caption or logo stay under


def _busy_bands(grays: list[np.ndarray], lo: int, hi: int, axis: int) -> float:
    """The median share, over the frames, of the bands' pixels (columns before `lo` and from `hi`, or
    rows for axis 0; 3 px off their edge) where the gradient is over 40 gray levels."""
    shares = []
    for g in grays:
        g = g if axis == 1 else g.T
        grad = np.abs(cv2.Sobel(g, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1))
        band = np.concatenate([grad[:, : max(0, lo - 3)].ravel(), grad[:, hi + 3 :].ravel()])
        if band.size:
            shares.append(float((band > 40).mean()))
    return float(np.median(shares)) if shares else 0.0


def framed_picture(frames: list[np.ndarray], box: Box) -> Box:
    """The picture inside `box` when a video was framed into a larger one by bands that are not dark
    (a vertical video between blurred, enlarged copies of itself; white bars; bars that carry a logo
    or a caption): on both sides, at the same distance from the box's edges (within EDGE_SYMMETRY of
    its width), a straight edge at the same column -- the step between neighbouring columns the largest
    within 6 columns and at least EDGE_STEP gray levels in EDGE_ROWS of the rows, and in half that in
    each third of the height, in the median over the frames. Then rows alike, for bands above and below. A door frame
    covers part of the height; bands busy with edges of their own (panels of drawings, a second video:
    over BANDS_BUSY) are no frame; a scene's own edges mirrored about the middle (two pillars, the lines
    where the floor and the ceiling meet the wall) are left to the caller, who sees where the people
    stand (ClipTrack.build). Returns `box` where no such pair is found."""
    x1, y1, x2, y2 = box
    # uint8 throughout: the steps, their local maxima and the Sobel sums are the same integers as in float
    grays = [
        f[y1:y2, x1:x2] if f.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(f[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
        for f in frames
    ]
    grays = [g if g.dtype == np.uint8 else g.astype(np.float32) for g in grays]  # decoded frames are uint8
    for axis in (1, 0):  # columns (side bands), then rows (bands above and below)
        shares = []
        kernel = np.ones((1, 13) if axis == 1 else (13, 1), np.uint8)
        for g in grays:
            step = cv2.absdiff(g[:, 1:], g[:, :-1]) if axis == 1 else cv2.absdiff(g[1:], g[:-1])
            peak = (step >= cv2.dilate(step, kernel)) & (step >= EDGE_STEP)
            peak = peak if axis == 1 else peak.T
            shares.append([t.mean(axis=0) for t in np.array_split(peak, 3, axis=0)])  # per third of the rows
        if not shares or len(shares[0][0]) < 50:
            continue
        thirds = np.median(shares, axis=0)  # (3, columns - 1)
        a = thirds.mean(axis=0)
        # a band's edge runs the picture's whole height: some of it in every third (a door's does not)
        whole = thirds.min(axis=0) >= EDGE_ROWS / 2
        n = len(a) + 1
        edges = [x for x in np.flatnonzero((a >= EDGE_ROWS) & whole) if 0.04 * n <= x + 1 <= 0.96 * n]
        pairs = [
            (lo, hi)
            for lo in edges
            if lo + 1 <= 0.45 * n
            for hi in edges
            if hi + 1 >= 0.55 * n and abs((lo + 1) - (n - 1 - hi)) <= EDGE_SYMMETRY * n
        ]
        if not pairs:
            continue
        lo, hi = (int(v) for v in min(pairs, key=lambda p: (p[0] + n - 1 - p[1], -min(a[p[0]], a[p[1]]))))  # outermost
        if _busy_bands(grays, lo + 1, hi + 1, axis) > BANDS_BUSY:
            continue  # panels with pictures of their own beside it (drawings, a second video): not a frame
        if axis == 1:
            x1, x2 = x1 + lo + 1, x1 + hi + 1
            grays = [g[:, lo + 1 : hi + 1] for g in grays]
        else:
            y1, y2 = y1 + lo + 1, y1 + hi + 1
    return x1, y1, x2, y2


def picture_mask(shape: tuple[int, int], picture: Box, scale: float) -> np.ndarray:
    """255 inside the clip's picture (body.content_box, decoded pixels), 0 on the bars or bands that
    frame it, in small-frame pixels. (Callers with no bands found build no mask.)"""
    mask = np.zeros(shape, np.uint8)
    x1, y1, x2, y2 = (int(round(v * scale)) for v in picture)
    mask[max(0, y1) : y2, max(0, x1) : x2] = 255
    return mask


def person_px(pose: Pose17, kp_conf: float) -> float:
    """The person's height in pixels: the box's height, or for a body lying in the picture (tilt at most
    LYING_TILT: a push-up, a fall) its longer side, along which the body's length then runs (its box is
    low though the body is as large as a standing one). A crouch or a wide stance keeps the height. The
    box's longer side bounds it from above whatever the tilt (the coarse pass's bound)."""
    x1, y1, x2, y2 = pose.box
    return float(max(x2 - x1 if lies(tilt(pose, kp_conf)) else 0.0, y2 - y1, 0.0))


def edge_margin(pose: Pose17, content: Box) -> float:
    """Distance of the person's box to the nearest border of the picture, over its shorter side (0: the
    box touches it, so the body is most likely cut by it)."""
    x1, y1, x2, y2 = pose.box
    cx1, cy1, cx2, cy2 = content
    return max(0.0, min(x1 - cx1, y1 - cy1, cx2 - x2, cy2 - y2)) / max(1, min(cx2 - cx1, cy2 - cy1))


def shown(pose: Pose17, content: Box, kp_conf: float, edge: float = 0.01, box_pad: float = 0.1) -> np.ndarray:
    """Per joint: in view by the evidence above (confidence, inside the picture away from its border,
    inside the detector's padded box)."""
    k = np.asarray(pose.keypoints, float)
    cx1, cy1, cx2, cy2 = content
    e = edge * min(cx2 - cx1, cy2 - cy1)
    x1, y1, x2, y2 = pose.box
    px, py = box_pad * (x2 - x1), box_pad * (y2 - y1)
    ok = (k[:, 2] >= kp_conf) & np.isfinite(k[:, :2]).all(1)
    ok &= (k[:, 0] >= cx1 + e) & (k[:, 0] <= cx2 - e) & (k[:, 1] >= cy1 + e) & (k[:, 1] <= cy2 - e)
    ok &= (k[:, 0] >= x1 - px) & (k[:, 0] <= x2 + px) & (k[:, 1] >= y1 - py) & (k[:, 1] <= y2 + py)
    return ok


def head_seen(pose: Pose17, kp_conf: float) -> bool:
    """Some head keypoint (nose, eyes, ears) at kp_conf. A head seen in one frame of a pair and not in
    the other is hidden there (behind a plate, an arm, a bar) or cut by the border: the edit would be
    the head vanishing. (The back of the head still shows its ears; a head the model never sees, as
    upside down, is unseen in both frames alike.)"""
    return bool((np.asarray(pose.keypoints, float)[HEAD, 2] >= kp_conf).any())


def past_border(pose: Pose17, content: Box, kp_conf: float, touch: float = 0.1) -> float:
    """How far (torso lengths) the detector's box runs past the outermost shown joint toward a border
    of the picture that the box touches (within `touch` torso lengths); 0 where it touches none. A foot
    reaches about 0.3 torso past its ankle and the top of the head about 0.4 past the nose; a box that
    runs on well beyond that to the border saw more body there than the joints account for: the body
    goes on past the border (feet cut by the edge while the model puts the ankles at the knees)."""
    k = np.asarray(pose.keypoints, float)
    torso = geometry.torso_length(k)
    seen = (k[:, 2] >= kp_conf) & np.isfinite(k[:, :2]).all(1)
    if not (torso > 1e-6 and math.isfinite(torso)) or not seen.any():
        return 0.0
    x1, y1, x2, y2 = pose.box
    cx1, cy1, cx2, cy2 = content
    worst = 0.0
    for gap, past in (
        (x1 - cx1, k[seen, 0].min() - x1),
        (y1 - cy1, k[seen, 1].min() - y1),
        (cx2 - x2, x2 - k[seen, 0].max()),
        (cy2 - y2, y2 - k[seen, 1].max()),
    ):
        if gap <= touch * torso:
            worst = max(worst, float(past) / torso)
    return worst


def leg_extent(pose: Pose17, seen: np.ndarray) -> float:
    """The shorter leg's hip -> knee -> ankle length over the torso length; 0 when a joint of either
    leg is not shown (NaN without a torso)."""
    k = np.asarray(pose.keypoints, float)
    torso = geometry.torso_length(k)
    if not (torso > 1e-6 and math.isfinite(torso)):
        return math.nan
    worst = math.inf
    for hip, knee, ankle in LEGS:
        if not (seen[KP[hip]] and seen[KP[knee]] and seen[KP[ankle]]):
            return 0.0
        length = np.linalg.norm(k[KP[knee], :2] - k[KP[hip], :2]) + np.linalg.norm(k[KP[ankle], :2] - k[KP[knee], :2])
        worst = min(worst, float(length) / torso)
    return worst


LYING_TILT = 45.0  # degrees: a torso and legs both this near the horizontal in the picture are a body lying


def tilt(pose: Pose17, kp_conf: float = 0.0) -> float:
    """How upright the body is in the picture: the larger of the torso's (shoulder centre -> hip centre)
    and the legs' (hip centre -> ankle centre) angle from the horizontal, in degrees; NaN unless the
    shoulders, hips and ankles are located at kp_conf. A plank, a push-up or a body lying reads under
    LYING_TILT; a standing, sitting or hinged body (a deadlift's bent torso over upright shins) over it,
    and so does a body pointing at the camera (filmed head-on, its torso projects upright and short)."""
    k = np.asarray(pose.keypoints, float)
    joints = [KP[f"{s}_{j}"] for s in ("left", "right") for j in ("shoulder", "hip", "ankle")]
    if not (k[joints, 2] >= kp_conf).all():
        return math.nan
    s, h = geometry.shoulder_centre(k), geometry.hip_centre(k)
    a = (k[KP["left_ankle"], :2] + k[KP["right_ankle"], :2]) / 2
    worst = 0.0
    for v in (h - s, a - h):
        if not (np.isfinite(v).all() and np.any(v)):
            return math.nan
        worst = max(worst, math.degrees(math.atan2(abs(float(v[1])), abs(float(v[0])))))
    return worst


def lies(body_tilt: float) -> bool:
    """A body lying in the picture: its tilt (degrees) known and at most LYING_TILT."""
    return math.isfinite(body_tilt) and body_tilt <= LYING_TILT


def leg_limit(body_tilt: float, upright: float, lying: float) -> float:
    """The shortest legs (hip-knee-ankle / torso) a whole body may show at this tilt: `lying` for a body
    lying in the picture (filmed from the front or three-quarters, the legs lie farther from the camera
    than the torso and perspective shortens them: such a push-up reads 0.6-1.0), else `upright`."""
    return lying if lies(body_tilt) else upright


def binding_legs(legs: list[tuple[float, float]], upright: float, lying: float) -> tuple[float, float] | None:
    """Of a pair's frames' (leg extent, tilt), the one nearest its own limit (leg_limit): the pair's
    stored leg figure, whose margin is measured against that frame's limit. None without a finite one."""
    known = [(e, t) for e, t in legs if math.isfinite(e)]
    return min(known, key=lambda v: v[0] / max(leg_limit(v[1], upright, lying), 1e-9), default=None)


def foot_room(pose: Pose17, kp_conf: float) -> float | None:
    """How far the detector's box runs on past the ankles, in torso lengths: per leg whose knee and
    ankle are at kp_conf, the farther of the box's reach past the ankle the way the shin points (knee
    -> ankle, along the axis it points most along: a foot pointed, a foot up in a handstand) and below
    it where the shin does not point up (the heel and sole under a standing ankle, a plank's toes on
    the floor); the smaller of the two legs. Negative where the ankle lies beyond the box. A foot in
    view takes the box about 0.15-0.3 torso past its ankle; a box that stops at or just past an ankle
    saw no foot there: it is hidden (behind a barbell plate, a box) or cut, and the ankle is the
    model's guess. None without a torso or a shown knee and ankle."""
    k = np.asarray(pose.keypoints, float)
    torso = geometry.torso_length(k)
    if not (torso > 1e-6 and math.isfinite(torso)):
        return None
    lo, hi = np.asarray(pose.box[:2], float), np.asarray(pose.box[2:], float)
    room = []
    for _, knee, ankle in LEGS:
        a, b = k[KP[knee]], k[KP[ankle]]
        if not (a[2] >= kp_conf and b[2] >= kp_conf) or not np.isfinite(k[[KP[knee], KP[ankle]], :2]).all():
            continue  # (a NaN confidence is not shown either)
        d = b[:2] - a[:2]
        n = float(np.linalg.norm(d))
        if n < 1e-6:
            room.append((hi[1] - b[1]) / torso)
            continue
        d = d / n
        # the way the shin points, on its main axis (a side the shin runs along, an ankle a pixel beside
        # it, says nothing about the foot) ...
        i = int(np.argmax(np.abs(d)))
        reach = [float((hi[i] - b[i]) if d[i] > 0 else (b[i] - lo[i]))]
        if d[1] > -0.5:  # ... and below the ankle, unless the shin points up (a handstand, legs raised)
            reach.append(hi[1] - b[1])
        room.append(max(reach) / torso)
    return float(min(room)) if room else None


def extremity_margin(pose: Pose17, content: Box, kp_conf: float) -> float | None:
    """How far the body's ends stay from the picture's border, in torso lengths: the smaller of the
    ankles' and the nose's distance to the nearest border of the content. A foot reaches about a
    quarter torso past its ankle and the top of the head a third past the nose, so a small figure
    means a foot or the head is most likely cut by the border even when the joint itself is inside.
    None without a torso or without any of these joints seen."""
    k = np.asarray(pose.keypoints, float)
    torso = geometry.torso_length(k)
    if not (torso > 1e-6 and math.isfinite(torso)):
        return None
    cx1, cy1, cx2, cy2 = content
    ends = [KP["left_ankle"], KP["right_ankle"], KP["nose"]]
    d = [
        min(k[i, 0] - cx1, cx2 - k[i, 0], k[i, 1] - cy1, cy2 - k[i, 1])
        for i in ends
        if k[i, 2] >= kp_conf and np.isfinite(k[i, :2]).all()
    ]
    return float(min(d)) / torso if d else None
