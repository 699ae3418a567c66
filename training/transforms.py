"""One random resize/crop/flip applied identically to both images of a pair. A horizontal flip also
mirrors the keypoints (x -> 1 - x, and the left/right keypoints swap places) and swaps "left" and
"right" in the instruction, so "raise your right arm" stays true of the flipped images."""

from __future__ import annotations

import hashlib
import random
import re

import cv2
import numpy as np
import torch

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
        h, w = s.before.shape[:2]
        scale = r / min(h, w)
        nh, nw = max(r, round(h * scale)), max(r, round(w * scale))
        top = rng.randint(0, nh - r) if self.random_crop else (nh - r) // 2
        left = rng.randint(0, nw - r) if self.random_crop else (nw - r) // 2
        flip = rng.random() < self.flip_p

        def image(img: np.ndarray) -> torch.Tensor:
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)[top : top + r, left : left + r]
            if flip:
                img = img[:, ::-1]
            return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1.0

        _, target = keypoints_array(s.pair)
        kp = target.copy()
        kp[:, 0] = (kp[:, 0] * (nw / w) - left) / r
        kp[:, 1] = (kp[:, 1] * (nh / h) - top) / r
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
