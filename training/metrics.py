"""Scores of an edited image against the real after-frame (pure functions, numpy in, floats out).

Keypoints are (17, 3) arrays of x, y, confidence in the pixels of the image scored; a joint is in the
ground truth when its confidence reaches `min_conf` and it has a location. Distances are normalised by
the ground truth's torso length (shoulder centre to hip centre), so they mean the same on any body size.
"""

from __future__ import annotations

import math

import numpy as np

from curation import geometry

# COCO's per-keypoint OKS constants (sigmas), in COCO17 order
COCO_SIGMAS = (
    np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89])
    / 10.0
)
PCK_THRESHOLDS = (0.05, 0.1, 0.2)
MOVED = 0.1  # a joint "should move" when the real motion exceeds this many torso lengths


def visible(kp: np.ndarray, min_conf: float = 0.5) -> np.ndarray:
    return (kp[:, 2] >= min_conf) & np.isfinite(kp[:, :2]).all(1)


def torso_length(kp: np.ndarray, min_conf: float = 0.5) -> float | None:
    """Shoulder centre to hip centre (curation/geometry.py); None unless all four joints are visible
    and the length is above 1e-6."""
    return geometry.torso_length(kp, min_conf=min_conf, min_length=1e-6)


def moved_joints(before: np.ndarray, after: np.ndarray, torso: float, min_conf: float = 0.5) -> np.ndarray:
    both = visible(before, min_conf) & visible(after, min_conf)
    d = np.linalg.norm(after[:, :2] - before[:, :2], axis=1) / torso
    return both & (np.nan_to_num(d) > MOVED)


def pck(pred: np.ndarray | None, gt: np.ndarray, torso: float, alpha: float, joints: np.ndarray) -> float | None:
    """Share of `joints` (boolean mask, within gt's visible joints) the prediction puts within alpha x torso;
    a joint the prediction lacks (or no prediction at all) is a miss."""
    if not joints.any():
        return None
    if pred is None:
        return 0.0
    ok = visible(pred, 0.0) & joints
    d = np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1) / torso
    return float((ok & (np.nan_to_num(d, nan=np.inf) <= alpha)).sum() / joints.sum())


def oks(pred: np.ndarray | None, gt: np.ndarray, joints: np.ndarray) -> float | None:
    """COCO object keypoint similarity over `joints`, with the gt's keypoint box area as the scale."""
    if not joints.any():
        return None
    if pred is None:
        return 0.0
    pts = gt[visible(gt, 0.0), :2]
    area = float(np.prod(pts.max(0) - pts.min(0))) if len(pts) >= 2 else 0.0
    if area <= 0:
        return None
    d2 = np.nan_to_num(((pred[:, :2] - gt[:, :2]) ** 2).sum(1), nan=np.inf)
    k2 = (2 * COCO_SIGMAS) ** 2
    e = np.exp(-d2 / (2 * area * k2 + np.spacing(1)))
    e[~visible(pred, 0.0)] = 0.0
    return float(e[joints].mean())


def direction(
    pred: np.ndarray | None,
    before: np.ndarray,
    after: np.ndarray,
    joints: np.ndarray,
    torso: float,
    reference: np.ndarray | None = None,
) -> tuple[float | None, float | None]:
    """Over the joints that should move: the share whose edit moved them the same way as the real motion
    (positive cosine), and the mean cosine. The edit's motion is measured from `reference` (the same
    detector on the unedited before-image, so its own error cancels; default: `before`). A joint moved
    less than half the "should move" threshold, a missing joint or no prediction counts as not moved."""
    if not joints.any():
        return None, None
    real = after[:, :2] - before[:, :2]
    if pred is None:
        return 0.0, 0.0
    ref = before[:, :2].copy()
    if reference is not None:
        seen = visible(reference, 0.0)
        ref[seen] = reference[seen, :2]
    got = np.where(visible(pred, 0.0)[:, None], pred[:, :2] - ref, 0.0)
    cos = []
    for j in np.flatnonzero(joints):
        nr, ng = np.linalg.norm(real[j]), np.linalg.norm(got[j])
        moved = ng / torso >= MOVED / 2
        cos.append(float(real[j] @ got[j] / (nr * ng)) if moved and nr > 1e-6 else 0.0)
    c = np.array(cos)
    return float((c > 0).mean()), float(c.mean())


def box_mask(shape: tuple[int, int], boxes: list[list[float]], pad: float = 0.1) -> np.ndarray:
    """True outside every (padded) person box: the background and the rest of the scene."""
    h, w = shape
    mask = np.ones((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            continue
        px, py = pad * (x2 - x1), pad * (y2 - y1)
        mask[
            max(0, int(y1 - py)) : max(0, int(math.ceil(y2 + py))),
            max(0, int(x1 - px)) : max(0, int(math.ceil(x2 + px))),
        ] = False
    return mask


def preservation(candidate: np.ndarray, before: np.ndarray, mask: np.ndarray) -> tuple[float | None, float | None]:
    """SSIM and PSNR (dB, capped at 100) between two HxWx3 uint8 images over the pixels of `mask`."""
    from skimage.metrics import structural_similarity

    if mask.sum() < 16:
        return None, None
    _, ssim_map = structural_similarity(candidate, before, channel_axis=2, data_range=255, full=True, win_size=7)
    ssim = float(ssim_map.mean(axis=2)[mask].mean())
    mse = float(((candidate.astype(np.float64) - before.astype(np.float64)) ** 2)[mask].mean())
    psnr = 100.0 if mse == 0 else min(100.0, 10 * math.log10(255.0**2 / mse))
    return ssim, psnr
