"""Incremental builds: only new clips are processed (a 2-worker Dask cluster building the same dataset
as one process: tests/test_engines.py)."""

from __future__ import annotations

import json

import pandas as pd
from conftest import ACCEPTED, REJECTED, video

from curation.build import build, finalize, nothing_to_do
from curation.config import load_config
from curation.plan import fingerprint, listing_digest, plan_build
from schemas.records import Reject

COLS = ["pair_id", "clip_id", "before_index", "after_index", "caption", "pose_change", "shard"]


def link(folder, names):
    folder.mkdir(exist_ok=True)
    for short, name in names.items():
        (folder / f"{short}.mp4").symlink_to(video(name))


def test_incremental_build_processes_only_new_clips(tmp_path):
    folder = tmp_path / "in"
    link(folder, {"tai_chi_glass": ACCEPTED["tai_chi_glass"], "bunny": REJECTED["big_buck_bunny"][0]})
    cfg = load_config(None, output=str(tmp_path / "inc"), sources=[{"root": str(folder)}])
    first = build(cfg)
    first_tars = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "inc" / "shards").glob("*.tar")}
    link(folder, {"dribbler": ACCEPTED["dribbler"], "helmet": "mmskeleton__resource_media_zZ9Zb41KNR4.mp4"})
    plan = plan_build(cfg)
    assert sorted(c.clip_id for u in plan.units for c in u.clips) == ["dribbler", "helmet"]
    second = build(cfg)
    assert second["units"] == first["units"] + 1 and second["clips_in"] == 4
    tars = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "inc" / "shards").glob("*.tar")}
    assert {k: tars[k] for k in first_tars} == first_tars and len(tars) > len(first_tars)  # old ones untouched
    # a run with nothing new processes nothing and changes nothing
    stats_before = (tmp_path / "inc" / "stats.json").read_text()
    assert plan_build(cfg).units == []
    third = build(cfg)
    assert third["units"] == second["units"] and (tmp_path / "inc" / "stats.json").read_text() == stats_before
    # the union equals a fresh full build over all clips
    fresh = load_config(None, output=str(tmp_path / "fresh"), sources=[{"root": str(folder)}])
    build(fresh)
    a = pd.read_parquet(tmp_path / "inc" / "samples.parquet")[COLS[:-1]]
    b = pd.read_parquet(tmp_path / "fresh" / "samples.parquet")[COLS[:-1]]
    pd.testing.assert_frame_equal(a, b)
    ra = pd.read_parquet(tmp_path / "inc" / "rejects.parquet")[["clip_id", "stage", "reason"]]
    rb = pd.read_parquet(tmp_path / "fresh" / "rejects.parquet")[["clip_id", "stage", "reason"]]
    pd.testing.assert_frame_equal(ra, rb)
    # what produced each sample is on record: its unit's config fingerprint, code and model versions
    units = {
        json.loads(p.read_text())["unit_id"]: json.loads(p.read_text())
        for p in (tmp_path / "inc" / "parts").glob("*.json")
    }
    for uid in pd.read_parquet(tmp_path / "inc" / "samples.parquet").unit_id:
        rec = units[uid]
        assert rec["fingerprint"] == fingerprint(cfg) and rec["versions"]["code"] and rec["versions"]["pose_model"]


def test_a_threshold_change_redoes_the_affected_work(tmp_path):
    folder = tmp_path / "in"
    link(folder, {"tai_chi_glass": ACCEPTED["tai_chi_glass"]})
    cfg = load_config(None, output=str(tmp_path / "o"), sources=[{"root": str(folder)}])
    build(cfg)
    stricter = load_config(
        None,
        output=str(tmp_path / "o"),
        sources=[{"root": str(folder)}],
        motion={"min_pose_change": 5.0, "min_limb_change": 5.0},
    )
    assert [c.clip_id for u in plan_build(stricter).units for c in u.clips] == ["tai_chi_glass"]
    stats = build(stricter)
    assert stats["pairs"] == 0 and stats["rejects_by_reason"] == {"motion/low_motion": 1}
    assert len(list((tmp_path / "o" / "parts").glob("*.json"))) == 1  # the superseded unit is gone
    assert not list((tmp_path / "o" / "shards").glob("*.tar"))


