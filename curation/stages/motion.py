"""Single-person motion: pair selection, pure functions over the per-frame detections of one clip.

The clip-level decision is a funnel. Frames are classified first (stages/track.py: no person / several
people, including one half hidden behind the person at the detector's own threshold / one person
without a body / a body whose left and right labels contradict its facing (dropped, counted) / one
whole body); then candidate pairs of whole-body frames inside the gap bounds go through checks in a
fixed order (CHECK_ORDER: second person in the window, identity, frame edge, person size, cut, camera
motion, background place, sharpness, pose change). The reason a clip is rejected is the step that left
nothing. The motion figures of a pair live in stages/figures.py, their margins in stages/margins.py,
the quality measures in stages/quality.py, head-camera segments in stages/egocentric.py.
"""

from __future__ import annotations

import math
from collections import Counter

from schemas.records import MotionFigures, PairStrategy, QualityFigures, RejectReason

from ..config import MotionConfig, PairingConfig
from . import body, quality
from . import figures as pose_figures
from .egocentric import select_egocentric
from .figures import LIMB_MASK, moves, pose_change, root_and_torso, same_person, scene_similarity
from .margins import MARGIN_REASONS, mark_margins
from .track import (
    Candidate,
    ClipTrack,
    FrameKind,
    FrameObs,
    Selection,
    body_rule,
    classify,
    confident,
    has_body,
    hidden_person_score,
    unmeasured,
)

# the names callers import from here (stages/track.py, stages/figures.py, stages/egocentric.py)
__all__ = [
    "CHECK_ORDER",
    "LIMB_MASK",
    "MARGIN_REASONS",
    "Candidate",
    "ClipTrack",
    "FrameKind",
    "FrameObs",
    "Selection",
    "body_rule",
    "classify",
    "confident",
    "has_body",
    "hidden_person_score",
    "moves",
    "pose_change",
    "root_and_torso",
    "same_person",
    "scene_similarity",
    "select_egocentric",
    "select_pairs",
]


