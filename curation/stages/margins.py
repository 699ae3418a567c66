"""Each pair figure's margin to its threshold, so a pair decided close to one is marked `borderline`
(kept or dropped by quality.borderline), and the reason a too-close figure is dropped for."""

from __future__ import annotations

import math

from schemas.records import RejectReason

from ..config import MotionConfig, QualityConfig
from .body import leg_limit as _limit
from .track import Candidate

# each margin: (figure, threshold, "min" | "max"); the reason a too-close figure is dropped for
MARGIN_REASONS = {
    "person_px_source": RejectReason.TOO_SMALL,
    "person_px_output": RejectReason.TOO_SMALL,
    "person_height": RejectReason.TOO_SMALL,
    "edge_margin": RejectReason.PARTIAL_BODY,
    "leg_extent": RejectReason.PARTIAL_BODY,
    "box_past_border": RejectReason.PARTIAL_BODY,
    "foot_room": RejectReason.PARTIAL_BODY,
    "hidden_limb": RejectReason.PARTIAL_BODY,
    "other_person_score": RejectReason.MULTIPLE_PEOPLE,
    "second_look_person": RejectReason.MULTIPLE_PEOPLE,
    "camera_motion": RejectReason.CAMERA_MOTION,
    "background_residual": RejectReason.CAMERA_MOTION,
    "overlay_change": RejectReason.OVERLAY_CHANGED,
    "graphic_stroke": RejectReason.OVERLAY_CHANGED,
    "drawn_skeleton": RejectReason.OVERLAY_CHANGED,
    "text_change": RejectReason.OVERLAY_CHANGED,
    "text_box_change": RejectReason.OVERLAY_CHANGED,
    "background_change": RejectReason.SHOT_CUT,
    "transition_mix": RejectReason.SHOT_CUT,
    "background_match": RejectReason.SHOT_CUT,
    "sharpness": RejectReason.BLURRY,
    "pose_change": RejectReason.LOW_MOTION,
    "person_change": RejectReason.LOW_MOTION,
}


def mark_margins(c: Candidate, cfg: MotionConfig, q: QualityConfig, crop: str) -> None:
    """Each figure's margin to its threshold, relative to the threshold (negative: past it). A pair
    with any margin under quality.borderline_margin is marked borderline, naming the checks."""
    qf, mf = c.quality, c.motion
    tilt = math.nan if qf.body_tilt is None else qf.body_tilt  # a lying body's legs have a lower limit
    legs = _limit(tilt, cfg.min_leg_extent, cfg.min_leg_extent_lying)
    checks = {
        "person_px_source": (qf.person_px_source, q.min_person_px, "min"),
        "person_px_output": (qf.person_px_output, q.min_person_px_output, "min"),
        "edge_margin": (qf.edge_margin, q.min_edge_margin, "min"),
        "leg_extent": (qf.leg_extent, legs if cfg.whole_body else 0.0, "min"),
        "box_past_border": (qf.box_past_border if cfg.whole_body else None, q.max_box_past_border, "max"),
        "foot_room": (qf.foot_room if cfg.whole_body else None, q.min_foot_room, "min"),
        "hidden_limb": (qf.hidden_limb, q.max_hidden_limb, "max"),
        "other_person_score": (qf.other_person_score, q.other_person_conf, "max"),
        "second_look_person": (qf.second_look_person, q.max_second_look_person, "max"),
        "camera_motion": (mf.camera_motion if qf.camera_status == "stabilised" else None, cfg.max_camera_motion, "max"),
        "background_residual": (
            qf.background_residual if qf.camera_status == "stabilised" else None,
            cfg.max_background_residual,
            "max",
        ),
        "overlay_change": (qf.overlay_change, q.max_overlay_change, "max"),
        "graphic_stroke": (qf.graphic_stroke, q.max_graphic_stroke, "max"),
        "drawn_skeleton": (qf.drawn_skeleton, q.max_drawn_skeleton, "max"),
        "text_change": (qf.text_change, q.max_text_change, "max"),
        "text_box_change": (qf.text_box_change, q.max_text_box_change, "max"),
        "background_change": (qf.background_change, q.max_background_change, "max"),
        "transition_mix": (qf.transition_mix, q.max_transition_mix, "max"),
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
