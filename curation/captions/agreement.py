"""Does a caption say what the keypoints show? Multimodal models confuse the person's left with the
image's left and invent motion; a captioner that measured in the image called a push-up going down
"crouch down and raise your left arm". The poses the pipeline measured can check both.

Every claim (curation.captions.phrases: an LLM's structured changes, or a caption's own words) is
measured in the body's own frame (curation.captions.body), in torso lengths or right angles:
  up / down           arm, hand: the wrist's position along the torso axis, from the hip centre: "up" is
                      towards the head however the body lies. Leg, foot (ankle), knee: up in the picture
                      (off the floor) and relative to the hips there, the smaller of the two (a squat
                      brings the hips down to feet that stay put, a hinge turns the torso axis: along
                      it both read as raised feet; a pull-up lifts the feet with the hips)
  out / in            the joint's distance from the body's midline, across the torso (facing seen)
  bend / straighten   the elbow or knee angle; for the hips, the thigh's angle in front of the body
  move                the limb's joints, displaced in the body's frame
  fold / unfold       the hips coming down towards the feet or away ("crouch down", "stand up")
  lean / step         shoulders over the hips, or the hips, moving to the person's own left or right; a
                      step forward or back: the hips, the way a side-on body faces (its nose), the face
                      looking the same way in both frames
  turn                the person's facing (to or from the camera) flips and the face turns away in one frame
  lie / rise          standing (torso and legs upright) in one frame and lying (both along the floor) in
                      the other, the hips half a torso lower (higher) in the picture (body.floor_move):
                      "get down on the floor", "lie down", "get up off the floor"; it did not happen when
                      both frames stand or both lie and the hips moved under a third of that
A claim agrees when its own side moved that way by at least `threshold` (lie / rise: body.floor_move).
It contradicts, and says how:
  side        the other side did it, or the lean or step went to the other side
  direction   it moved the other way, or moved clearly but across the named direction (a push-up's
              wrist does not rise along the body: the arm folds)
  limb        the named part did not move at all (a still plank's "move your right leg")
A caption agrees when every checkable claim agrees (at least one), contradicts when any contradicts.
Claims without a side where one is needed, or joints not visible, are not checkable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas.captions import Agreement, MotionChange
from schemas.records import Pose17

from .body import FLOOR_DROP, Body, floor_move, floor_rise, hips_drop, turned
from .phrases import Claim, change_claims, text_claims

JOINT = {"arm": "wrist", "hand": "wrist", "leg": "ankle", "foot": "ankle", "knee": "knee"}
LIMB_JOINTS = {
    "arm": ("elbow", "wrist"),
    "hand": ("wrist",),
    "leg": ("knee", "ankle"),
    "foot": ("ankle",),
    "knee": ("knee",),
}
_ARM, _LEG = ("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle")
ANGLE = {"arm": _ARM, "hand": _ARM, "leg": _LEG, "knee": _LEG, "foot": _LEG}
FLOOR_PARTS = ("leg", "foot", "knee")  # up and down in the picture (off the floor), not along the body
SIDE, DIRECTION, LIMB = "side", "direction", "limb"  # how a claim is contradicted
KINDS = (SIDE, DIRECTION, LIMB)


@dataclass(frozen=True)
class Verdict:
    agreement: str
    detail: str
    kinds: tuple[str, ...] = field(default=())  # for a contradiction: side / direction / limb


@dataclass(frozen=True)
class Moved:
    value: float  # along the claimed direction (negative: the other way)
    across: float = 0.0  # movement not along it (for up/down and out/in)
    total: float = 0.0  # how far the part moved at all


def _points(a: Body, b: Body, side: str, part: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The limb's joints in the picture, before and after (the pair's frames share their pixels: a
    stabilised after frame is warped onto the before frame and both are cut by one box)."""
    return [(a.p(f"{side}_{j}"), b.p(f"{side}_{j}")) for j in LIMB_JOINTS.get(part, ())]


