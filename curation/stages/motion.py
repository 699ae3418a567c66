"""Single-person motion: pure functions over the per-frame detections of one clip.

The clip-level decision is a funnel. Frames are classified first (no person / several people,
including one half hidden behind the person at the detector's own threshold / one person without a
body / a body whose left and right labels contradict its facing (dropped, counted) / one whole body);
then candidate pairs of whole-body frames inside the gap bounds go through checks in a fixed order
(CHECK_ORDER: second person in the window, identity, frame edge, person size, cut, camera motion,
background place, sharpness, pose change). The reason a clip is rejected is the step that left
nothing. The quality measures themselves live in stages/quality.py.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np

from schemas.records import KP, MotionFigures, PairStrategy, Pose17, QualityFigures, RejectReason

from .. import geometry
from ..config import EgocentricConfig, MotionConfig, PairingConfig, QualityConfig
from . import body, camera, people, quality


class FrameKind(str, Enum):
    NONE = "none"
    MULTI = "multi"
    PARTIAL = "partial"
    SWAPPED = "swapped"  # a body whose left/right labels contradict its facing: not paired
    BODY = "body"


@dataclass
class FrameObs:
    """One sampled frame: where it is and who is in it."""

    index: int
    time: float
    poses: list[Pose17]  # every detection, highest score first


@dataclass
class Candidate:
    strategy: PairStrategy
    i: int  # positions in the list of sampled frames
    j: int
    motion: MotionFigures | None = None
    quality: QualityFigures | None = None
    detail: str = ""
    align: camera.PairAlignment | None = None


@dataclass
class Selection:
    pairs: list[Candidate]
    reason: RejectReason | None  # set when pairs is empty
    detail: str
    funnel: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- per frame


def confident(poses: list[Pose17], cfg: MotionConfig) -> list[Pose17]:
    return [p for p in poses if p.score >= cfg.person_conf]


def has_body(pose: Pose17, cfg: MotionConfig, content: body.Box | None = None) -> bool:
    """The required keypoints visible; with motion.whole_body, the legs shown by evidence beyond their
    confidence (stages/body.py) and long enough against the torso."""
    if not all(pose.visible(k, cfg.keypoint_conf) for k in cfg.required_keypoints):
        return False
    visible = sum(1 for x, y, c in pose.keypoints if c >= cfg.keypoint_conf and math.isfinite(x) and math.isfinite(y))
    if visible < cfg.min_visible_keypoints:
        return False
    if cfg.whole_body:
        content = content or (0, 0, pose.frame_width, pose.frame_height)
        extent = body.leg_extent(pose, body.shown(pose, content, cfg.keypoint_conf))
        return extent >= cfg.min_leg_extent
    return True


def hidden_person_score(
    obs: FrameObs, cfg: MotionConfig, q: QualityConfig, excluded: frozenset[int] = frozenset()
) -> float:
    """Best score of another detection overlapping the frame's person (0: none, or no person).
    `excluded`: ids of detections known not to be people (reflections)."""
    people = confident(obs.poses, cfg)
    if not people:
        return 0.0
    dets = [d for d in obs.poses if id(d) not in excluded]
    return quality.other_person_score(people[0], dets, q.other_person_overlap, q.same_person_oks, cfg.keypoint_conf)


def classify(
    obs: FrameObs,
    cfg: MotionConfig,
    q: QualityConfig | None = None,
    content: body.Box | None = None,
    excluded: frozenset[int] = frozenset(),
) -> FrameKind:
    q = q or QualityConfig()
    people = confident(obs.poses, cfg)
    if not people:
        return FrameKind.NONE
    others = [
        p
        for p in obs.poses
        if p is not people[0] and id(p) not in excluded and p.score >= min(cfg.second_person_conf, cfg.person_conf)
    ]
    if others or hidden_person_score(obs, cfg, q, excluded) >= max(q.other_person_conf, 1e-9):
        return FrameKind.MULTI
    if not has_body(people[0], cfg, content):
        return FrameKind.PARTIAL
    margin = quality.lr_margin(people[0], cfg.keypoint_conf, q.lr_min_separation)
    if margin is not None and margin < -q.lr_tolerance:
        return FrameKind.SWAPPED
    return FrameKind.BODY


def _hips_visible(min_conf: float, *poses: Pose17) -> bool:
    return all(p.visible("left_hip", min_conf) and p.visible("right_hip", min_conf) for p in poses)


def root_and_torso(pose: Pose17, use_hips: bool = True) -> tuple[np.ndarray, float]:
    """Body root and size in pixels (curation/geometry.py, every joint as placed): hip centre and torso
    length; without hips (upper-body footage), shoulder centre and shoulder width."""
    return geometry.root_and_torso(geometry.keypoints(pose), use_hips)


# ---------------------------------------------------------------- pair measures


# the joints whose motion makes an edit; face and torso points barely move relative to the hips and
# would only dilute the mean
LIMB_MASK = np.zeros(17, bool)
LIMB_MASK[[KP[f"{s}_{j}"] for s in ("left", "right") for j in ("elbow", "wrist", "knee", "ankle")]] = True


def pose_change(a: Pose17, b: Pose17, cfg: MotionConfig) -> tuple[float, float, float, float, int, float]:
    """Root-relative displacement (mean over visible limb joints, max over all visible joints), root
    translation (all / torso length), torso length of `a` in pixels, the number of keypoints compared,
    and the largest limb joint's displacement."""
    hips = _hips_visible(cfg.keypoint_conf, a, b)
    ra, ta = root_and_torso(a, hips)
    rb, tb = root_and_torso(b, hips)
    torso = (ta + tb) / 2
    if not (torso > 1e-6 and math.isfinite(torso)):
        return 0.0, 0.0, 0.0, ta, 0, 0.0
    ka = np.asarray(a.keypoints, dtype=np.float64)
    kb = np.asarray(b.keypoints, dtype=np.float64)
    both = (ka[:, 2] >= cfg.keypoint_conf) & (kb[:, 2] >= cfg.keypoint_conf)
    both &= np.isfinite(ka[:, :2]).all(1) & np.isfinite(kb[:, :2]).all(1)
    if not both.any():
        return 0.0, 0.0, float(np.linalg.norm(rb - ra) / torso), ta, 0, 0.0
    d = np.linalg.norm((kb[:, :2] - rb) - (ka[:, :2] - ra), axis=1) / torso
    limbs = both & LIMB_MASK
    mean = float(d[limbs].mean()) if limbs.any() else 0.0
    limb = float(d[limbs].max()) if limbs.any() else 0.0
    return mean, float(d[both].max()), float(np.linalg.norm(rb - ra) / torso), ta, int(both.sum()), limb


