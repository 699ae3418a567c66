"""Body-relative offline captions on floor exercises and a cartwheel, from self-made keypoint sequences,
and the caption-keypoint agreement check on the same: a caption says what the body did in its own frame
(up = towards the head, left = the person's own), or nothing, never what the image's axes saw.

The image-frame captioner this replaced said, on such sequences: a push-up going down "crouch down and
raise your left arm", one coming up "straighten your knees and lower your right arm", a forearm plank
with no motion "move your right leg", a cartwheel "lower both arms" and "turn around"; the agreement
check must catch each of those."""

from __future__ import annotations

import math

import numpy as np
import pytest
from posekit import STANDING, make_pose
from test_caption_phrases import CASES, flipped

from curation.captions import OfflineCaptioner, describe
from curation.captions.agreement import check_text
from curation.captions.offline import ABSTAINED, Abstain, describe_pair
from schemas.records import COCO17
from training.transforms import swap_sides

Points = dict[str, tuple[float, float]]
SIDE_OFFSET = np.array([4.0, -3.0])  # side-on: the far (right) side a few pixels off the near (left) one


def side_on(near: dict[str, tuple[float, float]]) -> Points:
    """A side view from the person's left: each left joint as given, its right twin just behind it."""
    out: Points = {}
    for name in COCO17:
        base = name.replace("left_", "").replace("right_", "")
        p = np.array(near[base if base in near else name], float)
        out[name] = tuple(p + SIDE_OFFSET) if name.startswith("right_") else tuple(p)
    return out


def rotate(points: Points, names, centre, degrees: float) -> Points:
    """`names` turned about `centre` by `degrees` (image coordinates, y down: positive turns x towards y)."""
    t = math.radians(degrees)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    c = np.array(centre, float)
    return {k: (tuple(r @ (np.array(v) - c) + c) if k in names else v) for k, v in points.items()}


# ---------------------------------------------------------------- the sequences
# floor at y = 400, head to the image's left; the person's left side faces the camera


def push_up(depth: float) -> Points:
    """A push-up seen side-on: depth 0 arms straight, 1 chest near the floor (hands and feet still)."""
    drop = 80 * depth
    sh, hip = np.array([150, 280 + drop]), np.array([250, 295 + 0.9 * drop])
    ankle = np.array([400, 330])
    knee = (hip + ankle) / 2
    wrist = np.array([150, 400])
    d = np.linalg.norm(wrist - sh)
    mid, half = (sh + wrist) / 2, d / 2
    off = math.sqrt(max(60**2 - half**2, 0.0))  # upper arm and forearm 60 px: the elbow folds backwards
    elbow = mid + np.array([off, 0.0])
    nose = sh + np.array([-40, 10])
    return side_on(
        {"nose": tuple(nose), "eye": tuple(nose + [5, -8]), "ear": tuple(nose + [18, -12]), "shoulder": tuple(sh),
         "elbow": tuple(elbow), "wrist": tuple(wrist), "hip": tuple(hip), "knee": tuple(knee), "ankle": tuple(ankle)}
    )  # fmt: skip


def plank(frame: int) -> Points:
    """A forearm plank held still: a pixel or two of detector jitter between frames."""
    base = side_on(
        {"nose": (110, 345), "eye": (115, 337), "ear": (128, 333), "shoulder": (150, 330), "elbow": (150, 395),
         "wrist": (95, 398), "hip": (250, 340), "knee": (325, 355), "ankle": (400, 370)}
    )  # fmt: skip
    rng = np.random.default_rng(frame)
    return {k: (x + rng.uniform(-1.5, 1.5), y + rng.uniform(-1.5, 1.5)) for k, (x, y) in base.items()}


SUPINE_UPPER = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist")  # fmt: skip


