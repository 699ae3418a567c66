import math

import numpy as np
import pytest
from posekit import KNEES_BENT, RIGHT_ARM_UP, make_pose

from curation.config import MotionConfig, PairingConfig, QualityConfig
from curation.stages.motion import ClipTrack, FrameKind, FrameObs, classify, pose_change, select_pairs
from curation.stages.quality import background_step, motion_magnitude, small_gray
from schemas.records import KP, RejectReason

CFG = MotionConfig()


def test_pose_change_is_normalised_by_body_size_and_ignores_translation():
    a, b = make_pose(), make_pose(RIGHT_ARM_UP)
    mean, mx, trans, torso, n, limb = pose_change(a, b, CFG)
    assert torso == pytest.approx(100) and n == 17 and trans == pytest.approx(0)
    big_a, big_b = make_pose(scale=2.5), make_pose(RIGHT_ARM_UP, scale=2.5, shift=(300, 40))
    mean2, mx2, trans2, _, _, limb2 = pose_change(big_a, big_b, CFG)
    assert mean2 == pytest.approx(mean) and mx2 == pytest.approx(mx)  # same motion, bigger and moved
    assert limb2 == pytest.approx(limb) and mean < limb <= mx
    assert trans2 > 1
    assert pose_change(a, make_pose(shift=(50, 0)), CFG)[0] == pytest.approx(0)  # walking sideways is no pose change


def test_low_confidence_keypoints_are_not_compared():
    a = make_pose()
    b = make_pose(RIGHT_ARM_UP, low=("right_wrist", "right_elbow"))
    mean, _, _, _, n, _ = pose_change(a, b, CFG)
    assert n == 15 and mean == pytest.approx(0)


def test_frame_classes():
    face = make_pose(low=("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"))
    assert classify(FrameObs(0, 0, []), CFG) is FrameKind.NONE
    assert classify(FrameObs(0, 0, [make_pose()]), CFG) is FrameKind.BODY
    assert classify(FrameObs(0, 0, [face]), CFG) is FrameKind.PARTIAL
    assert classify(FrameObs(0, 0, [make_pose(), make_pose(shift=(300, 0), score=0.55)]), CFG) is FrameKind.MULTI
    assert classify(FrameObs(0, 0, [make_pose(), make_pose(shift=(300, 0), score=0.3)]), CFG) is FrameKind.BODY
    assert classify(FrameObs(0, 0, [make_pose(score=0.55)]), CFG) is FrameKind.NONE