def moves(mean: float, limb: float | None, cfg: MotionConfig) -> bool:
    """Enough pose change for a pair: the limbs' mean motion, or one limb's (an arm-only edit)."""
    return mean >= cfg.min_pose_change or (
        cfg.min_limb_change > 0 and limb is not None and math.isfinite(limb) and limb >= cfg.min_limb_change
    )


def same_person(a: Pose17, b: Pose17, cfg: MotionConfig) -> bool:
    """The body centre stays within max_track_jump torsos and the size within max_size_ratio; frames
    without both hips (a partial body) compare shoulder centres and widths."""
    hips = _hips_visible(cfg.keypoint_conf, a, b)
    if not hips and not all(
        p.visible(s, cfg.keypoint_conf) for p in (a, b) for s in ("left_shoulder", "right_shoulder")
    ):
        return True  # nothing to compare by: no evidence of a switch
    ra, ta = root_and_torso(a, hips)
    rb, tb = root_and_torso(b, hips)
    if not hips:  # shoulder widths vary with turning: allow for it
        ta, tb = max(ta, tb), max(ta, tb)
    if min(ta, tb) <= 1e-6:
        return False
    if max(ta, tb) / min(ta, tb) > cfg.max_size_ratio:
        return False
    return float(np.linalg.norm(rb - ra)) / ((ta + tb) / 2) <= cfg.max_track_jump