def sit_up(angle: float) -> Points:
    """A sit-up seen side-on: lying on the back (angle 0, face to the ceiling), knees bent and feet flat;
    the upper body turns up about the hips by `angle` degrees, arms crossed on the chest."""
    lying = side_on(
        {"nose": (115, 365), "eye": (120, 360), "ear": (135, 368), "shoulder": (150, 385), "elbow": (172, 376),
         "wrist": (200, 372), "hip": (250, 390), "knee": (310, 330), "ankle": (360, 395)}
    )  # fmt: skip
    return rotate(lying, SUPINE_UPPER, (250, 390), angle)


LEGS = ("left_knee", "right_knee", "left_ankle", "right_ankle")


def leg_raise(angle: float) -> Points:
    """Lying leg raises seen side-on: on the back, legs straight, raised about the hips by `angle`."""
    lying = side_on(
        {"nose": (115, 365), "eye": (120, 360), "ear": (135, 368), "shoulder": (150, 385), "elbow": (200, 392),
         "wrist": (245, 395), "hip": (250, 390), "knee": (330, 393), "ankle": (410, 396)}
    )  # fmt: skip
    return rotate(lying, LEGS, (250, 390), -angle)


def boat(lift: float) -> Points:
    """A seated boat pose seen side-on: the torso leaning back 20 degrees, hands on the floor behind, knees
    bent; the bent legs turned up about the hips by `lift` degrees (0: feet on the floor)."""
    seated = side_on(
        {"nose": (240, 262), "eye": (236, 255), "ear": (218, 258), "shoulder": (216, 296), "elbow": (195, 340),
         "wrist": (180, 388), "hip": (250, 390), "knee": (320, 330), "ankle": (380, 390)}
    )  # fmt: skip
    return rotate(seated, LEGS, (250, 390), -lift)


def cartwheel(angle: float) -> Points:
    """A cartwheel facing the camera: arms over the head, the body turned in the image plane by `angle`
    about the hips and travelling sideways, the legs in a straddle while off the ground."""
    arms_up = STANDING | {"right_elbow": (150, 100), "right_wrist": (145, 45), "left_elbow": (250, 100),
                          "left_wrist": (255, 45)}  # fmt: skip
    straddle = 0.0 if angle % 360 == 0 else 1.0  # on the feet: legs together
    hip = (200, 250)
    pts = rotate(arms_up, ("left_knee", "left_ankle"), hip, -35 * straddle)
    pts = rotate(pts, ("right_knee", "right_ankle"), hip, 35 * straddle)
    pts = rotate(pts, tuple(pts), hip, angle)
    return {k: (x + angle / 2, y) for k, (x, y) in pts.items()}


SEQUENCES = {
    "push-up": [push_up(d) for d in (0, 0.5, 1, 0.5, 0)],
    "plank": [plank(i) for i in range(5)],
    "sit-up": [sit_up(a) for a in (0, 40, 80, 40, 0)],
    "leg raises": [leg_raise(a) for a in (0, 45, 90, 45, 0)],
    "cartwheel": [cartwheel(a) for a in (0, 90, 180, 270, 360)],
    "boat": [boat(a) for a in (0, 20, 40, 20, 0)],
}
# what each step is (before -> after): the caption, or None (the captioner abstains)
EXPECTED = {
    "push-up": ["bend both arms", "bend both arms", "straighten both arms", "straighten both arms"],
    "plank": [None, None, None, None],
    "sit-up": ["bend forward at your hips", "bend forward at your hips", "lean back at your hips",
               "lean back at your hips"],
    "leg raises": ["raise both legs", "raise both legs", "lower both legs", "lower both legs"],
    "cartwheel": ["spread your legs", None, None, "bring your legs together"],
    "boat": ["raise both legs", "raise both legs", "lower both legs", "lower both legs"],
}  # fmt: skip
# image-frame words that would be wrong anywhere in these sequences
WRONG = ("crouch", "stand up", "raise your left arm", "raise your right arm", "lower your", "lower both arms",
         "turn around", "lean to", "step to", "knee", "move your")  # fmt: skip