# ---------------------------------------------------------------- the funnel


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
    if cfg.whole_body and body.head_seen(a, cfg.keypoint_conf) != body.head_seen(b, cfg.keypoint_conf):
        c.detail = "the head is seen in one frame and not in the other: hidden or cut there"
        return RejectReason.PARTIAL_BODY
    content = track.content or (0, 0, a.frame_width, a.frame_height)
    margins = [quality.lr_margin(p, cfg.keypoint_conf, q.lr_min_separation) for p in (a, b)]
    margins = [m for m in margins if m is not None]
    sharp = [track.sharpness[k] for k in (c.i, c.j) if track.sharpness[k] is not None]
    height_px = max(a.box[3] - a.box[1], b.box[3] - b.box[1])
    legs = [body.leg_extent(p, body.shown(p, content, cfg.keypoint_conf)) for p in (a, b)]
    legs = [v for v in legs if math.isfinite(v)]
    ends = [body.extremity_margin(p, content, cfg.keypoint_conf) for p in (a, b)]
    ends = [v for v in ends if v is not None]
    feet = [v for v in (body.foot_room(p, cfg.keypoint_conf) for p in (a, b)) if v is not None]
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
        box_past_border=max(body.past_border(p, content, cfg.keypoint_conf) for p in (a, b)),
        foot_room=min(feet) if feet else None,
        other_track_score=max((t.score for t in track.others), default=0.0),  # elsewhere in the clip
    )
    if c.quality.edge_margin < q.min_edge_margin:
        return RejectReason.PARTIAL_BODY
    if cfg.whole_body and c.quality.box_past_border > q.max_box_past_border:
        c.detail = "the person's box runs on to the border well past the outermost joint: the body is cut there"
        return RejectReason.PARTIAL_BODY
    if cfg.whole_body and c.quality.foot_room is not None and c.quality.foot_room < q.min_foot_room:
        c.detail = "the person's box stops at an ankle: no foot seen there (hidden or cut), the ankle guessed"
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
    c.quality.transition_mix = max(track.transition(c.i), track.transition(c.j))
    if c.quality.transition_mix > q.max_transition_mix:
        c.detail = f"a frame holds {c.quality.transition_mix:.2f} of another shot: it is inside a dissolve or fade"
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
    if pose_figures.labels_flipped(a, b, cfg.keypoint_conf, q.lr_min_separation, q.turn_face_conf):
        c.detail = "left and right flip between the frames and nothing shows a turn: the labels flipped, not the body"
        flipped = pose_change(a, pose_figures.mirrored(b), cfg)
        return RejectReason.IDENTITY_SWITCH if moves(flipped[0], flipped[5], cfg) else RejectReason.LOW_MOTION
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
    c.quality.graphic_stroke = al.graphic_stroke
    if al.status == "unmeasurable":
        c.detail = f"camera motion unmeasurable in {unmeasured(steps)} step(s)"
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
    if al.graphic_stroke is not None and al.graphic_stroke > q.max_graphic_stroke:
        c.detail = f"a drawn stroke {al.graphic_stroke:.2f} torso lengths long is in one frame only (a graphic)"
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
    # the costliest check comes last, so only a pair that passed every other one pays for it
    c.quality.text_change = track.text_change(c.i, c.j, al)
    if c.quality.text_change is not None and c.quality.text_change > q.max_text_change:
        c.detail = f"bright text ({c.quality.text_change:.3f} torso^2 of strokes) is in one frame only (a caption)"
        return RejectReason.OVERLAY_CHANGED
    mark_margins(c, cfg, q, crop)
    if c.quality.borderline and q.borderline == "drop":
        c.detail = f"borderline: {c.quality.borderline_checks}"
        return MARGIN_REASONS[c.quality.borderline_checks.split(",")[0]]
    return None


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
        return Selection([], RejectReason.PARTIAL_BODY, f"no whole body ({body_rule(cfg)}) ({summary})", funnel)

    cands = [c for s in pcfg.strategies for c in _candidates(track, s, pcfg)]
    funnel["candidates"] = len(cands)
    if not cands:
        detail = f"no two body frames within the gap bounds ({summary})"
        return Selection([], RejectReason.NO_VALID_WINDOW, detail, funnel)

    checked = _search(track, cands, cfg, pcfg)
    failed = Counter(why for why in checked.values() if why is not None)
    passed = [c for n, c in enumerate(cands) if n in checked and checked[n] is None]
    funnel["candidates_checked"] = len(checked)
    remaining = len(checked)
    for reason in CHECK_ORDER:
        remaining -= failed[reason]
        funnel[f"after_{reason.value}"] = remaining
    if not passed:  # then every candidate was checked (pairs_per_clip >= 1: no strategy stopped early)
        reasons = [checked[n] for n in range(len(cands))]
        moving = {
            why
            for c, why in zip(cands, reasons, strict=True)
            if why is not None and why is not RejectReason.LOW_MOTION and _moves(track, c, cfg)
        }
        if moving:
            # the candidates that show motion name why the clip has no pair (jumps whose head the top
            # edge cuts are partial_body, not low_motion for their still moments): the check the
            # furthest of them reached; the text check is run last, so a candidate it stopped (its
            # text_change over the limit) passed every other check
            limit = track.quality_cfg.max_text_change
            text = any(
                why is RejectReason.OVERLAY_CHANGED and c.quality is not None and (c.quality.text_change or 0) > limit
                for c, why in zip(cands, reasons, strict=True)
            )
            reason = RejectReason.OVERLAY_CHANGED if text else max(moving, key=CHECK_ORDER.index)
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


def _search(
    track: ClipTrack, cands: list[Candidate], cfg: MotionConfig, pcfg: PairingConfig
) -> dict[int, RejectReason | None]:
    """Each checked candidate's result, by its place in `cands`. They are checked in the order _pick
    takes them (per strategy, the largest pose change first; the figure comes from the keypoints alone,
    so it is known before the checks), and a strategy stops once it has its pairs: a candidate whose
    window overlaps a pair already taken, or that comes after the last one needed, could not change the
    choice, so it is not checked. The pairs are those that checking every candidate would give; a clip
    where none passes has every candidate checked (its reason and detail count them all)."""
    checked: dict[int, RejectReason | None] = {}
    for strategy in pcfg.strategies:
        mine = [n for n, c in enumerate(cands) if c.strategy == strategy]
        mine.sort(key=lambda n: _pick_key(cands[n], _mean_change(track, cands[n], cfg)))
        taken: list[Candidate] = []
        for n in mine:
            c = cands[n]
            if len(taken) >= pcfg.pairs_per_clip:
                break
            if any(c.j > o.i and c.i < o.j for o in taken):
                continue
            checked[n] = _check(track, c, cfg, pcfg.crop)
            if checked[n] is None:
                taken.append(c)
    return checked


def _mean_change(track: ClipTrack, c: Candidate, cfg: MotionConfig) -> float:
    """The candidate's pose_change as _check computes it (figures.pose_change's mean)."""
    return pose_change(track.person(c.i, cfg), track.person(c.j, cfg), cfg)[0]


def _pick_key(c: Candidate, mean: float) -> tuple[float, int, int]:
    """_pick's order: the largest pose change first (a figure that is not finite sorts last)."""
    return (-mean if math.isfinite(mean) else math.inf, c.i, c.j)


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
        mine = sorted((c for c in passed if c.strategy == strategy), key=lambda c: _pick_key(c, c.motion.pose_change))
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
