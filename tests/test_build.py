"""The whole build on real clips: outcomes, accounting, shards read back, idempotent re-runs, resume."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from conftest import ACCEPTED, BAD, REJECTED
from PIL import Image

from curation.build import build, plan_build
from schemas.shard import decode_sample


def test_single_person_motion_clips_give_pairs(real_build):
    _, out, _ = real_build
    samples = pd.read_parquet(out / "samples.parquet")
    for short in ACCEPTED:
        got = samples[samples.clip_id == short]
        assert len(got) >= 1, f"{short} gave no pair"
        assert (got.pose_change >= 0.25).all() and (got.after_time_s > got.before_time_s).all()
        assert got.caption.str.len().gt(5).all() and (got.caption_captioner == "offline").all()
    assert set(samples.clip_id) == set(ACCEPTED)
    assert samples.pair_id.is_unique and (samples.source == "folder").all()


def test_rejected_clips_name_the_right_stage_and_reason(real_build):
    _, out, _ = real_build
    rejects = pd.read_parquet(out / "rejects.parquet")
    clip_level = rejects[rejects.level == "clip"].set_index("clip_id")
    for short, (_, reason) in REJECTED.items():
        assert clip_level.loc[short, "reason"] == reason, (short, clip_level.loc[short, "detail"])
    for short, (stage, reason) in BAD.items():
        row = clip_level.loc[short]
        assert (row.stage, row.reason) == (stage, reason), (short, row.detail)
        assert row.detail


def test_every_input_lands_exactly_once(real_build, real_input):
    _, out, stats = real_build
    inputs = {p.stem for p in real_input.iterdir() if p.suffix != ".txt"}
    samples = pd.read_parquet(out / "samples.parquet")
    rejects = pd.read_parquet(out / "rejects.parquet")
    accepted = set(samples.clip_id)
    clip_rejects = rejects[rejects.level == "clip"].clip_id
    assert clip_rejects.is_unique
    assert accepted.isdisjoint(set(clip_rejects))
    assert accepted | set(clip_rejects) == inputs
    assert stats["clips_in"] == len(inputs) == stats["clips_accepted"] + stats["clips_rejected"]
    assert stats["unaccounted_clips"] == [] and stats["double_counted_clips"] == []
    assert stats["ignored_files"] == 1 and stats["pairs"] == len(samples)
    assert sum(stats["rejects_by_reason"].values()) == stats["clips_rejected"]


def test_each_unit_records_the_machine_it_ran_on(real_build):
    """Provenance: each unit record names the CPU (model, cores, bf16 units), the device and the pose
    model's inference precision (OpenVINO pinned to f32), and stats.json sums them per machine."""
    from curation.stages.engines import cpu_description

    _, out, stats = real_build
    here = cpu_description()
    assert here["cores"] >= 1 and here["cpu"]
    records = [json.loads(p.read_text()) for p in sorted((out / "parts").glob("*.json"))]
    assert records and all(
        r["machine"] == here | {"device": "cpu", "gpu": None, "pose_precision": "f32"} for r in records
    )
    (machine,) = stats["machines"]
    assert machine == records[0]["machine"] | {"units": stats["units"]} and stats["units"] == len(records)


def test_shards_read_back_with_plain_webdataset(real_build):
    cfg, out, stats = real_build
    samples = pd.read_parquet(out / "samples.parquet").set_index("pair_id")
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    sizes = json.loads((out / "shards" / "sizes.json").read_text())
    assert len(tars) == stats["shards"] == len(sizes) >= 2  # max_samples=4 forces a roll-over
    assert all(n <= 4 for n in sizes.values())
    seen = 0
    for raw in wds.WebDataset(tars, shardshuffle=False):
        assert set(raw) >= {"__key__", "before.jpg", "after.jpg", "json"}
        s = decode_sample(raw)  # validates against schemas/
        row = samples.loc[s.pair.pair_id]
        assert row.shard in {t.rsplit("/", 1)[1] for t in tars}
        for side in ("before", "after"):
            img = np.asarray(Image.open(__import__("io").BytesIO(raw[f"{side}.jpg"])).convert("RGB"))
            pose = getattr(s.pair, f"{side}_pose")
            assert img.shape == (pose.frame_height, pose.frame_width, 3)
            kps = np.asarray(pose.keypoints, dtype=np.float32).ravel()
            assert np.allclose(kps, row[f"{side}_keypoints"], equal_nan=True)
        assert s.pair.caption.text == row.caption
        seen += 1
    assert seen == len(samples) == sum(sizes.values())


def test_rerun_skips_finished_work_and_changes_nothing(real_build):
    cfg, out, stats = real_build
    before = pd.read_parquet(out / "samples.parquet")
    tars = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}
    assert plan_build(cfg).units == []
    stats2 = build(cfg)
    assert stats2["units"] == stats["units"] and stats2["pairs"] == stats["pairs"]
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "samples.parquet"))
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")} == tars


def test_resume_after_a_stop_mid_build(real_build, tmp_path):
    cfg, out, _ = real_build
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy, symlinks=True)
    rcfg = cfg.model_copy(update={"output": str(copy)})
    # a build that stopped inside a unit: its record never got written, a temp tar is left behind
    unit_json = next(p for p in sorted((copy / "parts").glob("*.json")) if json.loads(p.read_text())["samples"])
    record = json.loads(unit_json.read_text())
    unit_json.unlink()
    (copy / "tars" / ".leftover.tar.tmp").write_bytes(b"partial")
    plan = plan_build(rcfg)
    assert {c.clip_id for u in plan.units for c in u.clips} == set(record["clip_keys"])
    from curation.build import writer_lock

    with writer_lock(rcfg):  # the next writer cleans up what the dead one left
        assert not (copy / "tars" / ".leftover.tar.tmp").exists()
        # the unit's tars are claimed only by the current generation now, for its readers
        assert all((copy / "tars" / n).exists() for n in record["files"])
    stats = build(rcfg)
    cols = ["pair_id", "clip_id", "before_index", "after_index", "caption", "pose_change"]
    a = pd.read_parquet(out / "samples.parquet")[cols]
    b = pd.read_parquet(copy / "samples.parquet")[cols]
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    assert stats["unaccounted_clips"] == []


@pytest.mark.parametrize("strategy", ["segment_endpoints"])
def test_segment_endpoint_pairs_on_a_real_clip(tmp_path, real_input, strategy):
    from curation.config import load_config

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tai_chi.mp4").symlink_to((real_input / "tai_chi_glass.mp4").resolve())
    cfg = load_config(
        None, output=str(tmp_path / "out"), sources=[{"root": str(folder)}], pairing={"strategies": [strategy]}
    )
    build(cfg)
    s = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert len(s) == 1 and s.strategy.iloc[0] == strategy
    assert s.before_time_s.iloc[0] < 0.5 and s.after_time_s.iloc[0] > 9.0  # the clip's first and last frames