def _limb_motion(a: Body, b: Body, side: str, part: str) -> float | None:
    ds = []
    for j in LIMB_JOINTS.get(part, ()):
        ca, cb = a.coords(f"{side}_{j}"), b.coords(f"{side}_{j}")
        if ca is None or cb is None:
            return None
        ds.append(float(np.linalg.norm(cb - ca)))
    return float(np.mean(ds)) if ds else None


def _sided(a: Body, b: Body, side: str, part: str, direction: str) -> Moved | None:
    """A limb's movement on one side in `direction`; None when not measurable."""
    total = _limb_motion(a, b, side, part)
    if direction in ("bend", "straighten"):
        if part not in ANGLE:
            return None
        names = [f"{side}_{n}" for n in ANGLE[part]]
        ea, eb = a.angle(*names), b.angle(*names)
        if ea is None or eb is None:
            return None
        d = (ea - eb) / 90  # bending closes the angle
        return Moved(d if direction == "bend" else -d, total=abs(d))
    if direction == "move":
        return Moved(total, total=total) if total is not None else None
    joint = JOINT.get(part)
    ja, jb = (a.coords(f"{side}_{joint}"), b.coords(f"{side}_{joint}")) if joint else (None, None)
    if ja is None or jb is None or total is None:
        return None
    if direction in ("up", "down") and part in FLOOR_PARTS:
        # a leg's up is off the floor, in the picture, and relative to the hips: a squat brings the hips
        # down to feet that stay put, and a hinge turns the torso axis (measured from the hips along
        # that axis, both "raise" the feet); a pull-up or a jump lifts the feet with the hips.
        # (each joint is seen in both frames: total is not None)
        d = (a.p(f"{side}_{joint}") - b.p(f"{side}_{joint}")) / a.torso
        rose = floor_rise(a, b, f"{side}_{joint}")
        total = float(np.mean([np.linalg.norm(q - p) / a.torso for p, q in _points(a, b, side, part)]))
        return Moved(rose if direction == "up" else -rose, across=abs(d[0]), total=total)
    if direction in ("up", "down"):
        d = jb - ja
        return Moved(d[0] if direction == "up" else -d[0], across=abs(d[1]), total=total)
    if direction in ("out", "in"):
        if a.left is None or b.left is None:  # side-on: across the torso is front/back, not out/in
            return None
        d = abs(jb[1]) - abs(ja[1])
        return Moved(d if direction == "out" else -d, across=abs(jb[0] - ja[0]), total=total)
    return None


def _fold(a: Body, b: Body) -> float | None:
    """How far the hips came down towards the feet (torso lengths; < 0: away from them)."""
    fa, fb = a.hips_over_feet(), b.hips_over_feet()
    if fa is None or fb is None:
        return None
    return fa - fb


def _towards_left(a: Body, b: Body, what: str) -> float | None:
    """The shoulders over the hips ("lean") or the hips ("step") moving to the person's own left."""
    left = a.left
    if left is None or a.hips is None or b.hips is None or a.shoulders is None or b.shoulders is None:
        return None
    if what == "lean":
        v = (b.shoulders - b.hips) - (a.shoulders - a.hips)
    else:
        v = b.hips - a.hips
    return float(np.dot(v, left) / a.torso)


def forwards(a: Body, b: Body) -> float | None:
    """The hips moving the way the person faces (torso lengths; < 0: backwards), seen side-on in both
    frames with the face looking the same way in both (facing the camera, forwards is depth; a body
    that turned to face the other way, a boxer switching stance, stepped neither forward nor back)."""
    if not (a.side_view and b.side_view) or a.front is None or b.front is None or a.hips is None or b.hips is None:
        return None
    ahead = a.front * a.across  # the way the face looks, in the picture (each frame's `across` is its own)
    if float(np.dot(ahead, b.front * b.across)) <= 0:
        return None
    return float(np.dot(b.hips - a.hips, ahead) / a.torso)


def _flexion(a: Body, b: Body) -> float | None:
    """How far the thighs came forward of the body (right angles, mean of the sides seen)."""
    front = a.front or b.front
    if front is None:
        return None
    ds = [
        (fb - fa) / 90
        for s in ("left", "right")
        if (fa := a.flexion(s, front)) is not None and (fb := b.flexion(s, front)) is not None
    ]
    return float(np.mean(ds)) if ds else None


