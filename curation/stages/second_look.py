"""Another person the pose model misses at the build's input size, found by a second look at a pair's
two frames at 1280 px (twice the default input size).

A bystander in the back of a gym, a tenth of the subject's height and out of focus, uncovered when the
lifter squats; the reflection of the person filming in a wall mirror; passers-by behind a toddler on a
pavement: at the build's 640-px input the pose model scores them 0.02-0.04, under any usable threshold,
and at 1280 px 0.37-0.55 (docs/design.md). Running the whole build at 1280 px would cost about four
times the pose work, so only a pair that passed every other check is looked at again: both frames at
SECOND_LOOK_IMGSZ, and the best score of a person there who is not the subject, inside the pair's crop
(one the crop leaves out is not in the pair). At that size the model also boxes parts of the subject
(the legs of a push-up, an arm holding a bar): a box mostly on the subject's drawn figure (ON_FIGURE),
one that is the subject's box again, or one whose keypoints coincide with the subject's is the subject.

Where nothing is found there, the pair's crop is looked at on its own, enlarged to CROP_LOOK_IMGSZ
(people_in): teammates walking 20-30 px tall behind a rugby kicker, which the whole frame at 1280 px
misses, are found at about 0.5 in a crop a third of the frame wide. At that magnification the subject
falls apart into parts (the legs of a cartwheel boxed as a person, 0.63 of the body's height), so only a
figure under FAR_FIGURE of the subject's height counts there: one far behind it; a larger one is the
whole frame's look to find.
"""

from __future__ import annotations

import functools
import threading

import cv2
import numpy as np

from schemas.records import Pose17

from ..config import PoseConfig
from . import crop
from .camera import moved_box
from .people import iou
from .pose import PoseDetector
from .quality import keypoint_similarity
from .silhouette import body_shapes

Box = tuple[float, float, float, float]
SECOND_LOOK_IMGSZ = 1280  # the pose model's input at the second look (the build's default is 640)
DET_CONF = 0.1  # the second look's detection threshold, under quality.max_second_look_person (0.2)
ON_FIGURE = 0.4  # share of a box on the subject's drawn figure that makes it a part of the subject
CHANGED_LEVEL = 25  # gray levels a pixel differs by between the frames, camera taken out, to have changed
MIN_CHANGED = 0.2  # share of a box's pixels that changed for a person there to count
STILL_PERSON = 0.5  # a person this clear counts where the picture did not change too (one standing still)
COVERED = 0.75  # share of a box on the subject's body (what the hands hold aside) that hides who stands there
SAME_BOX = 0.5  # IoU with the subject's box that makes a box the subject's
CROP_LOOK_IMGSZ = 960  # the pose model's input for the pair's crop alone (people_in)
FAR_FIGURE = 0.5  # at the crop's look, a box under this share of the subject's height counts (far behind it)


@functools.lru_cache(maxsize=4)  # as many as the build keeps clip processors
def _detector(pose_json: str) -> tuple[PoseDetector, threading.Lock]:
    cfg = PoseConfig.model_validate_json(pose_json)
    cfg = cfg.model_copy(update={"imgsz": SECOND_LOOK_IMGSZ, "det_conf": min(cfg.det_conf, DET_CONF)})
    return PoseDetector(cfg).setup(), threading.Lock()


def load(pose: PoseConfig) -> None:
    """Set the second look's model up now (the build's set-up: one that cannot load stops the run)."""
    _detector(pose.model_dump_json())


def _find(frame: np.ndarray, pose: PoseConfig, imgsz: int) -> list[Pose17]:
    """The second look's model at `imgsz` (the crop's look runs it at CROP_LOOK_IMGSZ: the same
    detections as a model set up at that size)."""
    detector, lock = _detector(pose.model_dump_json())
    with lock:  # one model, called from the clip post-processing thread(s)
        return detector(frame[None], imgsz)[0]


def people(frame: np.ndarray, pose: PoseConfig) -> list[Pose17]:
    """Every person the pose model finds in an RGB frame at SECOND_LOOK_IMGSZ, in the frame's pixels."""
    return _find(frame, pose, SECOND_LOOK_IMGSZ)


def people_in(frame: np.ndarray, region: Box, pose: PoseConfig) -> list[Pose17]:
    """Every person the pose model finds in `region` of an RGB frame, the region alone enlarged to
    CROP_LOOK_IMGSZ, in the frame's pixels; none when that enlarges it no more than the whole frame's
    look does (a crop as large as the frame: there is nothing more to see)."""
    h, w = frame.shape[:2]
    x1, y1 = max(0, int(region[0])), max(0, int(region[1]))
    x2, y2 = min(w, int(np.ceil(region[2]))), min(h, int(np.ceil(region[3])))
    if x2 - x1 < 8 or y2 - y1 < 8 or CROP_LOOK_IMGSZ / max(x2 - x1, y2 - y1) <= SECOND_LOOK_IMGSZ / max(h, w):
        return []
    box = (x1, y1, x2, y2)
    return [crop.unshift_pose(p, box, w, h) for p in _find(crop.cut(frame, box), pose, CROP_LOOK_IMGSZ)]


def look(frame: np.ndarray, region: Box | None, pose: PoseConfig) -> list[Pose17]:
    """The whole frame's look (`region` None: people()) or the pair's crop alone (people_in())."""
    return people(frame, pose) if region is None else people_in(frame, region, pose)


def _centre_in(box: Box, region: Box) -> bool:
    return region[0] <= (box[0] + box[2]) / 2 <= region[2] and region[1] <= (box[1] + box[3]) / 2 <= region[3]


