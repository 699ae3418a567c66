"""The checks one candidate pair goes through (stages/motion.py runs them over a clip's candidates):
second person in the window, identity, frame edge and whole body, person size, cut and dissolve,
camera motion and alignment, overlays, sharpness, pose change, text, a second look for people,
margins to each threshold."""

from __future__ import annotations

import math

from schemas.records import MotionFigures, QualityFigures, RejectReason

from ..config import MotionConfig, PairingConfig, QualityConfig
from . import body, occlusion, quality
from . import crop as crops
from . import figures as pose_figures
from .figures import PoseChange, moves, pose_change, same_person
from .margins import MARGIN_REASONS, mark_margins
from .track import Candidate, ClipTrack, FrameKind, unmeasured

# the order in which a candidate's checks run: a clip with no pair is rejected for the step that left
# nothing (stages/motion.py)
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
# the checks run after the pose change, in their order (figure, its quality limit, the reason): a candidate
# one of them stopped passed every check before it, whatever CHECK_ORDER ranks its reason
LATE_CHECKS = (
    ("hidden_limb", "max_hidden_limb", RejectReason.PARTIAL_BODY),
    ("text_change", "max_text_change", RejectReason.OVERLAY_CHANGED),
    ("text_box_change", "max_text_box_change", RejectReason.OVERLAY_CHANGED),
    ("second_look_person", "max_second_look_person", RejectReason.MULTIPLE_PEOPLE),
)


def late_check(quality: QualityFigures | None, why: RejectReason | None, q: QualityConfig) -> int | None:
    """The index in LATE_CHECKS of the late check that stopped a candidate (its figures `quality`, its
    reason `why`), or None when an earlier check did, or none."""
    for k, (name, limit, reason) in enumerate(LATE_CHECKS):
        if quality is not None and why is reason and (getattr(quality, name) or 0) > getattr(q, limit):
            return k
    return None


def change(track: ClipTrack, c: Candidate, cfg: MotionConfig) -> PoseChange:
    """figures.pose_change of the candidate's two frames, computed once: the search orders candidates by
    it before any check."""
    if c.change is None:
        c.change = pose_change(track.person(c.i, cfg), track.person(c.j, cfg), cfg)
    return c.change


def shows_motion(track: ClipTrack, c: Candidate, cfg: MotionConfig) -> bool:
    """The candidate's keypoints change enough to be a pair, whichever check stopped it first."""
    ch = change(track, c, cfg)
    return math.isfinite(ch.mean) and moves(ch.mean, ch.limb, cfg)