def textured(seed: int = 0, shape=(480, 640)) -> np.ndarray:
    """A still, textured background (the camera must be measurable for a pair to pass)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((shape[0] // 8, shape[1] // 8)) * 255).astype(np.uint8)
    img = np.kron(small, np.ones((8, 8), np.uint8))
    return np.stack([img] * 3, -1)


LOGIC = QualityConfig(min_person_change=0, max_second_look_person=1.0, max_hidden_limb=1.0)


def track(poses_per_frame, fps=4.0, frames=None):
    obs = [FrameObs(i * 10, i / fps, p) for i, p in enumerate(poses_per_frame)]
    still = textured()
    frames = frames or [still for _ in obs]
    # the frames are one still texture under synthetic keypoints: no pixel of the person changes, so the
    # image evidence of a pose change (quality.min_person_change) is switched off for these logic tests,
    # and so are the second look for people at 1280 px (a pose model on a texture: tests/test_second_look.py)
    # and the hidden limbs (keypoints over a texture that does not change are limbs not shown:
    # tests/test_occlusion.py)
    return ClipTrack.build(obs, frames, CFG, LOGIC)


def arm_raise(n=12):
    return [[make_pose(RIGHT_ARM_UP if i >= n // 2 else None)] for i in range(n)]


def test_pairs_from_a_clean_arm_raise():
    sel = select_pairs(track(arm_raise()), CFG, PairingConfig(pairs_per_clip=2))
    assert sel.reason is None and len(sel.pairs) >= 1
    c = sel.pairs[0]
    assert c.i < 6 <= c.j and c.motion.pose_change >= CFG.min_pose_change
    assert all(p.j <= q.i or p.i >= q.j for p in sel.pairs for q in sel.pairs if p is not q)  # no overlap


def test_keypoints_over_a_still_scene_are_hidden_limbs_and_name_the_clip():
    """The same arm raise with the hidden-limb check on: its keypoints lie over one still texture that
    the other frame shows unchanged, limbs the picture does not show (stages/occlusion.py). Every moving
    candidate stops there, late in the checks, and the clip is named by it (checks.LATE_CHECKS), with the
    figure kept on the candidates; a limit of 1 lets the pairs through and measures nothing."""
    obs = [FrameObs(i * 10, i / 4.0, p) for i, p in enumerate(arm_raise())]
    on = LOGIC.model_copy(update={"max_hidden_limb": 0.8})
    sel = select_pairs(ClipTrack.build(obs, [textured()] * 12, CFG, on), CFG, PairingConfig(pairs_per_clip=2))
    assert not sel.pairs and sel.reason is RejectReason.PARTIAL_BODY, (sel.reason, sel.detail)
    assert "partial_body" in sel.detail and "low_motion" in sel.detail  # the still pairs stop earlier
    kept = select_pairs(track(arm_raise()), CFG, PairingConfig(pairs_per_clip=2)).pairs
    assert kept and all(c.quality.hidden_limb is None for c in kept)


def test_a_clip_whose_moving_pairs_nearly_all_stop_at_one_check_is_named_by_it(monkeypatch):
    """A camera panning 24 px a step (0.03 of the diagonal over a step is the most a pair is stabilised
    for) but holding still over two steps in the middle: one candidate across the arm raise passes the
    camera and stops late, at the hidden limbs (partial_body); the other 54 stop at the camera (34 of
    them show motion). The clip's trouble is its camera: it is named camera_motion, not by the furthest
    check that one reached (as a tracking camera of the sixteenth out-of-sample batch was
    `overlay_changed`), and its detail says which rule named it."""
    from curation.stages import motion

    offsets = np.concatenate([[0], np.cumsum([24] * 5 + [0, 0] + [24] * 4)]).astype(int)
    scene = textured(3, (480, 640 + int(offsets[-1]) + 8))
    frames = [np.ascontiguousarray(scene[:, o : o + 640]) for o in offsets]
    obs = [FrameObs(i * 10, i / 4.0, p) for i, p in enumerate(arm_raise())]
    on = LOGIC.model_copy(update={"max_hidden_limb": 0.8})
    sel = select_pairs(ClipTrack.build(obs, frames, CFG, on), CFG, PairingConfig())
    assert not sel.pairs and sel.reason is RejectReason.CAMERA_MOTION, sel.detail
    assert "partial_body 1, camera_motion 54" in sel.detail
    assert "named by 34 of the 35 that show motion stopped at camera_motion" in sel.detail  # which rule named it
    monkeypatch.setattr(motion, "CLIP_REASON_SHARE", 1.01)  # off: the furthest check reached names it
    off = select_pairs(ClipTrack.build(obs, frames, CFG, on), CFG, PairingConfig())
    assert off.reason is RejectReason.PARTIAL_BODY, off.detail
    assert "named by the furthest check the 35 that show motion reached" in off.detail


def test_segment_endpoints_strategy_takes_first_and_last_frames():
    sel = select_pairs(track(arm_raise()), CFG, PairingConfig(strategies=["segment_endpoints"]))
    assert [(c.i, c.j, c.strategy) for c in sel.pairs] == [(0, 11, "segment_endpoints")]


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([[]] * 12, "no_person"),
        ([[make_pose(), make_pose(shift=(300, 0))]] * 12, "multiple_people"),
        ([[make_pose(low=("left_hip", "right_hip"))]] * 12, "partial_body"),
        ([[make_pose()]] * 12, "low_motion"),
    ],
)
def test_clip_level_reasons(frames, reason):
    t = track(frames)
    sel = select_pairs(t, CFG, PairingConfig())
    assert not sel.pairs and sel.reason == reason and sel.detail
    if reason != "low_motion":  # the frame-type funnel rejected it: no optical flow, no histograms were run
        assert all(s is None for s in t.steps) and all(v is None for v in t.similarity)


def test_a_clip_without_a_whole_body_says_what_a_whole_body_needs():
    """Legs the model cannot read (a seated forward bend: knees and ankles under keypoint_conf) leave no
    whole-body frame although shoulders and hips are shown: the detail names the legs rule, not only
    "shoulders and hips" as it did."""
    sel = select_pairs(track([[make_pose(low=("left_knee", "left_ankle"))]] * 12), CFG, PairingConfig())
    assert not sel.pairs and sel.reason == "partial_body"
    assert "both legs shown hip to ankle" in sel.detail and "frames_whole_body=0" in sel.detail, sel.detail
    upper = CFG.model_copy(update={"whole_body": False, "required_keypoints": ["left_shoulder", "left_hip"]})
    sel = select_pairs(track([[make_pose(low=("left_hip",))]] * 12), upper, PairingConfig())
    assert sel.reason == "partial_body" and "left_shoulder, left_hip at 0.5, " in sel.detail, sel.detail
    assert "legs" not in sel.detail


def test_background_is_measured_only_between_the_frames_candidates_span():
    frames = [[]] * 3 + arm_raise() + [[]] * 3  # nobody in the first and last three frames
    t = track(frames)
    sel = select_pairs(t, CFG, PairingConfig())
    assert sel.pairs and all(3 <= c.i < c.j <= 14 for c in sel.pairs)
    measured = [k for k, s in enumerate(t.steps) if s is not None]
    assert measured and min(measured) >= 3 and max(measured) < 14
    assert all(t.similarity[k] is not None for k in measured)


def test_a_second_person_anywhere_in_the_window_rejects_it():
    frames = arm_raise()
    for k in range(1, 12, 2):  # a passer-by in every other frame
        frames[k] = frames[k] + [make_pose(shift=(350, 0))]
    sel = select_pairs(track(frames), CFG, PairingConfig())
    assert sel.reason == "multiple_people" and sel.funnel["after_multiple_people"] == 0


def test_a_second_box_beside_a_weakly_seen_subject_is_not_stretched_over_the_clip():
    """A blurred frame (real clip: a flamenco dancer mid-spin, 320x240): the subject is seen only
    weakly (under person_conf) and the detector boxes part of her apart at 0.53. That box never
    leaves the subject, seen weakly or not: it counts for its own frame, not, as a partner who went
    behind her, for the whole clip (every pair was multiple_people before)."""
    frames = arm_raise()
    weak = frames[9][0].model_copy(update={"score": 0.4})
    part = make_pose(RIGHT_ARM_UP, scale=0.5, shift=(100, 150), score=0.53)  # inside her box, another shape
    frames[9] = [weak, part]
    t = track(frames)
    assert [(o.start, o.end) for o in t.others] == [(9, 9)]
    sel = select_pairs(t, CFG, PairingConfig(pairs_per_clip=4))
    assert sel.pairs and all(c.j < 9 for c in sel.pairs), (sel.reason, sel.detail)
    # a box apart from the weakly seen subject is someone else: seen there, then gone behind her
    frames[8] = frames[8] + [make_pose(shift=(120, 0), score=0.7)]
    frames[9] = [weak, make_pose(shift=(40, 0), score=0.7)]
    assert [(o.start, o.end) for o in track(frames).others] == [(8, 11)]


def test_identity_switch_and_shot_cut():
    # every candidate window spans a jump to someone else elsewhere / a cut to another scene
    frames = arm_raise()
    for k in range(1, 12, 2):
        frames[k] = [make_pose(RIGHT_ARM_UP, shift=(380, 0))]
    sel = select_pairs(track(frames), CFG, PairingConfig())
    assert sel.reason == "identity_switch" and sel.funnel["after_identity_switch"] == 0
    rng = np.random.default_rng(0)
    red = np.full((480, 640, 3), (200, 30, 30), np.uint8)
    noise = (rng.integers(0, 60, (480, 640, 3)) + np.array([0, 0, 150])).astype(np.uint8)
    imgs = [red if k % 2 == 0 else noise for k in range(12)]
    sel = select_pairs(track(arm_raise(), frames=imgs), CFG, PairingConfig())
    assert sel.reason == "shot_cut" and sel.funnel["after_shot_cut"] == 0


def test_a_torso_bent_toward_the_camera_is_the_same_person():
    """A push-up filmed head-on (out-of-sample batch 20's living room): the torso points at the camera,
    so its length in the picture runs from about 50 px at the top to 5-15 px at the bottom while the
    shoulders keep 110-165 px. The identity check sizes a body by the larger of its torso length and
    shoulder width, so the turn toward the camera is no identity_switch; someone else (far off, or
    twice the size) still is."""
    from curation.stages.figures import same_person

    def head_on(torso: float, shoulders: float):
        """Hips at y 250, shoulder centre `torso` px above, shoulders `shoulders` px apart."""
        y, h = 250 - torso, shoulders / 2
        moves = {"left_shoulder": (200 + h, y), "right_shoulder": (200 - h, y)}
        moves |= {"nose": (200, y - 20), "left_eye": (210, y - 28), "right_eye": (190, y - 28)}
        moves |= {"left_ear": (220, y - 24), "right_ear": (180, y - 24)}
        return make_pose(moves)

    top, bottom = head_on(50, 130), head_on(12, 160)
    assert same_person(top, bottom, CFG) and same_person(bottom, top, CFG)
    assert same_person(make_pose(), head_on(40, 120), CFG)  # standing (torso 100), then bent over
    assert not same_person(top, make_pose(shift=(380, 0)), CFG)  # a jump to someone elsewhere
    assert not same_person(make_pose(), make_pose(scale=2.0, shift=(-200, -250)), CFG)  # twice the size
    # a clip of push-ups seen head-on (each frame's torso 5 times shorter at the bottom): every checked
    # candidate gets past the identity check (synthetic keypoints over a still texture: its arms barely
    # move against this size, so the clip is low_motion, which is not what this tests)
    frames = [[head_on(50, 130) if i % 4 < 2 else head_on(10, 165)] for i in range(12)]
    sel = select_pairs(track(frames), CFG, PairingConfig(pairs_per_clip=2))
    assert 0 < sel.funnel["after_identity_switch"] == sel.funnel["candidates_checked"], (sel.reason, sel.detail)


def test_camera_motion_measures_background_shift():
    scene = textured(1, (300, 400))
    a, b = scene[50:250, 50:350], scene[50:250, 62:362]  # the camera panned 12 px
    step = background_step(a, b, [])
    assert step.status == "ok"
    h, w = small_gray(a)[0].shape
    assert motion_magnitude(step.matrix, w, h) * np.hypot(h, w) == pytest.approx(12, abs=1.0)
    still = background_step(a, a.copy(), [])
    assert motion_magnitude(still.matrix, w, h) < 1e-3


def test_a_clip_whose_moving_pairs_are_cut_is_partial_body_not_low_motion():
    """The clip's reason comes from the candidates that show motion: here every pair across the arm
    raise has the after frame's body at the picture's edge, and the still pairs on either side fail
    for too little motion. The clip gave nothing because of the cut, and says so."""
    poses = []
    for i in range(12):
        p = make_pose(RIGHT_ARM_UP if i >= 6 else None)
        if i >= 6:  # the raised arm's frames: the box reaches the left border
            p = p.model_copy(update={"box": [0.0, *p.box[1:]]})
        poses.append([p])
    sel = select_pairs(track(poses), CFG, PairingConfig())
    assert sel.pairs == [] and sel.reason is RejectReason.PARTIAL_BODY, sel.detail
    # the same clip without the cut: pairs, so the still candidates did not decide the reason above
    clean = select_pairs(track(arm_raise()), CFG, PairingConfig())
    assert clean.pairs


def test_an_arm_only_edit_moves_by_its_limb():
    """A curl moves one wrist far and every other joint not at all: the limbs' mean stays under
    min_pose_change, the wrist's own motion is over min_limb_change. Such a pair is motion (the
    edit "bend your right arm"); with the limb figure switched off it is low_motion."""
    from posekit import STANDING

    ex, ey = STANDING["right_elbow"]
    curl = {"right_wrist": (ex + 5, ey - 80)}  # the forearm folded up from hanging: 1.35 torso
    poses = [[make_pose(curl if i >= 6 else None)] for i in range(12)]
    mean, _, _, _, _, limb = pose_change(poses[0][0], poses[-1][0], CFG)
    assert mean < CFG.min_pose_change <= CFG.min_limb_change <= limb
    sel = select_pairs(track(poses), CFG, PairingConfig())
    assert sel.pairs and all(c.motion.limb_change >= CFG.min_limb_change for c in sel.pairs)
    off = CFG.model_copy(update={"min_limb_change": 0.0})
    assert select_pairs(track(poses), off, PairingConfig()).reason is RejectReason.LOW_MOTION


def test_left_and_right_flipping_with_the_face_in_view_is_not_a_turn():
    """The detector flips a body's left/right labels (in the dark, from behind, with the head cut off):
    the pose looks turned and the limbs look moved though nothing moved. A turn shows the back of the
    head in one frame (no face, an ear); without that, the flip is the labels' (real clip:
    pullup_night_handheld, whose pairs were captioned "turn around")."""
    from curation.stages.figures import labels_flipped, mirrored

    front = make_pose()
    flipped = mirrored(make_pose())  # same picture, labels swapped, face still seen
    back = mirrored(make_pose(low=("nose", "left_eye", "right_eye")))  # face gone, ears seen: a turn
    unseen = mirrored(make_pose(low=("nose", "left_eye", "right_eye", "left_ear", "right_ear")))  # no head seen
    q = QualityConfig()
    flip = lambda a, b: labels_flipped(a, b, CFG.keypoint_conf, q.lr_min_separation, q.turn_face_conf)  # noqa: E731
    assert flip(front, flipped) and flip(flipped, front) and flip(front, unseen)
    assert not flip(front, back) and not flip(front, make_pose(RIGHT_ARM_UP))
    assert pose_change(front, flipped, CFG)[0] > CFG.min_pose_change  # what the flip looked like before

    still = [[front]] * 6 + [[flipped]] * 6  # nothing moves, the labels flip half way
    sel = select_pairs(track(still), CFG, PairingConfig(pairs_per_clip=2))
    assert sel.pairs == [] and sel.reason is RejectReason.LOW_MOTION, (sel.reason, sel.detail)
    turn = [[front]] * 6 + [[back]] * 6  # a real turn to the back keeps its pairs
    assert select_pairs(track(turn), CFG, PairingConfig(pairs_per_clip=2)).pairs


def test_a_head_seen_in_one_frame_and_not_the_other_is_partial_body():
    """A head hidden behind a barbell plate or cut by the top edge in one frame of a pair (real clip:
    squat_rack_closeup): the edit would be the head vanishing, so the pair is partial_body; a head the
    model sees in no frame (as upside down) is alike in both and keeps its pairs."""
    head = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
    hidden = [[make_pose()]] * 6 + [[make_pose(RIGHT_ARM_UP, low=head)]] * 6
    sel = select_pairs(track(hidden), CFG, PairingConfig(pairs_per_clip=2))
    assert sel.pairs == [] and sel.reason is RejectReason.PARTIAL_BODY, (sel.reason, sel.detail)
    unseen = [[make_pose(low=head)]] * 6 + [[make_pose(RIGHT_ARM_UP, low=head)]] * 6
    assert select_pairs(track(unseen), CFG, PairingConfig(pairs_per_clip=2)).pairs
    assert not select_pairs(track(hidden), CFG.model_copy(update={"whole_body": False}), PairingConfig()).reason


def test_a_box_running_on_to_the_border_past_the_joints_is_a_cut_body():
    """Feet cut by the frame's edge while the model puts the ankles at the knees (real clip:
    situp_feet_cut): the detector's box reaches the border and runs on well past the outermost joint
    (0.6 torso), more than a foot or the top of the head does (about 0.3-0.4). A box that touches the
    border only a foot's length past the ankles is a whole body standing at the edge."""
    from curation.stages import body

    def at_left_border(pose, past):  # the box's left side 8 px off the border, `past` torso beyond the joints
        k = np.asarray(pose.keypoints)
        shift = 8 + past * 100 - k[:, 0].min()
        moved = [[x + shift, y, c] for x, y, c in pose.keypoints]
        x1, y1, x2, y2 = pose.box
        return pose.model_copy(update={"keypoints": moved, "box": [8.0, y1, x2 + shift, y2]})

    frame = (0, 0, 640, 480)
    cut, whole = at_left_border(make_pose(), 0.6), at_left_border(make_pose(), 0.3)
    assert body.past_border(cut, frame, 0.5) == pytest.approx(0.6) and body.past_border(whole, frame, 0.5) < 0.5
    assert body.past_border(make_pose(), frame, 0.5) == 0.0  # touches no border
    frames = [[at_left_border(make_pose(RIGHT_ARM_UP if i >= 6 else None), 0.6)] for i in range(12)]
    sel = select_pairs(track(frames), CFG, PairingConfig(pairs_per_clip=2))
    assert sel.pairs == [] and sel.reason is RejectReason.PARTIAL_BODY, (sel.reason, sel.detail)
    frames = [[at_left_border(make_pose(RIGHT_ARM_UP if i >= 6 else None), 0.3)] for i in range(12)]
    kept = select_pairs(track(frames), CFG, PairingConfig(pairs_per_clip=2)).pairs
    assert kept and all(c.quality.box_past_border == pytest.approx(0.3) for c in kept)  # the figure, stored
    # and its margin, (0.5 - 0.3) / 0.5 = 0.4: under a borderline margin of 0.45 it names the check
    obs = [FrameObs(i * 10, i / 4.0, p) for i, p in enumerate(frames)]
    wide = LOGIC.model_copy(update={"borderline_margin": 0.45, "borderline": "keep"})
    close = select_pairs(ClipTrack.build(obs, [textured()] * 12, CFG, wide), CFG, PairingConfig()).pairs
    assert close and all("box_past_border" in (c.quality.borderline_checks or "").split(",") for c in close)
    # the threshold is a setting: raised past 0.6, the cut clip's pairs pass (a re-filter of the figure)
    frames = [[at_left_border(make_pose(RIGHT_ARM_UP if i >= 6 else None), 0.6)] for i in range(12)]
    obs = [FrameObs(i * 10, i / 4.0, p) for i, p in enumerate(frames)]
    looser = LOGIC.model_copy(update={"max_box_past_border": 0.7})
    assert select_pairs(ClipTrack.build(obs, [textured()] * 12, CFG, looser), CFG, PairingConfig()).pairs


