"""Quality filters: pure functions over one pair's facts (frames, detections, keypoints).

Each filter has a config key (`quality.*`, or `motion.max_camera_motion`), a reason in the one reject
enum, and a figure stored on the sample (schemas.records.QualityFigures), so that a threshold change is
a re-filter of samples.parquet, not a re-run:

  person size         box height / frame height (crop: frame), box height (a body
                      lying: its longer side) in pixels (body.person_px)        -> too_small
  hidden person       best score of another detection overlapping the person   -> multiple_people
  background          camera motion from a RANSAC similarity of background      -> camera_motion
                      features (static overlay points set aside); share of the
                      background that matches after alignment                   -> shot_cut
  sharpness           1 - blur effect of the person crop / the clip's sharpest  -> blurry
                      frames (the crop at the frame's scale)
  left/right sanity   signed left-right separation of legs and face against the -> frame dropped, counted
                      torso's facing, in torso lengths
  frame edge          distance of the person's box to the frame border          -> partial_body
  near-duplicates     perceptual hashes of both frames, across the dataset      -> duplicate (curation.store)

The figures measured between a pair's aligned frames (overlay_change, background_change, text_change,
graphic_stroke, person_change) are stages/camera.py's and stages/silhouette.py's; a frame's place inside
a dissolve (transition_mix) is stages/figures.py's blend_share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from schemas.records import KP, Pose17

from . import body
from .corners import grid_corners

# ---------------------------------------------------------------- person size and frame edge


def person_height(pose: Pose17) -> float:
    """The person's box height over the frame height."""
    return max(0.0, (pose.box[3] - pose.box[1]) / max(1, pose.frame_height))


def edge_margin(pose: Pose17) -> float:
    """Distance of the person's box to the nearest frame border, over the frame's shorter side (0: the
    box touches the border, so the body is most likely cut by it)."""
    x1, y1, x2, y2 = pose.box
    w, h = pose.frame_width, pose.frame_height
    return max(0.0, min(x1, y1, w - x2, h - y2)) / max(1, min(w, h))


# ---------------------------------------------------------------- a hidden second person


def _overlap(inner: list[float], outer: list[float]) -> float:
    """Area of inner's box covered by outer's box, over inner's area."""
    ix = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    iy = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = max(1e-9, (inner[2] - inner[0]) * (inner[3] - inner[1]))
    return ix * iy / area


def keypoint_similarity(a: Pose17, b: Pose17, min_conf: float) -> float:
    """COCO object keypoint similarity (OKS, one sigma for all joints) of two detections' keypoints
    visible in both; 0 when none is. A second detection of the same body (a part box) scores near 1."""
    ka, kb = np.asarray(a.keypoints, float), np.asarray(b.keypoints, float)
    both = (
        (ka[:, 2] >= min_conf) & (kb[:, 2] >= min_conf) & np.isfinite(ka[:, :2]).all(1) & np.isfinite(kb[:, :2]).all(1)
    )
    if both.sum() < 2:
        return 0.0
    area = max(1.0, (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]))
    d2 = ((ka[both, :2] - kb[both, :2]) ** 2).sum(1)
    return float(np.exp(-d2 / (2 * area * 0.07**2 * 4)).mean())


def other_person_score(
    person: Pose17, detections: list[Pose17], min_overlap: float, same_oks: float, kp_conf: float
) -> float:
    """The best score of another detection that overlaps the person's box (at least `min_overlap` of
    the other box inside the person's, padded by 10 %), 0 when there is none. A detection whose
    keypoints coincide with the person's (OKS >= same_oks) is the same body detected twice, not
    another person."""
    x1, y1, x2, y2 = person.box
    px, py = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    padded = [x1 - px, y1 - py, x2 + px, y2 + py]
    best = 0.0
    for d in detections:
        if d is person:
            continue
        if _overlap(d.box, padded) < min_overlap:
            continue
        if keypoint_similarity(person, d, kp_conf) >= same_oks:
            continue
        best = max(best, d.score)
    return best


# ---------------------------------------------------------------- left/right sanity


def facing(pose: Pose17, kp_conf: float, min_separation: float) -> float | None:
    """+1 or -1: the side the left/right labels say the body faces (from the hips, or the shoulders when
    the hips are side-on); None when side-on or without shoulders and hips."""
    return _facing(pose, kp_conf, min_separation)[0]


