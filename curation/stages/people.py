"""Second-person evidence over time: people seen anywhere in a clip, tracked through it.

A frame's detections say who is visible in that frame. A partner who walks behind the subject is gone
from the frames where they are hidden, but still in the scene: a pair taken there is not a one-person
pair. So every detection other than the subject (down to the detector's own threshold) is linked
across the sampled frames into tracks (greedy box overlap), and a track counts for a stretch of the
clip: from its first to its last sighting, stretched to the clip's end (or start) when it vanishes
behind (or emerges from behind) the subject rather than at the picture's border.

A "person" whose pose is the subject's mirror image frame after frame (flipped, left and right
swapped, moving with it) and who wears the same colours is a reflection in a mirror or a glass panel,
not a second person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from schemas.records import COCO17_FLIP, Pose17

from .quality import _overlap, keypoint_similarity


@dataclass
class Track:
    frames: list[int] = field(default_factory=list)  # positions in the clip's sampled frames
    poses: list[Pose17] = field(default_factory=list)
    reflection: bool = False
    start: int = 0  # the stretch it counts for
    end: int = 0

    @property
    def score(self) -> float:
        return max(p.score for p in self.poses)


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def _norm(k: np.ndarray) -> np.ndarray | None:
    """Keypoints centred on the shoulders-and-hips centre, over the torso length."""
    core = k[[5, 6, 11, 12], :2]
    if not np.isfinite(core).all():
        return None
    c = core.mean(0)
    torso = np.linalg.norm((core[0] + core[1]) / 2 - (core[2] + core[3]) / 2)
    if torso < 1e-6:
        return None
    return (k[:, :2] - c) / torso


def mirror_distance(subject: Pose17, other: Pose17, kp_conf: float) -> float | None:
    """Mean distance (torso lengths) between the other pose and the subject's mirror image (x flipped,
    left and right labels swapped), both centred and scaled by their torsos; None when not comparable."""
    ks = np.asarray(subject.keypoints, float)
    ko = np.asarray(other.keypoints, float)
    flipped = ks[list(COCO17_FLIP)].copy()
    flipped[:, 0] = -flipped[:, 0]
    a, b = _norm(flipped), _norm(ko)
    if a is None or b is None:
        return None
    both = (flipped[:, 2] >= kp_conf) & (ko[:, 2] >= kp_conf)
    if both.sum() < 8:
        return None
    return float(np.linalg.norm(a[both] - b[both], axis=1).mean())


def track_others(
    subjects: list[Pose17 | None],
    detections: list[list[Pose17]],
    same_oks: float,
    kp_conf: float,
    min_iou: float = 0.2,
    seen: list[Pose17 | None] | None = None,
) -> list[Track]:
    """Tracks of every detection that is not the frame's subject (nor the subject detected twice).
    `seen`, when given, gets each frame's subject as taken here: the confident one, or where there is
    none the one seen weakly."""
    tracks: list[Track] = []
    last = None
    for k, (subj, dets) in enumerate(zip(subjects, detections, strict=True)):
        if subj is None and dets:
            # no confident subject: the subject seen weakly is the detection where it last stood (or
            # the best one), not another person
            subj = max(dets, key=lambda d: (iou(d.box, last.box) if last is not None else 0.0, d.score))
        if seen is not None:
            seen.append(subj)
        last = subj or last
        others = [
            d
            for d in dets
            if d is not subj and not (subj is not None and keypoint_similarity(subj, d, kp_conf) >= same_oks)
        ]
        free = [t for t in tracks if t.frames[-1] >= k - 2]  # a track may skip a frame or two
        for d in sorted(others, key=lambda p: -p.score):
            best = max(free, key=lambda t: iou(t.poses[-1].box, d.box), default=None)
            if best is not None and iou(best.poses[-1].box, d.box) >= min_iou:
                best.frames.append(k)
                best.poses.append(d)
                free.remove(best)
            else:
                tracks.append(Track([k], [d]))
    return tracks


def _subject_moves(poses: list[Pose17 | None], kp_conf: float, least: float = 0.3) -> bool:
    """The subject's pose changes over these frames (a still pair of look-alikes is no reflection)."""
    shapes = [_norm(np.asarray(p.keypoints, float)) for p in poses if p is not None]
    shapes = [s for s in shapes if s is not None]
    if len(shapes) < 2:
        return False
    spread = np.nanmax(np.stack(shapes), axis=0) - np.nanmin(np.stack(shapes), axis=0)
    return float(np.nanmax(np.linalg.norm(spread, axis=1))) >= least


