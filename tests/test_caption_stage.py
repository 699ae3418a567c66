"""LLM captions at dataset scale: one budget and one rate per run (local and Dask), a stage of its own
beside the pose work, complete cache keys, safe --where filters, and captions checked against the pose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fake_openai import FakeOpenAI
from posekit import RIGHT_ARM_UP, make_pose

from curation.build import build
from curation.captions import llm
from curation.captions import prompts as prompt_files
from curation.captions.agreement import check_caption
from curation.captions.recaption import RecaptionError, load_samples, publish, read_caption_rows, recaption
from curation.config import CaptionConfig, load_config
from schemas.captions import MotionChange

KEY = "sk-test-STAGE-0123456789"


@pytest.fixture()
def server():
    s = FakeOpenAI(api_key=KEY, slow_s=2.0).start()
    yield s
    s.stop()


def ccfg(server, **kw) -> CaptionConfig:
    base = dict(captioner="openai", model="fake-vlm", base_url=server.base_url, timeout_s=5.0, max_retries=0)
    return CaptionConfig(**{**base, "requests_per_minute": 6000} | kw)


def three_clips(tmp_path: Path, real_input: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("tai_chi_glass", "tai_chi_forest", "dribbler"):
        (folder / f"{name}.mp4").symlink_to((real_input / f"{name}.mp4").resolve())
    return folder


def _spacing(server) -> float:
    t = sorted(r["t"] for r in server.requests)
    return min((b - a for a, b in zip(t, t[1:], strict=False)), default=float("inf"))


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_one_budget_and_one_rate_for_the_whole_run(engine, server, tmp_path, real_input, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    folder = three_clips(tmp_path, real_input)
    over = {
        "shards": {"clips_per_unit": 1},  # three units
        "decode": {"max_frames": 16},
        "caption": {"captioner": "openai", "model": "m1", "base_url": server.base_url, "max_requests": 3,
                    "requests_per_minute": 60},
    }  # fmt: skip
    out = tmp_path / "out"
    if engine == "local":
        stats = build(load_config(None, output=str(out), sources=[{"root": str(folder)}], **over))
    else:
        from flows.build import with_dask

        state = with_dask(workers=2)(
            output=str(out), input=str(folder), overrides=over, parallel=True, return_state=True
        )
        assert state.is_completed()
        stats = state.result()
    assert stats["units"] == 3 and stats["pairs"] > 3
    assert len(server.requests) == 3  # counted at the server: not 3 per unit, not 3 per worker
    assert _spacing(server) >= 0.9  # 60 a minute, across everything the run does
    rows = read_caption_rows(out)
    assert (rows.status == "ok").sum() == 3
    s = pd.read_parquet(out / "samples.parquet")
    assert (s.caption_captioner == "openai").sum() == 3 and (s.caption_captioner == "offline").sum() == len(s) - 3
    # the next run goes on with the rest, again within its budget; a run with nothing left is a no-op
    cfg = load_config(None, output=str(out), sources=[{"root": str(folder)}], **over)
    build(cfg)
    assert len(server.requests) == 3 + min(3, stats["pairs"] - 3)  # the rest, within the budget again


def test_the_pose_work_never_waits_on_a_slow_server_and_the_captions_land(server, tmp_path, real_input, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.default = "slow"  # 2 s per answer
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "dribbler.mp4").symlink_to((real_input / "dribbler.mp4").resolve())
    over = {
        "decode": {"max_frames": 16},
        "caption": {"captioner": "openai", "model": "m1", "base_url": server.base_url},
    }
    cfg = load_config(None, output=str(tmp_path / "out"), sources=[{"root": str(folder)}], **over)
    stats = build(cfg)
    rec = json.loads(next((tmp_path / "out" / "parts").glob("*.json")).read_text())
    # the unit's wall time is its own stages' work, not that plus the answers it would wait for (2 s
    # each): less than one answer beyond the work, and less than one answer in its caption stage,
    # whatever this machine's speed
    seconds = rec["seconds"]
    work = sum(v for k, v in seconds.items() if k != "wall")
    assert "llm_caption" not in seconds and seconds["wall"] < work + 2.0 and seconds["caption_encode"] < 2.0, seconds
    s = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert (s.caption_captioner == "openai").all() and s.caption.str.startswith("[m1]").all()
    # the captions are published: the next run with nothing new is a no-op (no new generation, no request)
    asked = len(server.requests)
    assert build(cfg)["generation"] == stats["generation"] and len(server.requests) == asked


def test_prompt_edits_and_longer_answers_recaption_and_nothing_else_does(server, built, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    n = len(load_samples(built))
    server.default = "truncated"  # cut off below 400 tokens
    s1, _ = recaption(built, ccfg(server, max_tokens=300))
    assert s1.requests == n and s1.failed == n
    assert set(read_caption_rows(built).reason) == {"truncated_answer"}
    for same in ({"max_tokens": 300, "requests_per_minute": 100}, {"max_tokens": 300, "timeout_s": 9.0}):
        s, _ = recaption(built, ccfg(server, **same))  # limits and timeouts do not change the answer
        assert s.requests == 0 and s.cached == n
    s2, _ = recaption(built, ccfg(server, max_tokens=500))
    assert s2.requests == n and s2.ok == n  # the truncated answers are asked again with room to finish
    # an edited prompt file is a new caption version and is asked again
    prompts = tmp_path / "prompts"
    shutil.copytree(llm.PROMPTS_DIR, prompts)
    (prompts / "v1.md").write_text((prompts / "v1.md").read_text().replace("at most 20 words", "at most 12 words"))
    old_version = read_caption_rows(built).caption_version.iloc[-1]
    monkeypatch.setattr(prompt_files, "PROMPTS_DIR", prompts)
    s3, _ = recaption(built, ccfg(server, max_tokens=500))
    assert s3.requests == n
    rows = read_caption_rows(built)
    new_version = rows.caption_version.iloc[-1]
    assert new_version != old_version and new_version.startswith("fake-vlm@v1-")
    assert rows[rows.caption_version == new_version].prompt_sha256.nunique() == 1


@pytest.mark.parametrize(
    "where",
    [
        "@samples.to_csv('{x}') == 0",  # what DataFrame.query ran
        "clip_id in (select * from read_csv('{x}'))",
        "1=1); COPY samples TO '{x}'; SELECT (1",
        "pair_id = (SELECT 1 FROM glob('{x}'))",
    ],
)
def test_a_where_that_reaches_for_code_or_files_is_refused_and_writes_nothing(where, server, built, tmp_path):
    target = tmp_path / "written.csv"
    with pytest.raises(RecaptionError, match="bad --where filter"):
        recaption(built, ccfg(server), where=where.format(x=target), api_key=KEY)
    assert not target.exists() and server.requests == []
    s, _ = recaption(built, ccfg(server), where="clip_id = 'dribbler' and pose_change > 0.1", api_key=KEY)
    assert s.requests == (load_samples(built).clip_id == "dribbler").sum()


def test_the_keypoint_check_of_structured_changes():
    before, after = make_pose(), make_pose(RIGHT_ARM_UP)
    right_up = [MotionChange(side="right", part="arm", direction="up")]
    left_up = [MotionChange(side="left", part="arm", direction="up")]
    assert check_caption(before, after, right_up).agreement == "agree"
    v = check_caption(before, after, left_up)
    assert v.agreement == "contradict" and "the right side did it" in v.detail
    down = [MotionChange(side="right", part="arm", direction="down")]
    assert check_caption(before, after, down).agreement == "contradict"
    assert check_caption(before, after, [MotionChange(side="none", part="head", direction="turn")]).agreement == (
        "not_checkable"
    )
    assert check_caption(None, None, right_up).agreement == "not_checkable"
    hidden = make_pose(RIGHT_ARM_UP, low=("right_wrist",))
    assert check_caption(before, hidden, right_up).agreement == "not_checkable"
    # a person facing away: their left is on the image's left; the check uses their own labels
    from posekit import STANDING

    away = {k: (400 - x, y) for k, (x, y) in STANDING.items()}
    away_up = away | {k: (400 - x, y) for k, (x, y) in RIGHT_ARM_UP.items()}
    assert away["left_shoulder"][0] < away["right_shoulder"][0]
    assert check_caption(make_pose(away), make_pose(away_up), right_up).agreement == "agree"
    assert check_caption(make_pose(away), make_pose(away_up), left_up).agreement == "contradict"


def test_mirrored_captions_are_flagged_and_publish_can_require_agreement(server, built, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.default = "mirrored"
    recaption(built, ccfg(server, model="mirror-vlm"))
    server.default = "ok"
    recaption(built, ccfg(server, model="right-vlm"))
    rows = read_caption_rows(built)
    sided = rows[rows.changes.str.contains('"left"|"right"', regex=True)]
    assert len(sided) >= 2, rows.changes.tolist()
    table = sided[["model", "changes", "pose_agreement", "agreement_detail"]].to_string()
    right, mirror = sided[sided.model == "right-vlm"], sided[sided.model == "mirror-vlm"]
    assert (right.pose_agreement == "agree").all(), table
    contradicted = mirror[mirror.pose_agreement == "contradict"]
    assert len(contradicted) >= 1, table  # the others: both arms moved, so the mirror reading also holds
    # a mirrored caption still agrees only where the other arm really moved the same way too
    for detail in mirror[mirror.pose_agreement == "agree"].agreement_detail:
        figures = dict(kv.split() for kv in detail.split(": ", 1)[1].split(", "))
        assert min(float(v) for v in figures.values()) >= 0.25, table
    publish(built, caption_version="mirror-vlm@v1", agreement="require")
    s = load_samples(built)
    assert (s[s.pair_id.isin(set(contradicted.pair_id))].caption_captioner == "offline").all()
    publish(built, caption_version="right-vlm@v1", agreement="require")
    s = load_samples(built)
    assert (s[s.pair_id.isin(set(sided.pair_id))].caption_model == "right-vlm").all()
