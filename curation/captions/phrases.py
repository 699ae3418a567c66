"""What a caption claims, in terms the keypoints can test: the offline captioner's phrases (and the same
words in any caption) as claims (side, part, direction), and an LLM's structured changes as the same.

    raise your left arm above your head    -> left arm up
    crouch down                            -> both legs fold (the hips come down towards the feet)
    move your right leg                    -> right leg move
    turn around                            -> whole body turn
    get down on the floor                  -> whole body lie (upright before, lying after)

Phrases that claim nothing testable ("change your pose", "bend forward", a narration) give no claim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.captions import MotionChange


@dataclass(frozen=True)
class Claim:
    side: str  # the person's own: left, right, both, none (a step: also forward, back)
    part: str  # arm, hand, leg, knee, foot, legs, hips, torso, head, whole_body
    direction: str  # up down out in bend straighten move fold unfold lean step turn lie rise

    def __str__(self) -> str:
        return f"{self.side} {self.part} {self.direction}"


_SIDE = r"(?:your (?P<side>left|right)|(?P<both>both))"  # "your left arm" / "both arms"
# (pattern, part (None: the phrase names it), direction, side when the phrase names none)
PHRASES: list[tuple[re.Pattern, str | None, str, str]] = [
    (re.compile(rf"\braise {_SIDE} arms?\b"), "arm", "up", "both"),
    (re.compile(rf"\blower {_SIDE} arms?\b"), "arm", "down", "both"),
    (re.compile(rf"\bbend {_SIDE} arms?\b"), "arm", "bend", "both"),
    (re.compile(rf"\bstraighten {_SIDE} arms?\b"), "arm", "straighten", "both"),
    (re.compile(rf"\bstretch {_SIDE} arms? out\b"), "arm", "out", "both"),
    (re.compile(rf"\bbring {_SIDE} arms? in\b"), "arm", "in", "both"),
    (re.compile(rf"\braise {_SIDE} legs?\b"), "leg", "up", "both"),
    (re.compile(rf"\blower {_SIDE} legs?\b"), "leg", "down", "both"),
    (re.compile(r"\bspread your legs\b"), "leg", "out", "both"),
    (re.compile(r"\bbring your legs together\b"), "leg", "in", "both"),
    (re.compile(r"\bbend your (?P<side>left|right) knee\b"), "knee", "bend", "both"),
    (re.compile(r"\bstraighten your (?P<side>left|right) knee\b"), "knee", "straighten", "both"),
    (re.compile(r"\bbend your knees\b"), "knee", "bend", "both"),
    (re.compile(r"\bstraighten your knees\b"), "knee", "straighten", "both"),
    (re.compile(r"\blift your (?P<side>left|right) foot\b"), "foot", "up", "both"),
    (re.compile(r"\blean to your (?P<side>left|right)\b"), "torso", "lean", "none"),
    (re.compile(r"\bstep to your (?P<side>left|right)\b"), "whole_body", "step", "none"),
    (re.compile(r"\bstep (?P<side>forward|back)(?:wards?)?\b"), "whole_body", "step", "none"),
    (re.compile(r"\bmove your (?P<side>left|right) (?P<part>arm|leg)\b"), None, "move", "none"),
    (re.compile(r"\bmove your (?P<part>head)\b"), None, "move", "none"),
    (re.compile(r"\bcrouch down\b"), "legs", "fold", "both"),
    (re.compile(r"\bstand up\b"), "legs", "unfold", "both"),
    (re.compile(r"\bturn around\b"), "whole_body", "turn", "none"),
    (re.compile(r"\b(?:get down (?:on|onto) the floor|lie down)\b"), "whole_body", "lie", "none"),
    (re.compile(r"\bget up (?:off|from) the floor\b"), "whole_body", "rise", "none"),
    (re.compile(r"\bbend forward at your hips\b"), "hips", "bend", "both"),
    (re.compile(r"\blean back at your hips\b"), "hips", "straighten", "both"),
]


def text_claims(text: str, label: str | None = None) -> list[Claim]:
    """The claims of a caption's words (an offline caption's label prefix, "tai chi: ", is dropped)."""
    body = text or ""
    if label and body.startswith(f"{label}: "):
        body = body[len(label) + 2 :]
    body = body.lower()
    out: list[Claim] = []
    for rx, part, direction, default_side in PHRASES:
        for m in rx.finditer(body):
            g = m.groupdict()
            side = g.get("side") or ("both" if g.get("both") else default_side)
            claim = Claim(side, part or g["part"], direction)
            if claim not in out:
                out.append(claim)
    return out


_LIMBS = ("arm", "hand", "leg", "knee", "foot")


def change_claims(changes: list[MotionChange]) -> list[Claim]:
    """An LLM answer's structured changes as claims: a limb said to move forward, backward or otherwise
    is a claim that it moved; a whole-body turn, that the person turned round."""
    out = []
    for c in changes:
        direction = c.direction
        if direction in ("forward", "backward", "other") and c.part in _LIMBS:
            direction = "move"
        if c.part == "whole_body" and direction == "turn":
            out.append(Claim("none", "whole_body", "turn"))
            continue
        if c.part == "whole_body" and direction in ("forward", "backward"):  # a step the way the body faces
            out.append(Claim("forward" if direction == "forward" else "back", "whole_body", "step"))
            continue
        out.append(Claim(c.side, c.part, direction))
    return out