def _facing(pose: Pose17, kp_conf: float, min_separation: float):
    k = np.asarray(pose.keypoints, float)

    ok = lambda i: k[i, 2] >= kp_conf and np.isfinite(k[i, :2]).all()  # noqa: E731
    if not all(ok(KP[n]) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")):
        return None, None
    mid_s = (k[KP["left_shoulder"], :2] + k[KP["right_shoulder"], :2]) / 2
    mid_h = (k[KP["left_hip"], :2] + k[KP["right_hip"], :2]) / 2
    spine = mid_s - mid_h
    torso = float(np.linalg.norm(spine))
    if not torso > 1e-6:
        return None, None
    # across the body: the image's right for an upright person, turned with the spine when leaning
    across = np.array([-spine[1], spine[0]]) / torso

    def pair(part: str) -> float | None:
        li, ri = KP[f"left_{part}"], KP[f"right_{part}"]
        if not (ok(li) and ok(ri)):
            return None
        return float((k[li, :2] - k[ri, :2]) @ across) / torso

    for dx in (pair("hip"), pair("shoulder")):
        if abs(dx) >= min_separation:
            return math.copysign(1.0, dx), pair
    return None, pair


def lr_margin(pose: Pose17, kp_conf: float, min_separation: float) -> float | None:
    """How consistently the left/right labels agree with the body's facing, in torso lengths.

    The facing comes from the hips (or the shoulders when the hips are side-on): facing the camera,
    the person's left is the image's right. Every other left/right pair that is clearly apart (legs,
    shoulders, eyes) is measured along that facing: the smallest signed separation is returned, so a
    negative figure means a pair lies the wrong way round (the detector swapped the labels, as it does
    for crossed or raised legs). None when the body is side-on and nothing can be checked."""
    facing, pair = _facing(pose, kp_conf, min_separation)
    if facing is None:
        return None  # side-on (legs may be in either order), or no shoulders and hips
    margins = []
    for part, need in (
        ("shoulder", min_separation),
        ("hip", min_separation),
        ("knee", min_separation),
        ("ankle", min_separation),
        ("eye", min_separation / 5),
    ):
        dx = pair(part)
        if dx is None or abs(dx) < need:
            continue
        margins.append(facing * dx)
    return float(min(margins)) if margins else None


# ---------------------------------------------------------------- sharpness


SHARPNESS_HEIGHT = 256  # the frame height sharpness is measured at: one scale for every box of a clip


def sharpness(frame: np.ndarray, pose: Pose17 | None) -> float:
    """1 - blur effect (Crete-Roffet et al. 2007, scikit-image) of the person's box (the whole frame
    without a pose), the frame scaled to a fixed height: how much a re-blur would still take away. It
    compares frames of one clip whatever the pose, unlike the Laplacian's variance, which follows the
    texture in the box. The scale is the frame's, not the box's: a box scaled to a fixed height of its
    own reads a crouched or horizontal body (a short box, enlarged) as blurred beside a standing one."""
    from skimage.measure import blur_effect

    h, w = frame.shape[:2]
    if pose is not None:
        x1, y1, x2, y2 = pose.box
        x1, y1 = max(0, int(x1)), max(0, int(y1))
        x2, y2 = min(w, int(math.ceil(x2))), min(h, int(math.ceil(y2)))
        if x2 - x1 >= 8 and y2 - y1 >= 8:
            frame = frame[y1:y2, x1:x2]
    g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    s = SHARPNESS_HEIGHT / h
    size = (max(16, round(g.shape[1] * s)), max(16, round(g.shape[0] * s)))
    g = cv2.resize(g, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return float(1.0 - blur_effect(g))


# ---------------------------------------------------------------- background: camera motion and place

SMALL_SIDE = 320  # background analysis runs on frames at most this large


def small_gray(frame: np.ndarray, side: int = SMALL_SIDE) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    s = min(1.0, side / max(h, w))
    g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if s < 1.0:
        g = cv2.resize(g, (max(2, int(w * s)), max(2, int(h * s))), interpolation=cv2.INTER_AREA)
    return g, s


def background_mask(shape: tuple[int, int], people: list[Pose17], scale: float, pad: float = 0.15) -> np.ndarray:
    """255 on background, 0 on every detected person's box (padded)."""
    h, w = shape
    mask = np.full((h, w), 255, np.uint8)
    for p in people:
        x1, y1, x2, y2 = (np.asarray(p.box) * scale).tolist()
        px, py = pad * (x2 - x1), pad * (y2 - y1)
        mask[max(0, int(y1 - py)) : int(y2 + py) + 1, max(0, int(x1 - px)) : int(x2 + px) + 1] = 0
    return mask


@dataclass
class BackgroundStep:
    """The camera's motion between two consecutive sampled frames."""

    matrix: np.ndarray | None  # 2x3 similarity, small-frame pixels of frame k -> frame k+1; None: unmeasurable
    features: int  # background corners found
    tracked: int  # of them, followed forward and back
    inliers: float  # share of tracked points the motion explains
    overlay: int  # static points set aside as an overlay (logo, bars, vignette edge)
    status: str  # "ok" | "textureless" | "inconsistent"


IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    if len(src) < 3:
        return None, np.zeros(len(src), bool)
    cv2.setRNGSeed(0)  # RANSAC draws from OpenCV's per-thread generator: fixed, so runs decide alike
    m, inl = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0, maxIters=2000, confidence=0.995, refineIters=10
    )
    if m is None or inl is None:
        return None, np.zeros(len(src), bool)
    return m, inl.ravel().astype(bool)


def background_step(
    a: np.ndarray,
    b: np.ndarray,
    people: list[Pose17],
    min_features: int = 12,
    min_inliers: float = 0.5,
    picture: tuple[int, int, int, int] | None = None,
) -> BackgroundStep:
    """Robust camera motion between two frames from background corners (people masked out).

    Corners are tracked with pyramidal Lucas-Kanade, kept when the backward track returns to the start,
    and a similarity (shift, zoom, rotation) is fitted with RANSAC. Points that do not move at all while
    a large, spread-out share of the others moves coherently belong to an overlay (letterbox bars, a
    logo, a vignette's edge, a timestamp) and are set aside: otherwise they pin the estimate at zero."""
    ga, s = small_gray(a)
    gb, _ = small_gray(b)
    h, w = ga.shape
    mask = background_mask((h, w), people, s)
    if picture is not None:  # bands around the picture (ClipTrack.bands) hold no background
        mask &= body.picture_mask((h, w), picture, s)
    pts = grid_corners(ga, mask)
    n = len(pts)
    if n < min_features:
        return BackgroundStep(None, n, 0, 0.0, 0, "textureless")
    lk = {"winSize": (21, 21), "maxLevel": 3}
    fwd, st1, _ = cv2.calcOpticalFlowPyrLK(ga, gb, pts, None, **lk)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(gb, ga, fwd, None, **lk)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm((back - pts).reshape(-1, 2), axis=1) < 1.0)
    src, dst = pts.reshape(-1, 2)[ok], fwd.reshape(-1, 2)[ok]
    tracked = len(src)
    if tracked < min_features:
        return BackgroundStep(None, n, tracked, 0.0, 0, "inconsistent")
    moved = np.linalg.norm(dst - src, axis=1) > 0.5
    if moved.sum() >= max(min_features, 0.25 * tracked):
        # does most of the frame move together under a few points that stay put (an overlay)?
        m, inl = _similarity(src[moved], dst[moved])
        if m is not None and not _is_static(m) and inl.sum() >= min_inliers * moved.sum():
            px1, py1, px2, py2 = (0, 0, w, h) if picture is None else (round(v * s) for v in picture)
            spread = np.ptp(src[moved][inl], axis=0) / np.array([max(1, px2 - px1), max(1, py2 - py1)])
            if spread.min() >= 0.4:  # the camera moves under static marks, not one object in the scene
                overlay = int((~moved).sum())
                return BackgroundStep(m.astype(np.float64), n, tracked, float(inl.mean()), overlay, "ok")
    m, inl = _similarity(src, dst)
    share = float(inl.mean()) if len(inl) else 0.0
    if m is None or share < min_inliers:
        return BackgroundStep(None, n, tracked, share, 0, "inconsistent")
    return BackgroundStep(m.astype(np.float64), n, tracked, share, 0, "ok")


