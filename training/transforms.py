"""One random resize/crop/flip applied identically to both images of a pair. A horizontal flip also
mirrors the keypoints (x -> 1 - x, and the left/right keypoints swap places) and swaps "left" and
"right" in the instruction, so "raise your right arm" stays true of the flipped images."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from schemas.records import COCO17_FLIP
from schemas.shard import ShardSample, keypoints_array

_SIDE = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def swap_sides(text: str) -> str:
    return _SIDE.sub(lambda m: _SWAP[m.group(1)], text)


def sample_rng(key: str, seed: int, epoch: int) -> random.Random:
    """Augmentation randomness from (seed, epoch, sample): the same on a resumed run, in any worker."""
    digest = hashlib.sha256(f"{seed}|{epoch}|{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class CropGeometry:
    """Resize the short side to r, then crop r x r at (top, left): the one crop of training, edit and
    evaluate. Resizing runs on tensors (antialiased), on whatever device the image is on."""

    h: int
    w: int
    r: int
    nh: int
    nw: int
    top: int
    left: int

    def tensor(self, img: torch.Tensor) -> torch.Tensor:
        """C x H x W uint8 (or float) tensor -> C x r x r."""
        img = TF.resize(img, [self.nh, self.nw], antialias=True)
        return img[:, self.top : self.top + self.r, self.left : self.left + self.r]

    def image(self, img) -> np.ndarray:
        """H x W x 3 uint8 array (or a C x H x W tensor) -> r x r x 3 uint8 array."""
        t = (
            img
            if isinstance(img, torch.Tensor)
            else torch.from_numpy(np.require(img, requirements="CW")).permute(2, 0, 1)
        )
        return self.tensor(t).permute(1, 2, 0).cpu().numpy()

    def point(self, x: float, y: float) -> tuple[float, float]:
        return x * (self.nw / self.w) - self.left, y * (self.nh / self.h) - self.top

    def keypoints(self, kp: np.ndarray, mask: bool = True) -> np.ndarray:
        """(17, 3) keypoints in source pixels -> in crop pixels, confidences kept as they are. With `mask`
        (what scoring needs), a joint the crop cuts away is not visible: it loses its location (NaN, as a
        joint the detector did not place). Without it every joint keeps its place, inside the crop or not."""
        out = kp.astype(np.float64).copy()
        out[:, 0] = kp[:, 0] * (self.nw / self.w) - self.left
        out[:, 1] = kp[:, 1] * (self.nh / self.h) - self.top
        return mask_to_view(out, self.r, self.r) if mask else out


def in_view(kp: np.ndarray, w: float, h: float) -> np.ndarray:
    """Which joints of (17, 3) keypoints lie inside a w x h image (edges included)."""
    x, y = kp[:, 0], kp[:, 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x <= w) & (y >= 0) & (y <= h)


def mask_to_view(kp: np.ndarray, w: float, h: float) -> np.ndarray:
    """A copy of (17, 3) keypoints where a joint outside the w x h image has no location (NaN): it is not
    visible there, however confident the detector was. Confidences stay as they were."""
    out = np.array(kp, dtype=np.float64)
    out[~in_view(out, w, h), :2] = np.nan
    return out


def crop_geometry(h: int, w: int, r: int, rng: random.Random | None = None) -> CropGeometry:
    scale = r / min(h, w)
    nh, nw = max(r, round(h * scale)), max(r, round(w * scale))
    top = rng.randint(0, nh - r) if rng is not None else (nh - r) // 2
    left = rng.randint(0, nw - r) if rng is not None else (nw - r) // 2
    return CropGeometry(h, w, r, nh, nw, top, left)


def center_crop_geometry(h: int, w: int, r: int) -> CropGeometry:
    return crop_geometry(h, w, r, None)


def _chw(img) -> torch.Tensor:
    """A decoded image as a C x H x W uint8 tensor (from the loader's tensor, or an H x W x 3 array)."""
    if isinstance(img, torch.Tensor):
        return img if img.shape[0] == 3 else img.permute(2, 0, 1)
    return torch.from_numpy(np.require(img, requirements="CW")).permute(2, 0, 1)


def _hw(img) -> tuple[int, int]:
    return tuple(img.shape[1:3]) if isinstance(img, torch.Tensor) and img.shape[0] == 3 else tuple(img.shape[:2])


class PairTransform:
    """ShardSample -> dict of tensors for training. Module-level class: picklable for DataLoader workers."""

    def __init__(
        self,
        resolution: int,
        seed: int = 0,
        epoch: int = 0,
        flip_p: float = 0.5,
        random_crop: bool = True,
        caption_version: str | None = None,
    ):
        self.resolution = resolution
        self.seed = seed
        self.epoch = epoch
        self.flip_p = flip_p
        self.random_crop = random_crop
        self.caption_version = caption_version  # None: the published caption (FramePair.caption_for)

    def __call__(self, s: ShardSample) -> dict:
        rng = sample_rng(s.key, self.seed, self.epoch)
        r = self.resolution
        h, w = _hw(s.before)
        g = crop_geometry(h, w, r, rng if self.random_crop else None)
        flip = rng.random() < self.flip_p

        def image(img) -> torch.Tensor:
            t = g.tensor(_chw(img))
            if flip:
                t = t.flip(-1)
            return t.float() / 127.5 - 1.0

        _, target = keypoints_array(s.pair)
        # unmasked: the pose branch draws the skeleton up to the crop's edge, so a limb that leaves the
        # crop still shows which way it goes
        kp = g.keypoints(target, mask=False)
        kp[:, :2] /= r
        caption = s.pair.caption_for(self.caption_version)
        text = caption.text if caption else ""
        if flip:
            kp[:, 0] = 1.0 - kp[:, 0]
            kp = kp[list(COCO17_FLIP)]
            text = swap_sides(text)
        return {
            "key": s.key,
            "before": image(s.before),
            "after": image(s.after),
            "text": text,
            "caption_version": caption.version if caption else "",
            "pose": torch.from_numpy(kp.astype(np.float32)),
            "flipped": flip,
        }