def test_a_box_that_stops_at_the_ankles_saw_no_feet():
    """Feet hidden behind a barbell plate (real clip: deadlift_side_white): the model puts the ankles
    on the plate with fair confidence, but the detector's box stops at them, where a foot in view
    takes it about 0.15-0.3 torso further (along the shin or below the ankle). Such a pair is
    partial_body under the whole-body rule; the figure is stored and the upper-body config ignores it."""
    from curation.stages import body

    def box_bottom(pose, past):  # the box's bottom `past` torso lengths (100 px) below the lower ankle
        x1, y1, x2, _ = pose.box
        return pose.model_copy(update={"box": [x1, y1, x2, 410.0 + 100 * past]})

    shown, hidden = box_bottom(make_pose(), 0.2), box_bottom(make_pose(), -0.05)
    assert body.foot_room(shown, 0.5) == pytest.approx(0.2, abs=1e-3)
    assert body.foot_room(hidden, 0.5) == pytest.approx(-0.05, abs=1e-3)
    # along the shin: a body upside down (a handstand) has its feet above the ankles, inside the box
    flipped = [[x, 480 - y, c] for x, y, c in make_pose().keypoints]
    up = make_pose().model_copy(update={"keypoints": flipped, "box": [100.0, 480 - 410 - 25, 300.0, 480 - 80]})
    assert body.foot_room(up, 0.5) == pytest.approx(0.25, abs=0.01)
    # a shin lying flat (a plank seen side-on): the toes reach down from the ankle, the box holds them
    flat = {f"{side}_{j}": (x, 300) for side in ("left", "right") for j, x in (("knee", 330), ("ankle", 410))}
    plank = make_pose(flat)
    plank = plank.model_copy(update={"box": [100.0, 80.0, 420.0, 320.0]})
    assert body.foot_room(plank, 0.5) == pytest.approx(0.2, abs=1e-3)

    def moved(pose, **where):  # keypoints moved to (x, y) or (x, y, confidence)
        k = [list(p) for p in pose.keypoints]
        for name, v in where.items():
            k[KP[name]] = [*v, k[KP[name]][2]] if len(v) == 2 else list(v)
        return pose.model_copy(update={"keypoints": k})

    low = make_pose(low=("left_ankle",))  # a leg not shown does not count, wherever its ankle is put
    assert body.foot_room(moved(low, left_ankle=(230, 600)), 0.5) == pytest.approx(0.1, abs=1e-3)
    assert body.foot_room(moved(make_pose(), left_ankle=(230, 600, float("nan"))), 0.5) == pytest.approx(0.1, abs=1e-3)
    # a shin up and a little aslant, its ankle a pixel beside the box: the room is up the shin
    aslant = moved(up, left_knee=(101, 150), left_ankle=(99, 70), right_knee=(101, 150), right_ankle=(99, 70))
    assert body.foot_room(aslant.model_copy(update={"box": [100.0, 45.0, 300.0, 400.0]}), 0.5) == pytest.approx(
        0.25, abs=0.01
    )
    assert body.foot_room(make_pose(low=("left_ankle", "right_knee")), 0.5) is None

    frames = [[box_bottom(make_pose(RIGHT_ARM_UP if i >= 6 else None), -0.05)] for i in range(12)]
    sel = select_pairs(track(frames), CFG, PairingConfig(pairs_per_clip=2))
    assert sel.pairs == [] and sel.reason is RejectReason.PARTIAL_BODY, (sel.reason, sel.detail)
    assert select_pairs(track(frames), CFG.model_copy(update={"whole_body": False}), PairingConfig()).pairs
    frames = [[box_bottom(make_pose(RIGHT_ARM_UP if i >= 6 else None), 0.2)] for i in range(12)]
    kept = select_pairs(track(frames), CFG, PairingConfig(pairs_per_clip=2)).pairs
    assert kept and all(c.quality.foot_room == pytest.approx(0.2, abs=1e-3) for c in kept)  # stored
    # the threshold is a setting, its margin named when close: 0.2 against 0.19 is borderline
    obs = [FrameObs(i * 10, i / 4.0, p) for i, p in enumerate(frames)]
    close = LOGIC.model_copy(update={"min_foot_room": 0.19, "borderline": "keep"})
    near = select_pairs(ClipTrack.build(obs, [textured()] * 12, CFG, close), CFG, PairingConfig()).pairs
    assert near and all("foot_room" in (c.quality.borderline_checks or "").split(",") for c in near)