def scene_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of hue-saturation histograms: near 1 within a shot, low across a cut."""

    def hist(img: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        h = cv2.calcHist([hsv], [0, 1], None, [32, 32], [0, 180, 0, 256])
        return cv2.normalize(h, h).flatten()

    return float(cv2.compareHist(hist(a), hist(b), cv2.HISTCMP_CORREL))


# ---------------------------------------------------------------- the funnel


@dataclass
class ClipTrack:
    """Per-frame facts of one clip, computed once, used by every candidate."""

    obs: list[FrameObs]
    kinds: list[FrameKind]
    similarity: list[float | None]  # between sampled frame k and k+1 (measured when a candidate needs it)
    steps: list[quality.BackgroundStep | None]  # the camera between sampled frame k and k+1 (likewise)
    frames: list[np.ndarray]
    sharpness: list[float | None]  # per frame, relative to the clip's three sharpest body frames
    hidden: list[float]  # best score of another detection overlapping the person, per frame
    quality_cfg: QualityConfig = field(default_factory=QualityConfig)
    content: body.Box | None = None  # the picture inside letterbox/pillarbox bars
    others: list[people.Track] = field(default_factory=list)  # other people through the clip (not reflections)
    source_scale: float = 1.0  # source video pixels per decoded pixel
    motion_cfg: MotionConfig = field(default_factory=MotionConfig)
    _grays: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict, repr=False)
    _plain: dict[int, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        obs: list[FrameObs],
        frames: list[np.ndarray],
        cfg: MotionConfig,
        q: QualityConfig | None = None,
        source_scale: float = 1.0,
    ) -> ClipTrack:
        q = q or QualityConfig()
        content = body.content_box(frames) if frames else None
        subjects = people.steady_subjects([o.poses for o in obs], cfg.person_conf)
        for o, subj in zip(obs, subjects, strict=True):  # the subject first: confident(...)[0] is it
            if subj is not None and o.poses and o.poses[0] is not subj:
                o.poses = [subj] + [p for p in o.poses if p is not subj]
        tracks = people.people_tracks(
            subjects,
            [o.poses for o in obs],
            person_conf=q.other_track_conf,
            single_conf=q.other_person_conf,
            same_oks=q.same_person_oks,
            kp_conf=cfg.keypoint_conf,
            frames=frames,
        )
        excluded = frozenset(id(p) for t in tracks if t.reflection for p in t.poses)
        kinds = [classify(o, cfg, q, content, excluded) for o in obs]
        # the cheap frame-type funnel first: scene similarity and background tracking (optical flow) are
        # measured only between the frames a candidate pair spans (scene()), not for clips it rejects
        sim: list[float | None] = [None] * max(0, len(obs) - 1)
        steps: list[quality.BackgroundStep | None] = [None] * max(0, len(obs) - 1)
        raw = [
            quality.sharpness(frames[k], confident(obs[k].poses, cfg)[0]) if kinds[k] is FrameKind.BODY else None
            for k in range(len(obs))
        ]
        known = sorted(v for v in raw if v is not None)
        top = float(np.mean(known[-3:])) if known else 1.0  # the clip's sharpest frames
        sharp = [None if v is None else v / max(top, 1e-9) for v in raw]
        hidden = [hidden_person_score(o, cfg, q, excluded) for o in obs]
        others = [t for t in tracks if not t.reflection]
        return cls(obs, kinds, sim, steps, list(frames), sharp, hidden, q, content, others, source_scale, cfg)

    def person(self, k: int, cfg: MotionConfig) -> Pose17:
        return confident(self.obs[k].poses, cfg)[0]

    def scene(self, i: int, j: int) -> tuple[float, float, np.ndarray | None, list[quality.BackgroundStep]]:
        """Between sampled frames i and j: the lowest scene similarity of consecutive frames, the
        camera's net motion (frame diagonals; a pan adds up, shake cancels out; NaN where a step could
        not be measured), the composed transform (None then) and the steps."""
        q = self.quality_cfg
        for k in range(i, j):
            if self.steps[k] is None:
                a, b = self.frames[k], self.frames[k + 1]
                people = self.obs[k].poses + self.obs[k + 1].poses
                self.similarity[k] = scene_similarity(a, b)
                self.steps[k] = quality.background_step(
                    a, b, people, q.min_background_features, q.min_background_inliers
                )
        steps = self.steps[i:j]
        sim = min(self.similarity[i:j])
        if any(s.matrix is None for s in steps):
            return sim, math.nan, None, steps
        m = quality.compose([s.matrix for s in steps])
        g, _ = self.gray(i)
        return sim, quality.motion_magnitude(m, g.shape[1], g.shape[0]), m, steps

    def gray(self, k: int) -> tuple[np.ndarray, float]:
        if k not in self._grays:
            self._grays[k] = quality.small_gray(self.frames[k])
        return self._grays[k]

    def align(self, i: int, j: int, m: np.ndarray | None, steps: list[quality.BackgroundStep]) -> camera.PairAlignment:
        """The camera between sampled frames i and j, with what else changed (stages/camera.py)."""
        cfg = self.motion_cfg
        textureless = m is None and all(s.status in ("ok", "textureless") for s in steps)
        return camera.align_pair(
            self.frames[i],
            self.frames[j],
            self.obs[i].poses,
            self.obs[j].poses,
            m,
            textureless,
            cfg.static_camera_motion,
            cfg.max_camera_motion,
            cfg.max_background_residual,
            grays=(self.gray(i), self.gray(j)),
        )

    def plain_still(self, k: int) -> bool:
        """Sampled frames k and k+1 show the same background pixel for pixel (a plain wall whose
        corners are noise), so a step that could not be tracked is no evidence of a cut; inside a
        cross-fade the other shot's ghost changes it."""
        if k not in self._plain:
            none = [quality.BackgroundStep(None, 0, 0, 0.0, 0, "textureless")]
            self._plain[k] = self.align(k, k + 1, None, none).status == "static"
        return self._plain[k]

    def background_match(self, i: int, j: int, m: np.ndarray) -> float | None:
        people = self.obs[i].poses + self.obs[j].poses
        return quality.background_match(self.frames[i], self.frames[j], m, people, grays=(self.gray(i), self.gray(j)))


