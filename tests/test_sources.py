"""Source adapters on the genuine annotation files and real clips laid out as each dataset ships them."""

from __future__ import annotations

import csv
import json
import math

import cv2
import pandas as pd
import pytest
from conftest import ACCEPTED, REJECTED, SHARED, VIDEOS, video, write_video

from curation.build import build
from curation.config import load_config
from curation.sources import EpicSource, KineticsSource, NTUSource, SourceError
from curation.sources.epic import list_epic, narration_instruction, parse_timestamp
from curation.sources.kinetics import list_kinetics
from curation.sources.ntu import list_ntu, parse_name, read_annotations, read_skeleton, split_for

ANN = SHARED / "data" / "annotations"
K400_VAL = ANN / "kinetics" / "activitynet_kinetics-400_val.csv"
K700_TEST = ANN / "kinetics" / "k700_test_ChiSquareX.csv"
NTU_CLASSES = ANN / "ntu" / "ntu120_action_classes.tsv"
NTU_MISSING_60 = ANN / "ntu" / "official_NTU_RGBD_samples_with_missing_skeletons.txt"
NTU_MISSING_120 = ANN / "ntu" / "official_NTU_RGBD120_samples_with_missing_skeletons.txt"
EPIC_VAL = ANN / "epic100" / "EPIC_100_validation.csv"
NTU_DRINK = "mmaction2__tools_data_skeleton_S001C001P001R001A001_rgb.avi"


# ---------------------------------------------------------------- Kinetics


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory):
    """The two real Kinetics clips under their CVDF names, in split/label folders, plus a clip whose
    youtube_id starts with '-' and one file that no CSV row names."""
    root = tmp_path_factory.mktemp("kinetics")
    (root / "val" / "tai chi").mkdir(parents=True)
    (root / "val" / "climbing ladder").mkdir(parents=True)
    (root / "val" / "tai chi" / "Kop0sDqOn-c_000253_000263.mp4").symlink_to(video(ACCEPTED["tai_chi_forest"]))
    (root / "val" / "climbing ladder" / "zZ9Zb41KNR4_000328_000338.mp4").symlink_to(
        video("mmskeleton__resource_media_zZ9Zb41KNR4.mp4")
    )
    (root / "--nQbRBEz2s_000104_000114.mp4").symlink_to(video(REJECTED["big_buck_bunny"][0]))
    (root / "stray_000000_000010.mp4").symlink_to(video(REJECTED["big_buck_bunny"][0]))
    return root


def test_kinetics_listing_from_the_real_csv(kinetics_root):
    listing = list_kinetics(KineticsSource(kind="kinetics", root=str(kinetics_root), annotations=[str(K400_VAL)]))
    by_id = {c.clip_id: c for c in listing.clips}
    assert set(by_id) == {"Kop0sDqOn-c_000253_000263", "zZ9Zb41KNR4_000328_000338", "--nQbRBEz2s_000104_000114"}
    tai = by_id["Kop0sDqOn-c_000253_000263"]
    assert (tai.label, tai.split, tai.video_id) == ("tai chi", "val", "Kop0sDqOn-c")  # K400 quotes labels
    assert tai.extra["youtube_id"] == "Kop0sDqOn-c" and tai.extra["is_cc"] is False
    assert tai.start_s is None  # a CVDF file is the clip already
    assert by_id["--nQbRBEz2s_000104_000114"].label == "air drumming"
    rows = sum(1 for _ in open(K400_VAL)) - 1
    assert len(listing.rejects) == rows - 3 and {r.reason for r in listing.rejects} == {"missing_file"}
    assert listing.unlisted == ["stray_000000_000010.mp4"]


