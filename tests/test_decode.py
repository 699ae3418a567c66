from pathlib import Path

import decord
import numpy as np
import pytest
from conftest import ACCEPTED, REJECTED, VIDEOS, make_bad_inputs, video, write_video

from curation.config import DecodeConfig
from curation.stages.decode import DecodeFailure, VideoSource
from schemas.records import Clip, RejectReason


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


# ---------------------------------------------------------------- GIFs and frame folders

EPIC_FRAMES = VIDEOS / "epic-fields-code__example_data_P28_101_frames"


def _source(uri, **decode):
    from curation.config import load_config

    cfg = load_config(None, output="/tmp/unused", decode=decode)
    return VideoSource(Clip(source="folder", clip_id="x", uri=str(uri)), cfg.decode)


def test_a_gif_decodes_with_its_own_frame_durations(tmp_path):
    from PIL import Image

    frames = [Image.fromarray(np.full((60, 80, 3), 40 * k, np.uint8)) for k in range(6)]
    gif = tmp_path / "steps.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[100, 200, 300, 400, 500, 600], loop=0)
    with _source(gif, sample_fps=10) as v:
        assert v.info.num_frames == 6 and (v.info.width, v.info.height) == (80, 60)
        assert [v.frame_time(i) for i in range(6)] == pytest.approx([0, 0.1, 0.3, 0.6, 1.0, 1.5])
        plan = v.plan()
        got = [f for b in v.batches(plan) for f in b.frames]
        assert plan == sorted(plan) and len(got) == len(plan) and got[-1][0, 0, 0] == 40 * plan[-1]
    # a real animated GIF from the shared clips: sampled at 4 fps over its 2 s
    with _source(VIDEOS / "lavila__assets_cf7c12db-1a9e-46d3-96d6-38174bbe373c.gif") as v:
        plan = v.plan()
        assert v.info.fps == pytest.approx(25) and len(plan) == 8
        assert [b.frames.shape[1:] for b in v.batches(plan)] == [(288, 384, 3)]