def _candidates(track: ClipTrack, strategy: PairStrategy, pcfg: PairingConfig) -> list[Candidate]:
    good = [k for k, kind in enumerate(track.kinds) if kind is FrameKind.BODY]
    t = [o.time for o in track.obs]
    if strategy == "segment_endpoints":
        if len(good) < 2:
            return []
        first, last = good[0], good[-1]
        if t[first] - t[0] > pcfg.endpoint_tolerance_s or t[-1] - t[last] > pcfg.endpoint_tolerance_s:
            return []
        if t[last] - t[first] < pcfg.min_gap_s:
            return []
        return [Candidate(strategy, first, last)]
    return [
        Candidate(strategy, i, j)
        for a, i in enumerate(good)
        for j in good[a + 1 :]
        if pcfg.min_gap_s <= t[j] - t[i] <= pcfg.max_gap_s
    ]


def _unmeasured(steps: list[quality.BackgroundStep]) -> str:
    bad = [s for s in steps if s.matrix is None]
    kinds = Counter(s.status for s in bad)
    return ", ".join(f"{n} {k}" for k, n in kinds.items())


def _check(track: ClipTrack, c: Candidate, cfg: MotionConfig, crop: str = "person") -> RejectReason | None:
    """None when the candidate passes; fills c.motion and c.quality when it gets that far."""
    q = track.quality_cfg
    window = range(c.i, c.j + 1)
    if any(track.kinds[k] is FrameKind.MULTI for k in window):
        return RejectReason.MULTIPLE_PEOPLE
    # people tracked through the clip count for their whole stretch (hidden behind the subject too)
    present = [t for t in track.others if t.start <= c.j and t.end >= c.i]
    if present:
        c.detail = f"another person tracked from sampled frame {present[0].start} to {present[0].end}"
        return RejectReason.MULTIPLE_PEOPLE
    seen = [k for k in window if track.kinds[k] in (FrameKind.BODY, FrameKind.PARTIAL, FrameKind.SWAPPED)]
    for k0, k1 in zip(seen, seen[1:], strict=False):
        if not same_person(track.person(k0, cfg), track.person(k1, cfg), cfg):
            return RejectReason.IDENTITY_SWITCH
    a, b = track.person(c.i, cfg), track.person(c.j, cfg)
    content = track.content or (0, 0, a.frame_width, a.frame_height)
    margins = [quality.lr_margin(p, cfg.keypoint_conf, q.lr_min_separation) for p in (a, b)]
    margins = [m for m in margins if m is not None]
    sharp = [track.sharpness[k] for k in (c.i, c.j) if track.sharpness[k] is not None]
    height_px = max(a.box[3] - a.box[1], b.box[3] - b.box[1])
    legs = [body.leg_extent(p, body.shown(p, content, cfg.keypoint_conf)) for p in (a, b)]
    legs = [v for v in legs if math.isfinite(v)]
    ends = [body.extremity_margin(p, content, cfg.keypoint_conf) for p in (a, b)]
    ends = [v for v in ends if v is not None]
    c.quality = QualityFigures(
        person_height=max(quality.person_height(a), quality.person_height(b)),
        edge_margin=min(body.edge_margin(a, content), body.edge_margin(b, content)),
        other_person_score=max(track.hidden[k] for k in window),
        sharpness=min(sharp) if sharp else None,
        lr_margin=min(margins) if margins else None,
        background_match=None,
        background_inliers=None,
        person_px_source=float(height_px * track.source_scale),
        person_px_output=float(height_px),
        leg_extent=min(legs) if legs else None,
        extremity_margin=min(ends) if ends else None,
        other_track_score=max((t.score for t in track.others), default=0.0),  # elsewhere in the clip
    )
    if c.quality.edge_margin < q.min_edge_margin:
        return RejectReason.PARTIAL_BODY
    if crop == "frame" and c.quality.person_height < q.min_person_height:
        return RejectReason.TOO_SMALL
    if c.quality.person_px_source < q.min_person_px or c.quality.person_px_output < q.min_person_px_output:
        return RejectReason.TOO_SMALL
    sim, cam, m, steps = track.scene(c.i, c.j)
    c.quality.background_inliers = min(s.inliers for s in steps)
    c.quality.overlay_points = max(s.overlay for s in steps)
    if sim < cfg.min_scene_similarity:
        return RejectReason.SHOT_CUT
    if any(s.status == "inconsistent" for s in steps):
        # background points that do not move together from one frame to the next: another place, unless
        # the two frames' background is the same picture (corners on the noise of a plain wall)
        plain = track.align(c.i, c.j, None, [quality.BackgroundStep(None, 0, 0, 0.0, 0, "textureless")])
        if plain.status != "static" or not all(
            track.plain_still(k) for k in range(c.i, c.j) if steps[k - c.i].status == "inconsistent"
        ):
            c.detail = "background points do not follow one camera motion between sampled frames"
            return RejectReason.SHOT_CUT
        m, cam = plain.matrix, 0.0
    mean, mx, trans, torso, n, limb = pose_change(a, b, cfg)
    moving = moves(mean, limb, cfg)
    blurry = c.quality.sharpness is not None and c.quality.sharpness < q.min_sharpness
    figures = MotionFigures(
        pose_change=mean,
        max_joint_change=mx,
        limb_change=limb,
        translation=trans,
        body_size_px=torso,
        camera_motion=cam,  # the chained estimate; the alignment's figure replaces it below
        scene_similarity=sim,
        keypoints_compared=n,
    )
    if m is not None and not blurry and not moving:
        # too little motion: decided on the chained camera estimate, without the costlier alignment
        c.motion = figures
        return RejectReason.CAMERA_MOTION if cam > cfg.max_camera_motion else RejectReason.LOW_MOTION
    al = track.align(c.i, c.j, m, steps)
    c.align = al
    c.quality.camera_status = al.status if al.status in ("static", "stabilised") else None
    c.quality.background_residual = al.residual
    c.quality.brightness_change = al.brightness
    c.quality.background_change = al.changed_share
    c.quality.overlay_change = al.largest_change
    c.quality.person_change = al.person_change
    if al.status == "unmeasurable":
        c.detail = f"camera motion unmeasurable in {_unmeasured(steps)} step(s)"
        return RejectReason.CAMERA_MOTION
    c.motion = figures.model_copy(update={"camera_motion": al.motion})
    if al.status == "moving":
        if al.motion <= cfg.max_camera_motion:
            c.detail = f"background residual {al.residual:.1f} after alignment: the camera cannot be taken out"
        return RejectReason.CAMERA_MOTION
    if (al.brightness is not None and abs(al.brightness) > q.max_brightness_change) or (
        al.changed_share is not None and al.changed_share > q.max_background_change
    ):
        c.detail = "the background changed as a whole (a fade, a cross-fade or a cut)"
        return RejectReason.SHOT_CUT
    if al.largest_change is not None and al.largest_change > q.max_overlay_change:
        c.detail = f"a region outside the person changed ({al.largest_change:.4f} of the frame at {al.change_box})"
        return RejectReason.OVERLAY_CHANGED
    if not blurry and not moving:
        return RejectReason.LOW_MOTION  # (a plain background: no chained estimate above)
    c.quality.background_match = track.background_match(c.i, c.j, al.matrix)
    if c.quality.background_match is not None and c.quality.background_match < q.min_background_match:
        return RejectReason.SHOT_CUT
    if blurry:
        return RejectReason.BLURRY
    if al.person_change is not None and al.person_change < q.min_person_change:
        # the keypoints moved, the picture of the person did not: the detector's jitter on a still body
        c.detail = f"only {al.person_change:.3f} of the person's box changed: a still pose"
        return RejectReason.LOW_MOTION
    if not moving:
        return RejectReason.LOW_MOTION
    _margins(c, cfg, q, crop)
    if c.quality.borderline and q.borderline == "drop":
        c.detail = f"borderline: {c.quality.borderline_checks}"
        return MARGIN_REASONS[c.quality.borderline_checks.split(",")[0]]
    return None


