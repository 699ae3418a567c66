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

from ..config import EgocentricConfig, MotionConfig, PairingConfig, QualityConfig
from . import quality


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


@dataclass
class Selection:
    pairs: list[Candidate]
    reason: RejectReason | None  # set when pairs is empty
    detail: str
    funnel: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- per frame


def confident(poses: list[Pose17], cfg: MotionConfig) -> list[Pose17]:
    return [p for p in poses if p.score >= cfg.person_conf]


def has_body(pose: Pose17, cfg: MotionConfig) -> bool:
    if not all(pose.visible(k, cfg.keypoint_conf) for k in cfg.required_keypoints):
        return False
    visible = sum(1 for x, y, c in pose.keypoints if c >= cfg.keypoint_conf and math.isfinite(x) and math.isfinite(y))
    return visible >= cfg.min_visible_keypoints


def hidden_person_score(obs: FrameObs, cfg: MotionConfig, q: QualityConfig) -> float:
    """Best score of another detection overlapping the frame's person (0: none, or no person)."""
    people = confident(obs.poses, cfg)
    if not people:
        return 0.0
    return quality.other_person_score(
        people[0], obs.poses, q.other_person_overlap, q.same_person_oks, cfg.keypoint_conf
    )


def classify(obs: FrameObs, cfg: MotionConfig, q: QualityConfig | None = None) -> FrameKind:
    q = q or QualityConfig()
    people = confident(obs.poses, cfg)
    if not people:
        return FrameKind.NONE
    others = [p for p in obs.poses if p is not people[0] and p.score >= min(cfg.second_person_conf, cfg.person_conf)]
    if others or hidden_person_score(obs, cfg, q) >= max(q.other_person_conf, 1e-9):
        return FrameKind.MULTI
    if not has_body(people[0], cfg):
        return FrameKind.PARTIAL
    margin = quality.lr_margin(people[0], cfg.keypoint_conf, q.lr_min_separation)
    if margin is not None and margin < -q.lr_tolerance:
        return FrameKind.SWAPPED
    return FrameKind.BODY


def _xy(pose: Pose17, name: str) -> np.ndarray:
    x, y, _ = pose.keypoints[KP[name]]
    return np.array([x, y], dtype=np.float64)


def _hips_visible(min_conf: float, *poses: Pose17) -> bool:
    return all(p.visible("left_hip", min_conf) and p.visible("right_hip", min_conf) for p in poses)


def root_and_torso(pose: Pose17, use_hips: bool = True) -> tuple[np.ndarray, float]:
    """Body root and size in pixels: hip centre and torso length (shoulder centre to hip centre);
    without hips (upper-body footage), shoulder centre and shoulder width."""
    shoulders = (_xy(pose, "left_shoulder") + _xy(pose, "right_shoulder")) / 2
    if use_hips:
        hips = (_xy(pose, "left_hip") + _xy(pose, "right_hip")) / 2
        return hips, float(np.linalg.norm(shoulders - hips))
    return shoulders, float(np.linalg.norm(_xy(pose, "left_shoulder") - _xy(pose, "right_shoulder")))


# ---------------------------------------------------------------- pair measures


# the joints whose motion makes an edit; face and torso points barely move relative to the hips and
# would only dilute the mean
LIMB_MASK = np.zeros(17, bool)
LIMB_MASK[[KP[f"{s}_{j}"] for s in ("left", "right") for j in ("elbow", "wrist", "knee", "ankle")]] = True


def pose_change(a: Pose17, b: Pose17, cfg: MotionConfig) -> tuple[float, float, float, float, int]:
    """Root-relative displacement (mean over visible limb joints, max over all visible joints), root
    translation (all / torso length), torso length of `a` in pixels, the number of keypoints compared."""
    hips = _hips_visible(cfg.keypoint_conf, a, b)
    ra, ta = root_and_torso(a, hips)
    rb, tb = root_and_torso(b, hips)
    torso = (ta + tb) / 2
    if not (torso > 1e-6 and math.isfinite(torso)):
        return 0.0, 0.0, 0.0, ta, 0
    ka = np.asarray(a.keypoints, dtype=np.float64)
    kb = np.asarray(b.keypoints, dtype=np.float64)
    both = (ka[:, 2] >= cfg.keypoint_conf) & (kb[:, 2] >= cfg.keypoint_conf)
    both &= np.isfinite(ka[:, :2]).all(1) & np.isfinite(kb[:, :2]).all(1)
    if not both.any():
        return 0.0, 0.0, float(np.linalg.norm(rb - ra) / torso), ta, 0
    d = np.linalg.norm((kb[:, :2] - rb) - (ka[:, :2] - ra), axis=1) / torso
    limbs = both & LIMB_MASK
    mean = float(d[limbs].mean()) if limbs.any() else 0.0
    return mean, float(d[both].max()), float(np.linalg.norm(rb - ra) / torso), ta, int(both.sum())


