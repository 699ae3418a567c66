"""The body's own frame in one 2D pose: what "up", "left" and "forward" mean for the person, not the image.

A person lying on the floor (a push-up, a plank, a sit-up), upside down (a cartwheel) or turned away has
the image's up and left pointing anywhere on their body. Captions and their checks measure in this frame:

  up        the torso axis, hip centre -> shoulder centre (upper-body footage without hips: the normal
            of the shoulder line on the head's side)
  across    `up` turned a right angle (image x when upright); the body's left/right lies along it when
            the shoulders are seen apart (`lateral`), its front/back in a side view
  torso     the length that normalises every distance (shoulder width without hips)
  tilt      the angle between `up` and the image's up: upright below UPRIGHT_DEG

Everything here is geometry of one pose; nothing is decided about a caption.
"""

from __future__ import annotations

import math

import numpy as np

from schemas.records import KP, Pose17

from .. import geometry
from ..config import QualityConfig

UPRIGHT_DEG = 45.0  # a torso within this angle of the image's vertical stands, sits or kneels upright
LYING_DEG = (60.0, 120.0)  # a torso this far from the image's vertical lies (a plank, on the back or side)
FACING_LATERAL = 0.15  # shoulders this far apart across the torso (torso lengths): facing is known
SIDE_VIEW_LATERAL = 0.3  # shoulders closer than this across the torso: a side view (across = front/back)
# a face (nose and eyes, mean confidence) under this, with an ear seen, is turned away. A captions
# constant copied from quality.turn_face_conf's default (the captioner runs on stored keypoints without
# the build's settings). The motion stage counts a flip as a turn when the face is away in either
# frame (figures.labels_flipped); a caption's turn needs it away in exactly one (turned)
FACE_AWAY_CONF = QualityConfig.model_fields["turn_face_conf"].default
FACE = [KP["nose"], KP["left_eye"], KP["right_eye"]]
EARS = [KP["left_ear"], KP["right_ear"]]


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else None


def signed_angle(u: np.ndarray, v: np.ndarray) -> float:
    """Degrees from direction u to direction v, in (-180, 180]."""
    return math.degrees(math.atan2(u[0] * v[1] - u[1] * v[0], float(np.dot(u, v))))


