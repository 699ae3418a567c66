import decord
import numpy as np
import pytest
from conftest import ACCEPTED, REJECTED, make_bad_inputs, video, write_video

from curation.config import DecodeConfig
from curation.decode import DecodeFailure, VideoSource
from schemas.records import Clip


def clip_of(path, **kw) -> Clip:
    return Clip(source="folder", clip_id="c", uri=str(path), **kw)


def test_sampling_is_frame_exact_and_downscaled():
    path = video(ACCEPTED["dribbler"])  # 1080x1920 portrait, 12 fps, 40 frames
    cfg = DecodeConfig(sample_fps=4, max_side=320, batch_frames=5)
    with VideoSource(clip_of(path), cfg) as v:
        assert (v.info.source_width, v.info.source_height) == (1080, 1920)
        assert max(v.info.width, v.info.height) <= 320
        plan = v.plan()
        batches = list(v.batches(plan))
    assert len(plan) == 14 and plan[0] == 0 and plan[-1] == 39  # 3.33 s at 4 fps, both ends kept
    assert all(len(b.indices) <= 5 for b in batches)
    got = np.concatenate([b.frames for b in batches])
    assert got.shape == (14, 320, 180, 3)
    # the frames are exactly the planned ones: compare with decord's own decoding at the same size
    ref = decord.VideoReader(str(path), width=180, height=320)
    for k in (0, 7, 13):
        assert np.array_equal(got[k], ref[plan[k]].asnumpy())
    times = [t for b in batches for t in b.times]
    assert times == sorted(times) and times[-1] == pytest.approx(39 / 12, abs=0.01)


def test_segment_sampling_and_out_of_range():
    path = video(ACCEPTED["tai_chi_glass"])  # 10 s at 29.97 fps
    with VideoSource(clip_of(path, start_s=2.0, end_s=4.0), DecodeConfig(sample_fps=2)) as v:
        plan = v.plan()
        times = [v.frame_time(i) for i in plan]
    assert len(plan) == 5 and 2.0 <= times[0] < 2.05 and 3.9 < times[-1] <= 4.0
    with pytest.raises(DecodeFailure) as e:
        with VideoSource(clip_of(path, start_s=20.0, end_s=30.0), DecodeConfig()) as v:
            v.plan()
    assert e.value.reason == "segment_out_of_range"


def test_avi_without_timestamps_uses_index_over_fps():
    path = video(REJECTED["ntu_hug"][0])  # AVI: decord's per-frame timestamps are garbage here
    with VideoSource(clip_of(path), DecodeConfig()) as v:
        plan = v.plan()
        assert v.frame_time(plan[-1]) == pytest.approx(plan[-1] / 30.0)
        assert 0 <= v.frame_time(plan[0]) < v.frame_time(plan[-1]) < 2.5


def test_bad_inputs_fail_with_reasons(tmp_path):
    make_bad_inputs(tmp_path)
    expected = {
        "zero_byte": "empty_file",
        "random_bytes": "unreadable",
        "truncated": "truncated",
        "one_frame": "too_few_frames",
    }
    for name, reason in expected.items():
        with pytest.raises(DecodeFailure) as e:
            with VideoSource(clip_of(tmp_path / f"{name}.mp4"), DecodeConfig()) as v:
                v.plan()
        assert e.value.reason == reason, (name, e.value.detail)
        assert e.value.detail
    with pytest.raises(DecodeFailure) as e:
        VideoSource(clip_of(tmp_path / "absent.mp4"), DecodeConfig()).open()
    assert e.value.reason == "missing_file"


def test_written_clip_round_trips(tmp_path):
    frames = [np.full((48, 64, 3), i * 20, np.uint8) for i in range(10)]
    path = write_video(tmp_path / "ramp.mp4", frames, fps=10)
    with VideoSource(clip_of(path), DecodeConfig(sample_fps=10)) as v:
        got = np.concatenate([b.frames for b in v.batches(v.plan())])
    assert got.shape[0] == 10
    assert np.all(np.diff(got.reshape(10, -1).mean(1)) > 10)  # brightness ramps frame by frame