def _single(a: Body, b: Body, c: Claim) -> Moved | None:
    """The movement of a claim about the body as a whole (no left/right of its own)."""
    if c.part == "legs" and c.direction in ("fold", "unfold"):
        d = _fold(a, b)
        return None if d is None else Moved(d if c.direction == "fold" else -d, total=abs(d))
    if c.part == "hips" and c.direction in ("bend", "straighten"):
        d = _flexion(a, b)
        return None if d is None else Moved(d if c.direction == "bend" else -d, total=abs(d))
    if c.part == "head" and c.direction == "move":
        ca, cb = a.coords("nose"), b.coords("nose")
        d = None if ca is None or cb is None else float(np.linalg.norm(cb - ca))
        return None if d is None else Moved(d, total=d)
    return None


def check_claim(a: Body, b: Body, c: Claim, threshold: float) -> tuple[str | None, str, str | None]:
    """(verdict or None when not checkable, detail, how it is contradicted)."""
    said = str(c)
    if c.direction == "turn":
        if c.part != "whole_body":
            return None, f"{said}: not checkable from keypoints", None
        fa, fb = a.facing_camera, b.facing_camera
        if fa is None or fb is None:
            return None, f"{said}: facing not seen in both frames", None
        if fa == fb:
            return Agreement.CONTRADICT, f"{said}: facing the same way in both frames", DIRECTION
        if turned(a, b):
            return Agreement.AGREE, f"{said}: facing flipped, the face turned away in one frame", None
        return None, f"{said}: left and right swap, the face not turned away in one frame only (no turn shown)", None
    if c.direction in ("lie", "rise"):  # upright -> lying (a burpee's plank), lying -> upright
        if a.tilt is None or b.tilt is None:
            return None, f"{said}: torso axis not seen", None
        drop, la, lb = hips_drop(a, b), a.legs_tilt, b.legs_tilt
        legs = "legs not seen" if la is None or lb is None else f"legs {la:.0f} -> {lb:.0f}"
        hips = "" if drop is None else f", hips down {drop:+.2f}"
        figures = f"torso {a.tilt:.0f} -> {b.tilt:.0f} degrees from upright, {legs}{hips}"
        move = floor_move(a, b)
        if move == ("down" if c.direction == "lie" else "up"):
            return Agreement.AGREE, f"{said}: {figures}", None
        if move is not None:
            return Agreement.CONTRADICT, f"{said}: the other way ({figures})", DIRECTION
        same = (a.standing and b.standing) or (a.lying and b.lying)
        if same and drop is not None and abs(drop) < FLOOR_DROP / 3:
            return Agreement.CONTRADICT, f"{said}: did not happen ({figures})", LIMB
        return None, f"{said}: not standing in one frame and lying in the other ({figures})", None
    if c.direction in ("lean", "step"):
        if c.direction == "step" and c.side in ("forward", "back"):
            ways, v = ("forward", "back"), forwards(a, b)
            unseen = "not side-on in both frames with the face seen looking the same way"
        elif c.side in ("left", "right"):
            ways, v = ("left", "right"), _towards_left(a, b, c.direction)
            unseen = "the person's left not seen"
        else:
            return None, f"{said}: no side", None
        if v is None:
            return None, f"{said}: {unseen}", None
        got = v if c.side == ways[0] else -v
        figures = f"{ways[0]} {v:+.2f}, {ways[1]} {-v:+.2f}"
        if got >= threshold:
            return Agreement.AGREE, f"{said}: {figures}", None
        if got <= -threshold:
            if ways[0] == "forward":
                return Agreement.CONTRADICT, f"{said}: the other way ({figures})", DIRECTION
            return Agreement.CONTRADICT, f"{said}: to the other side ({figures})", SIDE
        if abs(got) < threshold / 3:
            return Agreement.CONTRADICT, f"{said}: did not happen ({figures})", LIMB
        return None, f"{said}: too small to tell ({figures})", None
    if c.part in ("legs", "hips", "head") or c.side == "none" and c.part == "whole_body":
        m = _single(a, b, c)
        if m is None:
            return None, f"{said}: not measurable", None
        if m.value >= threshold:
            return Agreement.AGREE, f"{said}: {m.value:+.2f}", None
        if m.value <= -threshold:
            return Agreement.CONTRADICT, f"{said}: the other way ({m.value:+.2f})", DIRECTION
        if abs(m.value) < threshold / 3:
            return Agreement.CONTRADICT, f"{said}: did not happen ({m.value:+.2f})", LIMB
        return None, f"{said}: too small to tell ({m.value:+.2f})", None
    if c.side not in ("left", "right", "both"):
        return None, f"{said}: not checkable from keypoints", None
    sides = ["left", "right"] if c.side == "both" else [c.side]
    got = {s: _sided(a, b, s, c.part, c.direction) for s in ("left", "right")}
    if any(got[s] is None for s in sides):
        return None, f"{said}: joints not visible", None
    figures = ", ".join(f"{s} {m.value:+.2f}" for s, m in got.items() if m is not None)
    if all(got[s].value >= threshold for s in sides):
        return Agreement.AGREE, f"{said}: {figures}", None
    if any(got[s].value <= -threshold for s in sides):
        return Agreement.CONTRADICT, f"{said}: moved the other way ({figures})", DIRECTION
    other = {"left": "right", "right": "left"}.get(c.side)
    if other is not None and got[other] is not None and got[other].value >= threshold:
        if got[c.side].value < threshold / 2:
            return Agreement.CONTRADICT, f"{said}: the {other} side did it ({figures})", SIDE
    if all(got[s].total < threshold / 3 for s in sides):
        return Agreement.CONTRADICT, f"{said}: did not move ({figures})", LIMB
    if all(got[s].across >= 2 * threshold and abs(got[s].value) < got[s].across / 3 for s in sides):
        moved = ", ".join(f"{s} {got[s].across:.2f}" for s in sides)
        return Agreement.CONTRADICT, f"{said}: moved across, not {c.direction} ({figures}; across {moved})", DIRECTION
    return None, f"{said}: too small to tell ({figures})", None


