"""Does an LLM caption say what the keypoints show? Multimodal models confuse the person's left with the
image's left and invent motion; the poses the pipeline measured can check both.

For each structured change the model names (side, part, direction; schemas.captions.MotionChange) the
joint that carries it is measured in both frames, root-relative (hip centre) and in torso lengths:
  up / down        the joint's height (arm, hand: wrist; leg, foot: ankle; knee: knee)
  out / in         the joint's horizontal distance from the body's midline
  bend / straighten   the elbow or knee angle
A change agrees when its own side moved that way by at least `threshold`; it contradicts when its side
did not (or moved the other way) while the other side did, or when it moved the other way clearly.
A caption agrees when every checkable change agrees (at least one), contradicts when any contradicts.
Changes without a side (torso, head, whole body, turn, forward) or joints not visible are not checkable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from schemas.captions import Agreement, MotionChange
from schemas.records import KP, Pose17

JOINT = {"arm": "wrist", "hand": "wrist", "leg": "ankle", "foot": "ankle", "knee": "knee"}
_ARM, _LEG = ("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle")
ANGLE = {"arm": _ARM, "hand": _ARM, "leg": _LEG, "knee": _LEG, "foot": _LEG}
OPPOSITE = {"up": "down", "down": "up", "out": "in", "in": "out", "bend": "straighten", "straighten": "bend"}


@dataclass(frozen=True)
class Verdict:
    agreement: str
    detail: str


class _Frame:
    def __init__(self, pose: Pose17, min_conf: float):
        self.k = np.asarray(pose.keypoints, dtype=np.float64)
        self.min_conf = min_conf

    def p(self, name: str) -> np.ndarray | None:
        x, y, c = self.k[KP[name]]
        return np.array([x, y]) if c >= self.min_conf and math.isfinite(x) and math.isfinite(y) else None

    def mid(self, a: str, b: str) -> np.ndarray | None:
        pa, pb = self.p(a), self.p(b)
        return None if pa is None or pb is None else (pa + pb) / 2

    def torso(self) -> float | None:
        s, h = self.mid("left_shoulder", "right_shoulder"), self.mid("left_hip", "right_hip")
        t = None if s is None or h is None else float(np.linalg.norm(s - h))
        return t if t and t > 1 else None

    def angle(self, side: str, names: tuple[str, str, str]) -> float | None:
        pts = [self.p(f"{side}_{n}") for n in names]
        if any(p is None for p in pts):
            return None
        u, v = pts[0] - pts[1], pts[2] - pts[1]
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        if nu < 1e-6 or nv < 1e-6:
            return None
        return math.degrees(math.acos(float(np.clip(np.dot(u, v) / (nu * nv), -1, 1))))


def _movement(a: _Frame, b: _Frame, side: str, part: str, direction: str) -> float | None:
    """How far `side`'s `part` moved in `direction` (torso lengths, or right angles for bending);
    negative: the other way. None: not measurable."""
    torso = a.torso()
    if torso is None:
        return None
    if direction in ("bend", "straighten"):
        if part not in ANGLE:
            return None
        ea, eb = a.angle(side, ANGLE[part]), b.angle(side, ANGLE[part])
        if ea is None or eb is None:
            return None
        d = (ea - eb) / 90  # bending closes the angle
        return d if direction == "bend" else -d
    joint = JOINT.get(part)
    root_a, root_b = a.mid("left_hip", "right_hip"), b.mid("left_hip", "right_hip")
    ja, jb = a.p(f"{side}_{joint}") if joint else None, b.p(f"{side}_{joint}") if joint else None
    if joint is None or ja is None or jb is None or root_a is None or root_b is None:
        return None
    ra, rb = ja - root_a, jb - root_b
    if direction in ("up", "down"):
        d = (ra[1] - rb[1]) / torso  # image y points down: rising makes y smaller
        return d if direction == "up" else -d
    if direction in ("out", "in"):
        d = (abs(rb[0]) - abs(ra[0])) / torso
        return d if direction == "out" else -d
    return None


def check_change(a: _Frame, b: _Frame, c: MotionChange, threshold: float) -> tuple[str | None, str]:
    if c.side not in ("left", "right", "both") or c.direction not in OPPOSITE:
        return None, f"{c.side} {c.part} {c.direction}: not checkable from keypoints"
    sides = ["left", "right"] if c.side == "both" else [c.side]
    got = {s: _movement(a, b, s, c.part, c.direction) for s in ("left", "right")}
    if any(got[s] is None for s in sides):
        return None, f"{c.side} {c.part} {c.direction}: joints not visible"
    said = f"{c.side} {c.part} {c.direction}"
    figures = ", ".join(f"{s} {v:+.2f}" for s, v in got.items() if v is not None)
    if all(got[s] >= threshold for s in sides):
        return Agreement.AGREE, f"{said}: {figures}"
    if any(got[s] <= -threshold for s in sides):
        return Agreement.CONTRADICT, f"{said}: moved the other way ({figures})"
    other = "right" if c.side == "left" else "left" if c.side == "right" else None
    if other is not None and got[other] is not None and got[other] >= threshold and got[c.side] < threshold / 2:
        return Agreement.CONTRADICT, f"{said}: the {other} side did it ({figures})"
    return None, f"{said}: too small to tell ({figures})"


def check_caption(
    before: Pose17 | None,
    after: Pose17 | None,
    changes: list[MotionChange],
    min_conf: float = 0.5,
    threshold: float = 0.25,
) -> Verdict:
    if before is None or after is None:
        return Verdict(Agreement.NOT_CHECKABLE, "no poses (egocentric pair)")
    if not changes:
        return Verdict(Agreement.NOT_CHECKABLE, "the answer names no change")
    a, b = _Frame(before, min_conf), _Frame(after, min_conf)
    results = [check_change(a, b, c, threshold) for c in changes]
    details = "; ".join(d for _, d in results)
    verdicts = [v for v, _ in results if v is not None]
    if Agreement.CONTRADICT in verdicts:
        return Verdict(Agreement.CONTRADICT, details)
    if verdicts:
        return Verdict(Agreement.AGREE, details)
    return Verdict(Agreement.NOT_CHECKABLE, details)