def steps():
    for name, frames in SEQUENCES.items():
        for i in range(len(frames) - 1):
            yield name, i, frames[i], frames[i + 1]


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_floor_exercises_get_body_relative_captions_or_none(name):
    frames = [make_pose(p) for p in SEQUENCES[name]]
    got = [describe(a, b) for a, b in zip(frames, frames[1:], strict=False)]
    assert got == EXPECTED[name], got
    for (a, b), text in zip(zip(frames, frames[1:], strict=False), got, strict=True):
        if text is None:
            continue
        assert not any(w in text for w in WRONG), text
        verdict = check_text(a, b, text)
        assert verdict.agreement == "agree", (text, verdict)
    # every pair of frames of the sequence, not just neighbours: a caption or none, never a contradiction
    for i in range(len(frames)):
        for j in range(len(frames)):
            text = describe(frames[i], frames[j])
            if i != j and text is not None:
                assert check_text(frames[i], frames[j], text).agreement != "contradict", (i, j, text)


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_the_training_flip_swaps_sides_in_floor_captions_too(name):
    frames = [make_pose(p) for p in SEQUENCES[name]]
    for a, b in zip(frames, frames[1:], strict=False):
        text = describe(a, b)
        mirrored = describe(flipped(a), flipped(b))
        assert mirrored == (swap_sides(text) if text is not None else None)


# (sequence, before frame, after frame, the image-frame caption, how the check must refute it)
OLD_CAPTIONS = [
    ("push-up", 0, 2, "crouch down and raise your left arm", {"limb", "direction"}),
    ("push-up", 2, 4, "straighten your knees and lower your right arm", {"limb", "direction"}),
    ("plank", 0, 1, "move your right leg", {"limb"}),
    ("cartwheel", 0, 2, "lower both arms", {"limb"}),
    ("cartwheel", 0, 2, "turn around", {"direction"}),
    ("sit-up", 0, 2, "crouch down", {"limb"}),
    ("leg raises", 0, 2, "lean back and raise your left arm", {"limb"}),
]


@pytest.mark.parametrize("name,i,j,text,kinds", OLD_CAPTIONS, ids=[f"{c[0]}: {c[3]}" for c in OLD_CAPTIONS])
def test_the_agreement_check_refutes_image_frame_captions(name, i, j, text, kinds):
    a, b = make_pose(SEQUENCES[name][i]), make_pose(SEQUENCES[name][j])
    v = check_text(a, b, f"some label: {text}", label="some label")
    assert v.agreement == "contradict", v
    assert set(v.kinds) == kinds, v


def test_the_check_catches_a_named_side_or_limb_the_keypoints_contradict():
    a, b = make_pose(SEQUENCES["leg raises"][0]), make_pose(SEQUENCES["leg raises"][2])
    assert check_text(a, b, "raise both legs").agreement == "agree"
    assert check_text(a, b, "raise both arms").kinds == ("limb",)  # the arms stayed where they were
    assert check_text(a, b, "lower both legs").kinds == ("direction",)
    standing = make_pose(STANDING)
    right_up = make_pose(STANDING | {"right_elbow": (150, 100), "right_wrist": (145, 45)})
    assert check_text(standing, right_up, "raise your left arm").kinds == ("side",)
    assert check_text(standing, right_up, "change your pose").agreement == "not_checkable"


@pytest.mark.parametrize("name,before,after,phrase", CASES, ids=[c[0] for c in CASES])
def test_upright_captions_agree_with_their_own_check(name, before, after, phrase):
    """The captioner checks every phrase before saying it; on the upright phrase cases none is refuted
    and what it says is never contradicted."""
    a, b = make_pose(before), make_pose(after)
    d = describe_pair(a, b)
    assert d.refuted == () and d.text is not None, d
    assert check_text(a, b, d.text).agreement != "contradict"