def test_kinetics_test_csv_without_labels_and_bad_rows(tmp_path):
    rows = list(csv.reader(open(K700_TEST)))[:4]  # header + 3 real rows
    yt, start, end = rows[1][0], int(rows[1][1]), int(rows[1][2])
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / f"{yt}_{start:06d}_{end:06d}.mp4").symlink_to(video(ACCEPTED["tai_chi_glass"]))
    ann = tmp_path / "test.csv"
    with open(ann, "w", newline="") as f:
        w = csv.writer(f)
        w.writerows(rows + [["abcdefghijk", "ten", "20", "test"], ["", "1", "11", "test"]])
    listing = list_kinetics(KineticsSource(kind="kinetics", root=str(tmp_path / "clips"), annotations=[str(ann)]))
    assert [(c.label, c.split) for c in listing.clips] == [(None, "test")]
    reasons = sorted(r.reason.value for r in listing.rejects)
    assert reasons == ["bad_annotation", "bad_annotation", "missing_file", "missing_file"]
    bad = [r for r in listing.rejects if r.reason == "bad_annotation"]
    assert bad[0].clip_id == "test_line5" and "line 5" in bad[0].detail


def test_kinetics_build_carries_labels_and_ids(kinetics_root, tmp_path):
    cfg = load_config(
        None,
        output=str(tmp_path / "out"),
        sources=[{"kind": "kinetics", "root": str(kinetics_root), "annotations": [str(K400_VAL)]}],
    )
    stats = build(cfg)
    s = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert set(s.clip_id) == {"Kop0sDqOn-c_000253_000263"}
    assert (s.label == "tai chi").all() and (s.youtube_id == "Kop0sDqOn-c").all() and (s.split == "val").all()
    assert s.caption.str.startswith("tai chi: ").all() and (s.source == "kinetics").all()
    assert s.licence.str.contains("Kinetics").all()
    r = pd.read_parquet(tmp_path / "out" / "rejects.parquet").set_index("clip_id")
    assert r.loc["zZ9Zb41KNR4_000328_000338", "reason"] == "no_person"
    assert r.loc["--nQbRBEz2s_000104_000114", "reason"] == "no_person"
    assert stats["clips_in"] == sum(1 for _ in open(K400_VAL)) - 1 and stats["unaccounted_clips"] == []
    assert stats["unlisted_files"] == 1


# ---------------------------------------------------------------- NTU RGB+D


def test_ntu_names_classes_and_protocols():
    n = parse_name("S001C002P003R002A013_rgb.avi")
    assert (n.setup, n.camera, n.performer, n.replication, n.action) == (1, 2, 3, 2, 13)
    ann = read_annotations([str(NTU_CLASSES), str(NTU_MISSING_60), str(NTU_MISSING_120)])
    assert len(ann.labels) == 120 and ann.labels[1] == "drink water" and ann.labels[55] == "hugging other person"
    assert ann.mutual == set(range(50, 61)) | set(range(106, 121))
    assert len(ann.missing_skeletons) == 535 and "S001C002P005R002A008" in ann.missing_skeletons
    assert split_for(parse_name("S001C001P001R001A001"), "cross_subject") == "train"
    assert split_for(parse_name("S001C001P003R001A001"), "cross_subject") == "test"
    assert split_for(parse_name("S002C001P003R001A001"), "cross_setup") == "train"
    assert split_for(parse_name("S001C001P003R001A001"), "cross_view") == "test"


def write_skeleton(path, frames: int, width=1920.0, height=1080.0):
    """A .skeleton file in the documented format: frame 0 has no body, frame 1 has two, the rest one.
    Joint j of body 0 sits at colour pixel (900 + 10 j, 300 + 20 j); body 1 is elsewhere."""
    lines = [str(frames)]
    for f in range(frames):
        bodies = [] if f == 0 else ([0, 1] if f == 1 else [0])
        lines.append(str(len(bodies)))
        for b in bodies:
            lines.append(f"7205759403793110{b} 0 1 1 1 1 0 0.02764709 0.05745083 2")
            lines.append("25")
            for j in range(1, 26):
                cx, cy = (900 + 10 * j, 300 + 20 * j) if b == 0 else (100.0, 100.0)
                state = 2 if (b == 0 and j != 7) else (1 if b == 0 else 0)
                lines.append(f"0.2 0.17 3.78 277.4 191.8 {cx} {cy} -0.2 0.05 0.96 -0.12 {state}")
    path.write_text("\r\n".join(lines) + "\r\n")