def test_a_clip_whose_moving_pairs_the_text_check_stopped_is_overlay_changed(monkeypatch):
    """The text check runs last (it is the costliest), so a candidate it stops passed every other
    check: the clip is overlay_changed, although blurry comes later in CHECK_ORDER. Here the first three
    frames are blurred (their moving candidates are blurry) and every candidate that reaches the end
    shows text in one frame only."""
    from curation.stages.motion import CHECK_ORDER

    def blurred_start():
        t = track(arm_raise())
        for k in (0, 1, 2):
            t.sharpness[k] = 0.5  # half as sharp as the clip's sharpest frames
        return t

    assert select_pairs(blurred_start(), CFG, PairingConfig()).reason is None  # without text: a pair
    monkeypatch.setattr(ClipTrack, "text_change", lambda self, i, j, al: 1.0)
    sel = select_pairs(blurred_start(), CFG, PairingConfig())
    assert not sel.pairs and "blurry" in sel.detail and "overlay_changed" in sel.detail, sel.detail
    assert CHECK_ORDER.index(RejectReason.BLURRY) > CHECK_ORDER.index(RejectReason.OVERLAY_CHANGED)
    assert sel.reason == "overlay_changed", sel.detail


def distinct_pictures(monkeypatch, n: int, classes=None) -> list[np.ndarray]:
    """n copies of the still texture whose perceptual hashes (quality.phash, which the search's
    near-duplicate rule reads) are those of their class: each its own by default, so that no two pairs
    of a synthetic clip repeat each other; classes far apart in hash bits."""
    from curation.stages import quality

    imgs = [textured() for _ in range(n)]
    classes = classes or list(range(n))
    code = {id(im): f"{(0x5A5A5A5A5A5A5A5A * (c + 1)) % (1 << 64):016x}" for im, c in zip(imgs, classes, strict=True)}
    monkeypatch.setattr(quality, "phash", lambda frame: code[id(frame)])
    return imgs