# each margin: (figure, threshold, "min" | "max"); the reason a too-close figure is dropped for
MARGIN_REASONS = {
    "person_px_source": RejectReason.TOO_SMALL,
    "person_px_output": RejectReason.TOO_SMALL,
    "person_height": RejectReason.TOO_SMALL,
    "edge_margin": RejectReason.PARTIAL_BODY,
    "leg_extent": RejectReason.PARTIAL_BODY,
    "other_person_score": RejectReason.MULTIPLE_PEOPLE,
    "camera_motion": RejectReason.CAMERA_MOTION,
    "background_residual": RejectReason.CAMERA_MOTION,
    "overlay_change": RejectReason.OVERLAY_CHANGED,
    "background_change": RejectReason.SHOT_CUT,
    "background_match": RejectReason.SHOT_CUT,
    "sharpness": RejectReason.BLURRY,
    "pose_change": RejectReason.LOW_MOTION,
    "person_change": RejectReason.LOW_MOTION,
}


def _margins(c: Candidate, cfg: MotionConfig, q: QualityConfig, crop: str) -> None:
    """Each figure's margin to its threshold, relative to the threshold (negative: past it). A pair
    with any margin under quality.borderline_margin is marked borderline, naming the checks."""
    qf, mf = c.quality, c.motion
    checks = {
        "person_px_source": (qf.person_px_source, q.min_person_px, "min"),
        "person_px_output": (qf.person_px_output, q.min_person_px_output, "min"),
        "edge_margin": (qf.edge_margin, q.min_edge_margin, "min"),
        "leg_extent": (qf.leg_extent, cfg.min_leg_extent if cfg.whole_body else 0.0, "min"),
        "other_person_score": (qf.other_person_score, q.other_person_conf, "max"),
        "camera_motion": (mf.camera_motion if qf.camera_status == "stabilised" else None, cfg.max_camera_motion, "max"),
        "background_residual": (
            qf.background_residual if qf.camera_status == "stabilised" else None,
            cfg.max_background_residual,
            "max",
        ),
        "overlay_change": (qf.overlay_change, q.max_overlay_change, "max"),
        "background_change": (qf.background_change, q.max_background_change, "max"),
        "background_match": (qf.background_match, q.min_background_match, "min"),
        "sharpness": (qf.sharpness, q.min_sharpness, "min"),
        "pose_change": (mf.pose_change, cfg.min_pose_change, "min"),
        "person_change": (qf.person_change, q.min_person_change, "min"),
    }
    if crop == "frame":
        checks["person_height"] = (qf.person_height, q.min_person_height, "min")
    found: dict[str, float] = {}
    for name, (fig, thr, kind) in checks.items():
        if fig is None or thr is None or thr <= 0 or not math.isfinite(fig):
            continue
        found[name] = (fig - thr) / thr if kind == "min" else (thr - fig) / thr
    if "pose_change" in found and cfg.min_limb_change > 0 and mf.limb_change is not None:
        # a pair moves by either motion figure: its margin is the better of the two
        found["pose_change"] = max(found["pose_change"], (mf.limb_change - cfg.min_limb_change) / cfg.min_limb_change)
    close = sorted((v, k) for k, v in found.items() if v < q.borderline_margin)
    qf.min_margin = min(found.values()) if found else None
    qf.borderline = bool(close)
    qf.borderline_checks = ",".join(k for _, k in close) or None