def test_skeleton_parser_and_coco_mapping(tmp_path):
    from curation.sources.ntu import reference_pose

    p = tmp_path / "S001C001P001R001A001.skeleton"
    write_skeleton(p, 5)
    frames = read_skeleton(p)
    assert [len(b) for b in frames] == [0, 2, 1, 1, 1]
    assert reference_pose(frames, 0, 640, 360, 1 / 3, 1 / 3) is None
    pose = reference_pose(frames, 1, 640, 360, 1 / 3, 1 / 3)  # the better-tracked body of two
    ls = pose.keypoints[5]  # COCO left_shoulder <- Kinect joint 5
    assert ls[0] == pytest.approx((900 + 50) / 3) and ls[1] == pytest.approx((300 + 100) / 3) and ls[2] == 1.0
    assert pose.keypoints[9][2] == 0.5  # left wrist <- joint 7, inferred
    assert math.isnan(pose.keypoints[0][0]) and pose.keypoints[0][2] == 0  # no Kinect nose
    (tmp_path / "bad.skeleton").write_text("3\n1\n")
    with pytest.raises(ValueError, match="not a valid"):
        read_skeleton(tmp_path / "bad.skeleton")


@pytest.fixture(scope="module")
def ntu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ntu")
    (root / "nturgb+d_rgb").mkdir()
    (root / "nturgb+d_rgb" / "S001C001P001R001A001_rgb.avi").symlink_to(video(NTU_DRINK))
    (root / "nturgb+d_rgb" / "S001C002P002R001A055_rgb.avi").symlink_to(video(REJECTED["ntu_hug"][0]))
    (root / "skeletons").mkdir()
    write_skeleton(root / "skeletons" / "S001C001P001R001A001.skeleton", 103)
    return root


def test_ntu_listing_skips_mutual_actions(ntu_root):
    src = NTUSource(kind="ntu", root=str(ntu_root), annotations=[str(NTU_CLASSES), str(NTU_MISSING_120)])
    listing = list_ntu(src)
    [drink] = listing.clips
    assert (drink.clip_id, drink.label, drink.split) == ("S001C001P001R001A001", "drink water", "train")
    assert drink.extra["performer"] == 1 and drink.extra["skeleton"].endswith(".skeleton")
    [hug] = listing.rejects
    assert (hug.clip_id, hug.reason.value, hug.stage.value) == ("S001C002P002R001A055", "excluded", "ingest")
    assert "hugging other person" in hug.detail
    with_mutual = list_ntu(src.model_copy(update={"include_mutual": True}))
    assert {c.clip_id for c in with_mutual.clips} == {"S001C001P001R001A001", "S001C002P002R001A055"}


def test_ntu_build_stores_the_kinect_reference_pose(ntu_root, tmp_path):
    cfg = load_config(
        None,
        output=str(tmp_path / "out"),
        sources=[{"kind": "ntu", "root": str(ntu_root), "annotations": [str(NTU_CLASSES)], "include_mutual": True}],
        motion={"min_pose_change": 0.15},  # NTU's daily actions are small motions
    )
    stats = build(cfg)
    s = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert set(s.clip_id) == {"S001C001P001R001A001"}
    row = s.iloc[0]
    assert (row.setup, row.camera, row.performer, row.replication, row.action) == (1, 1, 1, 1, 1)
    assert row.label == "drink water" and row.caption.startswith("drink water: ") and row.split == "train"
    ref = row.before_reference_keypoints.reshape(17, 3)
    sx = row.decoded_width / 1920  # the Kinect's 1920 px into the decoded frame, then into the person crop
    x0 = row.crop_box[0] if row.crop_box is not None else 0
    assert ref[5, 0] == pytest.approx((900 + 50) * sx - x0, rel=1e-4) and ref[5, 2] == 1.0
    r = pd.read_parquet(tmp_path / "out" / "rejects.parquet").set_index("clip_id")
    assert r.loc["S001C002P002R001A055", "reason"] == "multiple_people"
    assert stats["unaccounted_clips"] == []