def test_a_pair_that_repeats_one_already_taken_is_passed_over(monkeypatch):
    """Two pairs of one clip whose before and after pictures are both within
    quality.max_duplicate_distance pHash bits are near-duplicates, which the dataset drops when a
    generation is made (curation/store/dedupe.py). The search passes over a candidate that repeats a
    pair it has taken, unchecked, and takes the next one that does not: the clip keeps its
    pairs_per_clip pairs rather than losing one after the build (out-of-sample batch 19's downward
    dog: its second pair repeated the first)."""
    from curation.stages import quality

    poses = [[make_pose(RIGHT_ARM_UP if i % 4 >= 2 else None)] for i in range(16)]
    pcfg = PairingConfig(pairs_per_clip=2)
    # one still picture in every frame: whatever the first pair, every other candidate repeats it
    sel = select_pairs(track(poses), CFG, pcfg)
    assert len(sel.pairs) == 1 and sel.funnel["candidates_repeating"] > 0
    still = textured()
    assert quality.hamming(quality.phash(still), quality.phash(still.copy())) == 0
    # two pictures (frames 0-7 and 8-15): the second pair is one that ends or starts in the other
    imgs = distinct_pictures(monkeypatch, 16, classes=[k // 8 for k in range(16)])
    sel = select_pairs(track(poses, frames=imgs), CFG, pcfg)
    assert len(sel.pairs) == 2 and len({(p.i // 8, p.j // 8) for p in sel.pairs}) == 2
    assert sel.funnel["candidates_repeating"] > 0
    # every picture its own: the pick is the largest changes, no candidate repeating another
    sel = select_pairs(track(poses, frames=distinct_pictures(monkeypatch, 16)), CFG, pcfg)
    assert len(sel.pairs) == 2 and sel.funnel["candidates_repeating"] == 0


def _pick_from_all(passed, pcfg):
    """The pick as it was before the search: every candidate checked, then per strategy the largest
    pose changes first with windows that do not overlap, a pair two strategies agree on kept once."""
    chosen = []
    for strategy in pcfg.strategies:
        mine = [c for c in passed if c.strategy == strategy]
        mine.sort(key=lambda c: (-c.motion.pose_change if np.isfinite(c.motion.pose_change) else np.inf, c.i, c.j))
        taken = []
        for c in mine:
            if len(taken) < pcfg.pairs_per_clip and all(c.j <= o.i or c.i >= o.j for o in taken):
                taken.append(c)
        chosen += [c for c in taken if all((c.i, c.j) != (o.i, o.j) for o in chosen)]
    return sorted(chosen, key=lambda c: (c.i, c.j))


def test_candidates_are_checked_only_until_the_pairs_are_chosen(monkeypatch):
    """select_pairs checks candidates in the order the pick takes them and stops once each strategy has
    its pairs: the pairs are those that checking every candidate gives (here the largest changes span
    a frame with two people, so the first candidates fail and the search goes on past them)."""
    from curation.stages import checks, motion

    arm = {1: None, 2: RIGHT_ARM_UP, 3: KNEES_BENT, 4: {**RIGHT_ARM_UP, **KNEES_BENT}}
    frames = [[make_pose(arm[1 + (i * 7) % 4])] for i in range(16)]
    frames[8] = frames[8] + [make_pose(shift=(300, 0), score=0.9)]  # someone else in frame 8
    imgs = distinct_pictures(monkeypatch, 16)  # no pair repeats another (that rule: the test below)
    for per_clip in (1, 2, 3):
        pcfg = PairingConfig(pairs_per_clip=per_clip, strategies=["max_motion", "segment_endpoints"])
        sel = select_pairs(track(frames, frames=imgs), CFG, pcfg)
        ref = track(frames, frames=imgs)  # every candidate checked, then picked
        cands = [c for s in pcfg.strategies for c in motion._candidates(ref, s, pcfg)]
        passed = [c for c in cands if checks.check(ref, c, CFG) is None]
        want = [(c.strategy, c.i, c.j) for c in _pick_from_all(passed, pcfg)]
        assert want and [(c.strategy, c.i, c.j) for c in sel.pairs] == want
        assert sel.funnel["candidates_checked"] < sel.funnel["candidates"] == len(cands)
        assert any(c.i < 8 < c.j for c in cands if checks.check(ref, c, CFG) is not None)


def test_a_body_lying_toward_the_camera_may_show_shorter_legs():
    """A push-up filmed three-quarters from the front (out-of-sample batch 19's living-room push-ups): the legs lie
    farther from the camera than the torso, so perspective shortens them to 0.6-1.0 torso lengths,
    under the whole-body limit (motion.min_leg_extent 1.0) that an upright body is held to. A body
    whose torso and legs both lie within 45 degrees of level is held to motion.min_leg_extent_lying
    (0.6) instead; a standing body, and a hinge whose shins stay upright (a deadlift's bent torso),
    keep the upright limit. The tilt of the frame the limit binds is stored with the pair."""
    from curation.stages import body

    def lying(arm_bent: bool, legs: float = 80.0, scale=1.0, dx=0.0, dy=0.0):
        """A plank along x, head on the left, torso 100 px, legs `legs` px (hip to ankle)."""
        pts = {n: (x, 300.0) for n, x in (("nose", 90), ("left_eye", 85), ("right_eye", 85), ("left_ear", 100))}
        pts |= {"right_ear": (100, 290), "left_shoulder": (150, 310), "right_shoulder": (150, 290)}
        pts |= {"left_hip": (250, 310), "right_hip": (250, 290)}
        pts |= {f"{s}_knee": (250 + legs / 2, y) for s, y in (("left", 312), ("right", 292))}
        pts |= {f"{s}_ankle": (250 + legs, y) for s, y in (("left", 314), ("right", 294))}
        ex = 80 if arm_bent else 150  # bent, the elbows swing 70 px (0.7 torso) out toward the head
        pts |= {f"{s}_elbow": (ex, y) for s, y in (("left", 350), ("right", 330))}
        pts |= {f"{s}_wrist": (140, y) for s, y in (("left", 395), ("right", 385))}
        return make_pose({k: (x * scale + dx, y * scale + dy) for k, (x, y) in pts.items()})

    # a pair's leg figure is that of the frame nearest its own limit (a burpee: lying 0.8, upright 1.1)
    assert body.binding_legs([(0.8, 10.0), (1.1, 80.0)], 1.0, 0.6) == (1.1, 80.0)
    assert body.binding_legs([(0.5, 10.0), (1.1, 80.0)], 1.0, 0.6) == (0.5, 10.0)
    assert body.binding_legs([(float("nan"), 10.0)], 1.0, 0.6) is None
    assert body.leg_limit(float("nan"), 1.0, 0.6) == 1.0  # a tilt not known: upright
    flat = lying(False)
    assert body.tilt(flat) < 10 and body.leg_extent(flat, body.shown(flat, (0, 0, 640, 480), 0.5)) == pytest.approx(
        0.8, abs=0.01
    )
    assert classify(FrameObs(0, 0, [flat]), CFG) is FrameKind.BODY
    assert classify(FrameObs(0, 0, [lying(False, legs=50)]), CFG) is FrameKind.PARTIAL  # 0.5: cut or hidden
    assert classify(FrameObs(0, 0, [flat]), CFG.model_copy(update={"min_leg_extent_lying": 1.0})) is FrameKind.PARTIAL
    # the same legs' length upright: partial
    short = make_pose(
        {"left_knee": (228, 290), "right_knee": (172, 290), "left_ankle": (230, 330)} | {"right_ankle": (170, 330)}
    )
    assert body.tilt(short) > 80 and classify(FrameObs(0, 0, [short]), CFG) is FrameKind.PARTIAL
    # a hinge: the torso 27 degrees off level (a deadlift's bottom) over upright shins keeps the upright limit
    hinge = {"left_shoulder": (150, 200), "right_shoulder": (150, 190), "left_hip": (240, 245), "right_hip": (240, 235)}
    hinge |= {"left_knee": (250, 290), "right_knee": (250, 280), "left_ankle": (245, 325), "right_ankle": (245, 315)}
    bent = make_pose(hinge)
    assert 60 < body.tilt(bent) and classify(FrameObs(0, 0, [bent]), CFG) is FrameKind.PARTIAL
    # a push-up clip: its pairs keep the short legs and the tilt, with no leg margin near its limit
    frames = [[lying(i % 4 >= 2, scale=1.8, dx=-120, dy=-400)] for i in range(12)]  # big enough
    sel = select_pairs(track(frames), CFG, PairingConfig(pairs_per_clip=2))
    assert sel.pairs, (sel.reason, sel.detail)
    for c in sel.pairs:
        assert c.quality.leg_extent == pytest.approx(0.8, abs=0.01) and c.quality.body_tilt < 10
        assert "leg_extent" not in (c.quality.borderline_checks or "")
    assert not select_pairs(track(frames), CFG.model_copy(update={"min_leg_extent_lying": 1.0}), PairingConfig()).pairs


def test_a_lying_body_is_sized_by_its_length_not_its_box_height():
    """quality.min_person_px (128 source pixels) and min_person_px_output (112) read the person's box
    height, or for a body lying in the picture its longer side: a body lying along the frame (a push-up
    side-on, a fall on snow: batch 16's slip, about 200 px long in a box about 100 px high; here 340 by
    120) is as large as one standing, where its box height alone made every pair too_small. An upright
    body keeps its height (a wide crouch's box is wider than high: batch 15's rugby kicker, 105 px
    high); one 110 px tall stays too small; a body whose hips or ankles are not seen is not known to lie.
    The coarse pass, which must never reject a clip the full pass would accept, bounds the size by the
    box's longer side whatever the tilt."""
    from curation.coarse import coarse_verdict
    from curation.stages import body

    def rotated(moves=None):  # the standing body turned onto its side: along x, 320 px long, box 120 high
        p = make_pose(moves)
        k = [[y, 480.0 - x, c] for x, y, c in p.keypoints]
        xs, ys = [v[0] for v in k], [v[1] for v in k]
        return p.model_copy(update={"keypoints": k, "box": [min(xs) - 10, min(ys) - 5, max(xs) + 10, max(ys) + 5]})

    lying = rotated()
    assert lying.box[3] - lying.box[1] < 128 and body.person_px(lying, 0.5) == pytest.approx(340)
    unseen = rotated().model_copy(
        update={"keypoints": [[x, y, 0.1 if n in (15, 16) else c] for n, (x, y, c) in enumerate(rotated().keypoints)]}
    )
    assert math.isnan(body.tilt(unseen, 0.5)) and body.person_px(unseen, 0.5) == pytest.approx(120)
    frames = [[rotated(RIGHT_ARM_UP if i >= 6 else None)] for i in range(12)]
    sel = select_pairs(track(frames), CFG, PairingConfig(pairs_per_clip=2))
    assert sel.pairs and all(c.quality.person_px_source >= 340 for c in sel.pairs), sel.detail
    # upright, a box wider than high (a wide crouch, arms out) is as tall as its box: its height decides
    crouch = make_pose({"left_wrist": (420, 200), "right_wrist": (-20, 200)})
    high, wide = crouch.box[3] - crouch.box[1], crouch.box[2] - crouch.box[0]
    assert high < wide and body.person_px(crouch, 0.5) == pytest.approx(high)
    small = [[make_pose(RIGHT_ARM_UP if i >= 6 else None, scale=0.25, shift=(100, 100))] for i in range(12)]
    assert body.person_px(small[0][0], 0.5) < 112
    assert select_pairs(track(small), CFG, PairingConfig()).reason is RejectReason.TOO_SMALL
    # the coarse pass: a lying body 260 px long in a box 92 px high is no coarse too_small (the full pass
    # takes pairs from it); an upright one 92 px high is
    low = [[rotated(RIGHT_ARM_UP if i >= 6 else None).model_copy()] for i in range(12)]
    low = [
        [
            p.model_copy(
                update={
                    "keypoints": [[x * 0.75, y * 0.75, c] for x, y, c in p.keypoints],
                    "box": [v * 0.75 for v in p.box],
                }
            )
        ]
        for (p,) in low
    ]
    assert low[0][0].box[3] - low[0][0].box[1] < 0.8 * 128 and body.person_px(low[0][0], 0.5) > 128
    assert coarse_verdict(track(low), CFG, LOGIC, 48) is None and select_pairs(track(low), CFG, PairingConfig()).pairs
    tiny = [[make_pose(RIGHT_ARM_UP if i >= 6 else None, scale=0.18, shift=(100, 100))] for i in range(12)]
    assert coarse_verdict(track(tiny), CFG, LOGIC, 48).reason is RejectReason.TOO_SMALL
    # the bound: an upright body whose box is wide (arms spread; a sit-up's seated phase between lying
    # ones) is sized by its height in the full pass, but the coarse pass does not call it too small
    spread = [[make_pose({"left_wrist": (900, 150), "right_wrist": (-500, 150)}, scale=0.18, shift=(150, 100))]] * 12
    p = spread[0][0]
    assert body.person_px(p, 0.5) == pytest.approx(p.box[3] - p.box[1])
    assert p.box[3] - p.box[1] < 0.8 * 128 < p.box[2] - p.box[0]
    verdict = coarse_verdict(track(spread), CFG, LOGIC, 48)
    assert verdict is None or verdict.reason is not RejectReason.TOO_SMALL