def _moves(track: ClipTrack, c: Candidate, cfg: MotionConfig) -> bool:
    """The candidate's keypoints change enough to be a pair, whichever check stopped it first."""
    if c.motion is not None:
        mean, limb = c.motion.pose_change, c.motion.limb_change
    else:
        figures = pose_change(track.person(c.i, cfg), track.person(c.j, cfg), cfg)
        mean, limb = figures[0], figures[5]
    return mean is not None and math.isfinite(mean) and moves(mean, limb, cfg)


CHECK_ORDER = (
    RejectReason.MULTIPLE_PEOPLE,
    RejectReason.IDENTITY_SWITCH,
    RejectReason.PARTIAL_BODY,
    RejectReason.TOO_SMALL,
    RejectReason.SHOT_CUT,
    RejectReason.CAMERA_MOTION,
    RejectReason.OVERLAY_CHANGED,
    RejectReason.BLURRY,
    RejectReason.LOW_MOTION,
)


def select_pairs(track: ClipTrack, cfg: MotionConfig, pcfg: PairingConfig) -> Selection:
    """The clip's pairs, or the reason it has none (the check that left no candidate)."""
    kinds = Counter(track.kinds)
    n = len(track.kinds)
    funnel = {
        "frames": n,
        "frames_with_person": n - kinds[FrameKind.NONE],
        "frames_single_person": kinds[FrameKind.BODY] + kinds[FrameKind.PARTIAL] + kinds[FrameKind.SWAPPED],
        "frames_whole_body": kinds[FrameKind.BODY] + kinds[FrameKind.SWAPPED],
        "frames_lr_swapped": kinds[FrameKind.SWAPPED],
    }
    summary = ", ".join(f"{k}={v}" for k, v in funnel.items())
    need = max(cfg.min_person_frames, math.ceil(cfg.min_frame_fraction * n))
    if funnel["frames_with_person"] < need:
        return Selection([], RejectReason.NO_PERSON, f"no confident person in enough frames ({summary})", funnel)
    if funnel["frames_single_person"] < need:
        reason = RejectReason.MULTIPLE_PEOPLE if kinds[FrameKind.MULTI] else RejectReason.NO_PERSON
        return Selection([], reason, f"too few single-person frames ({summary})", funnel)
    if funnel["frames_whole_body"] < need:
        return Selection([], RejectReason.PARTIAL_BODY, f"no whole body (shoulders and hips) ({summary})", funnel)

    cands = [c for s in pcfg.strategies for c in _candidates(track, s, pcfg)]
    funnel["candidates"] = len(cands)
    if not cands:
        detail = f"no two body frames within the gap bounds ({summary})"
        return Selection([], RejectReason.NO_VALID_WINDOW, detail, funnel)

    failed: Counter[RejectReason] = Counter()
    passed: list[Candidate] = []
    reasons: list[RejectReason | None] = []
    for c in cands:
        why = _check(track, c, cfg, pcfg.crop)
        reasons.append(why)
        if why is None:
            passed.append(c)
        else:
            failed[why] += 1
    remaining = len(cands)
    for reason in CHECK_ORDER:
        remaining -= failed[reason]
        funnel[f"after_{reason.value}"] = remaining
    if not passed:
        moving = {
            why
            for c, why in zip(cands, reasons, strict=True)
            if why is not None and why is not RejectReason.LOW_MOTION and _moves(track, c, cfg)
        }
        if moving:
            # the candidates that show motion name why the clip has no pair (jumps whose head the top
            # edge cuts are partial_body, not low_motion for their still moments): the check the
            # furthest of them reached
            reason = max(moving, key=CHECK_ORDER.index)
            detail = f"{len(cands)} candidate pairs, none passed ({_failures(failed)}); {_best(cands)}"
            return Selection([], reason, f"{detail} ({summary})", funnel)
        # the first check that brought the count to zero decides
        left = len(cands)
        for reason in CHECK_ORDER:
            left -= failed[reason]
            if left == 0:
                detail = f"{len(cands)} candidate pairs, none passed ({_failures(failed)}); {_best(cands)}"
                return Selection([], reason, f"{detail} ({summary})", funnel)
    return Selection(_pick(passed, pcfg, track), None, "", funnel)


