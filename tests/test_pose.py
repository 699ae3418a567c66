import math

import numpy as np
import pytest
import torch
from conftest import REJECTED, video
from skimage import data
from ultralytics.engine.results import Results

from curation.config import DecodeConfig, PoseConfig
from curation.stages.decode import VideoSource
from curation.stages.pose import PoseDetector, default_weights, poses_from_result
from schemas.records import KP, Clip


@pytest.fixture(scope="module")
def detector():
    return PoseDetector(PoseConfig(device="cpu")).setup()


def test_weights_come_from_the_wheel_by_absolute_path():
    w = default_weights()
    assert w.is_absolute() and w.name == "yolo11n-pose.pt" and w.stat().st_size > 1_000_000


def test_astronaut_is_one_person_with_raw_confidences(detector):
    img = data.astronaut()
    [poses] = detector([img])
    people = [p for p in poses if p.score >= 0.5]
    assert len(people) == 1
    p = people[0]
    assert (p.frame_width, p.frame_height) == (512, 512)
    confs = [c for _, _, c in p.keypoints]
    assert all(0 <= c <= 1 for c in confs)
    assert any(c < 0.5 for c in confs)  # low-confidence points are kept, not dropped
    nose = p.keypoints[KP["nose"]]
    assert nose[2] > 0.8 and 150 < nose[0] < 300 and 50 < nose[1] < 200  # the face is where it is


def test_two_people_in_the_ntu_hug(detector):
    clip = Clip(source="folder", clip_id="hug", uri=str(video(REJECTED["ntu_hug"][0])))
    with VideoSource(clip, DecodeConfig(max_side=640)) as v:
        batch = next(v.batches(v.plan()[:4]))
    for poses in detector(batch.frames):
        assert len([p for p in poses if p.score >= 0.5]) == 2
        assert all(p.frame_width == 640 for p in poses)


def test_zeroed_locations_become_nan_not_origin():
    kps = torch.rand(1, 17, 3) * 100
    kps[0, 3] = torch.tensor([0.0, 0.0, 0.2])  # what some ultralytics versions emit below 0.5
    boxes = torch.tensor([[1.0, 2.0, 50.0, 60.0, 0.9, 0.0]])
    r = Results(np.zeros((64, 80, 3), np.uint8), path="x", names={0: "person"}, boxes=boxes, keypoints=kps)
    [p] = poses_from_result(r)
    assert math.isnan(p.keypoints[3][0]) and math.isnan(p.keypoints[3][1]) and p.keypoints[3][2] == pytest.approx(0.2)
    assert not p.visible("left_ear", 0.1)
    assert (p.frame_width, p.frame_height) == (80, 64)
