"""The camera between a pair's two frames: background alignment, stabilisation, and what else changed.

A pair is only worth keeping if the person's pose is the one thing that differs between its frames.
The background decides that, after the camera's own motion is taken out:

  1. The camera's motion between the two frames is the chain of the consecutive sampled frames'
     background similarities (quality.background_step), refined by tracking background corners
     straight from the aligned before frame to the after frame.
  2. Its size decides: ~0 is a *static* camera; small, with background residuals near zero once the
     before frame is warped onto the after frame, is a pair that can be *stabilised* (the after frame is
     warped back onto the before frame and both are cropped to their common area); anything larger
     (pans, follow-cams, zooms) is camera motion.
  3. What still differs outside the people once aligned is measured: a region that appears, disappears
     or changes (a pop-up, a caption, a scoreboard, a second person walking by) is an overlay change; a
     background that changed as a whole (a fade, a cross-fade, a cut) is a shot change.
  4. A background without texture carries no motion to measure; its pixels are then compared directly:
     an unchanged plain background is static, not unmeasurable.

The body's figure drawn from its keypoints, and graphics drawn over it, are stages/silhouette.py's.
All pure functions over frames and detections: tests call them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from schemas.records import Pose17

from .body import picture_mask
from .corners import grid_corners
from .quality import IDENTITY, background_mask, motion_magnitude, small_gray
from .silhouette import REACH, body_shapes, graphic_strokes, hand_zones

# a gray-level difference above this (after a 5x5 blur, on frames at most 320 px) is a change, not noise
CHANGE_LEVEL = 28.0
# what a hand holds (a bar, a bat, a club) is at most this thick, in torso lengths, where it runs past the body
HELD_THICKNESS = 0.2


@dataclass
class PairAlignment:
    """The camera between the before frame (a) and the after frame (b) of one pair."""

    status: str  # "static" | "stabilised" | "moving" | "unmeasurable"
    matrix: np.ndarray | None  # 2x3, small-frame pixels of a -> b (None: unmeasurable)
    scale: float  # small frame / decoded frame
    motion: float  # largest displacement of a frame corner or the centre / frame diagonal (NaN: unknown)
    residual: float | None  # median absolute background difference after alignment (gray levels)
    brightness: float | None  # median signed background difference (a fade or an exposure change)
    changed_share: float | None  # share of the compared background that changed after alignment
    largest_change: float | None  # the largest changed background region / frame area
    change_box: tuple[int, int, int, int] | None  # its box, decoded-frame pixels of the after frame
    plain: bool = False  # the background has no texture: decided by its pixels alone
    person_change: float | None = None  # share of the subject's box whose pixels changed after alignment
    graphic_stroke: float | None = None  # longest drawn stroke in one frame only / torso (graphic_strokes)

    def full_matrix(self) -> np.ndarray | None:
        """The camera a -> b in decoded-frame pixels."""
        if self.matrix is None:
            return None
        m = self.matrix.copy()
        m[:, 2] = m[:, 2] / self.scale
        return m


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def _refine(ga: np.ndarray, gb: np.ndarray, m: np.ndarray, mask_b: np.ndarray) -> np.ndarray:
    """The chained estimate m (a -> b) corrected by corners tracked from warp(a) to b directly."""
    h, w = gb.shape
    warped = cv2.warpAffine(ga, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    pts = grid_corners(gb, mask_b)
    if len(pts) < 12:
        return m
    lk = {"winSize": (21, 21), "maxLevel": 3}
    back, st1, _ = cv2.calcOpticalFlowPyrLK(gb, warped, pts, None, **lk)
    fwd, st2, _ = cv2.calcOpticalFlowPyrLK(warped, gb, back, None, **lk)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm((fwd - pts).reshape(-1, 2), axis=1) < 1.0)
    if ok.sum() < 12:
        return m
    cv2.setRNGSeed(0)  # RANSAC draws from OpenCV's per-thread generator: fixed, so runs decide alike
    r, inl = cv2.estimateAffinePartial2D(
        back.reshape(-1, 2)[ok],
        pts.reshape(-1, 2)[ok],
        method=cv2.RANSAC,
        ransacReprojThreshold=2.0,
        maxIters=2000,
        confidence=0.995,
        refineIters=10,
    )
    if r is None or inl is None or inl.mean() < 0.5:
        return m
    if float(np.abs(r - IDENTITY)[:, 2].max()) > 8 or float(np.abs(r - IDENTITY)[:, :2].max()) > 0.05:
        return m  # a correction this large is a mismatch, not a refinement
    return (np.vstack([r, [0, 0, 1]]) @ np.vstack([m, [0, 0, 1]]))[:2]


def _people_mask(
    shape: tuple[int, int],
    people_a: list[Pose17],
    people_b: list[Pose17],
    m: np.ndarray,
    scale: float,
    pad: float,
    shadows: bool = True,
) -> np.ndarray:
    """255 on background in b's small-frame pixels: b's people and a's people (moved by m) masked,
    padded (more below the feet, where shadows fall)."""
    h, w = shape
    mask = background_mask((h, w), people_b, scale, pad)
    moved = []
    for p in people_a:
        x1, y1, x2, y2 = p.box
        corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], float) * scale
        c = corners @ m[:, :2].T + m[:, 2]
        (mx1, my1), (mx2, my2) = c.min(0) / scale, c.max(0) / scale
        moved.append(p.model_copy(update={"box": [float(mx1), float(my1), float(mx2), float(my2)]}))
    mask &= background_mask((h, w), moved, scale, pad)
    for p in people_a + people_b if shadows else ():  # shadows and feet: the floor below a person
        x1, y1, x2, y2 = (np.asarray(p.box) * scale).tolist()
        bh = y2 - y1
        mask[int(y2) : int(y2 + 0.25 * bh) + 1, max(0, int(x1 - 0.3 * (x2 - x1))) : int(x2 + 0.3 * (x2 - x1)) + 1] = 0
    return mask


def held_objects(
    changed: np.ndarray, off: np.ndarray, hands: np.ndarray, thickness: float, signed: np.ndarray
) -> np.ndarray:
    """The changed pixels beyond the body's reach (`changed` uint8 0/1, `off` bool) that belong to
    something a hand holds (a bar, a bat, a club, a rope held taut): each piece of change there (small
    gaps bridged) that is thin (at most `thickness` pixels across at its 95th percentile) and made of
    straight lines that run into a hand (`hands`: 255 on a disk around it, see hand_zones) within 2
    torso lengths of their ends: 95 % of its pixels on such lines (OpenCV's probabilistic Hough transform
    finds them; a bar seen in both frames is two, meeting where it is anchored). A thin bar's change
    breaks where it crosses a background of its own shade, so its pieces count by their line, not by
    touching the hand. A pop-up is thick; a drawing's strokes curve and a caption does not point at a
    hand (bright text is checked apart: text_change). Nor is a row of many small pieces that is in one
    frame only (`signed`: warped a - b, one sign on GLYPH_ONE_SIDE of it): letters that appear or vanish
    beside the hands at a bar's height (a cue list that grows), where a held thing is one piece or a few
    and, moving, changes both ways. Returns a bool mask of the pixels to leave out of the overlay
    regions."""
    held = np.zeros(changed.shape, bool)
    zone = hands > 0
    if thickness <= 0 or not zone.any():
        return held
    beyond = (changed.astype(bool) & off).astype(np.uint8)
    k = max(3, int(thickness / 2)) | 1
    joined = cv2.dilate(beyond, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    half = cv2.distanceTransform(beyond, cv2.DIST_L2, 3)
    h, w = changed.shape
    reach = 2.0 * thickness / HELD_THICKNESS  # 2 torso lengths
    steps = np.arange(0.0, reach + 1.0)
    for c in range(1, n):
        x0, y0, bw, bh, _ = (int(v) for v in stats[c])
        if max(bw, bh) < 8:
            continue  # too short to be a line: left to the overlay regions' own size rule
        box = (slice(y0, y0 + bh), slice(x0, x0 + bw))
        part = (labels[box] == c) & (beyond[box] > 0)
        count = int(part.sum())
        if count < 8:
            continue
        across = 2 * float(np.percentile(half[box][part], 95))
        if across > thickness:
            continue
        width = max(across, 2.0)
        found = cv2.HoughLinesP(
            part.astype(np.uint8), 1, np.pi / 180, threshold=max(4, int(2 * width)),
            minLineLength=4 * width, maxLineGap=max(2, int(width)),
        )  # fmt: skip
        if found is None:
            continue
        lines = np.zeros(part.shape, np.uint8)
        for x1, y1, x2, y2 in found.reshape(-1, 4).astype(float):
            d = np.hypot(x2 - x1, y2 - y1)
            ux, uy = (x2 - x1) / d, (y2 - y1) / d
            for (ex, ey), sign in (((x2, y2), 1.0), ((x1, y1), -1.0)):
                px = np.round(x0 + ex + sign * steps * ux).astype(int)  # frame pixels from here
                py = np.round(y0 + ey + sign * steps * uy).astype(int)
                inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
                if zone[py[inside], px[inside]].any():
                    cv2.line(lines, (int(x1), int(y1)), (int(x2), int(y2)), 1, int(np.ceil(width)) + 2)
                    break
        if int((part & (lines > 0)).sum()) >= 0.95 * count and not _glyphs(part, signed[box]):
            held[box] |= part
    return held


GLYPH_PIECES, GLYPH_ONE_SIDE = 6, 0.9  # a row of letters: this many separate pieces, this share one way


def _glyphs(part: np.ndarray, signed: np.ndarray) -> bool:
    """The piece (its changed pixels, before the gaps were bridged) is a row of letters in one frame
    only: at least GLYPH_PIECES separate pieces, and GLYPH_ONE_SIDE of its pixels changed the same way
    (`signed`: warped a - b over the piece's box)."""
    if cv2.connectedComponents(part.astype(np.uint8), connectivity=8)[0] - 1 < GLYPH_PIECES:
        return False
    brighter = float(np.mean(signed[part] > 0))
    return max(brighter, 1.0 - brighter) >= GLYPH_ONE_SIDE


def compare_background(
    ga: np.ndarray,
    gb: np.ndarray,
    m: np.ndarray,
    mask_b: np.ndarray,
    min_region: float,
    bodies: np.ndarray | None = None,
    reach: float = 0.0,
    hands: np.ndarray | None = None,
    picture: np.ndarray | None = None,
) -> tuple[float | None, float | None, float | None, float | None, tuple[int, int, int, int] | None]:
    """(residual, brightness, changed share, largest changed region, its box) of b against a warped by
    m, over b's background where both frames have pixels. Regions smaller than `min_region` of the
    frame (noise, a leaf) are left out of the largest-region figure, and so are the changes within
    `reach` pixels of `bodies` (0 on the people's bodies, see body_shapes): what moves with a person
    (loose clothes, hair, a held bar or ball) is no overlay; nor is what the hands hold where it runs
    past that reach (`hands`: 255 on the hands' disks, see held_objects; a landmine bar, a bat)."""
    h, w = gb.shape
    warped = cv2.warpAffine(ga, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    valid = cv2.warpAffine(np.full_like(ga, 255), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    valid = cv2.erode(valid, np.ones((7, 7), np.uint8))  # interpolation at the warped border is not data
    if picture is not None:
        valid = np.minimum(valid, picture)  # the bands framing the picture (`picture`: 255 inside) are not data
    use = (valid == 255) & (mask_b == 255)
    area = h * w if picture is None else int(np.count_nonzero(picture))  # the bands are not background
    if use.sum() < 0.05 * area:
        return None, None, None, None, None
    d = cv2.GaussianBlur(warped, (5, 5), 0).astype(np.float32) - cv2.GaussianBlur(gb, (5, 5), 0).astype(np.float32)
    brightness = float(np.median(d[use]))
    ad = np.abs(d - brightness)
    residual = float(np.median(ad[use]))
    changed = ((ad > CHANGE_LEVEL) & use).astype(np.uint8)
    changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    share = float(changed[use].mean())
    # regions: the changes beyond the reach of every body. Near a body they move with it (a held bar,
    # a ball, loose clothes, hair); an overlay or a scene change lies beyond, even when it runs up to
    # the body (a caption under the feet, a graphic beside the legs: both inside the detector's box)
    bodies = mask_b if bodies is None else bodies
    off = (bodies == 255) & (cv2.distanceTransform((bodies == 255).astype(np.uint8), cv2.DIST_L2, 3) > reach)
    around = ((ad > CHANGE_LEVEL) & (valid == 255) & off).astype(np.uint8)
    if hands is not None and reach > 0:
        raw = ((ad > CHANGE_LEVEL) & (valid == 255)).astype(np.uint8)
        held = held_objects(raw, off, hands, HELD_THICKNESS * reach / REACH, d - brightness)  # reach / REACH: a torso
        around[held] = 0
    around = cv2.morphologyEx(around, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # the letters of one line of text belong together: close horizontal gaps (not across a body)
    around = cv2.morphologyEx(around, cv2.MORPH_CLOSE, np.ones((3, 9), np.uint8)) & off.astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(around, connectivity=8)
    largest, box = 0.0, None
    for k in range(1, n):
        x, y, bw, bh, area = stats[k]
        # a region's size is its box's: text is strokes, and the strokes of one caption belong together
        size = float(max(area, 0.5 * bw * bh)) / (h * w)
        if size >= min_region and size > largest:
            largest, box = size, (int(x), int(y), int(x + bw), int(y + bh))
    return residual, brightness, share, largest, box


def align_pair(
    a: np.ndarray,
    b: np.ndarray,
    people_a: list[Pose17],
    people_b: list[Pose17],
    chained: np.ndarray | None,
    textureless: bool,
    static_motion: float,
    max_stabilised_motion: float,
    max_residual: float,
    min_region: float = 0.002,
    pad: float = 0.15,
    grays: tuple | None = None,
    picture: tuple[int, int, int, int] | None = None,
) -> PairAlignment:
    """The camera between a and b (RGB frames of one clip). `chained`: the composed consecutive-step
    similarity a -> b in small-frame pixels, None when a step could not be measured; `textureless`:
    those steps lacked background corners (then the plain background's pixels decide). `picture`: the
    clip's picture (body.content_box); the bands around it are not compared (a blurred copy of the
    picture beside a vertical video changes with it)."""
    (ga, s), (gb, _) = grays or (small_gray(a), small_gray(b))
    h, w = gb.shape
    plain = False
    if chained is None:
        if not textureless:
            return PairAlignment("unmeasurable", None, s, math.nan, None, None, None, None, None)
        m = IDENTITY.copy()
        plain = True
    else:
        m = np.asarray(chained, np.float64)
    pic = None if picture is None else picture_mask((h, w), picture, s)

    def background(m: np.ndarray) -> np.ndarray:  # off the people; the bands around the picture hold none
        mask = _people_mask((h, w), people_a, people_b, m, s, pad)
        return mask if pic is None else mask & pic

    mask_b = background(m)
    if not plain:
        m = _refine(ga, gb, m, mask_b)
        mask_b = background(m)
    bodies, reach = body_shapes((h, w), people_a, people_b, m, s)
    hands = hand_zones((h, w), people_a, people_b, m, s)
    residual, brightness, share, largest, box = compare_background(
        ga, gb, m, mask_b, min_region, bodies, reach, hands, picture=pic
    )
    motion = motion_magnitude(m, w, h)
    if plain and (residual is None or residual > max_residual):
        status = "unmeasurable"  # no texture to align, and the pixels differ: nothing says it is still
    elif motion <= static_motion:
        status = "static"
    elif motion <= max_stabilised_motion and residual is not None and residual <= max_residual:
        status = "stabilised"
    else:
        status = "moving"
    full_box = None if box is None else tuple(int(round(v / s)) for v in box)
    moved = person_change(ga, gb, m, people_a[0], people_b[0], s) if people_a and people_b else None
    stroke = graphic_strokes(a, b, m, s, people_b[0]) if people_b else None
    return PairAlignment(status, m, s, motion, residual, brightness, share, largest, full_box, plain, moved, stroke)


def person_change(ga: np.ndarray, gb: np.ndarray, m: np.ndarray, subject_a: Pose17, subject_b: Pose17, scale: float):
    """Image evidence that the pose changed: the share of the pixels in the subject's box (the union of
    its box in both frames, after alignment) that changed. Keypoints of a still person jitter from
    frame to frame; a limb that really moves changes the picture where it was and where it went."""
    h, w = gb.shape
    warped = cv2.warpAffine(ga, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    valid = cv2.warpAffine(np.full_like(ga, 255), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0) == 255
    x1, y1, x2, y2 = subject_a.box
    c = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], float) * scale @ m[:, :2].T + m[:, 2]
    bx = np.asarray(subject_b.box, float) * scale
    ux1, uy1 = max(0, int(min(c[:, 0].min(), bx[0]))), max(0, int(min(c[:, 1].min(), bx[1])))
    ux2, uy2 = min(w, int(np.ceil(max(c[:, 0].max(), bx[2])))), min(h, int(np.ceil(max(c[:, 1].max(), bx[3]))))
    if ux2 - ux1 < 4 or uy2 - uy1 < 4:
        return None
    d = np.abs(
        cv2.GaussianBlur(warped, (5, 5), 0).astype(np.float32) - cv2.GaussianBlur(gb, (5, 5), 0).astype(np.float32)
    )[uy1:uy2, ux1:ux2]
    ok = valid[uy1:uy2, ux1:ux2]
    return float((d[ok] > CHANGE_LEVEL).mean()) if ok.any() else None


def stabilise(frame_b: np.ndarray, pose_b: Pose17, m_full: np.ndarray) -> tuple[np.ndarray, Pose17]:
    """The after frame and its pose warped onto the before frame (m_full: a -> b, decoded pixels)."""
    inv = invert(m_full)
    h, w = frame_b.shape[:2]
    warped = cv2.warpAffine(frame_b, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, transform_pose(pose_b, inv)


def moved_box(box, m: np.ndarray) -> tuple[float, float, float, float]:
    """The axis-aligned box around `box` (x1, y1, x2, y2) moved by the 2x3 matrix m."""
    x1, y1, x2, y2 = box
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], float) @ m[:, :2].T + m[:, 2]
    (a, b), (c, d) = corners.min(0), corners.max(0)
    return float(a), float(b), float(c), float(d)


def transform_pose(pose: Pose17, m: np.ndarray) -> Pose17:
    k = np.asarray(pose.keypoints, np.float64)
    xy = k[:, :2] @ m[:, :2].T + m[:, 2]
    kps = [[float(x), float(y), float(c)] for (x, y), c in zip(xy, k[:, 2], strict=True)]
    return pose.model_copy(update={"keypoints": kps, "box": list(moved_box(pose.box, m))})


def common_area(m_full: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The largest axis-aligned box of the before frame that the after frame, warped back by the
    inverse of m_full, still covers (the stabilised pair is cropped inside it)."""
    inv = invert(m_full)
    c = np.array([[0, 0], [width, 0], [0, height], [width, height]], float) @ inv[:, :2].T + inv[:, 2]
    x1 = max(0.0, c[0, 0], c[2, 0])
    x2 = min(float(width), c[1, 0], c[3, 0])
    y1 = max(0.0, c[0, 1], c[1, 1])
    y2 = min(float(height), c[2, 1], c[3, 1])
    return int(math.ceil(x1)), int(math.ceil(y1)), int(math.floor(x2)), int(math.floor(y2))
