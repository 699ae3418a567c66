"""The offline captioner: a deterministic English edit instruction from the two poses, no network.

Everything is said in the body's own frame (curation.captions.body), so a person on the floor or upside
down gets what their body did, not what the image's axes saw:
  - raise / lower (arms, legs, a foot): along the torso axis, "up" towards the head (but both feet
    off the floor, below, which is measured in the picture);
  - left / right: the person's own (COCO's left_* keypoints); lean and step go to the side their own
    left lies on, which the shoulders show however the body is turned;
  - out / in: across the torso, only when the shoulders are seen apart (never in a side view);
  - get down on the floor, get up off the floor: standing in one frame (torso upright, legs going down
    from the hips) and lying in the other (torso and legs 60-120 and over 60 degrees from the image's
    vertical: a hinge over straight legs is not lying), the hips coming down (or up) half a torso
    length in the picture (a cartwheel turns about them), said first;
  - crouch down, stand up, lean, bend forward, step, turn around: whole-body words that assume
    standing, said only when the torso is upright in both frames;
  - on the floor seen side-on (a sit-up, lying leg raises): the hips' angle, "bend forward at your
    hips" when the torso came up to the thighs, "raise both legs" when the legs came up to it;
  - both feet up off the floor (or down to it) in the picture, the hips and the torso's direction kept
    (a seated boat pose): "raise both legs" ("lower both legs"), instead of the hips' one-leg phrase.
A pose it cannot describe that way gets no caption rather than a wrong one: `describe` returns None
and the captioner raises `Abstain` (the pair becomes a counted caption_failed reject, detail
"abstained: ..."). Every phrase is checked against the keypoints (curation.captions.agreement) before it
is said; one the check contradicts is never said.

Only keypoints visible in both frames are used. The phrases for the largest changes come first; at
most `max_phrases` are joined. The clip's action label, when known, leads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.captions import Agreement
from schemas.records import Caption, FramePair, Pose17

from .agreement import check_claim, forwards
from .body import Body, floor_move, floor_rise, hips_drop, signed_angle, turned
from .phrases import text_claims

CAPTIONER = "offline"
# v2: body-relative (floor exercises, cartwheels), abstains, self-checked; v3: a turn needs the face
# turned away in one frame; v4: a foot lift needs the torso axis kept and the foot ending above the other,
# out/in and a lean or step to the person's side need no side view in either frame, an arm's reach out to
# the side is signed, a side-on lean needs the body side-on before; v5: a side-on body facing the same way
# in both frames steps forward or back; v6: upright to lying is "get down on the floor", lying to upright
# "get up off the floor"; v7: both feet up off the floor (or down to it) with the hips and the torso's
# direction kept is "raise both legs" ("lower both legs"): a seated boat pose; v8: the hips' leg phrase
# needs the feet to leave the floor too (a squat seen side-on turned the thighs: "raise both legs")
VERSION = "offline-v8"
ABSTAINED = "abstained: "  # how an abstention's reject detail starts
FOOT_AXIS_TURN = 15.0  # degrees the torso axis may turn between the frames for a foot lift to be read
FOOT_ABOVE = 0.3  # torso lengths the lifted ankle ends above the other, along the body
LEGS_RISE = 0.35  # torso lengths both ankles come up off the floor (in the picture, against the hips; as a foot lift)
LEGS_HIPS_STILL = 0.25  # torso lengths the hips may move up or down in the picture meanwhile (a jump lifts them)
LEGS_AXIS_TURN = 30.0  # degrees the torso axis may turn meanwhile (a cartwheel turns about the hips)


class Abstain(ValueError):
    """The offline captioner will not describe this pair: nothing it can say holds in the body's frame."""


@dataclass(frozen=True)
class Change:
    magnitude: float  # comparable across kinds: roughly "torso lengths" or "quarter turns"
    phrase: str


