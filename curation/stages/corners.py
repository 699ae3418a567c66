"""Background corners for the camera measure: Shi-Tomasi corners picked cell by cell over a grid
(grid_corners), found on each frame's eigenvalue map computed once, with OpenCV's own selection steps,
so the corners are exactly goodFeaturesToTrack's (a test compares them)."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import cv2
import numpy as np

_CORNER_MAPS = threading.local()  # per thread: the last frames' corner maps (see _corner_map)
_NEAR = np.add.outer(np.arange(-5, 6) ** 2, np.arange(-5, 6) ** 2) < 36  # closer than minDistance 6


def _corner_map(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the minimum-eigenvalue map goodFeaturesToTrack computes, where it is a 3x3 local maximum away
    from the border) of a gray frame, kept for the last few frames seen in this thread: a frame is
    searched for corners once per pair it is in, with another mask each time."""
    memo = getattr(_CORNER_MAPS, "maps", None)
    if memo is None:
        memo = _CORNER_MAPS.maps = OrderedDict()
    hit = memo.get(id(gray))
    if hit is not None and hit[0]() is gray:
        memo.move_to_end(id(gray))
        return hit[1], hit[2]
    eig = cv2.cornerMinEigenVal(gray, 3, ksize=3)
    peak = eig == cv2.dilate(eig, None)
    peak[[0, -1], :] = False
    peak[:, [0, -1]] = False
    for key in [k for k, (ref, *_) in memo.items() if ref() is None]:  # frames gone: their maps go too
        del memo[key]
    memo[id(gray)] = (weakref.ref(gray), eig, peak)
    while len(memo) > 16:
        memo.popitem(last=False)
    return eig, peak


def _good_features(gray: np.ndarray, cell: np.ndarray, box: tuple[slice, slice], count: int) -> np.ndarray | None:
    """cv2.goodFeaturesToTrack(gray, count, qualityLevel 0.01, minDistance 6, mask=cell) for a mask that
    is zero outside `box`, the same corners in the same order, from the frame's corner map (computed once
    for all its masks). Its steps: the quality threshold from the largest eigenvalue under the mask, the
    local maxima above it under the mask (off the frame's border), strongest first (ties: the later
    pixel first, as OpenCV sorts), each kept unless a kept one lies closer than minDistance."""
    eig, peak = _corner_map(gray)
    inside = cell[box] != 0
    if not inside.any():
        return None
    values = eig[box]
    top = float(values[inside].max())
    if top == 0:  # a flat cell: OpenCV keeps only values above 0.01 of 0 there, and there are none
        return None
    if top < 0:  # rounding below zero everywhere: OpenCV's thresholding to zero differs from the map's
        return cv2.goodFeaturesToTrack(gray, maxCorners=count, qualityLevel=0.01, minDistance=6, mask=cell)
    ys, xs = np.nonzero(peak[box] & inside & (values > top * 0.01))
    if not len(ys):
        return None
    order = np.lexsort((-(ys * gray.shape[1] + xs), -values[ys, xs]))
    taken = np.zeros((values.shape[0] + 10, values.shape[1] + 10), bool)  # within minDistance of a kept one
    kept: list[tuple[int, int]] = []
    for y, x in zip(ys[order].tolist(), xs[order].tolist(), strict=True):
        if not taken[y + 5, x + 5]:
            kept.append((x + box[1].start, y + box[0].start))
            if len(kept) == count:
                break
            taken[y : y + 11, x : x + 11] |= _NEAR
    return np.array(kept, np.float32).reshape(-1, 1, 2)


def grid_corners(
    gray: np.ndarray, mask: np.ndarray, cells: int = 4, per_cell: int = 24, find=_good_features
) -> np.ndarray:
    """Shi-Tomasi corners picked cell by cell over a grid, so a few strong marks (a logo, a textured
    border) cannot take every corner and the weaker texture of the scene still gets its share. The same
    corners as OpenCV's goodFeaturesToTrack with each cell's mask (a test compares them, passing that
    as `find`), found on the frame's eigenvalue map computed once instead of once per cell and per pair."""
    h, w = gray.shape
    found = []
    for cy in range(cells):
        for cx in range(cells):
            cell = np.zeros_like(mask)
            ys, xs = slice(cy * h // cells, (cy + 1) * h // cells), slice(cx * w // cells, (cx + 1) * w // cells)
            cell[ys, xs] = mask[ys, xs]
            pts = find(gray, cell, (ys, xs), per_cell)
            if pts is not None:
                found.append(pts)
    return np.concatenate(found).astype(np.float32) if found else np.zeros((0, 1, 2), np.float32)
