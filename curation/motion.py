"""Single-person motion: pure functions over the per-frame detections of one clip.

The clip-level decision is a funnel. Frames are classified first (no person / several people / one
person without a body / one whole body); then candidate pairs of whole-body frames inside the gap
bounds go through checks in a fixed order (second person in the window, identity, shot cut, camera
motion, pose change). The reason a clip is rejected is the first step that left nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np

from schemas.records import KP, MotionFigures, PairStrategy, Pose17, RejectReason

from .config import EgocentricConfig, MotionConfig, PairingConfig


class FrameKind(str, Enum):
    NONE = "none"
    MULTI = "multi"
    PARTIAL = "partial"
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


def classify(obs: FrameObs, cfg: MotionConfig) -> FrameKind:
    people = confident(obs.poses, cfg)
    if not people:
        return FrameKind.NONE
    others = [p for p in obs.poses if p is not people[0] and p.score >= min(cfg.second_person_conf, cfg.person_conf)]
    if others:
        return FrameKind.MULTI
    return FrameKind.BODY if has_body(people[0], cfg) else FrameKind.PARTIAL


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


def _small_gray(frame: np.ndarray, side: int = 320) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    s = min(1.0, side / max(h, w))
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if s < 1.0:
        g = cv2.resize(g, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    return g, s


def scene_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of hue-saturation histograms: near 1 within a shot, low across a cut."""

    def hist(img: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        h = cv2.calcHist([hsv], [0, 1], None, [32, 32], [0, 180, 0, 256])
        return cv2.normalize(h, h).flatten()

    return float(cv2.compareHist(hist(a), hist(b), cv2.HISTCMP_CORREL))


def camera_motion(a: np.ndarray, b: np.ndarray, people: list[Pose17]) -> np.ndarray:
    """Median displacement (dx, dy) of background corners between two frames (people masked out),
    as a fraction of the frame diagonal. Falls back to phase correlation on featureless backgrounds."""
    ga, s = _small_gray(a)
    gb, _ = _small_gray(b)
    h, w = ga.shape
    mask = np.full((h, w), 255, np.uint8)
    for p in people:
        x1, y1, x2, y2 = (np.asarray(p.box) * s).tolist()
        pad_x, pad_y = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
        mask[max(0, int(y1 - pad_y)) : int(y2 + pad_y) + 1, max(0, int(x1 - pad_x)) : int(x2 + pad_x) + 1] = 0
    diag = math.hypot(h, w)
    pts = cv2.goodFeaturesToTrack(ga, maxCorners=200, qualityLevel=0.01, minDistance=7, mask=mask)
    if pts is not None and len(pts) >= 8:
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(ga, gb, pts, None, winSize=(21, 21), maxLevel=3)
        ok = status.ravel() == 1
        if ok.sum() >= 8:
            d = (nxt[ok] - pts[ok]).reshape(-1, 2)
            return np.median(d, axis=0).astype(np.float64) / diag
    (dx, dy), response = cv2.phaseCorrelate(ga.astype(np.float32), gb.astype(np.float32))
    if not (response >= 0.1 and math.isfinite(dx) and math.isfinite(dy)):
        return np.zeros(2)  # no texture to measure by: no measurable camera motion
    return np.array([dx, dy], dtype=np.float64) / diag


# ---------------------------------------------------------------- the funnel


@dataclass
class ClipTrack:
    """Per-frame facts of one clip, computed once, used by every candidate."""

    obs: list[FrameObs]
    kinds: list[FrameKind]
    similarity: list[float]  # between sampled frame k and k+1
    cam: list[np.ndarray]  # camera motion (dx, dy) / diagonal between sampled frame k and k+1

    @classmethod
    def build(cls, obs: list[FrameObs], frames: list[np.ndarray], cfg: MotionConfig) -> ClipTrack:
        kinds = [classify(o, cfg) for o in obs]
        sim, cam = [], []
        for k in range(len(obs) - 1):
            sim.append(scene_similarity(frames[k], frames[k + 1]))
            people = obs[k].poses + obs[k + 1].poses
            cam.append(camera_motion(frames[k], frames[k + 1], people))
        return cls(obs=obs, kinds=kinds, similarity=sim, cam=cam)

    def person(self, k: int, cfg: MotionConfig) -> Pose17:
        return confident(self.obs[k].poses, cfg)[0]

    def scene(self, i: int, j: int) -> tuple[float, float]:
        """Between sampled frames i and j: the lowest scene similarity of consecutive frames, and the
        camera's net motion (a pan adds up, shake cancels out)."""
        return min(self.similarity[i:j]), float(np.linalg.norm(np.sum(self.cam[i:j], axis=0)))


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


def _check(track: ClipTrack, c: Candidate, cfg: MotionConfig) -> RejectReason | None:
    """None when the candidate passes; fills c.motion when it gets that far."""
    window = range(c.i, c.j + 1)
    if any(track.kinds[k] is FrameKind.MULTI for k in window):
        return RejectReason.MULTIPLE_PEOPLE
    seen = [k for k in window if track.kinds[k] in (FrameKind.BODY, FrameKind.PARTIAL)]
    for k0, k1 in zip(seen, seen[1:], strict=False):
        p0, p1 = track.person(k0, cfg), track.person(k1, cfg)
        if track.kinds[k0] is FrameKind.BODY and track.kinds[k1] is FrameKind.BODY:
            if not same_person(p0, p1, cfg):
                return RejectReason.IDENTITY_SWITCH
    sim, cam = track.scene(c.i, c.j)
    if sim < cfg.min_scene_similarity:
        return RejectReason.SHOT_CUT
    a, b = track.person(c.i, cfg), track.person(c.j, cfg)
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
    if mean < cfg.min_pose_change:
        return RejectReason.LOW_MOTION
    return None


CHECK_ORDER = (
    RejectReason.MULTIPLE_PEOPLE,
    RejectReason.IDENTITY_SWITCH,
    RejectReason.SHOT_CUT,
    RejectReason.CAMERA_MOTION,
    RejectReason.LOW_MOTION,
)


def select_pairs(track: ClipTrack, cfg: MotionConfig, pcfg: PairingConfig) -> Selection:
    kinds = Counter(track.kinds)
    n = len(track.kinds)
    funnel = {
        "frames": n,
        "frames_with_person": n - kinds[FrameKind.NONE],
        "frames_single_person": kinds[FrameKind.BODY] + kinds[FrameKind.PARTIAL],
        "frames_whole_body": kinds[FrameKind.BODY],
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
                best = max((c.motion.pose_change for c in cands if c.motion), default=0.0)
                detail = f"{len(cands)} candidate pairs, none passed; best pose change {best:.3f}"
                return Selection([], reason, f"{detail} ({summary})", funnel)
    return Selection(_pick(passed, pcfg, track), None, "", funnel)


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
    sim, cam = track.scene(0, n - 1)
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
    return Selection([Candidate("segment_endpoints", 0, n - 1, figures)], None, "", funnel)
