"""A full build written to a real S3-compatible server on loopback (moto in server mode, the `s3`
fixture of conftest.py), resumed from an empty staging folder, and read back by training.data."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import ACCEPTED, REJECTED, video

from curation.build import build, plan_build
from curation.config import load_config
from training.data import dataset_size, open_shards, shard_urls


def test_build_to_s3_resume_from_scratch_and_read_back(s3, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_glass"]))
    (folder / "bunny.mp4").symlink_to(video(REJECTED["big_buck_bunny"][0]))
    url = "s3://motionpairs-test/builds/v1"
    cfg = load_config(
        None,
        output=url,
        staging_dir=str(tmp_path / "staging-a"),
        sources=[{"root": str(folder)}],
        shards={"clips_per_unit": 1},
    )
    stats = build(cfg)
    assert stats["clips_in"] == 2 and stats["pairs"] >= 1
    names = {p.rsplit("/", 1)[-1] for p in s3.find("motionpairs-test/builds/v1")}
    assert {"samples.parquet", "rejects.parquet", "stats.json", "sizes.json"} <= names
    with s3.open(f"{url}/samples.parquet", "rb") as f:
        samples = pd.read_parquet(f)
    assert set(samples.clip_id) == {"tai_chi"}

    # another machine (empty staging) sees the finished work and adds only the new clip
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    cfg_b = cfg.model_copy(update={"staging_dir": str(tmp_path / "staging-b")})
    plan = plan_build(cfg_b)
    assert [c.clip_id for u in plan.units for c in u.clips] == ["dribbler"]
    stats_b = build(cfg_b)
    assert stats_b["clips_in"] == 3 and stats_b["units"] == 3
    # byte counts cover every unit's tars, also those this machine never had in its staging folder
    s3.invalidate_cache()
    on_bucket = sum(s3.size(p) for p in s3.glob("motionpairs-test/builds/v1/shards/*.tar"))
    assert stats_b["shard_bytes"] == on_bucket > 0

    # inspect reads the manifests from the bucket through its CURRENT pointer; verify checks every tar
    from rich.console import Console

    from curation.captions.recaption import publish
    from curation.store import committed, verify
    from flows.cli import print_summary

    console = Console(record=True, width=200)
    print_summary(url, console)
    text = console.export_text()
    assert "clips in" in text and "no_person" in text
    assert verify(url) == []
    # publish on the bucket: a new generation from a third machine's staging, the old one left whole
    old = committed(url)
    summary = publish(url, staging_dir=str(tmp_path / "staging-c"))
    s3.invalidate_cache()
    new = committed(url)
    assert new.generation == summary["generation"] > old.generation
    assert s3.exists(f"motionpairs-test/builds/v1/generations/{old.generation}/listing.json")
    assert verify(url) == []

    # training.data streams the shards straight from the object store
    urls = shard_urls(url)
    assert urls and all(u.startswith("s3://motionpairs-test/builds/v1/shards/") for u in urls)
    assert dataset_size(urls) == stats_b["pairs"]
    got = list(open_shards(url))
    assert len(got) == stats_b["pairs"] and {s.pair.clip.clip_id for s in got} == {"tai_chi", "dribbler"}
    assert got[0].before.ndim == 3


def test_llm_caption_rows_of_a_remote_build_reach_the_bucket_without_the_key(s3, tmp_path, monkeypatch):
    from fake_openai import FakeOpenAI

    key = "sk-test-S3-SECRET-42"
    server = FakeOpenAI(api_key=key).start()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        folder = tmp_path / "in"
        folder.mkdir()
        (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
        url = "s3://motionpairs-test/builds/llm"
        cfg = load_config(
            None,
            output=url,
            staging_dir=str(tmp_path / "staging"),
            sources=[{"root": str(folder)}],
            caption={"captioner": "openai", "model": "m1", "base_url": server.base_url},
        )
        stats = build(cfg)
        rows = s3.glob("motionpairs-test/builds/llm/captions/rows-*.parquet")
        assert len(rows) == 1 and stats["pairs"] >= 1
        # recaption on the bucket from another machine: the pairs read through the store, rows pushed
        from curation.captions.recaption import recaption

        ccfg = cfg.caption.model_copy(update={"model": "m2"})
        summary, run_id = recaption(url, ccfg, where="true", staging_dir=str(tmp_path / "staging-2"))
        assert summary.ok == stats["pairs"]
        s3.invalidate_cache()
        assert s3.exists(f"motionpairs-test/builds/llm/captions/rows-{run_id}.parquet")
    finally:
        server.stop()
    with s3.open(rows[0], "rb") as f:
        table = pd.read_parquet(f)
    assert len(table) == stats["pairs"] and (table.status == "ok").all()
    for p in s3.find("motionpairs-test/builds/llm"):
        assert key.encode() not in s3.cat_file(p), p


def test_the_bucket_lease_names_its_holder_and_a_dead_local_holder_is_taken_over(s3):
    import json
    import socket
    import time

    from curation.store import LockHeld, RemoteLease

    root = "motionpairs-test/leased"
    other = {"host": "build-box-7", "pid": 4242, "command": "motionpairs build", "token": "t1"}
    s3.pipe_file(f"{root}/LOCK", json.dumps(other | {"expires_at": time.time() + 600}).encode())
    with pytest.raises(LockHeld, match="motionpairs build .pid 4242 on build-box-7"):
        RemoteLease(s3, root, "publish").acquire()
    dead = {"host": socket.gethostname(), "pid": 2**22 + 12345, "command": "motionpairs build", "token": "t2"}
    s3.pipe_file(f"{root}/LOCK", json.dumps(dead | {"expires_at": time.time() + 600}).encode())
    lease = RemoteLease(s3, root, "publish").acquire()  # its holder was killed: taken over at once
    try:
        assert json.loads(s3.cat_file(f"{root}/LOCK"))["token"] == lease.owner["token"]
    finally:
        lease.release()
    assert not s3.exists(f"{root}/LOCK")


def test_report_and_dataset_card_on_s3(s3, tmp_path):
    """A build at an s3:// URL gets its QA report (report/index.html and thumbnails) and its dataset
    card in the bucket; `motionpairs report URL` remakes the report from the bucket alone."""
    import re

    import yaml

    from flows.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    (folder / "bunny.mp4").symlink_to(video(REJECTED["big_buck_bunny"][0]))
    url = "s3://motionpairs-test/builds/report"
    cfg = load_config(None, output=url, staging_dir=str(tmp_path / "staging"), sources=[{"root": str(folder)}])
    stats = build(cfg)
    assert stats["report"]["path"] == f"{url}/report/index.html"
    s3.rm("motionpairs-test/builds/report/report", recursive=True)
    assert main(["report", url]) == 0
    s3.invalidate_cache()
    page = s3.cat_file("motionpairs-test/builds/report/report/index.html").decode()
    shown = re.findall(r'<img class="pair-image" src="([^"]+)"', page)
    assert len(shown) == stats["pairs"] > 0
    for src in shown:
        assert s3.cat_file(f"motionpairs-test/builds/report/report/{src}")[:2] == b"\xff\xd8"
    assert "no_person" in page
    card = s3.cat_file("motionpairs-test/builds/report/README.md").decode()
    header = yaml.safe_load(card.split("---\n")[1])
    (files,) = [c["data_files"][0]["path"] for c in header["configs"]]
    assert files and all(s3.exists(f"motionpairs-test/builds/report/{f}") for f in files)
    assert {f["name"] for f in header["dataset_info"]["features"]} >= {"json", "before.jpg", "after.jpg"}