def _failures(failed: Counter) -> str:
    return ", ".join(f"{r.value} {failed[r]}" for r in CHECK_ORDER if failed[r])


def _best(cands: list[Candidate]) -> str:
    """The best figures any candidate reached, for the reject's detail."""
    parts = []
    qs = [c.quality for c in cands if c.quality]
    ms = [c.motion for c in cands if c.motion]
    if qs:
        parts.append(f"largest person height {max(q.person_height for q in qs):.2f}")
        sharp = [q.sharpness for q in qs if q.sharpness is not None]
        if sharp:
            parts.append(f"best sharpness {max(sharp):.2f}")
    if ms:
        parts.append(f"least camera motion {min(m.camera_motion for m in ms):.3f}")
        parts.append(f"best pose change {max(m.pose_change for m in ms):.3f}")
    notes = sorted({c.detail for c in cands if c.detail})
    return "; ".join(parts + notes[:2])


def _pick(passed: list[Candidate], pcfg: PairingConfig, track: ClipTrack) -> list[Candidate]:
    """Per strategy: the largest pose changes first, with time windows that do not overlap."""
    chosen: list[Candidate] = []
    for strategy in pcfg.strategies:
        mine = sorted(
            (c for c in passed if c.strategy == strategy),
            key=lambda c: (-c.motion.pose_change, c.i, c.j),
        )
        taken: list[Candidate] = []
        for c in mine:
            if len(taken) >= pcfg.pairs_per_clip:
                break
            if all(c.j <= o.i or c.i >= o.j for o in taken):
                taken.append(c)
        for c in taken:
            if all((c.i, c.j) != (o.i, o.j) for o in chosen):  # two strategies may agree on a pair
                chosen.append(c)
    return sorted(chosen, key=lambda c: (c.i, c.j))


