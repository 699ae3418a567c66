"""The LLM captioner's run-wide limits and cache against a real HTTP server on loopback (the fake
OpenAI-compatible server, which counts every request it is sent, live or in a batch): the budget is
never exceeded with many requests in flight or through the Batch API, the cache key holds the server
and the answer's schema, and Batch API input files are split at the API's limits and resumed per part."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fake_openai import FakeOpenAI
from posekit import RIGHT_ARM_UP, make_pose

from curation.captions import batch as batch_mod
from curation.captions import cache as cache_mod
from curation.captions.llm import CaptionJob, LLMCaptioner, Prompt, build_request, cache_key, worst_case_cost
from curation.config import CaptionConfig
from schemas.records import Clip, FramePair, MotionFigures, make_pair_id

KEY = "sk-test-SECRET-0123456789"
USD_IN, USD_OUT = 2.0, 8.0
ANSWER_COST = (250 * USD_IN + 40 * USD_OUT) / 1e6  # the fake server bills 250 tokens in, 40 out


@pytest.fixture()
def server():
    s = FakeOpenAI(api_key=KEY, slow_s=0.3).start()
    yield s
    s.stop()


def cfg(server: FakeOpenAI, **kw) -> CaptionConfig:
    base = dict(
        captioner="openai",
        model="fake-vlm",
        base_url=server.base_url,
        timeout_s=5.0,
        max_retries=0,
        requests_per_minute=60000,
        usd_per_1m_input_tokens=USD_IN,
        usd_per_1m_output_tokens=USD_OUT,
        batch_poll_s=0.05,
    )
    return CaptionConfig(**{**base, **kw})


def jobs(n: int) -> list[CaptionJob]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        clip = Clip(source="folder", clip_id=f"clip{k}", uri=f"/x/clip{k}.mp4")
        before, after = make_pose(), make_pose(RIGHT_ARM_UP)
        pair = FramePair(
            pair_id=make_pair_id(clip.clip_id, 1, 5),
            clip=clip,
            strategy="max_motion",
            before_time_s=0.25,
            after_time_s=1.25,
            before_index=1,
            after_index=5,
            frame_width=640,
            frame_height=480,
            before_pose=before,
            after_pose=after,
            motion=MotionFigures(
                pose_change=0.5,
                max_joint_change=1.2,
                translation=0.0,
                body_size_px=100,
                camera_motion=0.0,
                scene_similarity=1.0,
                keypoints_compared=17,
            ),
        )
        jpg = [cv2.imencode(".jpg", rng.integers(0, 255, (96, 128, 3), np.uint8))[1].tobytes() for _ in range(2)]
        out.append(CaptionJob(pair, jpg[0], jpg[1]))
    return out


def billed(server: FakeOpenAI) -> float:
    return len(server.requests) * ANSWER_COST


def test_the_budget_is_never_exceeded_with_eight_requests_in_flight(server, monkeypatch, tmp_path):
    """Slow answers and max_concurrency 8: the budget is checked against the reservations of the
    requests still in flight, so the dollars the server bills never pass max_cost_usd (before, the
    check came before each request and the cost after it: up to 8 answers' worth over)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.default = "slow"
    work = jobs(80)
    c = cfg(server, max_concurrency=8)
    cap = LLMCaptioner(c, tmp_path).setup()
    worst = worst_case_cost(c, build_request(work[0], c, cap.prompt))
    assert worst > ANSWER_COST  # the reservation bounds what the server bills
    budget = 3.5 * worst + 6 * ANSWER_COST
    cap = LLMCaptioner(cfg(server, max_concurrency=8, max_cost_usd=budget), tmp_path)
    rows = cap.caption(work)
    assert 0 < len(server.requests) < len(work) and cap.summary.skipped_budget == len(work) - len(rows)
    assert billed(server) <= budget and cap.budget.cost == pytest.approx(billed(server))
    # several requests were in flight at once (the slow answers overlap)
    t = sorted(r["t"] for r in server.requests)
    assert any(b - a < server.slow_s / 2 for a, b in zip(t, t[1:], strict=False))


def test_the_batch_api_reserves_the_whole_batch(server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    work = jobs(12)
    c = cfg(server, batch=True)
    cap = LLMCaptioner(c, tmp_path).setup()
    worst = worst_case_cost(c, build_request(work[0], c, cap.prompt))
    budget = 5.5 * worst
    cap = LLMCaptioner(cfg(server, batch=True, max_cost_usd=budget), tmp_path)
    rows = cap.caption(work)
    assert len(server.requests) == len(rows) == 5 and cap.summary.skipped_budget == 7
    assert all(r.get("batch") for r in server.requests) and billed(server) <= budget


def test_the_cache_key_holds_the_server_and_the_answer_schema(server, monkeypatch, tmp_path):
    """Another OpenAI-compatible server, or another answer schema, is another question: asked again,
    not served from the cache. The same server and schema are served from it."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    work = jobs(3)
    prompt = Prompt.load("v1")
    a = cache_key(work[0], cfg(server), prompt)
    assert a == cache_key(work[0], cfg(server), prompt)
    assert a != cache_key(work[0], cfg(server).model_copy(update={"base_url": "http://127.0.0.1:1/v1"}), prompt)
    LLMCaptioner(cfg(server), tmp_path).caption(work)
    assert len(server.requests) == 3
    again = LLMCaptioner(cfg(server), tmp_path)
    again.caption(work)
    assert len(server.requests) == 3 and again.summary.cached == 3
    other = FakeOpenAI(api_key=KEY).start()
    try:
        moved = LLMCaptioner(cfg(other), tmp_path)
        moved.caption(work)
        assert len(other.requests) == 3 and moved.summary.cached == 0
    finally:
        other.stop()
    schema = cache_mod.answer_json_schema()
    monkeypatch.setattr(cache_mod, "answer_json_schema", lambda: {**schema, "description": "a new field"})
    assert cache_key(work[0], cfg(server), prompt) != a


def test_batch_input_files_are_split_at_the_limits_and_resumed_per_part(server, monkeypatch, tmp_path):
    """7 requests with 3 per input file: 3 batches. A run stopped right after its first part was
    submitted picks that part up again (polled, not submitted twice) and submits the other two: every
    request reaches the server once."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    work = jobs(7)
    c = cfg(server, batch=True, batch_max_requests=3)
    written = []
    real_write = batch_mod.write_json

    def stop_after_first(path, obj):
        real_write(path, obj)
        written.append(path)
        raise KeyboardInterrupt  # the run is stopped right after recording its first part

    monkeypatch.setattr(batch_mod, "write_json", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        LLMCaptioner(c, tmp_path).caption(work)
    assert len(server.batches) == 1 and len(server.requests) == 3 and len(written) == 1
    monkeypatch.setattr(batch_mod, "write_json", real_write)
    resumed = LLMCaptioner(c, tmp_path)
    rows = resumed.caption(work)
    assert len(rows) == 7 and all(r["status"] == "ok" for r in rows)
    assert len(server.batches) == 3 and len(server.requests) == 7  # each request sent once
    assert sorted({r["pair_id"] for r in server.requests}) == sorted(j.pair.pair_id for j in work)
    assert not list((tmp_path / "captions").glob("batch-*.json"))
    # and by size: a limit of two lines' worth of bytes gives parts of at most two requests
    lines = [(str(k), b"x" * 100) for k in range(5)]
    assert [len(p) for p in batch_mod.split_parts(lines, 50_000, 2 * 101)] == [2, 2, 1]
    assert batch_mod.split_parts([("big", b"x" * 5000)], 10, 1024) == []