def _patch(frame: np.ndarray, box: list[float], flip: bool) -> np.ndarray | None:
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = max(0, int(box[0])), max(0, int(box[1])), min(w, int(box[2])), min(h, int(box[3]))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    g = cv2.cvtColor(np.ascontiguousarray(frame[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    g = cv2.resize(g, (32, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    g = g[:, ::-1] if flip else g
    return (g - g.mean()) / (g.std() + 1e-6)


def looks_alike(frames: list[np.ndarray], subjects: list[Pose17 | None], track: Track) -> float:
    """How much the other person looks like the subject seen in a mirror: normalised correlation of
    the subject's box and the other's box flipped (gray, so a darker or tinted glass still matches),
    median over up to 3 frames of the track."""
    picks = [(k, p) for k, p in zip(track.frames, track.poses, strict=True) if subjects[k] is not None]
    picks = picks[:: max(1, len(picks) // 3)][:3]
    corr = []
    for k, p in picks:
        a, b = _patch(frames[k], subjects[k].box, False), _patch(frames[k], p.box, True)
        if a is not None and b is not None:
            corr.append(float((a * b).mean()))
    return float(np.median(corr)) if corr else 0.0


def steady_subjects(detections: list[list[Pose17]], person_conf: float, tie: float = 0.1) -> list[Pose17 | None]:
    """The subject of each frame: the most confident person, unless another person nearly as
    confident continues the previous frame's subject better (a reflection or a look-alike with the
    same score must not swap places with the subject from frame to frame)."""
    out: list[Pose17 | None] = []
    prev = None
    for dets in detections:
        people = [d for d in dets if d.score >= person_conf]
        if not people:
            out.append(None)
            continue
        best = people[0]
        if prev is not None:
            close = [d for d in people if d.score >= best.score - tie]
            best = max(close, key=lambda d: (iou(d.box, prev.box), d.score))
        out.append(best)
        prev = best
    return out


def _behind(subject: Pose17 | None, other: Pose17) -> bool:
    """The other person is (mostly) inside the subject's padded box: they can vanish behind it."""
    if subject is None:
        return False
    x1, y1, x2, y2 = subject.box
    px, py = 0.15 * (x2 - x1), 0.15 * (y2 - y1)
    return _overlap(other.box, [x1 - px, y1 - py, x2 + px, y2 + py]) >= 0.3


def people_tracks(
    subjects: list[Pose17 | None],
    detections: list[list[Pose17]],
    *,
    person_conf: float,
    single_conf: float,
    same_oks: float,
    kp_conf: float,
    frames: list[np.ndarray] | None = None,
    mirror_tolerance: float = 0.15,
    min_alike: float = 0.5,
) -> list[Track]:
    """The other people of a clip, with the stretch each counts for and reflections marked. A track
    is a person when one sighting reaches `person_conf`, or two reach `single_conf` (one weak box in
    one frame is the detector's noise)."""
    n = len(subjects)
    people = []
    weak: list[Pose17 | None] = []  # each frame's subject, seen weakly where not confidently
    for t in track_others(subjects, detections, same_oks, kp_conf, seen=weak):
        strong = sum(p.score >= single_conf for p in t.poses)
        if t.score < person_conf and strong < 2:
            continue
        dists = [
            mirror_distance(subjects[k], p, kp_conf)
            for k, p in zip(t.frames, t.poses, strict=True)
            if subjects[k] is not None
        ]
        dists = [d for d in dists if d is not None]
        t.reflection = (
            len(dists) >= max(3, len(t.frames) // 2)
            and float(np.percentile(dists, 90)) <= mirror_tolerance  # in (nearly) every frame
            and _subject_moves([subjects[k] for k in t.frames], kp_conf)
            and frames is not None
            and looks_alike(frames, subjects, t) >= min_alike
        )
        t.start, t.end = t.frames[0], t.frames[-1]
        # vanished where the subject stands (in the last sighting or the frames just after): went
        # behind the subject and is still there; likewise came out from behind: was there before
        # only someone once seen apart from the subject is known to be another person: a second box
        # that never leaves the subject's (an upside-down body detected twice, a blurred dancer's
        # arms and fan boxed apart while the subject is seen only weakly) is not extended
        apart = any(not _behind(weak[k], p) for k, p in zip(t.frames, t.poses, strict=True))
        if apart and t.end < n - 1 and any(_behind(subjects[k], t.poses[-1]) for k in range(t.end, min(n, t.end + 3))):
            t.end = n - 1
        if (
            apart
            and t.start > 0
            and any(_behind(subjects[k], t.poses[0]) for k in range(max(0, t.start - 2), t.start + 1))
        ):
            t.start = 0
        people.append(t)
    return people