# ---------------------------------------------------------------- EPIC-KITCHENS-100


def test_epic_timestamps_and_instructions():
    assert parse_timestamp("00:01:02.50") == pytest.approx(62.5)
    with pytest.raises(ValueError):
        parse_timestamp("")
    assert narration_instruction("take plate", "take") == "take the plate"
    assert narration_instruction("put down plate", "put-down") == "put down the plate"
    assert narration_instruction("turn on tap", "turn-on") == "turn on the tap"
    assert narration_instruction("put plate into sink", "put") == "put the plate into sink"
    assert narration_instruction("open the fridge", "open") == "open the fridge"


@pytest.fixture(scope="module")
def epic_root(tmp_path_factory):
    """The real P28_101 frames encoded into a 2.4 s video (forward, back, forward at 10 fps) at the
    EPIC layout, and real validation narration rows rebased onto it."""
    root = tmp_path_factory.mktemp("epic")
    frames_dir = VIDEOS / "epic-fields-code__example_data_P28_101_frames"
    frames = [cv2.imread(str(p)) for p in sorted(frames_dir.glob("frame_*.jpg"))]
    assert len(frames) == 8
    seq = frames + frames[::-1] + frames
    (root / "P28" / "videos").mkdir(parents=True)
    tmp = write_video(root / "P28" / "videos" / "tmp.mp4", seq, fps=10)
    tmp.rename(root / "P28" / "videos" / "P28_101.MP4")
    real = list(csv.DictReader(open(EPIC_VAL)))[:5]
    spans = [("00:00:00.00", "00:00:01.20"), ("00:00:01.00", "00:00:02.30"), ("", ""), ("00:00:02.00", "00:00:09.00")]
    rows = []
    for row, (a, b) in zip(real, spans, strict=False):
        rows.append({**row, "video_id": "P28_101", "participant_id": "P28", "start_timestamp": a, "stop_timestamp": b})
        rows[-1]["narration_id"] = f"P28_101_{len(rows) - 1}"
    rows.append({**real[4], "narration_id": "P99_01_0", "video_id": "P99_01", "participant_id": "P99"})
    ann = root / "EPIC_100_validation_rebased.csv"
    with open(ann, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(real[0]))
        w.writeheader()
        w.writerows(rows)
    return root, ann, real


def test_epic_listing_from_rebased_real_rows(epic_root):
    root, ann, real = epic_root
    listing = list_epic(EpicSource(kind="epic", root=str(root), annotations=[str(ann)]))
    clips = {c.clip_id: c for c in listing.clips}
    assert set(clips) == {"P28_101_0", "P28_101_1", "P28_101_3"}
    c0 = clips["P28_101_0"]
    assert (c0.start_s, c0.end_s, c0.split, c0.video_id) == (0.0, 1.2, "val", "P28_101")
    assert c0.label == real[0]["narration"] and c0.extra["verb_class"] == int(real[0]["verb_class"])
    reasons = {r.clip_id: r.reason.value for r in listing.rejects}
    assert reasons == {"P28_101_2": "bad_annotation", "P99_01_0": "missing_file"}


def test_epic_build_pairs_segment_ends_with_narration_instructions(epic_root, tmp_path):
    root, ann, real = epic_root
    cfg = load_config(
        None, output=str(tmp_path / "out"), sources=[{"kind": "epic", "root": str(root), "annotations": [str(ann)]}]
    )
    stats = build(cfg)
    s = pd.read_parquet(tmp_path / "out" / "samples.parquet").set_index("clip_id")
    assert set(s.index) == {"P28_101_0", "P28_101_1"}
    first = s.loc["P28_101_0"]
    assert first.strategy == "segment_endpoints" and first.before_time_s == pytest.approx(0.0)
    assert first.after_time_s == pytest.approx(1.1, abs=0.05)  # the last frame inside the segment
    assert first.caption == narration_instruction(real[0]["narration"], real[0]["verb"])
    assert first.before_keypoints is None and pd.isna(first.pose_change)  # no body in egocentric pairs
    assert first.narration_id == "P28_101_0" and first.video_id == "P28_101" and first.split == "val"
    assert first.verb == real[0]["verb"] and first.noun_class == int(real[0]["noun_class"])
    r = pd.read_parquet(tmp_path / "out" / "rejects.parquet").set_index("clip_id")
    assert r.loc["P28_101_3", "reason"] == "segment_out_of_range"
    assert stats["unaccounted_clips"] == []


