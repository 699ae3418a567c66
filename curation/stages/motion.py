"""Single-person motion: pair selection, pure functions over the per-frame detections of one clip.

The clip-level decision is a funnel. Frames are classified first (stages/track.py: no person / several
people, including one half hidden behind the person at the detector's own threshold / one person
without a body / a body whose left and right labels contradict its facing (dropped, counted) / one
whole body); then candidate pairs of whole-body frames inside the gap bounds go through checks in a
checks (stages/checks.py; CHECK_ORDER ranks them: second person in the window, identity, frame edge,
person size, cut, camera motion, background place, sharpness, pose change). The reason a clip is
rejected is the step that left nothing. The motion figures of a pair live in stages/figures.py, their
margins in stages/margins.py, the quality measures in stages/quality.py, head-camera segments in
stages/egocentric.py.
"""

from __future__ import annotations

import math
from collections import Counter

from schemas.records import PairStrategy, RejectReason

from ..config import MotionConfig, PairingConfig
from . import checks, quality
from .checks import CHECK_ORDER
from .egocentric import select_egocentric
from .figures import LIMB_MASK, moves, pose_change, root_and_torso, same_person, scene_similarity
from .margins import MARGIN_REASONS
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

# the share of a pairless clip's moving candidates that, stopped at one check, names the clip's reason
# (else the check the furthest of them reached)
CLIP_REASON_SHARE = 0.9


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

    checked, pairs = _search(track, cands, cfg, pcfg)
    failed = Counter(why for why in checked.values() if why is not None)
    funnel["candidates_checked"] = remaining = len(checked) - failed[RejectReason.DUPLICATE]
    funnel["candidates_repeating"] = failed[RejectReason.DUPLICATE]
    for reason in CHECK_ORDER:
        remaining -= failed[reason]
        funnel[f"after_{reason.value}"] = remaining
    if not pairs:  # then every candidate was checked (pairs_per_clip >= 1: no strategy stopped early)
        reasons = [checked[n] for n in range(len(cands))]
        moving = Counter(
            why
            for c, why in zip(cands, reasons, strict=True)
            if why is not None and why is not RejectReason.LOW_MOTION and checks.shows_motion(track, c, cfg)
        )
        if moving:
            # the candidates that show motion name why the clip has no pair (jumps whose head the top
            # edge cuts are partial_body, not low_motion for their still moments): the check the
            # furthest of them reached: a late check (checks.LATE_CHECKS: hidden limbs, text, the second
            # look) is reached after every other, whatever CHECK_ORDER ranks its reason. Unless nearly
            # all of them stopped at one check (a tracking camera: 67 of 70 on the camera, 3 on an
            # overlay past it): that check is the clip's trouble, the few past it exceptions
            common, n = moving.most_common(1)[0]
            if n >= CLIP_REASON_SHARE * moving.total():
                reason = common
                named = f"{n} of the {moving.total()} that show motion stopped at {common.value}"
            else:
                q = track.quality_cfg
                late = [checks.late_check(c.quality, why, q) for c, why in zip(cands, reasons, strict=True)]
                furthest = max((k for k in late if k is not None), default=None)
                reason = max(moving, key=CHECK_ORDER.index) if furthest is None else checks.LATE_CHECKS[furthest][2]
                named = f"the furthest check the {moving.total()} that show motion reached"
            detail = f"{len(cands)} candidate pairs, none passed ({_failures(failed)}); named by {named}"
            return Selection([], reason, f"{detail}; {_best(cands)} ({summary})", funnel)
        # the first check that brought the count to zero decides
        left = len(cands)
        for reason in CHECK_ORDER:
            left -= failed[reason]
            if left == 0:
                detail = f"{len(cands)} candidate pairs, none passed ({_failures(failed)}); none shows motion"
                return Selection([], reason, f"{detail}; {_best(cands)} ({summary})", funnel)
    return Selection(pairs, None, "", funnel)


def _search(
    track: ClipTrack, cands: list[Candidate], cfg: MotionConfig, pcfg: PairingConfig
) -> tuple[dict[int, RejectReason | None], list[Candidate]]:
    """Each checked candidate's result, by its place in `cands`, and the clip's pairs. Per strategy, the
    largest pose change first (the figure comes from the keypoints alone, so it is known before any
    check), a candidate is taken when it passes and its window overlaps no pair already taken, until
    the strategy has pairs_per_clip. A candidate after the last pair needed, or overlapping a pair
    taken, could not change the choice, so it is not checked; a clip where none passes has every
    candidate checked (its reason and detail count them all). Two strategies may agree on a pair: it
    is kept once. A candidate that repeats a pair already taken from the clip (both frames within
    quality.max_duplicate_distance pHash bits: the dataset's near-duplicate rule, which would drop it
    when the generation is made) is `duplicate`, not checked, and the search goes on for another. The
    pairs come in time order. A pass in which the second look remembered a new bystander is run again,
    so that pairs checked before he was found are judged with him too."""
    hashes: dict[int, str] = {}

    def repeats(c: Candidate, chosen: dict[tuple[int, int], Candidate]) -> bool:
        for k in (c.i, c.j):
            if k not in hashes:
                hashes[k] = quality.phash(track.frames[k])
        limit = track.quality_cfg.max_duplicate_distance
        return any(
            quality.hamming(hashes[c.i], hashes[o.i]) <= limit and quality.hamming(hashes[c.j], hashes[o.j]) <= limit
            for key, o in chosen.items()
            if key != (c.i, c.j)
        )

    for _ in range(3):  # again while a pass remembers someone new (ClipTrack.second_look), at most twice
        remembered = track.remembered
        checked: dict[int, RejectReason | None] = {}
        chosen: dict[tuple[int, int], Candidate] = {}
        for strategy in pcfg.strategies:
            mine = [n for n, c in enumerate(cands) if c.strategy == strategy]
            mine.sort(key=lambda n: _order(cands[n], checks.change(track, cands[n], cfg).mean))
            taken: list[Candidate] = []
            for n in mine:
                c = cands[n]
                if len(taken) >= pcfg.pairs_per_clip:
                    break
                if any(c.j > o.i and c.i < o.j for o in taken):
                    continue
                # a repeat is known from two hashes, before the checks: it is not checked
                checked[n] = RejectReason.DUPLICATE if repeats(c, chosen) else checks.check(track, c, cfg, pcfg)
                if checked[n] is None:
                    taken.append(c)
                    chosen.setdefault((c.i, c.j), c)
        if track.remembered == remembered:
            break
    return checked, [chosen[k] for k in sorted(chosen)]


def _order(c: Candidate, mean: float) -> tuple[float, int, int]:
    """The largest pose change first (a figure that is not finite sorts last), then the earliest."""
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
