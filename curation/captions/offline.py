"""The offline captioner: a deterministic English edit instruction from the two poses, no network.

Left and right are the person's own (COCO's left_* keypoints), as an instruction to that person reads
("raise your right arm"). Only keypoints visible in both frames are used. The phrases for the largest
changes come first; at most `max_phrases` are joined. The clip's action label, when known, leads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from schemas.records import KP, Caption, FramePair, Pose17

CAPTIONER = "offline"
VERSION = "offline-v1"


@dataclass(frozen=True)
class Change:
    magnitude: float  # comparable across kinds: roughly "torso lengths" or "quarter turns"
    phrase: str


class _Pose:
    def __init__(self, pose: Pose17, min_conf: float):
        self.k = np.asarray(pose.keypoints, dtype=np.float64)
        self.min_conf = min_conf
        hips = self.mid("left_hip", "right_hip")
        shoulders = self.mid("left_shoulder", "right_shoulder")
        if hips is not None and shoulders is not None:
            self.torso = float(np.linalg.norm(shoulders - hips))
        else:  # upper-body footage: shoulder width is the body's scale (as in curation.stages.motion)
            ls, rs = self.p("left_shoulder"), self.p("right_shoulder")
            self.torso = float(np.linalg.norm(ls - rs)) if ls is not None and rs is not None else math.nan

    def p(self, name: str) -> np.ndarray | None:
        x, y, c = self.k[KP[name]]
        return np.array([x, y]) if c >= self.min_conf and math.isfinite(x) and math.isfinite(y) else None

    def mid(self, a: str, b: str) -> np.ndarray | None:
        pa, pb = self.p(a), self.p(b)
        return (pa + pb) / 2 if pa is not None and pb is not None else None

    def angle(self, a: str, b: str, c: str) -> float | None:
        """Angle at b in degrees."""
        pa, pb, pc = self.p(a), self.p(b), self.p(c)
        if pa is None or pb is None or pc is None:
            return None
        u, v = pa - pb, pc - pb
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        if nu < 1e-6 or nv < 1e-6:
            return None
        return math.degrees(math.acos(float(np.clip(np.dot(u, v) / (nu * nv), -1, 1))))

    def facing_camera(self) -> bool | None:
        """True when the person's left shoulder is on the image's right (they face the camera)."""
        ls, rs = self.p("left_shoulder"), self.p("right_shoulder")
        if ls is None or rs is None or abs(ls[0] - rs[0]) < 0.15 * self.torso:
            return None
        return bool(ls[0] > rs[0])

    def wrist_height(self, side: str) -> float | None:
        """Wrist height above the shoulder in torso lengths (image y points down)."""
        s, w = self.p(f"{side}_shoulder"), self.p(f"{side}_wrist")
        if s is None or w is None or not self.torso > 0:
            return None
        return float((s[1] - w[1]) / self.torso)

    def above_head(self, side: str) -> bool:
        w = self.p(f"{side}_wrist")
        head = [self.p(n) for n in ("nose", "left_eye", "right_eye")]
        head = [h for h in head if h is not None]
        return w is not None and bool(head) and w[1] < min(h[1] for h in head)


def _arm_changes(a: _Pose, b: _Pose, side: str) -> list[Change]:
    out: list[Change] = []
    ha, hb = a.wrist_height(side), b.wrist_height(side)
    if ha is not None and hb is not None:
        d = hb - ha
        if d > 0.4:
            where = " above your head" if b.above_head(side) and not a.above_head(side) else ""
            where = where or (" to shoulder height" if -0.25 < hb < 0.3 else "")
            out.append(Change(d, f"raise your {side} arm{where}"))
        elif d < -0.4:
            out.append(Change(-d, f"lower your {side} arm"))
    ea = a.angle(f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist")
    eb = b.angle(f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist")
    if ea is not None and eb is not None and abs(eb - ea) > 40 and not out:
        verb = "bend" if eb < ea else "straighten"
        out.append(Change(abs(eb - ea) / 90, f"{verb} your {side} arm"))
    if not out:
        sa, wa, sb, wb = a.p(f"{side}_shoulder"), a.p(f"{side}_wrist"), b.p(f"{side}_shoulder"), b.p(f"{side}_wrist")
        if all(v is not None for v in (sa, wa, sb, wb)) and a.torso > 0:
            reach = (abs(wb[0] - sb[0]) - abs(wa[0] - sa[0])) / a.torso
            if reach > 0.4:
                out.append(Change(reach, f"stretch your {side} arm out to the side"))
            elif reach < -0.4:
                out.append(Change(-reach, f"bring your {side} arm in"))
    return out


def _leg_changes(a: _Pose, b: _Pose) -> list[Change]:
    bends: dict[str, float] = {}
    for side in ("left", "right"):
        ka = a.angle(f"{side}_hip", f"{side}_knee", f"{side}_ankle")
        kb = b.angle(f"{side}_hip", f"{side}_knee", f"{side}_ankle")
        if ka is not None and kb is not None and abs(kb - ka) > 25:
            bends[side] = kb - ka
    out: list[Change] = []
    if len(bends) == 2 and (bends["left"] < 0) == (bends["right"] < 0):
        verb = "bend" if bends["left"] < 0 else "straighten"
        out.append(Change(sum(abs(v) for v in bends.values()) / 2 / 60, f"{verb} your knees"))
    else:
        for side, d in bends.items():
            verb = "bend" if d < 0 else "straighten"
            out.append(Change(abs(d) / 60, f"{verb} your {side} knee"))
    # a foot lifted: one ankle rises relative to the other
    la, ra, lb, rb = a.p("left_ankle"), a.p("right_ankle"), b.p("left_ankle"), b.p("right_ankle")
    if all(v is not None for v in (la, ra, lb, rb)) and a.torso > 0:
        # image y points down: a foot that rises has a smaller y after (la[1] - lb[1] > 0)
        lift = ((la[1] - lb[1]) - (ra[1] - rb[1])) / a.torso  # >0: the left foot rose more than the right
        if abs(lift) > 0.35:
            side = "left" if lift > 0 else "right"
            out.append(Change(abs(lift), f"lift your {side} foot"))
    return out


def _body_changes(a: _Pose, b: _Pose) -> list[Change]:
    out: list[Change] = []
    ha, hb = a.mid("left_hip", "right_hip"), b.mid("left_hip", "right_hip")
    sa, sb = a.mid("left_shoulder", "right_shoulder"), b.mid("left_shoulder", "right_shoulder")
    if ha is None or hb is None or sa is None or sb is None or not a.torso > 0:
        return out
    # torso lean: angle of hips->shoulders from vertical, in the image
    lean_a = math.degrees(math.atan2(sa[0] - ha[0], ha[1] - sa[1]))
    lean_b = math.degrees(math.atan2(sb[0] - hb[0], hb[1] - sb[1]))
    d = lean_b - lean_a
    facing = b.facing_camera()
    if abs(d) > 15:
        if abs(lean_b) > abs(lean_a) and facing is not None:
            # leaning towards the image's right is the person's left when they face the camera
            side = ("left" if d > 0 else "right") if facing else ("right" if d > 0 else "left")
            out.append(Change(abs(d) / 45, f"lean to your {side}"))
        elif abs(lean_b) > abs(lean_a):
            out.append(Change(abs(d) / 45, "bend forward"))
        else:
            out.append(Change(abs(d) / 45, "straighten up"))
    # crouch / stand up: the hips drop or rise relative to the body's size
    drop = (hb[1] - ha[1]) / a.torso
    if abs(drop) > 0.35:
        out.append(Change(abs(drop), "crouch down" if drop > 0 else "stand up"))
    # step sideways
    dx = (hb[0] - ha[0]) / a.torso
    if abs(dx) > 0.6 and facing is not None:
        side = ("left" if dx > 0 else "right") if facing else ("right" if dx > 0 else "left")
        out.append(Change(abs(dx) * 0.8, f"step to your {side}"))
    # turning: the visible shoulder width changes a lot, or the facing flips
    fa, fb = a.facing_camera(), b.facing_camera()
    if fa is not None and fb is not None and fa != fb:
        out.append(Change(1.5, "turn around"))
    return out


def _both_arms(right: list[Change], left: list[Change]) -> list[Change]:
    """'raise your right arm' + 'raise your left arm' -> 'raise both arms' (above your head if both are)."""
    for r in right:
        for lc in left:
            verb = r.phrase.split()[0]
            if verb == lc.phrase.split()[0] and verb in ("raise", "lower", "bend", "straighten", "stretch", "bring"):
                tail_r = r.phrase.split(" arm", 1)[1]
                tail_l = lc.phrase.split(" arm", 1)[1]
                tail = tail_r if tail_r == tail_l else ""
                merged = Change(r.magnitude + lc.magnitude, f"{verb} both arms{tail}")
                return [c for c in right if c is not r] + [c for c in left if c is not lc] + [merged]
    return right + left


def describe(before: Pose17, after: Pose17, min_conf: float = 0.5, max_phrases: int = 2) -> str:
    a, b = _Pose(before, min_conf), _Pose(after, min_conf)
    arms = _both_arms(_arm_changes(a, b, "right"), _arm_changes(a, b, "left"))
    changes = arms + _leg_changes(a, b) + _body_changes(a, b)
    changes.sort(key=lambda c: (-c.magnitude, c.phrase))
    phrases: list[str] = []
    for c in changes:
        if c.phrase not in phrases:
            phrases.append(c.phrase)
    phrases = phrases[:max_phrases]
    if not phrases:
        return _fallback(a, b)
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _fallback(a: _Pose, b: _Pose) -> str:
    """No named change crossed its threshold: name the limb that moved most."""
    limbs = {
        "right arm": ("right_elbow", "right_wrist"),
        "left arm": ("left_elbow", "left_wrist"),
        "right leg": ("right_knee", "right_ankle"),
        "left leg": ("left_knee", "left_ankle"),
        "head": ("nose",),
    }
    ra, rb = a.mid("left_hip", "right_hip"), b.mid("left_hip", "right_hip")
    best, best_d = "pose", 0.0
    for limb, joints in limbs.items():
        ds = [
            np.linalg.norm((pb - rb) - (pa - ra))
            for j in joints
            if (pa := a.p(j)) is not None and (pb := b.p(j)) is not None and ra is not None and rb is not None
        ]
        if ds and float(np.mean(ds)) > best_d:
            best, best_d = limb, float(np.mean(ds))
    return f"move your {best}" if best != "pose" else "change your pose"


class OfflineCaptioner:
    """Captioner stage with the same shape as the model-backed ones: setup(), then call per pair."""

    name = CAPTIONER

    def __init__(self, keypoint_conf: float = 0.5):
        self.keypoint_conf = keypoint_conf

    def setup(self) -> OfflineCaptioner:
        return self

    def __call__(self, pair: FramePair) -> Caption:
        label = (pair.clip.label or "").strip()
        if pair.before_pose is None or pair.after_pose is None:
            # egocentric pairs: the narration is the instruction ("take plate" -> "take the plate")
            text = str(pair.clip.extra.get("instruction") or label)
            if not text:
                raise ValueError("no poses and no narration to describe the change with")
        else:
            text = describe(pair.before_pose, pair.after_pose, self.keypoint_conf)
            if label:
                text = f"{label}: {text}"
        return Caption(text=text, captioner=CAPTIONER, model=None, prompt_version=VERSION)
