"""Head-camera pairs (EditAction's EPIC set): no body to track, so a segment's first and last sampled
frames make the pair when the segment is long enough, holds no cut and the camera stays still enough."""

from __future__ import annotations

from schemas.records import MotionFigures, QualityFigures, RejectReason

from ..config import EgocentricConfig
from .track import Candidate, ClipTrack, Selection, unmeasured


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
        detail = f"camera motion unmeasurable in {unmeasured(steps)} step(s)"
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