def check(
    track: ClipTrack, c: Candidate, cfg: MotionConfig, pairing: PairingConfig | None = None
) -> RejectReason | None:
    """None when the candidate passes; fills c.motion and c.quality when it gets that far. The checks
    run roughly in CHECK_ORDER's order: the costliest (the background alignment, the text search) only
    for a candidate that passed the cheaper ones, so a still candidate may stop as low_motion before a
    later shot_cut or blurry check, and a limb hidden behind what the other frame shows (partial_body),
    the margins of the figures measured so far, the text checks, the second look (another person at
    1280 px, or far behind in the crop alone at 960, in the pair's crop: `pairing` gives the crop) and
    the margins of them all come last. A clip's reason is ranked by CHECK_ORDER (stages/motion.py)."""
    q = track.quality_cfg
    pairing = pairing or PairingConfig()
    crop = pairing.crop
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
    height_px = max(body.person_px(a, cfg.keypoint_conf), body.person_px(b, cfg.keypoint_conf))
    # the legs of the frame nearer its limit (a lying body's limit is lower), with that frame's tilt
    kc = cfg.keypoint_conf
    legs = [(body.leg_extent(p, body.shown(p, content, kc)), body.tilt(p, kc)) for p in (a, b)]
    legs = body.binding_legs(legs, cfg.min_leg_extent, cfg.min_leg_extent_lying)
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
        leg_extent=legs[0] if legs else None,
        body_tilt=legs[1] if legs and math.isfinite(legs[1]) else None,
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
    ch = change(track, c, cfg)
    if pose_figures.labels_flipped(a, b, cfg.keypoint_conf, q.lr_min_separation, q.turn_face_conf):
        c.detail = "left and right flip between the frames and nothing shows a turn: the labels flipped, not the body"
        flipped = pose_change(a, pose_figures.mirrored(b), cfg)
        return RejectReason.IDENTITY_SWITCH if moves(flipped.mean, flipped.limb, cfg) else RejectReason.LOW_MOTION
    moving = moves(ch.mean, ch.limb, cfg)
    blurry = c.quality.sharpness is not None and c.quality.sharpness < q.min_sharpness
    figures = MotionFigures(
        pose_change=ch.mean,
        max_joint_change=ch.max_joint,
        limb_change=ch.limb,
        translation=ch.translation,
        body_size_px=ch.torso_px,
        camera_motion=cam,  # the chained estimate; the alignment's figure replaces it below
        scene_similarity=sim,
        keypoints_compared=ch.compared,
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
            left = "too little background" if al.residual is None else f"background residual {al.residual:.1f}"
            c.detail = f"{left} after alignment: the camera cannot be taken out"
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
    c.quality.drawn_skeleton = track.drawn_skeleton(c.i, c.j)
    if c.quality.drawn_skeleton is not None and c.quality.drawn_skeleton > q.max_drawn_skeleton:
        c.detail = f"lines are drawn along {c.quality.drawn_skeleton:.0%} of the person's limbs (a pose skeleton)"
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
    if q.max_hidden_limb < 1:
        frames = track.frames[c.i], track.frames[c.j]
        limb = occlusion.hidden_limb(*frames, a, b, al.full_matrix(), cfg.keypoint_conf, cfg.whole_body)
        c.quality.hidden_limb = limb
        if limb is not None and limb > q.max_hidden_limb:
            c.detail = f"{limb:.0%} of a limb lies over what the other frame shows unchanged there: hidden behind it"
            return RejectReason.PARTIAL_BODY
    # the costliest checks come last, so only a pair that passed every other one pays for them, and not
    # one that a figure measured so far puts within a margin of its threshold (most candidates here:
    # borderline pose changes), which is dropped whatever they find (quality.borderline "drop")
    if (reason := early_borderline(c, cfg, q, crop)) is not None:
        return reason
    c.quality.text_change = track.text_change(c.i, c.j, al)
    if c.quality.text_change is not None and c.quality.text_change > q.max_text_change:
        c.detail = f"bright text ({c.quality.text_change:.3f} torso^2 of strokes) is in one frame only (a caption)"
        return RejectReason.OVERLAY_CHANGED
    if q.max_text_box_change < 1:
        c.quality.text_box_change, box = track.changed_text(c.i, c.j, al)
        if c.quality.text_box_change > q.max_text_box_change:
            c.detail = f"text changed between the frames ({c.quality.text_box_change:.4f} of the frame at {box})"
            return RejectReason.OVERLAY_CHANGED
    if q.max_second_look_person < 1:
        region = content
        if crop == "person":  # a person the crop leaves out is not in the pair
            region = crops.person_box([a.box, b.box], content, pairing.crop_pad, pairing.crop_aspect)
        diagonal = math.hypot(*track.frames[c.i].shape[:2])
        drift = int(math.ceil(cfg.max_camera_motion * diagonal)) if al.status in ("static", "stabilised") else None
        c.quality.second_look_person, box = track.second_look(c.i, c.j, region, al.full_matrix(), drift)
        if c.quality.second_look_person > q.max_second_look_person:
            score = c.quality.second_look_person
            c.detail = f"another person ({score:.2f} at {box}) is seen at the second look"
            return RejectReason.MULTIPLE_PEOPLE
    return _borderline(c, cfg, q, crop)


def early_borderline(c: Candidate, cfg: MotionConfig, q: QualityConfig, crop: str) -> RejectReason | None:
    """_borderline before the costliest checks: it drops a candidate the final one would drop too, as
    borderline, where a late check might have named it first (another reason; a test turns it off)."""
    return _borderline(c, cfg, q, crop)


def _borderline(c: Candidate, cfg: MotionConfig, q: QualityConfig, crop: str) -> RejectReason | None:
    """Mark the candidate's margins (of the figures measured so far); the reason that drops it when one is
    within quality.borderline_margin and borderline pairs are dropped, else None."""
    mark_margins(c, cfg, q, crop)
    if c.quality.borderline and q.borderline == "drop":
        c.detail = f"borderline: {c.quality.borderline_checks}"
        return MARGIN_REASONS[c.quality.borderline_checks.split(",")[0]]
    return None
