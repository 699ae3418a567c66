"""The streaming build: decode workers ahead of a pose stage that batches frames across clips give the
same output as the serial reference (each clip decoded and detected alone); a decode worker that dies is
retried, then the clip's reject; a pose batch that fails lands on its own clip; never a hung or dead build."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from conftest import ACCEPTED, REJECTED, REPO, make_bad_inputs, video

from curation.build import _processor_for, build
from curation.config import load_config
from curation.pipeline import ClipProcessor
from curation.stages.decode import VideoSource
from curation.stages.pose import PoseDetector, detect_across
from schemas.records import Clip

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


def build_folder(folder, out, workers: int, batch: int = 16):
    _processor_for.cache_clear()  # a fresh processor: its worker pool starts with this test's environment
    cfg = load_config(
        None,
        output=str(out),
        sources=[{"root": str(folder)}],
        decode={"workers": workers, "prefetch_clips": 2},
        pose={"batch_size": batch},
        shards={"clips_per_unit": 4},
    )
    return build(cfg)


def serial_reference(self, clips, upcoming=None):
    """The serial path, kept only here: each clip decoded and detected alone, in the build's process."""
    return (self(clip) for clip in clips)


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


def test_the_streaming_build_gives_the_serial_output(folder, tmp_path, monkeypatch):
    """Two decode workers and pose batches of 5 frames that straddle clips (the default engine on CPU,
    OpenVINO, gives a frame the same poses in any batch) against the serial reference."""
    with monkeypatch.context() as m:
        m.setattr(ClipProcessor, "run_all", serial_reference)
        serial = build_folder(folder, tmp_path / "serial", workers=0)
    streamed = build_folder(folder, tmp_path / "workers", workers=2, batch=5)
    assert serial["pairs"] == streamed["pairs"] > 0 and serial["clips_in"] == streamed["clips_in"] == 7
    a, b = contents(tmp_path / "serial"), contents(tmp_path / "workers")
    assert a[0] == b[0]  # the same keys, JPEG bytes and records
    pd.testing.assert_frame_equal(a[1], b[1])
    pd.testing.assert_frame_equal(a[2], b[2])  # bad inputs: the same rejects from the workers


def test_a_killed_decode_worker_costs_nothing(folder, tmp_path, monkeypatch):
    """Every decode worker is SIGKILLed at its second clip: the clip is retried in a fresh worker and
    the build ends as the serial one does."""
    serial = build_folder(folder, tmp_path / "serial", workers=0)
    monkeypatch.setenv("MOTIONPAIRS_CRASH_AT", "decode_worker:2")
    killed = build_folder(folder, tmp_path / "killed", workers=1)
    assert killed["pairs"] == serial["pairs"] and killed["retried_next_run"] == []
    a, b = contents(tmp_path / "serial"), contents(tmp_path / "killed")
    assert a[0] == b[0]
    pd.testing.assert_frame_equal(a[2], b[2])