def test_a_new_source_adds_to_the_build_and_a_removed_clip_leaves_it(tmp_path):
    """Adding a source processes only its clips (the first source's tars stay untouched); a clip gone
    from its source takes its unit's samples and tars out of the dataset."""
    first, second = tmp_path / "a", tmp_path / "b"
    link(first, {"tai_chi_glass": ACCEPTED["tai_chi_glass"]})
    link(second, {"bunny": REJECTED["big_buck_bunny"][0]})
    out = tmp_path / "o"
    one = load_config(None, output=str(out), sources=[{"root": str(first)}])
    assert build(one)["clips_accepted"] == 1
    tars = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}
    both = load_config(None, output=str(out), sources=[{"root": str(first)}, {"root": str(second)}])
    assert fingerprint(both) == fingerprint(one)
    assert [c.clip_id for u in plan_build(both).units for c in u.clips] == ["bunny"]
    stats = build(both)
    assert (
        stats["clips_in"] == 2 and stats["clips_accepted"] == 1 and stats["rejects_by_reason"] == {"pose/no_person": 1}
    )
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")} == tars
    noop = build(both)  # up to date: nothing rewritten (the report is made by a build, not stored in stats)
    assert plan_build(both).units == [] and noop == {k: v for k, v in stats.items() if k != "report"}
    # the clip is taken down at its source: the rebuilt dataset no longer has it, in manifest or tars
    (first / "tai_chi_glass.mp4").unlink()
    plan = plan_build(both)
    assert plan.units == [] and len(plan.stale_units) == 1
    stats = build(both)
    assert stats["clips_in"] == 1 and stats["pairs"] == 0 and stats["unaccounted_clips"] == []
    assert pd.read_parquet(out / "samples.parquet").empty and not list((out / "shards").glob("*.tar"))
    assert set(pd.read_parquet(out / "rejects.parquet").clip_id) == {"bunny"}
    # an input rejected at listing (a bad annotation row: no unit to process) still makes the manifest stale
    plan = plan_build(both)
    assert nothing_to_do(both, plan)
    plan.listing.rejects.append(
        Reject(clip_id="row7", source="kinetics", uri="x.mp4", stage="ingest", reason="missing_file")
    )
    plan.listing_digest = listing_digest(plan.listing)
    assert not nothing_to_do(both, plan)
    assert finalize(both, plan)["rejects_by_reason"]["ingest/missing_file"] == 1


def test_a_no_op_pulls_the_output_once_under_the_lock(tmp_path, monkeypatch):
    """A plan made under the writer lock pulled the output already; the no-op check that follows does
    not pull it again (on a bucket, a pull lists every unit record). A plan made without the lock, or
    under a lock since released, is pulled again."""
    from curation.build import writer_lock
    from curation.store import Output

    folder = tmp_path / "in"
    link(folder, {"slides": REJECTED["slides"][0]})
    cfg = load_config(None, output=str(tmp_path / "out"), sources=[{"root": str(folder)}])
    build(cfg)
    pulls = []
    real_pull = Output.pull
    monkeypatch.setattr(Output, "pull", lambda self: (pulls.append(1), real_pull(self))[1])
    with writer_lock(cfg):
        plan = plan_build(cfg)
        assert plan.pulled_under is not None and len(pulls) == 1
        assert nothing_to_do(cfg, plan) and len(pulls) == 1
    assert nothing_to_do(cfg, plan) and len(pulls) == 2  # the lock it was made under is gone
    with writer_lock(cfg):
        assert nothing_to_do(cfg, plan) and len(pulls) == 3  # another holding: pulled again
    unlocked = plan_build(cfg)
    assert unlocked.pulled_under is None and len(pulls) == 4
    assert nothing_to_do(cfg, unlocked) and len(pulls) == 5
