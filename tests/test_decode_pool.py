"""Decode workers ahead of the pose model: the same output as decoding in the build's process, and a
decode worker that dies is retried, then the clip's reject; never a hung or dead build."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import webdataset as wds
from conftest import ACCEPTED, REJECTED, make_bad_inputs, video

from curation.config import load_config
from curation.runner import _processor_for, run_build

pytestmark = pytest.mark.slow


@pytest.fixture()
def folder(tmp_path):
    f = tmp_path / "in"
    f.mkdir()
    (f / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_glass"]))
    (f / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    (f / "bunny.mp4").symlink_to(video(REJECTED["big_buck_bunny"][0]))
    make_bad_inputs(f)
    return f


def build(folder, out, workers: int):
    _processor_for.cache_clear()  # a fresh processor: its worker pool starts with this test's environment
    cfg = load_config(
        None,
        output=str(out),
        sources=[{"root": str(folder)}],
        decode={"workers": workers, "prefetch_clips": 2},
        shards={"clips_per_unit": 4},
    )
    return run_build(cfg)


def contents(out):
    """Every sample of the tars, with the caption's creation time (a clock reading) left out."""
    got = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            meta = json.loads(s["json"])
            for c in [meta["caption"], *meta["captions"]]:
                c.pop("created_at")
            got[s["__key__"]] = (s["before.jpg"], s["after.jpg"], json.dumps(meta, sort_keys=True))
    samples = pd.read_parquet(out / "samples.parquet").drop(columns=["caption_created_at", "shard", "unit_id"])
    rejects = pd.read_parquet(out / "rejects.parquet")
    return got, samples, rejects


def test_decode_workers_give_the_serial_output(folder, tmp_path):
    serial = build(folder, tmp_path / "serial", workers=0)
    streamed = build(folder, tmp_path / "workers", workers=2)
    assert serial["pairs"] == streamed["pairs"] > 0 and serial["clips_in"] == streamed["clips_in"] == 7
    a, b = contents(tmp_path / "serial"), contents(tmp_path / "workers")
    assert a[0] == b[0]  # the same keys, JPEG bytes and records
    pd.testing.assert_frame_equal(a[1], b[1])
    pd.testing.assert_frame_equal(a[2], b[2])  # bad inputs: the same rejects from the workers


def test_a_killed_decode_worker_costs_nothing(folder, tmp_path, monkeypatch):
    """Every decode worker is SIGKILLed at its second clip: the clip is retried in a fresh worker and
    the build ends as the serial one does."""
    serial = build(folder, tmp_path / "serial", workers=0)
    monkeypatch.setenv("MOTIONPAIRS_CRASH_AT", "decode_worker:2")
    killed = build(folder, tmp_path / "killed", workers=1)
    assert killed["pairs"] == serial["pairs"] and killed["retried_next_run"] == []
    a, b = contents(tmp_path / "serial"), contents(tmp_path / "killed")
    assert a[0] == b[0]
    pd.testing.assert_frame_equal(a[2], b[2])


def test_a_clip_that_kills_its_worker_twice_is_its_reject(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONPAIRS_CRASH_AT", "decode_worker:1")  # every worker dies on its first clip
    stats = build(folder, tmp_path / "out", workers=1)
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    died = rejects[rejects.detail.str.contains("decode worker process died")]
    assert len(died) == 7 and set(died.reason) == {"internal_error"}  # each clip once, as its own row
    assert stats["pairs"] == 0 and stats["unaccounted_clips"] == [] and len(stats["retried_next_run"]) == 7