def _is_static(m: np.ndarray, tol: float = 0.3) -> bool:
    return float(np.abs(m - IDENTITY)[:, 2].max()) < tol and float(np.abs(m - IDENTITY)[:, :2].max()) < 2e-3


def compose(steps: list[np.ndarray]) -> np.ndarray:
    """Chain 2x3 transforms k->k+1 into first->last."""
    total = np.eye(3)
    for m in steps:
        total = np.vstack([m, [0, 0, 1]]) @ total
    return total[:2]


def motion_magnitude(m: np.ndarray, width: int, height: int) -> float:
    """Largest displacement of a frame corner or the centre under `m`, over the frame diagonal: a pan,
    a zoom and a rotation all register, a shake that returns cancels out."""
    pts = np.array([[0, 0], [width, 0], [0, height], [width, height], [width / 2, height / 2]], float)
    moved = pts @ m[:, :2].T + m[:, 2]
    return float(np.linalg.norm(moved - pts, axis=1).max() / math.hypot(width, height))


def background_match(
    a: np.ndarray,
    b: np.ndarray,
    m: np.ndarray,
    people: list[Pose17],
    block: int = 16,
    grays: tuple | None = None,
    picture: tuple[int, int, int, int] | None = None,
) -> float | None:
    """Share of the textured background blocks of frame b that frame a, aligned by `m` (small-frame
    pixels a -> b), still matches (normalised cross-correlation >= 0.5). Low: a different place,
    although colours may be alike. None when no textured background block overlaps. `grays`: the
    frames' small_gray() results when the caller has them."""
    (ga, s), (gb, _) = grays or (small_gray(a), small_gray(b))
    h, w = gb.shape
    warped = cv2.warpAffine(ga, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    valid = cv2.warpAffine(np.full_like(ga, 255), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    keep = (valid == 255) & (background_mask((h, w), people, s) == 255)
    if picture is not None:
        keep &= body.picture_mask((h, w), picture, s) == 255
    by, bx = h // block, w // block
    if by == 0 or bx == 0:
        return None

    def blocks(img: np.ndarray) -> np.ndarray:  # (by * bx, block * block)
        return img[: by * block, : bx * block].reshape(by, block, bx, block).swapaxes(1, 2).reshape(by * bx, -1)

    pa = blocks(warped).astype(np.float32)
    pb = blocks(gb).astype(np.float32)
    whole = blocks(keep).all(axis=1)
    sa, sb = pa.std(axis=1), pb.std(axis=1)
    use = whole & (sa >= 4.0) & (sb >= 4.0)  # flat blocks (sky, wall, letterbox) say nothing about the place
    if not use.any():
        return None
    pa, pb = pa[use], pb[use]
    ncc = ((pa - pa.mean(1, keepdims=True)) * (pb - pb.mean(1, keepdims=True))).mean(1) / (sa[use] * sb[use])
    return float((ncc >= 0.5).mean())


# ---------------------------------------------------------------- near-duplicates


def phash(frame: np.ndarray) -> str:
    """64-bit perceptual hash (DCT, imagehash) as 16 hex digits."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(np.ascontiguousarray(frame))))


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def near_duplicates(keys: list[tuple[str, str, str]], max_distance: int) -> dict[str, str]:
    """Pairs whose before AND after hashes are both within `max_distance` bits of an earlier pair's.
    `keys`: (pair_id, before hash, after hash) in the order that decides which one is kept (the first).
    Returns {dropped pair_id: the kept pair_id it repeats}. Candidates come from bands of the before
    hash (max_distance + 1 bands of a 64-bit hash: two hashes that close share at least one band
    exactly), so a large dataset is not compared all against all."""
    bands = max_distance + 1
    width = 64 // bands
    index: dict[tuple[int, int], list[int]] = {}
    kept: list[tuple[str, int, int]] = []
    dropped: dict[str, str] = {}
    for pid, hb, ha in keys:
        b, a = int(hb, 16), int(ha, 16)
        parts = [(i, (b >> (i * width)) & ((1 << width) - 1)) for i in range(bands)]
        seen: set[int] = set()
        hit = None
        for part in parts:
            for k in index.get(part, ()):
                if k in seen:
                    continue
                seen.add(k)
                kid, kb, ka = kept[k]
                if (kb ^ b).bit_count() <= max_distance and (ka ^ a).bit_count() <= max_distance:
                    hit = kid
                    break
            if hit:
                break
        if hit:
            dropped[pid] = hit
            continue
        kept.append((pid, b, a))
        for part in parts:
            index.setdefault(part, []).append(len(kept) - 1)
    return dropped
