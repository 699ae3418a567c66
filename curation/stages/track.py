"""A clip's frames, classified once: who each sampled frame shows (no person, several, a partial body,
left/right swapped, one whole body), and the per-frame facts every candidate pair reads (ClipTrack:
sharpness, hidden people, other people's tracks, the camera between frames, measured when a pair
needs it). Candidate and Selection are what pair selection (stages/motion.py, stages/egocentric.py)
makes of them."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from schemas.records import MotionFigures, PairStrategy, Pose17, QualityFigures, RejectReason

from ..config import MotionConfig, PoseConfig, QualityConfig
from . import body, camera, people, quality, second_look, silhouette, text_boxes
from .figures import PoseChange, blend_share, hist_similarity, scene_hist


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
    change: PoseChange | None = None  # of the two frames, once computed (stages/checks.py)


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
        tilt = body.tilt(pose, cfg.keypoint_conf)
        return extent >= body.leg_limit(tilt, cfg.min_leg_extent, cfg.min_leg_extent_lying)
    return True


def body_rule(cfg: MotionConfig) -> str:
    """What has_body asks of a frame, in words (the detail of a clip with too few such frames)."""
    rule = f"{', '.join(cfg.required_keypoints)} at {cfg.keypoint_conf:g}, {cfg.min_visible_keypoints} keypoints seen"
    if cfg.whole_body:
        rule += f"; both legs shown hip to ankle, at least {cfg.min_leg_extent:g} torso long"
        rule += f" ({cfg.min_leg_extent_lying:g} lying)"
    return rule


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


# ---------------------------------------------------------------- per clip

TRANSITION_REACH = 3  # sampled frames on either side searched for the other shot of a dissolve (0.75 s at 4 fps)


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
    pose_cfg: PoseConfig = field(default_factory=PoseConfig)  # the second look's model (second_look.py)
    bands: body.Box | None = None  # the picture when bands that are not dark bars frame it, else None
    _grays: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict, repr=False)
    _plain: dict[int, bool] = field(default_factory=dict, repr=False)
    _mix: dict[int, float] = field(default_factory=dict, repr=False)
    _hists: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _skeleton: dict[int, float | None] = field(default_factory=dict, repr=False)
    _text: dict[int, list[text_boxes.Box]] = field(default_factory=dict, repr=False)
    _second: dict[tuple[int, tuple | None], list[Pose17]] = field(default_factory=dict, repr=False)
    _seen: list[tuple[float, tuple[float, float, float, float], int]] = field(default_factory=list, repr=False)

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
        dark, content = body.picture_boxes(frames) if frames else (None, None)
        # bands that are not dark bars (a blurred copy of the picture, white bars, bars with a caption):
        # nobody stands in them and the background is not compared there (dark bars never change)
        bands = content if content != dark else None
        if bands is not None and any(joint_outside(p, bands, cfg) for o in obs for p in confident(o.poses, cfg)):
            content, bands = dark, None  # a person's joint in a "band": the scene's own edges, not a frame
        if bands is not None:
            for o in obs:
                o.poses = [p for p in o.poses if inside(p, bands)]
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
        return cls(
            obs, kinds, sim, steps, list(frames), sharp, hidden, q, content, others, source_scale, cfg, bands=bands
        )

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
                self.similarity[k] = self.similar(k, k + 1)
                self.steps[k] = quality.background_step(
                    a, b, people, q.min_background_features, q.min_background_inliers, self.bands
                )
        steps = self.steps[i:j]
        sim = min(self.similarity[i:j])
        if any(s.matrix is None for s in steps):
            return sim, math.nan, None, steps
        m = quality.compose([s.matrix for s in steps])
        g, _ = self.gray(i)
        return sim, quality.motion_magnitude(m, g.shape[1], g.shape[0]), m, steps

    def similar(self, i: int, j: int) -> float:
        """Scene similarity of sampled frames i and j (figures.scene_similarity; each histogram once)."""
        for k in (i, j):
            if k not in self._hists:
                self._hists[k] = scene_hist(self.frames[k])
        return hist_similarity(self._hists[i], self._hists[j])

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
            picture=self.bands,
        )

    def text_change(self, i: int, j: int, al: camera.PairAlignment) -> float | None:
        """Bright text in one of sampled frames i and j only, on their alignment (silhouette.text_change)."""
        people_i, people_j = self.obs[i].poses, self.obs[j].poses
        return silhouette.text_change(self.frames[i], self.frames[j], al.matrix, al.scale, people_i, people_j)

    def changed_text(self, i: int, j: int, al: camera.PairAlignment) -> tuple[float, text_boxes.Box | None]:
        """The largest detected text box whose text changed between sampled frames i and j, as a share of
        the frame, and the box (text_boxes.changed_text; each frame's boxes found once)."""
        for k in (i, j):
            if k not in self._text:
                self._text[k] = text_boxes.text_boxes(self.frames[k])
        people_i, people_j = self.obs[i].poses, self.obs[j].poses
        return text_boxes.changed_text(
            self.frames[i], self.frames[j], self._text[i], self._text[j], al.full_matrix(), people_i, people_j
        )

    @property
    def remembered(self) -> int:
        """How many people the second look has remembered in this clip (second_look())."""
        return len(self._seen)

    def second_look(
        self, i: int, j: int, region: body.Box, full: np.ndarray, drift: int | None
    ) -> tuple[float, second_look.Box | None]:
        """The best score of another person than the subject in sampled frames i and j, inside `region`,
        where the picture changed between them (full: the camera i -> j, PairAlignment.full_matrix) or
        clearly a person, found at the second look's input size, and that person's box
        (second_look.other_person; each frame looked at once), or else a far-off figure in the crop
        enlarged on its own (second_look.people_in). Where the camera is still or taken out
        (`drift`: how far, in pixels, it may have moved since another pair; None: it moves), a person
        found over quality.max_second_look_person is remembered, and counts for this pair where a frame
        shows that spot as it was or the spot changed, unless the subject covers it in both frames
        (second_look.still_there): a bystander the model sees in one frame and misses in the next.
        motion._search checks the clip's candidates again when a pass remembered someone new, so the
        pairs taken do not depend on which was checked first."""
        change = second_look.changed(self.frames[i], self.frames[j], full)
        subjects = [(self.person(i, self.motion_cfg), full), (self.person(j, self.motion_cfg), np.eye(2, 3))]
        kp, oks = self.motion_cfg.keypoint_conf, self.quality_cfg.same_person_oks
        limit = self.quality_cfg.max_second_look_person
        best: tuple[float, second_look.Box | None] = (0.0, None)
        found_in = i
        for crop in (None, tuple(region)):  # the whole frame, then the crop alone where that found no one
            for k, (subject, to_j) in zip((i, j), subjects, strict=True):
                if crop is not None and best[0] > limit:
                    break
                if (k, crop) not in self._second:
                    self._second[k, crop] = second_look.look(self.frames[k], crop, self.pose_cfg)
                found = second_look.other_person(
                    self._second[k, crop], subject, region, change, to_j, kp, oks, crop is not None
                )
                best, found_in = (found, k) if found[0] > best[0] else (best, found_in)
        if drift is None:
            return best
        if best[0] > limit and best[1] is not None:
            if all(b != best[1] for _, b, _ in self._seen):
                self._seen.append((best[0], best[1], found_in))
        frames = [self.frames[i], self.frames[j]]
        bodies = [subjects[0][0], subjects[1][0]]
        seen = [
            (s, b)
            for s, b, k in self._seen
            if second_look.still_there(b, self.frames[k], region, frames, bodies, change, drift)
        ]
        return max([best, *seen], key=lambda x: x[0])

    def drawn_skeleton(self, i: int, j: int) -> float | None:
        """The larger share of the subject's limbs with a line drawn along them in sampled frames i and j
        (silhouette.drawn_skeleton; each frame once)."""
        for k in (i, j):
            if k not in self._skeleton:
                subject = self.person(k, self.motion_cfg)
                self._skeleton[k] = silhouette.drawn_skeleton(self.frames[k], subject, self.motion_cfg.keypoint_conf)
        known = [v for v in (self._skeleton[i], self._skeleton[j]) if v is not None]
        return max(known) if known else None

    def plain_still(self, k: int) -> bool:
        """Sampled frames k and k+1 show the same background pixel for pixel (a plain wall whose
        corners are noise), so a step that could not be tracked is no evidence of a cut; inside a
        cross-fade the other shot's ghost changes it."""
        if k not in self._plain:
            none = [quality.BackgroundStep(None, 0, 0, 0.0, 0, "textureless")]
            self._plain[k] = self.align(k, k + 1, None, none).status == "static"
        return self._plain[k]

    def transition(self, k: int) -> float:
        """How far sampled frame k lies between two shots when it lies between them (figures.blend_share):
        a frame inside a dissolve or a fade. The shots: k's neighbour on one side and a frame up to
        TRANSITION_REACH sampled frames away on the other (k-1 with k+1..k+3, then k-2..k-3 with k+1);
        the first two that are two scenes (histogram correlation under quality.transition_similarity,
        0.8: a cross-fade between two camera angles of one room stays over the cut threshold) decide. Every
        frame of a dissolve lies on the line between any two of its frames. 0 within a shot and at
        the clip's ends."""
        if k not in self._mix:
            self._mix[k] = 0.0
            n = len(self.frames)
            for p, q in [(k - 1, k + d) for d in range(1, TRANSITION_REACH + 1)] + [
                (k - d, k + 1) for d in range(2, TRANSITION_REACH + 1)
            ]:
                if p < 0 or q >= n:
                    continue
                if self.similar(p, q) < self.quality_cfg.transition_similarity:
                    people = [pose for o in (self.obs[p], self.obs[k], self.obs[q]) for pose in o.poses]
                    (ga, s), (gx, _), (gb, _) = self.gray(p), self.gray(k), self.gray(q)
                    self._mix[k] = blend_share(ga, gx, gb, s, people)
                    break
        return self._mix[k]

    def background_match(self, i: int, j: int, m: np.ndarray) -> float | None:
        people = self.obs[i].poses + self.obs[j].poses
        grays = (self.gray(i), self.gray(j))
        return quality.background_match(self.frames[i], self.frames[j], m, people, grays=grays, picture=self.bands)


def joint_outside(pose: Pose17, box: tuple[int, int, int, int], cfg: MotionConfig) -> bool:
    """A joint of the person shown at cfg.keypoint_conf lies outside `box`."""
    k = np.asarray(pose.keypoints, float)
    seen = (k[:, 2] >= cfg.keypoint_conf) & np.isfinite(k[:, :2]).all(1)
    x, y = k[seen, 0], k[seen, 1]
    return bool(((x < box[0]) | (x > box[2]) | (y < box[1]) | (y > box[3])).any())


def inside(pose: Pose17, box: tuple[int, int, int, int]) -> bool:
    """The centre of the person's box lies inside `box` (the clip's picture)."""
    x1, y1, x2, y2 = pose.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def unmeasured(steps: list[quality.BackgroundStep]) -> str:
    """The steps whose camera motion could not be measured, counted by why ("2 textureless, 1 few_points")."""
    bad = [s for s in steps if s.matrix is None]
    kinds = Counter(s.status for s in bad)
    return ", ".join(f"{n} {k}" for k, n in kinds.items())