def check_claims(
    before: Pose17 | None,
    after: Pose17 | None,
    claims: list[Claim],
    min_conf: float = 0.5,
    threshold: float = 0.25,
) -> Verdict:
    if before is None or after is None:
        return Verdict(Agreement.NOT_CHECKABLE, "no poses (egocentric pair)")
    if not claims:
        return Verdict(Agreement.NOT_CHECKABLE, "the caption names no change the keypoints can test")
    a, b = Body(before, min_conf), Body(after, min_conf)
    if not a.ok or not b.ok:
        return Verdict(Agreement.NOT_CHECKABLE, "no torso axis in one of the frames")
    results = [check_claim(a, b, c, threshold) for c in claims]
    details = "; ".join(d for _, d, _ in results)
    verdicts = [v for v, _, _ in results if v is not None]
    if Agreement.CONTRADICT in verdicts:
        kinds = tuple(sorted({k for v, _, k in results if v == Agreement.CONTRADICT and k}))
        return Verdict(Agreement.CONTRADICT, details, kinds)
    if verdicts:
        return Verdict(Agreement.AGREE, details)
    return Verdict(Agreement.NOT_CHECKABLE, details)


def check_caption(
    before: Pose17 | None,
    after: Pose17 | None,
    changes: list[MotionChange],
    min_conf: float = 0.5,
    threshold: float = 0.25,
) -> Verdict:
    """An LLM answer's structured changes against the keypoints."""
    if not changes and before is not None and after is not None:
        return Verdict(Agreement.NOT_CHECKABLE, "the answer names no change")
    return check_claims(before, after, change_claims(changes), min_conf, threshold)


def check_text(
    before: Pose17 | None,
    after: Pose17 | None,
    text: str,
    label: str | None = None,
    min_conf: float = 0.5,
    threshold: float = 0.25,
) -> Verdict:
    """A caption's words (the offline captioner's phrases) against the keypoints."""
    return check_claims(before, after, text_claims(text, label), min_conf, threshold)