@dataclass(frozen=True)
class Description:
    text: str | None  # None: the captioner abstains
    why: str = ""  # why it abstains
    refuted: tuple[str, ...] = ()  # phrases the keypoint check contradicted (never said)


def _above_head(body: Body, side: str) -> bool:
    w = body.p(f"{side}_wrist")
    heads = [h for n in ("nose", "left_eye", "right_eye") if (h := body.p(n)) is not None]
    return w is not None and bool(heads) and all(body.along(w - h) > 0 for h in heads)


def _facing(a: Body, b: Body) -> bool:
    """The person's own left and right are seen in both frames: the shoulders 0.3 torso apart or more
    (body.SIDE_VIEW_LATERAL). In a side view the image's left-right is the person's front-back, and a
    body turning side-on narrows its shoulders: out/in, a lean or a step to a side are not read there."""
    return not (a.side_view or b.side_view) and a.left is not None and b.left is not None


def _outward(body: Body, side: str) -> float | None:
    """How far the wrist lies out from the shoulder, away from the body's midline on its own side
    (negative: in front of the body or across it), torso lengths. Signed, so hands clasped in front
    and then spread wide read the whole way out (unsigned, the clasp counted as reach)."""
    s, w = body.p(f"{side}_shoulder"), body.p(f"{side}_wrist")
    if s is None or w is None or body.shoulders is None:
        return None
    away = float(np.sign(body.lateral_of(s - body.shoulders)))
    return body.lateral_of(w - s) * away if away else None