def changed(a: np.ndarray, b: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Where RGB frames a and b differ by more than CHANGED_LEVEL gray levels once the camera (full: a -> b
    in their pixels) is taken out, in b's pixels (False where a does not reach)."""
    h, w = b.shape[:2]
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.int16)
    warped = cv2.warpAffine(ga, full, (w, h), flags=cv2.INTER_LINEAR).astype(np.int16)
    valid = cv2.warpAffine(np.full(ga.shape, 255, np.uint8), full, (w, h), flags=cv2.INTER_NEAREST) == 255
    return (np.abs(warped - gb) > CHANGED_LEVEL) & valid


def _share(mask: np.ndarray, box: Box) -> float:
    h, w = mask.shape
    x1, y1 = min(max(int(box[0]), 0), w), min(max(int(box[1]), 0), h)
    x2, y2 = min(max(int(np.ceil(box[2])), 0), w), min(max(int(np.ceil(box[3])), 0), h)
    part = mask[y1:y2, x1:x2]
    return float(part.mean()) if part.size else 0.0


def other_person(
    found: list[Pose17],
    subject: Pose17,
    region: Box,
    change: np.ndarray,
    to_b: np.ndarray,
    kp_conf: float,
    same_oks: float,
    far: bool = False,
) -> tuple[float, Box | None]:
    """The best score of a person in `found` (one frame's second look) who is not the subject, whose box
    centre lies in `region` (the pair's crop) and whose box changed between the frames (MIN_CHANGED of
    its pixels in `change`, the pair's changed() mask, with to_b taking the frame's pixels to b's) or
    who scores STILL_PERSON, and that person's box; (0.0, None) when there is none. A person who
    appears, leaves, moves or is uncovered by the subject changes the picture there; a thing the model
    takes for a person at this size (a plate on a rack, a teapot on a table: 0.2-0.29) stays as it was.
    `far`: `found` is the crop's look (people_in), where only a box under FAR_FIGURE of the subject's
    height counts."""
    figure = body_shapes(change.shape, [subject], [], to_b, 1.0)[0] == 0  # the subject's figure, in b's pixels
    sx1, sy1, sx2, sy2 = subject.box
    best: tuple[float, Box | None] = (0.0, None)
    for p in found:
        bx1, by1, bx2, by2 = box = tuple(float(v) for v in p.box)
        if not _centre_in(box, region) or p.score <= best[0]:
            continue
        if far and by2 - by1 >= FAR_FIGURE * (sy2 - sy1):
            continue  # at the crop's magnification, a part of the subject (or the whole frame's to find)
        if iou(box, subject.box) >= SAME_BOX or keypoint_similarity(subject, p, kp_conf) >= same_oks:
            continue
        inside = max(0.0, min(bx2, sx2) - max(bx1, sx1)) * max(0.0, min(by2, sy2) - max(by1, sy1))
        if inside >= SAME_BOX * (sx2 - sx1) * (sy2 - sy1):
            continue  # a looser box around the subject
        seen = moved_box(box, to_b)
        if _share(figure, seen) >= ON_FIGURE:
            continue  # a part of the subject boxed on its own (legs, an arm)
        if _share(change, seen) < MIN_CHANGED and p.score < STILL_PERSON:
            continue  # unchanged between the frames and not clearly a person: a thing, or nothing new
        best = (float(p.score), box)
    return best


def still_there(
    box: Box,
    seen_in: np.ndarray,
    region: Box,
    frames: list[np.ndarray],
    subjects: list[Pose17],
    change: np.ndarray,
    drift: int = 0,
) -> bool:
    """A person the second look found at `box` in another frame of the clip (`seen_in`, RGB) counts for a
    pair when the box centre lies in `region` and the subject does not cover the box in both of the
    pair's `frames` (each with its subject), and either a frame that shows the box looks there as it did
    when the person was found (a bystander standing still), or the picture there changed between the
    pair's frames (`change`: shown in one and hidden or gone in the other, or moved). The box is in
    `seen_in`'s pixels; a camera that moved since by up to `drift` pixels (static or stabilised pairs,
    under the camera-motion limit) is allowed for where it is looked for as it was, not elsewhere (its
    place against the crop, the body and the change)."""
    if not _centre_in(box, region):
        return False
    shown = [  # the body itself hides who stands behind it, not what its hands may hold
        _share(body_shapes(f.shape[:2], [], [s], np.eye(2, 3), 1.0, held=False)[0] == 0, box) < COVERED
        for f, s in zip(frames, subjects, strict=True)
    ]
    if not any(shown):
        return False
    for f, visible in zip(frames, shown, strict=True):
        if visible and seen_in.shape == f.shape and _as_it_was(seen_in, f, box, drift):
            return True
    return _share(change, box) >= MIN_CHANGED


def _as_it_was(seen_in: np.ndarray, frame: np.ndarray, box: Box, drift: int) -> bool:
    """The box's pixels in `seen_in` are found in `frame` within `drift` pixels of their place (a camera
    that moved a little since), with under MIN_CHANGED of them differing by CHANGED_LEVEL."""
    h, w = frame.shape[:2]
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return False
    patch = cv2.cvtColor(seen_in[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY)
    wx1, wy1, wx2, wy2 = max(x1 - drift, 0), max(y1 - drift, 0), min(x2 + drift, w), min(y2 + drift, h)
    window = cv2.cvtColor(frame[wy1:wy2, wx1:wx2], cv2.COLOR_RGB2GRAY)
    _, _, (bx, by), _ = cv2.minMaxLoc(cv2.matchTemplate(window, patch, cv2.TM_SQDIFF))
    there = window[by : by + patch.shape[0], bx : bx + patch.shape[1]].astype(np.int16)
    return float((np.abs(there - patch.astype(np.int16)) > CHANGED_LEVEL).mean()) < MIN_CHANGED