def test_epic_segments_of_one_video_share_one_reader(epic_root, tmp_path, monkeypatch):
    """Three narrations of P28_101 (one out of the video's range): the file is opened once for all of
    them, and the output is that of each segment decoded alone."""
    from curation.build import _processor_for
    from curation.pipeline import ClipProcessor
    from curation.stages.decode import VideoSource

    root, ann, _ = epic_root
    opened = []
    real_open = VideoSource.open

    def counting_open(self):
        opened.append(self.clip.clip_id)
        return real_open(self)

    def build_epic(out):
        _processor_for.cache_clear()
        src = [{"kind": "epic", "root": str(root), "annotations": [str(ann)]}]
        return build(load_config(None, output=str(out), sources=src, decode={"workers": 0}))

    monkeypatch.setattr(VideoSource, "open", counting_open)
    build_epic(tmp_path / "shared")
    assert opened == ["P28_101_0"]  # P28_101_0, _1 and _3 through one reader
    opened.clear()
    with monkeypatch.context() as m:
        m.setattr(ClipProcessor, "run_all", lambda self, clips, upcoming=None: (self(c) for c in clips))
        build_epic(tmp_path / "alone")
    assert opened == ["P28_101_0", "P28_101_1", "P28_101_3"]

    def read(out):
        s = pd.read_parquet(out / "samples.parquet").drop(columns=["caption_created_at", "shard", "unit_id"])
        return s, pd.read_parquet(out / "rejects.parquet")

    (s1, r1), (s2, r2) = read(tmp_path / "shared"), read(tmp_path / "alone")
    assert len(s1) == 2 and set(r1.reason) >= {"segment_out_of_range"}
    pd.testing.assert_frame_equal(s1, s2)
    pd.testing.assert_frame_equal(r1, r2)


# ---------------------------------------------------------------- across sources


def test_mixed_build_keeps_each_sources_ids_and_no_split_leaks(kinetics_root, epic_root, tmp_path):
    root, ann, _ = epic_root
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    k_csv = tmp_path / "k.csv"
    k_csv.write_text('label,youtube_id,time_start,time_end,split,is_cc\n"tai chi",Kop0sDqOn-c,253,263,val,0\n')
    cfg_file = tmp_path / "mixed.yaml"
    cfg_file.write_text(
        json.dumps(
            {
                "sources": [
                    {"kind": "folder", "root": str(folder), "val_fraction": 0.5},
                    {"kind": "kinetics", "root": str(kinetics_root), "annotations": [str(k_csv)]},
                    {"kind": "epic", "root": str(root), "annotations": [str(ann)]},
                ]
            }
        )
    )
    cfg = load_config(cfg_file, output=str(tmp_path / "out"))
    build(cfg)
    s = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert set(s.source) == {"folder", "kinetics", "epic"}
    assert s.groupby("video_id").split.nunique().max() == 1  # one source video, one split
    assert s[s.source == "kinetics"].youtube_id.notna().all() and s[s.source == "epic"].narration_id.notna().all()
    assert s[s.source == "folder"].youtube_id.isna().all()


def test_missing_annotation_file_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="cannot read"):
        list_kinetics(KineticsSource(kind="kinetics", root=str(tmp_path), annotations=[str(tmp_path / "x.csv")]))


