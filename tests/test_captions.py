from posekit import KNEES_BENT, RIGHT_ARM_UP, make_pose

from curation.captions import OfflineCaptioner, describe


def test_raise_right_arm_above_head():
    assert describe(make_pose(), make_pose(RIGHT_ARM_UP)) == "raise your right arm above your head"
    assert describe(make_pose(RIGHT_ARM_UP), make_pose()) == "lower your right arm"


def test_left_arm_is_the_persons_left():
    left_up = {"left_elbow": (250, 100), "left_wrist": (255, 45)}
    assert describe(make_pose(), make_pose(left_up)) == "raise your left arm above your head"


def test_bend_knees_and_two_phrases():
    assert "bend your knees" in describe(make_pose(), make_pose(KNEES_BENT))
    both = describe(make_pose(), make_pose({**RIGHT_ARM_UP, **KNEES_BENT}))
    assert " and " in both and "right arm" in both


def test_low_confidence_points_are_not_described():
    text = describe(make_pose(), make_pose(RIGHT_ARM_UP, low=("right_wrist", "right_elbow")))
    assert "right arm" not in text


def test_deterministic_and_label_leads():
    from test_schemas import pair

    cap = OfflineCaptioner()(pair())
    assert cap.captioner == "offline" and cap.text.startswith("tai chi: ") and cap.model is None
    assert OfflineCaptioner()(pair()).text == cap.text


def test_both_arms_are_one_phrase():
    both_up = {**RIGHT_ARM_UP, "left_elbow": (250, 100), "left_wrist": (255, 45)}
    assert describe(make_pose(), make_pose(both_up)) == "raise both arms above your head"