def same_person(a: Pose17, b: Pose17, cfg: MotionConfig) -> bool:
    hips = _hips_visible(cfg.keypoint_conf, a, b)
    ra, ta = root_and_torso(a, hips)
    rb, tb = root_and_torso(b, hips)
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
    _grays: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, obs: list[FrameObs], frames: list[np.ndarray], cfg: MotionConfig, q: QualityConfig | None = None
    ) -> ClipTrack:
        q = q or QualityConfig()
        kinds = [classify(o, cfg, q) for o in obs]
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
        hidden = [hidden_person_score(o, cfg, q) for o in obs]
        return cls(obs, kinds, sim, steps, list(frames), sharp, hidden, q)

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


def _check(track: ClipTrack, c: Candidate, cfg: MotionConfig) -> RejectReason | None:
    """None when the candidate passes; fills c.motion and c.quality when it gets that far."""
    q = track.quality_cfg
    window = range(c.i, c.j + 1)
    if any(track.kinds[k] is FrameKind.MULTI for k in window):
        return RejectReason.MULTIPLE_PEOPLE
    seen = [k for k in window if track.kinds[k] in (FrameKind.BODY, FrameKind.PARTIAL, FrameKind.SWAPPED)]
    for k0, k1 in zip(seen, seen[1:], strict=False):
        p0, p1 = track.person(k0, cfg), track.person(k1, cfg)
        if track.kinds[k0] is FrameKind.BODY and track.kinds[k1] is FrameKind.BODY:
            if not same_person(p0, p1, cfg):
                return RejectReason.IDENTITY_SWITCH
    a, b = track.person(c.i, cfg), track.person(c.j, cfg)
    margins = [quality.lr_margin(p, cfg.keypoint_conf, q.lr_min_separation) for p in (a, b)]
    margins = [m for m in margins if m is not None]
    sharp = [track.sharpness[k] for k in (c.i, c.j) if track.sharpness[k] is not None]
    c.quality = QualityFigures(
        person_height=max(quality.person_height(a), quality.person_height(b)),
        edge_margin=min(quality.edge_margin(a), quality.edge_margin(b)),
        other_person_score=max(track.hidden[k] for k in window),
        sharpness=min(sharp) if sharp else None,
        lr_margin=min(margins) if margins else None,
        background_match=None,
        background_inliers=None,
    )
    if c.quality.edge_margin < q.min_edge_margin:
        return RejectReason.PARTIAL_BODY
    if c.quality.person_height < q.min_person_height:
        return RejectReason.TOO_SMALL
    sim, cam, m, steps = track.scene(c.i, c.j)
    c.quality.background_inliers = min(s.inliers for s in steps)
    c.quality.overlay_points = max(s.overlay for s in steps)
    if sim < cfg.min_scene_similarity:
        return RejectReason.SHOT_CUT
    if any(s.status == "inconsistent" for s in steps):
        # textured background that does not move together from one frame to the next: another place
        c.detail = "background points do not follow one camera motion between sampled frames"
        return RejectReason.SHOT_CUT
    if m is None:
        c.detail = f"camera motion unmeasurable in {_unmeasured(steps)} step(s)"
        return RejectReason.CAMERA_MOTION
    mean, mx, trans, torso, n = pose_change(a, b, cfg)
    c.motion = MotionFigures(
        pose_change=mean,
        max_joint_change=mx,
        translation=trans,
        body_size_px=torso,
        camera_motion=cam,
        scene_similarity=sim,
        keypoints_compared=n,
    )
    if cam > cfg.max_camera_motion:
        return RejectReason.CAMERA_MOTION
    blurry = c.quality.sharpness is not None and c.quality.sharpness < q.min_sharpness
    if not blurry and mean < cfg.min_pose_change:
        return RejectReason.LOW_MOTION  # decided without the costlier background match
    c.quality.background_match = track.background_match(c.i, c.j, m)
    if c.quality.background_match is not None and c.quality.background_match < q.min_background_match:
        return RejectReason.SHOT_CUT
    if blurry:
        return RejectReason.BLURRY
    if mean < cfg.min_pose_change:
        return RejectReason.LOW_MOTION
    return None


CHECK_ORDER = (
    RejectReason.MULTIPLE_PEOPLE,
    RejectReason.IDENTITY_SWITCH,
    RejectReason.PARTIAL_BODY,
    RejectReason.TOO_SMALL,
    RejectReason.SHOT_CUT,
    RejectReason.CAMERA_MOTION,
    RejectReason.BLURRY,
    RejectReason.LOW_MOTION,
)


def select_pairs(track: ClipTrack, cfg: MotionConfig, pcfg: PairingConfig) -> Selection:
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
    for c in cands:
        why = _check(track, c, cfg)
        if why is None:
            passed.append(c)
        else:
            failed[why] += 1
    remaining = len(cands)
    for reason in CHECK_ORDER:
        remaining -= failed[reason]
        funnel[f"after_{reason.value}"] = remaining
    if not passed:
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