def test_the_captioner_abstains_on_a_still_plank_and_says_why():
    from test_schemas import pair

    p = pair()
    still = p.model_copy(update={"before_pose": make_pose(plank(0)), "after_pose": make_pose(plank(1))})
    with pytest.raises(Abstain, match=f"^{ABSTAINED}"):
        OfflineCaptioner()(still)
    pushed = p.model_copy(update={"before_pose": make_pose(push_up(0)), "after_pose": make_pose(push_up(1))})
    assert OfflineCaptioner()(pushed).text == f"{p.clip.label}: bend both arms"


def bent_over() -> Points:
    """A hinge side-on (a deadlift's set-up): the torso near horizontal over straight legs."""
    return side_on(
        {"nose": (120, 215), "eye": (125, 208), "ear": (138, 205), "shoulder": (160, 225), "elbow": (165, 285),
         "wrist": (168, 340), "hip": (260, 230), "knee": (255, 320), "ankle": (250, 400)}
    )  # fmt: skip


def upright_side() -> Points:
    """Standing side-on, arms down, on the push-up's floor (y = 400)."""
    return side_on(
        {"nose": (215, 60), "eye": (210, 52), "ear": (198, 55), "shoulder": (200, 110), "elbow": (205, 170),
         "wrist": (210, 225), "hip": (200, 210), "knee": (202, 305), "ankle": (200, 400)}
    )  # fmt: skip


def test_getting_down_on_the_floor_and_up_again_is_said_first_and_checked():
    """Standing to a plank (a burpee) is "get down on the floor", the plank to standing "get up off the
    floor", said before the limbs (whose words, in the body's own frame, miss that the whole body went
    down). A hinge over straight legs tilts the torso as far but is not lying; a push-up stays on the
    floor; a cartwheel turns the body horizontal about hips that stay put. The check agrees with the
    phrase where it happened, calls the reverse the other way and a still plank's "get down on the
    floor" a change that did not happen; the phrase comes first, and knees stand in for unseen feet."""
    stand, down = make_pose(upright_side()), make_pose(push_up(0))
    assert describe(stand, down).startswith("get down on the floor"), describe(stand, down)
    assert describe(down, stand).startswith("get up off the floor"), describe(down, stand)
    assert check_text(stand, down, "get down on the floor").agreement == "agree"
    assert check_text(stand, down, "lie down").agreement == "agree"
    assert check_text(down, stand, "get up off the floor").agreement == "agree"
    assert check_text(down, stand, "get down on the floor").kinds == ("direction",)
    assert check_text(make_pose(plank(0)), make_pose(plank(1)), "get down on the floor").kinds == ("limb",)
    # a push-up's hips come down 0.7 torso lengths on the floor: lying in both frames, not checkable
    assert check_text(make_pose(push_up(0)), make_pose(push_up(1)), "lie down").agreement == "not_checkable"
    hinge = make_pose(bent_over())
    assert "floor" not in (describe(stand, hinge) or ""), describe(stand, hinge)
    wheel = [make_pose(cartwheel(a)) for a in (0, 90)]  # horizontal about the hips: not down on the floor
    assert "floor" not in (describe(*wheel) or "") and check_text(*wheel, "lie down").agreement != "agree"
    assert "floor" not in (describe(hinge, stand) or ""), describe(hinge, stand)
    assert check_text(stand, hinge, "get down on the floor").agreement == "not_checkable"

    assert check_text(stand, down, "get up off the floor").kinds == ("direction",)
    assert check_text(stand, make_pose(upright_side()), "get up off the floor").kinds == ("limb",)
    # the phrase comes first even where a limb moved more (arms overhead to lying: both arms come down)
    overhead = make_pose(upright_side() | {"left_elbow": (200, 60), "left_wrist": (200, 10),
                                           "right_elbow": (204, 57), "right_wrist": (204, 7)})  # fmt: skip
    assert describe(overhead, down).startswith("get down on the floor"), describe(overhead, down)
    # feet cut by the frame: the knees stand in for the ankles
    no_feet = ("left_ankle", "right_ankle")
    cut_stand, cut_down = make_pose(upright_side(), low=no_feet), make_pose(push_up(0), low=no_feet)
    assert describe(cut_stand, cut_down).startswith("get down on the floor"), describe(cut_stand, cut_down)