def test_epic_from_released_rgb_frames(tmp_path):
    """EPIC-KITCHENS as users often hold it: <participant>/rgb_frames/<video_id>/frame_%010d.jpg (the
    real P28_101 frames 80-115, every 5th; an extension video, so 50 fps). A narration row over
    1.6-2.15 s gives a pair of the segment's first and last frames at their frame numbers' times."""
    frames = VIDEOS / "epic-fields-code__example_data_P28_101_frames"
    dest = tmp_path / "root" / "P28" / "rgb_frames" / "P28_101"
    dest.mkdir(parents=True)
    for p in frames.glob("frame_*.jpg"):
        (dest / p.name).symlink_to(p)
    real = list(csv.DictReader(open(EPIC_VAL)))[:1]
    row = {**real[0], "narration_id": "P28_101_7", "video_id": "P28_101", "participant_id": "P28",
           "start_timestamp": "00:00:01.60", "stop_timestamp": "00:00:02.15"}  # fmt: skip
    ann = tmp_path / "EPIC_100_validation_frames.csv"
    with open(ann, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(real[0]))
        w.writeheader()
        w.writerow(row)
    listing = list_epic(EpicSource(kind="epic", root=str(tmp_path / "root"), annotations=[str(ann)]))
    (clip,) = listing.clips
    assert clip.uri == str(dest.resolve()) and clip.extra["frames_fps"] == 50.0
    cfg = load_config(
        None,
        output=str(tmp_path / "out"),
        sources=[{"kind": "epic", "root": str(tmp_path / "root"), "annotations": [str(ann)]}],
        egocentric={"max_camera_motion": 0.6},  # these real frames are a fast head turn (0.41 of the diagonal)
    )
    stats = build(cfg)
    s = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert stats["clips_accepted"] == 1 and len(s) == 1
    assert s.before_time_s[0] == pytest.approx(1.6) and s.after_time_s[0] == pytest.approx(2.1)
    assert (s.before_index[0], s.after_index[0]) == (0, 5)  # positions in the folder's frame list


def test_real_paths_resolve_as_realpath_does(tmp_path, monkeypatch):
    """RealPaths (folders resolved once) gives os.path.realpath's answer for plain files, symlinked
    files, files in symlinked folders, dangling links, a ".." after a symlink and relative paths."""
    import os

    from curation.sources.base import RealPaths

    real_dir = tmp_path / "disk" / "videos"
    real_dir.mkdir(parents=True)
    (real_dir / "a.mp4").write_bytes(b"a")
    (tmp_path / "mounted").symlink_to(tmp_path / "disk")  # a folder seen through a link
    (real_dir / "b.mp4").symlink_to(real_dir / "a.mp4")  # a file that is a link
    (real_dir / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")  # dangling
    (tmp_path / "deep").symlink_to(tmp_path / "disk" / "videos" / "sub")  # .. from it is disk/videos
    (real_dir / "sub").mkdir()
    real = RealPaths()
    paths = [
        real_dir / "a.mp4",
        tmp_path / "mounted" / "videos" / "a.mp4",
        tmp_path / "mounted" / "videos" / "b.mp4",
        tmp_path / "mounted" / "videos" / "gone.mp4",
        tmp_path / "mounted" / "videos" / "missing.mp4",
        tmp_path / "mounted" / "videos",
        tmp_path / "deep" / ".." / "a.mp4",  # ".." after a link: in the link's target's parent
        tmp_path / "deep" / "..",
        str(tmp_path / "mounted" / "videos") + "/",
    ]
    for p in paths * 2:  # the second round from the folder cache
        assert real(p) == os.path.realpath(p), p
    assert real(tmp_path / "mounted" / "videos" / "b.mp4") == str(real_dir / "a.mp4")
    assert real(tmp_path / "deep" / ".." / "a.mp4") == str(real_dir / "a.mp4")  # not tmp_path / "a.mp4"
    monkeypatch.chdir(tmp_path / "mounted")
    assert real("videos/a.mp4") == os.path.realpath("videos/a.mp4") == str(real_dir / "a.mp4")