def select_egocentric(track: ClipTrack, cfg: EgocentricConfig) -> Selection:
    """Head-camera segments (EditAction's EPIC set): the segment's first and last sampled frames, if
    the segment is long enough, holds no cut and the camera's net motion stays under the limit."""
    n = len(track.obs)
    span = track.obs[-1].time - track.obs[0].time
    funnel = {"frames": n}
    if span < cfg.min_gap_s:
        return Selection([], RejectReason.NO_VALID_WINDOW, f"segment spans {span:.2f}s < {cfg.min_gap_s}s", funnel)
    sim, cam, m, steps = track.scene(0, n - 1)
    if sim >= cfg.min_scene_similarity and any(s.status == "inconsistent" for s in steps):
        detail = "background points do not follow one camera motion between sampled frames"
        return Selection([], RejectReason.SHOT_CUT, detail, funnel)
    if m is None and sim >= cfg.min_scene_similarity:
        detail = f"camera motion unmeasurable in {_unmeasured(steps)} step(s)"
        return Selection([], RejectReason.CAMERA_MOTION, detail, funnel)
    figures = MotionFigures(
        pose_change=None,
        max_joint_change=None,
        translation=None,
        body_size_px=None,
        camera_motion=cam,
        scene_similarity=sim,
        keypoints_compared=0,
    )
    if sim < cfg.min_scene_similarity:
        return Selection([], RejectReason.SHOT_CUT, f"scene similarity {sim:.2f} < {cfg.min_scene_similarity}", funnel)
    if cam > cfg.max_camera_motion:
        detail = f"camera moved {cam:.3f} of the frame diagonal > {cfg.max_camera_motion}"
        return Selection([], RejectReason.CAMERA_MOTION, detail, funnel)
    figures_q = QualityFigures(
        person_height=None,
        edge_margin=None,
        other_person_score=None,
        sharpness=None,
        lr_margin=None,
        background_match=track.background_match(0, n - 1, m),
        background_inliers=min(s.inliers for s in steps),
        overlay_points=max(s.overlay for s in steps),
    )
    return Selection([Candidate("segment_endpoints", 0, n - 1, figures, figures_q)], None, "", funnel)