class Body:
    def __init__(self, pose: Pose17, min_conf: float = 0.5):
        self.k = np.asarray(pose.keypoints, dtype=np.float64)
        self.min_conf = min_conf
        self.hips = geometry.hip_centre(self.k, min_conf)
        self.shoulders = geometry.shoulder_centre(self.k, min_conf)
        self.up: np.ndarray | None = None
        # hip centre and torso length, or (upper-body footage) shoulder centre and shoulder width
        self.root, self.torso = geometry.root_and_torso(self.k, use_hips=None, min_conf=min_conf)
        if self.hips is not None and self.shoulders is not None:
            self.up = _unit(self.shoulders - self.hips)
        elif self.shoulders is not None:  # upper-body footage: the shoulder line and the head
            ls, rs = self.p("left_shoulder"), self.p("right_shoulder")
            head = self.head()
            line = _unit(ls - rs)
            if head is not None and line is not None:
                normal = np.array([-line[1], line[0]])
                self.up = normal if np.dot(head - self.shoulders, normal) > 0 else -normal
        if not self.torso > 1:
            self.up = None
        self.across = np.array([-self.up[1], self.up[0]]) if self.up is not None else None

    # ---- points
    def p(self, name: str) -> np.ndarray | None:
        return geometry.joint(self.k, name, self.min_conf)

    def mid(self, a: str, b: str) -> np.ndarray | None:
        return geometry.centre(self.k, a, b, self.min_conf)

    def head(self) -> np.ndarray | None:
        pts = [q for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear") if (q := self.p(n)) is not None]
        return np.mean(pts, axis=0) if pts else None

    def angle(self, a: str, b: str, c: str) -> float | None:
        """The angle at b in degrees (2D)."""
        pa, pb, pc = self.p(a), self.p(b), self.p(c)
        if pa is None or pb is None or pc is None:
            return None
        u, v = pa - pb, pc - pb
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        if nu < 1e-6 or nv < 1e-6:
            return None
        return math.degrees(math.acos(float(np.clip(np.dot(u, v) / (nu * nv), -1, 1))))

    # ---- the frame
    @property
    def ok(self) -> bool:
        return self.up is not None

    def along(self, v: np.ndarray) -> float:
        """A vector's component along the torso axis (towards the head), in torso lengths."""
        return float(np.dot(v, self.up) / self.torso)

    def lateral_of(self, v: np.ndarray) -> float:
        """A vector's component across the torso axis, in torso lengths (image right when upright)."""
        return float(np.dot(v, self.across) / self.torso)

    def coords(self, name: str) -> np.ndarray | None:
        """A joint in the body's frame: (along the torso from the root, across it), torso lengths."""
        q = self.p(name)
        if q is None or not self.ok:
            return None
        return np.array([self.along(q - self.root), self.lateral_of(q - self.root)])

    @property
    def tilt(self) -> float | None:
        """Degrees between the torso axis and the image's up (0 upright, 90 lying, 180 upside down)."""
        if not self.ok:
            return None
        return math.degrees(math.acos(float(np.clip(-self.up[1], -1, 1))))

    @property
    def upright(self) -> bool:
        return self.ok and self.tilt <= UPRIGHT_DEG

    @property
    def legs_tilt(self) -> float | None:
        """Degrees between the hips -> ankles direction (the ankles seen, their mean; the knees where no
        ankle is seen: feet cut by the frame) and the image's down: 0 standing on them, 90 along the floor."""
        for joint in ("ankle", "knee"):
            ends = [e for e in (self.p(f"left_{joint}"), self.p(f"right_{joint}")) if e is not None]
            if ends and self.hips is not None:
                d = _unit(np.mean(ends, axis=0) - self.hips)
                return None if d is None else math.degrees(math.acos(float(np.clip(d[1], -1, 1))))
        return None

    @property
    def lying(self) -> bool:
        """Torso and legs both along the floor (a plank, on the back or side); a hinge over straight legs
        tilts the torso only."""
        legs = self.legs_tilt
        return self.ok and LYING_DEG[0] <= self.tilt <= LYING_DEG[1] and legs is not None and legs >= LYING_DEG[0]

    @property
    def standing(self) -> bool:
        """Torso upright over legs that go down from the hips (standing, a jump; a tall kneel seen
        side-on, thighs down and shins back, reads about 47 degrees: not standing)."""
        legs = self.legs_tilt
        return self.upright and legs is not None and legs <= UPRIGHT_DEG

    @property
    def lateral(self) -> float | None:
        """How far the person's left shoulder (else hip) lies from the right one across the torso, signed:
        > 0 when their left is on the `across` side (they face the camera, if upright), torso lengths."""
        if not self.ok:
            return None
        for a, b in (("left_shoulder", "right_shoulder"), ("left_hip", "right_hip")):
            pa, pb = self.p(a), self.p(b)
            if pa is not None and pb is not None:
                return self.lateral_of(pa - pb)
        return None

    @property
    def facing_camera(self) -> bool | None:
        """True when the person faces the camera, whatever way up they are (None: seen side-on)."""
        lat = self.lateral
        if lat is None or abs(lat) < FACING_LATERAL:
            return None
        return lat > 0

    @property
    def face_away(self) -> bool:
        """The face is not seen while the head is (an ear): the person faces away from the camera."""
        return float(np.mean(self.k[FACE, 2])) < FACE_AWAY_CONF and float(self.k[EARS, 2].max()) >= self.min_conf

    @property
    def left(self) -> np.ndarray | None:
        """The image direction of the person's own left (None in a side view)."""
        facing = self.facing_camera
        if facing is None:
            return None
        return self.across if facing else -self.across

    @property
    def side_view(self) -> bool:
        lat = self.lateral
        return lat is not None and abs(lat) < SIDE_VIEW_LATERAL

    @property
    def front(self) -> int | None:
        """In a side view, which way across the torso the person faces (+1: the `across` side, -1: the
        other), from where the nose is; None when that cannot be told."""
        nose = self.p("nose")
        if not self.side_view or nose is None or self.shoulders is None:
            return None
        f = self.lateral_of(nose - self.shoulders)
        return (1 if f > 0 else -1) if abs(f) >= 0.1 else None

    def flexion(self, side: str, front: int) -> float | None:
        """How far the thigh points in front of the line of the body, degrees (0: in line, standing or
        lying flat; 90: at a right angle forwards, sitting; < 0: behind), given the way the body faces."""
        hip, knee = self.p(f"{side}_hip"), self.p(f"{side}_knee")
        if hip is None or knee is None or not self.ok:
            return None
        v = knee - hip
        return math.degrees(math.atan2(front * self.lateral_of(v), -self.along(v)))

    def hips_over_feet(self) -> float | None:
        """The hips' distance from the ankles' centre, in torso lengths (None without hips or ankles)."""
        feet = self.mid("left_ankle", "right_ankle")
        if feet is None or self.hips is None:
            return None
        return float(np.linalg.norm(self.hips - feet) / self.torso)

    def height(self, joint: str, ref: str) -> float | None:
        """How far `joint` lies beyond `ref` towards the head, in torso lengths."""
        j, r = self.p(joint), self.p(ref)
        if j is None or r is None or not self.ok:
            return None
        return self.along(j - r)


def turned(a: Body, b: Body) -> bool | None:
    """The person turned around between a and b: the facing flips and the face shows it (turned away in
    one frame only). A flip with the face seen in both frames is a body seen side-on or three-quarters
    whose shoulders rotated (a punch, a quarter turn), or the detector's swapped labels: no turn.
    None when the facing is not seen in both frames."""
    fa, fb = a.facing_camera, b.facing_camera
    if fa is None or fb is None:
        return None
    return fa != fb and a.face_away != b.face_away


FLOOR_DROP = 0.5  # torso lengths the hips come down (or up) in the picture when a body gets down on the floor


def hips_drop(a: Body, b: Body) -> float | None:
    """How far the hips came down in the picture from a to b (< 0: up), in the larger of the two frames'
    torso lengths (a body lying seen from its head or feet shows a shortened torso)."""
    size = max(a.torso, b.torso)
    if a.hips is None or b.hips is None or not size > 1:
        return None
    return float(b.hips[1] - a.hips[1]) / size


def floor_move(a: Body, b: Body) -> str | None:
    """ "down": standing before and lying after, the hips coming down at least FLOOR_DROP torso lengths in
    the picture (a burpee's plank, lying down); "up": the reverse; None otherwise. A cartwheel turns the
    body horizontal about the hips, which stay where they were: not down on the floor."""
    drop = hips_drop(a, b)
    if drop is None:
        return None
    if a.standing and b.lying and drop >= FLOOR_DROP:
        return "down"
    if a.lying and b.standing and drop <= -FLOOR_DROP:
        return "up"
    return None


def agreed(u: float, v: float) -> float:
    """Two measures of one movement: the smaller where they agree in sign, else 0."""
    return math.copysign(min(abs(u), abs(v)), u) if u * v > 0 else 0.0


def floor_rise(a: Body, b: Body, joint: str) -> float | None:
    """How far a leg's `joint` came up off the floor from a to b (< 0: down), in a's torso lengths: up in
    the picture and relative to the hips there, the smaller where both say the same way (a squat brings
    the hips down to feet that stay put; a pull-up or a jump lifts the feet with the hips). None when the
    joint is not seen in both frames or a's torso is not measured."""
    pa, pb = a.p(joint), b.p(joint)
    if pa is None or pb is None or not a.torso > 1:
        return None
    up = float(pa[1] - pb[1]) / a.torso  # image y grows down
    if a.hips is None or b.hips is None:
        return up
    return agreed(up, up - float(a.hips[1] - b.hips[1]) / a.torso)
