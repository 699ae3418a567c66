"""Text that changes between a pair's two frames, found by a packaged text detector.

A subtitle that changes sentence, a bullet line that appears, a counter that ticks over: white glyphs
outlined in black over a pale curtain pass the pixel checks (silhouette.text_change wants a dark ground
around bright strokes; the overlay regions leave out what lies within the body's reach, and a subtitle
beside the head does). RapidOCR's PP-OCRv4 detection model (`rapidocr_onnxruntime`, which holds the
model in its wheel; run through onnxruntime, detection only) finds the text boxes of each frame; a box
of either frame whose pixels off the drawn body changed between the frames (CHANGED_SHARE of them by
more than CHANGED_LEVEL gray levels, after alignment; or, for thin light glyphs that fill little of their
box, INK_CHANGED of its ink) holds text that changed. Text that stays (a
watermark, a title, a wall clock) changes nothing. A box that is no line of text (LINE_ASPECT, LINE_HEIGHT:
the detector boxes a leg and a ball now and then) is not judged; text on the body (a jersey number)
moves with it and is judged only on a box's pixels off the drawn figure, and only where a quarter of it
lies there (MIN_OFF_BODY: a subtitle beside the head is partly inside the head's drawn disk).

Measured on the ninth out-of-sample batch and kept pairs (docs/design.md): changing subtitles 0.54-0.58
of a box's pixels, an appearing bullet line 0.29, unchanged text 0.0, text near a moving person
0.08-0.12, a jersey number 0.87 before the body is masked.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from schemas.records import Pose17

from .camera import moved_box
from .silhouette import body_shapes

Box = tuple[float, float, float, float]
CHANGED_LEVEL = 40  # gray levels a text pixel differs by between the frames when its text changed
CHANGED_SHARE = 0.25  # share of a box's judged pixels that changed: its text changed
INK_CHANGED, MIN_INK_SHARE = 0.6, 0.05  # or this share of its ink, and of its pixels (thin glyphs typed in)
MIN_OFF_BODY = 0.25  # share of a box off the drawn body for it to be judged (text on a shirt moves with it)
DETECT_SIDE = 736  # frames longer than this (pixels) are shrunk to it for the detector (its cost grows with size)
LINE_ASPECT, LINE_HEIGHT = 2.0, 0.2  # a line of text: at least twice as wide as high, under 0.2 of the frame high


@functools.lru_cache(maxsize=1)
def version() -> str:
    """The detector's package and its runtime, with their versions: recorded with the results (an upgrade
    that moves the boxes redoes the clips, as a new pose engine does). Read once a process."""
    import importlib.metadata as md

    found = []
    for package in ("rapidocr-onnxruntime", "onnxruntime"):
        try:
            found.append(f"{package}-{md.version(package)}")
        except md.PackageNotFoundError:
            found.append(f"{package}-missing")
    return "/".join(found)


def load() -> None:
    """Load the detector now (the build's set-up: a model that cannot load is a problem of the run)."""
    _detector()


@functools.lru_cache(maxsize=1)
def _detector():
    from rapidocr_onnxruntime import RapidOCR  # imported when first needed: onnxruntime is a big import

    return RapidOCR(det_limit_side_len=DETECT_SIDE, det_limit_type="max", intra_op_num_threads=1)


def text_boxes(frame: np.ndarray) -> list[Box]:
    """The axis-aligned boxes (x1, y1, x2, y2) of the text the detector finds in an RGB frame."""
    f = min(1.0, DETECT_SIDE / max(frame.shape[:2]))
    small = frame if f == 1.0 else cv2.resize(frame, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    found, _ = _detector()(np.ascontiguousarray(small[..., ::-1]), use_det=True, use_cls=False, use_rec=False)
    boxes = []
    for quad in found if found is not None else []:
        q = np.asarray(quad, np.float64).reshape(-1, 2) / f
        boxes.append((float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max())))
    return boxes


def _changed_share(x: np.ndarray, y: np.ndarray, ys: slice, xs: slice, judged: np.ndarray) -> tuple[float, float]:
    """The share of the judged pixels of box (ys, xs) where y's gray level differs from x's by more than
    CHANGED_LEVEL, and the same count over the box's ink (pixels that stand out by CHANGED_LEVEL from
    the box's median in either frame), at the best of x's shifts by up to a pixel (a text that stayed,
    shifted by a pixel by resampling or a re-encode, changes nothing; a text that changed does at every
    shift)."""
    h, w = y.shape
    best = (1.0, 1.0)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sy = slice(min(max(ys.start + dy, 0), h), min(max(ys.stop + dy, 0), h))
            sx = slice(min(max(xs.start + dx, 0), w), min(max(xs.stop + dx, 0), w))
            if sy.stop - sy.start != ys.stop - ys.start or sx.stop - sx.start != xs.stop - xs.start:
                continue  # that shift leaves the frame
            xa, yb = x[sy, sx], y[ys, xs]
            diff = (np.abs(xa - yb) > CHANGED_LEVEL) & judged
            ink = (np.abs(xa - np.median(xa[judged])) > CHANGED_LEVEL) | (
                np.abs(yb - np.median(yb[judged])) > CHANGED_LEVEL
            )
            share = float(diff.sum() / judged.sum())
            if share < best[0]:
                best = (share, float(diff.sum() / max(1, (ink & judged).sum())))
    return best


def _text_changed(share: tuple[float, float]) -> bool:
    """A box's text changed: CHANGED_SHARE of its pixels, or (thin light glyphs fill little of their box:
    a line typed in) INK_CHANGED of its ink and MIN_INK_SHARE of its pixels."""
    return share[0] >= CHANGED_SHARE or (share[0] >= MIN_INK_SHARE and share[1] >= INK_CHANGED)


def changed_text(
    a: np.ndarray,
    b: np.ndarray,
    boxes_a: list[Box],
    boxes_b: list[Box],
    full: np.ndarray,
    people_a: list[Pose17],
    people_b: list[Pose17],
) -> tuple[float, Box | None]:
    """The largest text box, as a share of the frame, whose text changed between RGB frames a and b
    (boxes in their own pixels; full: the camera a -> b in their pixels, PairAlignment.full_matrix), and
    that box, in the pixels of the frame it was found in; (0.0, None) when no text changed. Changed
    means in both frames of reference: on the screen (a caption laid over the picture stays put there
    while a stabilised camera moves the scene) and after the camera is taken out (text in the scene, a
    poster, stays put there)."""
    h, w = b.shape[:2]
    ga = cv2.GaussianBlur(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), (3, 3), 0).astype(np.int16)
    gb = cv2.GaussianBlur(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), (3, 3), 0).astype(np.int16)
    warped = cv2.warpAffine(ga, full, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    valid = cv2.warpAffine(np.full((h, w), 255, np.uint8), full, (w, h), flags=cv2.INTER_NEAREST) == 255
    scene_off = (body_shapes((h, w), people_a, people_b, full, 1.0)[0] > 0) & valid  # a's people moved
    screen_off = body_shapes((h, w), people_a, people_b, np.eye(2, 3), 1.0)[0] > 0  # where each frame shows them
    best, where = 0.0, None
    for box, in_a in [(x, True) for x in boxes_a] + [(x, False) for x in boxes_b]:
        x1, y1, x2, y2 = box
        if x2 - x1 < LINE_ASPECT * (y2 - y1) or y2 - y1 > LINE_HEIGHT * h:
            continue  # not a line of text: the detector also boxes a leg or a ball now and then
        scene = moved_box(box, full) if in_a else box  # where a's text lies in b's frame, camera taken out
        shares = []
        for (bx1, by1, bx2, by2), x, off in ((box, ga, screen_off), (scene, warped, scene_off)):
            ys = slice(min(h, max(0, int(by1))), max(0, min(h, int(np.ceil(by2)))))
            xs = slice(min(w, max(0, int(bx1))), max(0, min(w, int(np.ceil(bx2)))))
            judged = off[ys, xs]
            if judged.size == 0 or judged.mean() < MIN_OFF_BODY:
                break
            shares.append(_changed_share(x, gb, ys, xs, judged))
        share = (x2 - x1) * (y2 - y1) / (h * w)
        if len(shares) == 2 and all(map(_text_changed, shares)) and share > best:
            best, where = share, (float(x1), float(y1), float(x2), float(y2))
    return best, where