def _arm_changes(a: Body, b: Body, side: str) -> list[Change]:
    out: list[Change] = []
    ha, hb = a.height(f"{side}_wrist", f"{side}_shoulder"), b.height(f"{side}_wrist", f"{side}_shoulder")
    if ha is not None and hb is not None:
        d = hb - ha
        if d > 0.4:
            where = " above your head" if _above_head(b, side) and not _above_head(a, side) else ""
            where = where or (" to shoulder height" if -0.25 < hb < 0.3 else "")
            out.append(Change(d, f"raise your {side} arm{where}"))
        elif d < -0.4:
            out.append(Change(-d, f"lower your {side} arm"))
    ea = a.angle(f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist")
    eb = b.angle(f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist")
    if ea is not None and eb is not None and abs(eb - ea) > 40 and not out:
        verb = "bend" if eb < ea else "straighten"
        out.append(Change(abs(eb - ea) / 90, f"{verb} your {side} arm"))
    if not out and _facing(a, b):  # out to the side: the body's side seen in both frames
        wa, wb = _outward(a, side), _outward(b, side)
        if wa is not None and wb is not None:
            reach = wb - wa
            if reach > 0.4:
                out.append(Change(reach, f"stretch your {side} arm out to the side"))
            elif reach < -0.4:
                out.append(Change(-reach, f"bring your {side} arm in"))
    return out


def _leg_changes(a: Body, b: Body) -> list[Change]:
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
    # the feet apart or together across the body (a straddle): only where the body's side is seen
    if _facing(a, b):
        apart = [
            abs(cb[1]) - abs(ca[1])
            for side in ("left", "right")
            if (ca := a.coords(f"{side}_ankle")) is not None and (cb := b.coords(f"{side}_ankle")) is not None
        ]
        if len(apart) == 2 and min(apart) > 0.3:
            out.append(Change(float(np.mean(apart)), "spread your legs"))
        elif len(apart) == 2 and max(apart) < -0.3:
            out.append(Change(-float(np.mean(apart)), "bring your legs together"))
    # a foot lifted: one ankle rises along the body relative to the other and ends above it. Only
    # where the torso axis keeps its direction: each frame measures along its own axis, so a hip hinge,
    # a warrior pose leaning back or a twist (the axis turning 17-68 degrees in the four pairs that said it wrongly)
    # reads the feet's front-to-back or sideways offset as a lift. A foot that comes down (the feet
    # level again) is not the other foot lifted.
    la, ra, lb, rb = a.p("left_ankle"), a.p("right_ankle"), b.p("left_ankle"), b.p("right_ankle")
    if all(v is not None for v in (la, ra, lb, rb)) and abs(signed_angle(a.up, b.up)) <= FOOT_AXIS_TURN:
        above = b.along(lb - rb)  # > 0: the left foot above the right in the after frame
        lift = above - a.along(la - ra)  # > 0: the left foot rose more than the right
        if abs(lift) > 0.35 and abs(above) >= FOOT_ABOVE and (above > 0) == (lift > 0):
            side = "left" if lift > 0 else "right"
            out.append(Change(abs(lift), f"lift your {side} foot"))
    return out


def _hip_changes(a: Body, b: Body) -> list[Change]:
    """On the floor, seen side-on: the thighs-torso angle (a sit-up, lying leg raises, a deep bend from
    standing). The part that turned in the image names the phrase (the legs' only with their feet)."""
    if (a.upright and b.upright) or not (a.side_view and b.side_view):
        return []
    front = a.front or b.front
    if front is None:
        return []
    flex: dict[str, tuple[float, float]] = {}
    thigh_turn: dict[str, float] = {}
    for side in ("left", "right"):
        fa, fb = a.flexion(side, front), b.flexion(side, front)
        if fa is None or fb is None or abs(fb - fa) <= 35:
            continue
        flex[side] = (fa, fb)
        ta, tb = a.p(f"{side}_knee") - a.p(f"{side}_hip"), b.p(f"{side}_knee") - b.p(f"{side}_hip")
        thigh_turn[side] = abs(signed_angle(ta, tb))
    if not flex:
        return []
    torso_turn = abs(signed_angle(a.up, b.up))
    forward = {s: fb > fa for s, (fa, fb) in flex.items()}
    if len(flex) == 2 and forward["left"] != forward["right"]:
        return []  # one thigh forward, one back: a stride, not a phrase of ours
    ahead = next(iter(forward.values()))
    mag = float(np.mean([abs(fb - fa) for fa, fb in flex.values()])) / 60
    if max(thigh_turn.values()) > torso_turn:  # the legs moved, and their feet with them: a squat turns
        rise = [floor_rise(a, b, f"{s}_ankle") for s in flex]  # the thighs over feet left on the floor
        who = "both legs" if len(flex) == 2 else f"your {next(iter(flex))} leg"
        if ahead and all(fb > 20 for _, fb in flex.values()) and all(r and r >= LEGS_RISE for r in rise):
            return [Change(mag, f"raise {who}")]
        if not ahead and all(fa > 20 for fa, _ in flex.values()) and all(r and r <= -LEGS_RISE for r in rise):
            return [Change(mag, f"lower {who}")]
        return []
    if ahead and all(fb > 20 for _, fb in flex.values()):
        return [Change(mag, "bend forward at your hips")]
    if not ahead and all(fa > 20 for fa, _ in flex.values()):
        return [Change(mag, "lean back at your hips")]
    return []  # bending backwards beyond the line of the body: not a phrase of ours


def _legs_off_floor(a: Body, b: Body) -> list[Change]:
    """Both feet up off the floor, or down to it, while the hips stay (up or down: hips_drop) and the
    torso keeps its direction, the legs not standing where they are up (a walk towards the camera brings
    standing feet down the picture): a seated boat pose, a hanging knee raise with the knees above the
    hips, leg raises on the back. Measured as the caption check measures a leg's up (body.floor_rise),
    which the body's own frame misses seated: the thighs barely turn while the feet leave the floor."""
    drop = hips_drop(a, b)
    if drop is None or abs(drop) > LEGS_HIPS_STILL or abs(signed_angle(a.up, b.up)) > LEGS_AXIS_TURN:
        return []
    rises = [floor_rise(a, b, f"{side}_ankle") for side in ("left", "right")]
    if any(r is None for r in rises):
        return []
    if min(rises) >= LEGS_RISE and not b.standing:
        return [Change(float(np.mean(rises)), "raise both legs")]
    if max(rises) <= -LEGS_RISE and not a.standing:
        return [Change(-float(np.mean(rises)), "lower both legs")]
    return []


FLOOR_PHRASES = ("get down on the floor", "get up off the floor")


def _posture_changes(a: Body, b: Body) -> list[Change]:
    """Getting down on the floor (upright before, lying after: a burpee's plank, lying down) and up off
    it: said before any limb, whose own words (in the body's frame) miss that the whole body went down."""
    move = floor_move(a, b)
    if move == "down":
        return [Change(2.0, FLOOR_PHRASES[0])]
    if move == "up":
        return [Change(2.0, FLOOR_PHRASES[1])]
    return []


def _body_changes(a: Body, b: Body) -> list[Change]:
    """Whole-body words that assume the person stands (or sits) upright: said only when the torso is
    upright in both frames."""
    out: list[Change] = []
    if not (a.upright and b.upright) or a.hips is None or b.hips is None:
        return out
    # torso lean: the angle of hips->shoulders from the image's vertical
    lean_a = signed_angle(np.array([0.0, -1.0]), a.up)
    lean_b = signed_angle(np.array([0.0, -1.0]), b.up)
    d = lean_b - lean_a  # > 0: towards the image's right
    facing = _facing(a, b)  # the person's own left and right seen in both frames
    if abs(d) > 15:
        towards = d * (1 if b.left is None else float(np.sign(b.left[0])))
        if abs(lean_b) > abs(lean_a) and facing:
            out.append(Change(abs(d) / 45, f"lean to your {'left' if towards > 0 else 'right'}"))
        elif abs(lean_b) > abs(lean_a) and a.side_view:
            # side-on before: forwards or backwards, by the way the face looked then (the after frame's
            # tilted torso makes its own reading of the face unreliable); forwards where that or the
            # thighs are not seen. A body that turned side-on from facing the camera: not said.
            front = a.front
            flex = []
            for s in ("left", "right") if front is not None else ():
                fa, fb = a.flexion(s, front), b.flexion(s, front)
                if fa is not None and fb is not None:
                    flex.append(fb - fa)
            backwards = bool(flex) and float(np.mean(flex)) < 0
            out.append(Change(abs(d) / 45, "lean back" if backwards else "bend forward"))
        elif abs(lean_b) <= abs(lean_a):
            out.append(Change(abs(d) / 45, "straighten up"))
    # crouch / stand up: the hips come down towards the feet (or the image's floor, feet unseen)
    fa, fb = a.hips_over_feet(), b.hips_over_feet()
    if fa is not None and fb is not None:
        fold = fa - fb
    else:
        fold = float((b.hips[1] - a.hips[1]) / a.torso)
    if abs(fold) > 0.35:
        out.append(Change(abs(fold), "crouch down" if fold > 0 else "stand up"))
    # step sideways, to the person's own side; seen side-on in both frames, forwards or back (the way
    # the face looks, the same way in both frames: a walker's stride, not a boxer switching stance)
    if facing:
        dx = float(np.dot(b.hips - a.hips, b.left) / a.torso)
        if abs(dx) > 0.6:
            out.append(Change(abs(dx) * 0.8, f"step to your {'left' if dx > 0 else 'right'}"))
    elif (dx := forwards(a, b)) is not None and abs(dx) > 0.6:
        out.append(Change(abs(dx) * 0.8, "step forward" if dx > 0 else "step back"))
    # turning: the facing flips (the body's own: a cartwheel is not a turn) and the face turns away in
    # one of the frames (a shadow-boxer's shoulders swap sides with a punch: no turn)
    if turned(a, b):
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


def _refuted(a: Body, b: Body, phrase: str) -> bool:
    return any(check_claim(a, b, c, 0.25)[0] == Agreement.CONTRADICT for c in text_claims(phrase))


def describe_pair(before: Pose17, after: Pose17, min_conf: float = 0.5, max_phrases: int = 2) -> Description:
    a, b = Body(before, min_conf), Body(after, min_conf)
    if not a.ok or not b.ok:
        return Description(None, "no torso axis (shoulders and hips, or shoulders and head) in both frames")
    arms = _both_arms(_arm_changes(a, b, "right"), _arm_changes(a, b, "left"))
    both = _legs_off_floor(a, b)  # both feet rose (fell): no one-leg phrase of the hips' angle beside it
    verb = both[0].phrase.split()[0] if both else None
    hips = [c for c in _hip_changes(a, b) if not (verb and c.phrase.startswith(f"{verb} your"))] + both
    legs = _leg_changes(a, b)
    raised = {c.phrase.split()[-1] for c in hips if c.phrase.startswith("raise your")}  # "left" / "right"
    if any("both legs" in c.phrase for c in hips):
        raised = {"left", "right"}
    legs = [c for c in legs if not (c.phrase.startswith("lift your") and c.phrase.split()[2] in raised)]
    changes = _posture_changes(a, b) + arms + legs + hips + _body_changes(a, b)
    changes.sort(key=lambda c: (c.phrase not in FLOOR_PHRASES, -c.magnitude, c.phrase))  # the floor first
    phrases: list[str] = []
    refuted: list[str] = []
    for c in changes:
        if c.phrase in phrases or c.phrase in refuted:
            continue
        (refuted if _refuted(a, b, c.phrase) else phrases).append(c.phrase)
    phrases = phrases[:max_phrases]
    if not phrases:
        text = _fallback(a, b)
        if text is None:
            return Description(None, "the body is not upright and no change of its limbs is large enough to name",
                               tuple(refuted))  # fmt: skip
        return Description(text, refuted=tuple(refuted))
    if len(phrases) == 1:
        return Description(phrases[0], refuted=tuple(refuted))
    return Description(", ".join(phrases[:-1]) + " and " + phrases[-1], refuted=tuple(refuted))


def describe(before: Pose17, after: Pose17, min_conf: float = 0.5, max_phrases: int = 2) -> str | None:
    """The instruction for a pair of poses, or None when the captioner abstains."""
    return describe_pair(before, after, min_conf, max_phrases).text


FALLBACK_MIN = 0.1  # torso lengths a limb must move in the body's frame to be named


def _fallback(a: Body, b: Body) -> str | None:
    """No named change crossed its threshold: name the limb that moved most in the body's frame. When none
    moved enough: "change your pose" for an upright body, nothing (abstain) for one that is not."""
    limbs = {
        "right arm": ("right_elbow", "right_wrist"),
        "left arm": ("left_elbow", "left_wrist"),
        "right leg": ("right_knee", "right_ankle"),
        "left leg": ("left_knee", "left_ankle"),
        "head": ("nose",),
    }
    best, best_d = None, 0.0
    for limb, joints in limbs.items():
        ds = [
            float(np.linalg.norm(cb - ca))
            for j in joints
            if (ca := a.coords(j)) is not None and (cb := b.coords(j)) is not None
        ]
        if ds and float(np.mean(ds)) > best_d:
            best, best_d = limb, float(np.mean(ds))
    if best is not None and best_d >= FALLBACK_MIN and not _refuted(a, b, f"move your {best}"):
        return f"move your {best}"
    return "change your pose" if a.upright and b.upright else None


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
            d = describe_pair(pair.before_pose, pair.after_pose, self.keypoint_conf)
            if d.text is None:
                raise Abstain(ABSTAINED + d.why)
            text = f"{label}: {d.text}" if label else d.text
        return Caption(text=text, captioner=CAPTIONER, model=None, prompt_version=VERSION)