def test_both_feet_off_the_floor_is_raise_both_legs_only_where_the_legs_leave_it():
    """Seated, the feet leaving the floor barely turn the thighs against the torso: the body's own frame
    said only the arms ("lower your right arm" on a real boat pose). Both ankles up 0.35 torso lengths in
    the picture and against the hips, the hips still and the torso's direction kept, is "raise both legs"
    (boat() above; the check agrees). Not where the feet stay on the floor while the body comes closer
    (a walk towards the camera brings standing feet down the picture), nor for a jump (the hips rise
    with the feet) or a cartwheel (the torso turns about the hips)."""
    sat, lifted = make_pose(boat(0)), make_pose(boat(35))
    assert describe(sat, lifted) == "raise both legs"
    assert check_text(sat, lifted, "raise both legs").agreement == "agree"
    assert check_text(lifted, sat, "raise both legs").kinds == ("direction",)
    standing = make_pose(STANDING)
    closer = make_pose({k: (200 + 1.3 * (x - 200), 250 + 1.3 * (y - 250)) for k, (x, y) in STANDING.items()})
    assert "both legs" not in (describe(closer, standing) or "") and "both legs" not in (
        describe(standing, closer) or ""
    )
    knees_up = {"left_knee": (235, 230), "right_knee": (165, 230), "left_ankle": (240, 300), "right_ankle": (160, 300)}
    tuck = make_pose({k: (x, y - 60) for k, (x, y) in STANDING.items()} | knees_up)
    assert "both legs" not in (describe(standing, tuck) or ""), describe(standing, tuck)
    wheel = [make_pose(cartwheel(a)) for a in (0, 90)]
    assert "both legs" not in (describe(*wheel) or ""), describe(*wheel)
    # the hips rising with the feet (the whole seated body lifted 0.4 torso lengths): not the legs alone
    up = make_pose({k: (x, y - 40) for k, (x, y) in boat(35).items()})
    assert "both legs" not in (describe(sat, up) or ""), describe(sat, up)
    # lying leg raises, one thigh turned further than the other: both feet rose, so "raise both legs"
    # stands alone rather than beside the hips' "raise your left leg"
    uneven = rotate(leg_raise(0), ("left_knee", "left_ankle"), (250, 390), -50)
    uneven = make_pose(rotate(uneven, ("right_knee", "right_ankle"), (254, 387), -30))
    assert describe(make_pose(leg_raise(0)), uneven) == "raise both legs", describe(make_pose(leg_raise(0)), uneven)


def test_a_squat_seen_side_on_bends_the_knees_and_raises_no_legs():
    """A deep squat seen side-on (torso leaning 50 degrees, hips back and down, feet where they were):
    the thighs turn towards the torso as in lying leg raises, which the hips' angle read as "raise both
    legs" (a real side-on squat on white, tenth out-of-sample batch). The legs' phrase needs the feet to
    leave the floor; the knees bent is what is said, and the way back is "straighten your knees"."""
    standing = make_pose(
        side_on({"nose": (215, 100), "eye": (212, 95), "ear": (200, 98), "shoulder": (200, 130),
                 "elbow": (205, 175), "wrist": (228, 160), "hip": (200, 230), "knee": (202, 300),
                 "ankle": (200, 370)})
    )  # fmt: skip
    squat = make_pose(
        side_on({"nose": (262, 200), "eye": (258, 195), "ear": (245, 200), "shoulder": (227, 226),
                 "elbow": (250, 262), "wrist": (276, 242), "hip": (150, 290), "knee": (228, 298),
                 "ankle": (200, 370)})
    )  # fmt: skip
    down, up = describe(standing, squat) or "", describe(squat, standing) or ""
    assert "legs" not in down and "legs" not in up, (down, up)
    assert "bend your knees" in down and "straighten your knees" in up, (down, up)