def test_a_cut_gif_is_a_reject_not_a_crash(tmp_path):
    data = (VIDEOS / "lavila__assets_cf7c12db-1a9e-46d3-96d6-38174bbe373c.gif").read_bytes()
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[: len(data) // 3])
    try:
        with _source(cut) as v:
            plan = v.plan()
            got = sum(len(b.indices) for b in v.batches(plan))
        assert got < len(plan)  # frames past the cut are lost: the pipeline makes that a truncated reject
    except DecodeFailure as e:
        assert e.reason in (RejectReason.TRUNCATED, RejectReason.UNREADABLE, RejectReason.TOO_FEW_FRAMES)


def test_a_frame_folder_decodes_at_its_frame_numbers(tmp_path):
    with _source(EPIC_FRAMES) as v:  # frame_0000000080 ... 115, every 5th, 50 fps
        assert v.info.num_frames == 8 and (v.info.width, v.info.height) == (456, 256)
        assert [v.frame_time(i) for i in range(8)] == pytest.approx([n / 50 for n in range(80, 116, 5)])
        plan = v.plan()
        assert plan == [0, 4, 7] and sum(len(b.indices) for b in v.batches(plan)) == 3  # 0.7 s at 4 fps
    # one frame that does not decode: that frame is lost, the clip is not
    broken = tmp_path / "P01_01"
    broken.mkdir()
    for p in sorted(EPIC_FRAMES.glob("frame_*.jpg")):
        (broken / p.name).symlink_to(p)
    (broken / "frame_0000000085.jpg").unlink()
    (broken / "frame_0000000085.jpg").write_bytes(b"not a jpeg")
    with _source(broken, sample_fps=50) as v:
        plan = v.plan()
        got = [i for b in v.batches(plan) for i in b.indices]
        assert len(plan) == 8 and got == [i for i in plan if i != 1]


def test_gifs_and_frame_folders_are_listed_as_clips(tmp_path):
    from curation.sources import FolderSource
    from curation.sources.folder import list_folder

    (tmp_path / "a.gif").symlink_to(VIDEOS / "lavila__assets_cf7c12db-1a9e-46d3-96d6-38174bbe373c.gif")
    (tmp_path / "P28_101").mkdir()
    for p in EPIC_FRAMES.iterdir():
        (tmp_path / "P28_101" / p.name).symlink_to(p)
    (tmp_path / "empty").mkdir()
    listing = list_folder(FolderSource(root=str(tmp_path)))
    assert sorted(c.clip_id for c in listing.clips) == ["P28_101", "a"]
    assert listing.ignored == ["P28_101/licence.txt"]


# ---------------------------------------------------------------- opened once, upright


def test_a_downscaled_video_is_opened_once_at_its_target_size(monkeypatch):
    """The size comes from the header: decord opens the file once, at the decoded size (never at
    full resolution just to learn it), and the frames are the ones decord gives at that size."""
    path = video(REJECTED["ntu_hug"][0])  # 1920x1080 AVI
    opened = []
    real = decord.VideoReader

    def counting(uri, *args, **kw):
        opened.append((kw.get("width"), kw.get("height")))
        return real(uri, *args, **kw)

    monkeypatch.setattr(decord, "VideoReader", counting)
    with VideoSource(clip_of(path), DecodeConfig(max_side=640)) as v:
        got = np.concatenate([b.frames for b in v.batches(v.plan()[:3])])
        assert (v.info.width, v.info.height, v.info.source_width, v.info.source_height) == (640, 360, 1920, 1080)
    assert opened == [(640, 360)]
    monkeypatch.undo()
    ref = decord.VideoReader(str(path), width=640, height=360)
    assert got.shape == (3, 360, 640, 3)
    assert np.array_equal(got[1], ref[v.plan()[1]].asnumpy())


def _rotate_tag(path: Path, degrees: int) -> None:
    """Write a display rotation into an MP4's track header, as phones do: a player turns the stored
    picture `degrees` clockwise."""
    import struct

    data = bytearray(path.read_bytes())
    i = data.index(b"tkhd")
    assert data[i + 4] == 0  # version 0 header: 32-bit times
    matrix = i + 4 + 4 + 20 + 8 + 8  # version/flags, times/track/duration, reserved, layer..volume
    one = 0x10000
    a, b, c, d = {90: (0, one, -one, 0), 180: (-one, 0, 0, -one), 270: (0, -one, one, 0)}[degrees]
    data[matrix : matrix + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_phone_video_with_rotation_metadata_decodes_upright(tmp_path, degrees):
    """A real portrait clip stored turned, with the rotation in its header (as phones record): the
    frames come out upright, as a player shows them, at the upright size (decord alone gives wrong
    shapes and failing batches for such files)."""
    src = video(ACCEPTED["dribbler"])  # 1080x1920 portrait
    upright = decord.VideoReader(str(src), width=180, height=320).get_batch(list(range(0, 40, 4))).asnumpy()
    k = degrees // 90  # stored turned counter-clockwise; the player turns it back clockwise
    path = write_video(tmp_path / f"r{degrees}.mp4", [np.rot90(f, k)[..., ::-1] for f in upright], fps=3)
    _rotate_tag(path, degrees)
    with VideoSource(clip_of(path), DecodeConfig(sample_fps=3, max_side=320)) as v:
        assert (v.info.width, v.info.height) == (180, 320)
        assert (v.info.source_width, v.info.source_height) == (180, 320)
        got = np.concatenate([b.frames for b in v.batches(v.plan())])
    assert got.shape == (10, 320, 180, 3)
    err = np.abs(got.astype(int) - upright.astype(int)).mean()
    flipped = np.abs(got.astype(int) - upright[:, ::-1, ::-1].astype(int)).mean()
    assert err < 8 < flipped, (err, flipped)  # the same picture (mp4v re-encoding loss), not turned