def test_a_clip_that_kills_its_worker_twice_is_its_reject(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONPAIRS_CRASH_AT", "decode_worker:1")  # every worker dies on its first clip
    stats = build_folder(folder, tmp_path / "out", workers=1)
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    died = rejects[rejects.detail.str.contains("decode worker process died")]
    assert len(died) == 7 and set(died.reason) == {"internal_error"}  # each clip once, as its own row
    assert stats["pairs"] == 0 and stats["unaccounted_clips"] == [] and len(stats["retried_next_run"]) == 7


def test_the_pose_stage_batches_across_clips_and_keeps_order(frames_by_clip):
    """Clips of 0, 7, 1 and 12 frames through batches of 4: each comes back in order with the poses it
    gets alone; a batch that fails gives its clips None (detected alone by the caller), the rest go on."""
    det = PoseDetector(load_config(None, output="/tmp/unused", pose={"batch_size": 4, "device": "cpu"}).pose)
    items = list(frames_by_clip.items())
    got = list(detect_across(det, items))
    assert [tag for tag, _, _ in got] == [tag for tag, _ in items]
    for (_, frames), (_, poses, seconds) in zip(items, got, strict=True):
        alone = det(frames) if frames else []
        assert poses == alone and (seconds > 0) == bool(frames)
    assert sum(len(p) for _, poses, _ in got for p in poses) > 0

    bad = dict(frames_by_clip)
    bad["b"] = [*bad["b"][:6], np.zeros((0, 0, 3), np.uint8)]  # an empty image: the model's batch raises
    got = {tag: poses for tag, poses, _ in detect_across(det, bad.items())}
    # b's last batch (b4 b5 b6 c0) failed: b and c are detected alone by the caller, so the error is b's
    assert got["b"] is None and got["c"] is None
    assert got["a"] == [] and got["d"] == det(bad["d"])


@pytest.fixture(scope="module")
def frames_by_clip():
    cfg = load_config(None, output="/tmp/unused")
    out = {}
    for tag, name, n in [("a", ACCEPTED["dribbler"], 0), ("b", ACCEPTED["tai_chi_glass"], 7),
                         ("c", ACCEPTED["dribbler"], 1), ("d", ACCEPTED["tai_chi_glass"], 12)]:  # fmt: skip
        with VideoSource(Clip(source="folder", clip_id=tag, uri=str(video(name))), cfg.decode) as v:
            out[tag] = [f for b in v.batches(v.plan()[:n]) for f in b.frames] if n else []
    return out


def test_a_script_without_a_main_guard_still_builds(folder, tmp_path):
    """Spawned decode workers re-import the caller's script; without `if __name__ == "__main__":` they
    die at start. That is a problem of the run, not of any clip: the build decodes in its own process,
    says so once, and records no reject for it."""
    script = tmp_path / "build_here.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from curation.config import load_config\n"
        "from curation.build import build\n"
        "cfg = load_config(None, output=sys.argv[2], sources=[{'root': sys.argv[1]}], decode={'workers': 1})\n"
        "stats = build(cfg)\n"
        "print(json.dumps({'pairs': stats['pairs'], 'clips': stats['clips_in']}))\n"
    )
    run = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "out")], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["clips"] == 7 and got["pairs"] > 0
    assert "decode workers could not start" in run.stderr
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert not rejects.detail.str.contains("worker").any()


def _decode_in_this_worker(uris: list[str]) -> dict:
    """Run inside a Dask worker: the decode stage as the build starts it there."""
    import os

    import psutil

    from curation.config import DecodeConfig
    from curation.stages.decode_pool import DecodePool

    pool = DecodePool(DecodeConfig()).start()
    try:
        clips = [Clip(source="folder", clip_id=str(k), uri=u) for k, u in enumerate(uris)]
        frames = sum(len(b.indices) for _, d in pool.map(clips) for b in d.batches)
        children = [p.pid for p in psutil.Process().children() if "python" in p.name().lower()]
        return {"workers": pool.workers, "frames": frames, "children": children, "pid": os.getpid()}
    finally:
        pool.close()


@pytest.mark.parametrize("ours", [True, False])
def test_dask_workers_of_our_cluster_decode_in_worker_processes(ours):
    """with_dask's LocalCluster makes non-daemonic workers, so each Dask worker streams with a decode
    process of its own (one by default there); a default Dask cluster's daemonic workers cannot start
    processes and decode in-process, with the same frames."""
    import cloudpickle
    import distributed

    from flows.build import local_cluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    make = local_cluster if ours else distributed.LocalCluster
    try:
        with make(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                uris = [str(video(ACCEPTED["dribbler"])), str(video(REJECTED["big_buck_bunny"][0]))]
                got = client.submit(_decode_in_this_worker, uris, pure=False).result(timeout=300)
    finally:
        import dask

        dask.config.set({"distributed.worker.daemon": True})  # this process's default again
    assert got["frames"] > 20
    if ours:
        assert got["workers"] == 1 and len(got["children"]) >= 1
    else:
        assert got["workers"] == 0 and got["children"] == []
