"""A demo clip made here, from a public-domain photo that an installed package ships: scikit-image's
astronaut (Eileen Collins, NASA). The photo's own keypoints (found by the pose model) drive a
piecewise-affine warp that swings the right arm up and out, so the detector sees real arm motion.

The photo shows the upper body only (hips sit at the bottom edge), so building from this clip uses
the upper-body preset `curation/configs/upper_body.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .config import PoseConfig
from .stages.pose import PoseDetector

DEMO_NAME = "astronaut_raises_arm.mp4"
UPPER_BODY_CONFIG = Path(__file__).parent / "configs" / "upper_body.yaml"


def _rotate(points: np.ndarray, center: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - center) @ r.T + center


def demo_frames(n_still: int = 6, n_move: int = 14, max_degrees: float = 100.0) -> list[np.ndarray]:
    from skimage import data
    from skimage.transform import PiecewiseAffineTransform, warp

    photo = data.astronaut()
    pad = 260
    canvas = cv2.copyMakeBorder(photo, 0, 0, pad, 0, cv2.BORDER_REPLICATE)
    # PyTorch, whatever engine is installed: the same clip on every machine
    pose = PoseDetector(PoseConfig(device="cpu", engine="torch")).setup()([canvas])[0][0]
    k = np.asarray(pose.keypoints)[:, :2]
    shoulder, elbow, wrist = k[6], k[8], k[10]  # COCO: right_shoulder, right_elbow, right_wrist

    # control points along the arm (with its width) move; the rest of the picture stays put
    axis = np.concatenate([np.linspace(shoulder, elbow, 5)[1:], np.linspace(elbow, wrist, 4)[1:]])
    arm = []
    for i, p in enumerate(axis):
        nxt = axis[min(i + 1, len(axis) - 1)] - axis[max(i - 1, 0)]
        normal = np.array([-nxt[1], nxt[0]]) / (np.linalg.norm(nxt) + 1e-9)
        arm += [p, p + 35 * normal, p - 35 * normal]
    arm = np.asarray(arm)
    h, w = canvas.shape[:2]
    xs, ys = np.linspace(0, w - 1, 7), np.linspace(0, h - 1, 6)
    border = np.array([[x, y] for x in xs for y in (0, h - 1)] + [[x, y] for x in (0, w - 1) for y in ys])
    body = k[[0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12]]
    fixed = np.concatenate([border, body])

    frames = [canvas] * n_still
    for step in range(1, n_move + 1):
        moved = _rotate(arm, shoulder, max_degrees * step / n_move)
        # warp() maps output coordinates to input ones: estimate from moved -> original
        tform = PiecewiseAffineTransform.from_estimate(np.concatenate([moved, fixed]), np.concatenate([arm, fixed]))
        out = warp(canvas, tform, output_shape=canvas.shape, mode="edge", preserve_range=True)
        frames.append(out.astype(np.uint8))
    frames += [frames[-1]] * n_still
    return frames


def write_demo_clip(folder: Path, fps: float = 8.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DEMO_NAME
    frames = demo_frames()
    h, w = frames[0].shape[:2]
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError("OpenCV could not open an MPEG-4 writer")
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    tmp.replace(path)
    return path
