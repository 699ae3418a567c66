"""The edit judge (`evaluate --judge openai`) against the loopback fake OpenAI server: good answers,
garbage, refusals, rate limits, the cache and the budget. The server is tests/fake_openai.py's, taught
the judge's question (its schema) and a judge's eye: an edit that changed nothing follows no instruction."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
from fake_openai import FakeOpenAI

from curation.captions.limits import worst_case_cost
from curation.config import CaptionConfig
from training.judge import (
    CRITERIA,
    JUDGE_PROMPTS,
    EditJudge,
    JudgeJob,
    build_request,
    jpeg,
    judgement_json_schema,
    parse_judgement,
    row_columns,
)

KEY = "sk-judge-test-0000"


def _images(body: dict) -> list[np.ndarray]:
    user = next(m for m in body["messages"] if m["role"] == "user")["content"]
    out = []
    for c in user:
        if c.get("type") == "image_url":
            raw = base64.b64decode(c["image_url"]["url"].split(",", 1)[1])
            out.append(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR))
    return out


class FakeJudge(FakeOpenAI):
    """The fake server asked the judge's question: checks the request a strict provider would, answers
    like a judge that sees whether the edit changed the picture (instruction followed when it did),
    and adds `out_of_range` (scores past 5) to the scripted faults."""

    def check(self, body):
        try:
            if body["response_format"]["type"] != "json_schema" or not body["response_format"]["json_schema"]["strict"]:
                return "no strict json_schema response_format"
            schema = body["response_format"]["json_schema"]["schema"]
            if set(schema["required"]) != set(CRITERIA) or schema.get("additionalProperties") is not False:
                return "schema is not the judgement's"
            for c in CRITERIA:
                if set(schema["properties"][c]["required"]) != {"score", "reason"}:
                    return f"criterion {c} lacks score and reason"
            images = _images(body)
            if len(images) != 2 or any(i is None for i in images):
                return f"{len(images)} decodable images instead of 2"
            user = next(m for m in body["messages"] if m["role"] == "user")["content"]
            text = " ".join(c["text"] for c in user if c.get("type") == "text")
            if "pair: " not in text or "instruction" not in text:
                return "no pair or instruction in the text"
        except (KeyError, StopIteration, TypeError, ValueError) as e:
            return f"malformed request: {e}"
        return None

    def answer(self, body, behaviour, pair_id):
        if behaviour not in ("ok", "out_of_range"):
            return super().answer(body, behaviour, pair_id)  # 429, 500, refusal, empty, malformed, ...
        before, edit = _images(body)
        changed = float(np.abs(before.astype(int) - edit.astype(int)).mean()) > 2.0
        scores = {
            "instruction_following": (4, "the person moves as asked") if changed else (0, "nothing changed"),
            "identity_kept": (5, "the same person"),
            "background_kept": (4, "the scene is unchanged") if changed else (5, "identical"),
        }
        if behaviour == "out_of_range":
            scores["identity_kept"] = (9, "very much the same")
        content = json.dumps({k: {"score": s, "reason": r} for k, (s, r) in scores.items()})
        return (
            200,
            {
                "id": "chatcmpl-judge",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 300, "completion_tokens": 60, "total_tokens": 360},
            },
            {},
        )


@pytest.fixture()
def server():
    s = FakeJudge(api_key=KEY).start()
    yield s
    s.stop()


def judge_for(server, tmp_path, **kw) -> EditJudge:
    cfg = CaptionConfig(
        captioner="openai", model="judge-1", base_url=server.base_url, requests_per_minute=6000,
        max_retries=2, usd_per_1m_input_tokens=2.5, usd_per_1m_output_tokens=10.0, **kw,
    )  # fmt: skip
    return EditJudge(cfg, tmp_path / "judge-cache", api_key=KEY).setup()


def jobs(n: int, changed: bool = True) -> list[JudgeJob]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        before = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (0, 0), 2)
        edit = np.roll(before, 8, axis=0) if changed else before
        out.append(JudgeJob(f"pair{i:02d}", "model", "raise your right arm", jpeg(before), jpeg(edit)))
    return out


def test_good_answers_are_scores_with_reasons_and_the_raw_answer(server, tmp_path):
    judge = judge_for(server, tmp_path)
    moved, still = jobs(1)[0], jobs(1, changed=False)[0]
    still.pair = "still"
    recs = judge.judge([moved, still])
    assert not server.invalid, server.invalid
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert recs[0]["instruction_following"] == 4 and recs[1]["instruction_following"] == 0
    assert recs[0]["identity_kept"] == 5 and recs[0]["identity_kept_reason"] == "the same person"
    assert json.loads(recs[0]["raw"])["instruction_following"]["score"] == 4  # kept as it came
    assert recs[0]["judge"] == f"judge-1@{JUDGE_PROMPTS['v1'].tagged_version}"
    assert recs[0]["cost_usd"] == pytest.approx((300 * 2.5 + 60 * 10.0) / 1e6)
    cols = row_columns(recs[0])
    assert cols["judge_instruction"] == 4.0 and cols["judge_status"] == "ok" and cols["judge_raw"] == recs[0]["raw"]
    # the request: a strict schema, both images, the instruction quoted as data
    schema = judgement_json_schema()
    assert schema["additionalProperties"] is False and set(schema["required"]) == set(CRITERIA)
    # a second run asks nothing: every answer comes from the cache
    again = judge_for(server, tmp_path).judge([moved, still])
    assert len(server.chat_requests()) == 2 and all(r["cached"] for r in again)
    assert [r["instruction_following"] for r in again] == [4, 0]


def test_garbage_and_refusals_are_failures_with_their_reason_and_raw_answer(server, tmp_path):
    cases = {"malformed": "invalid_json", "bad_schema": "invalid_answer", "out_of_range": "invalid_answer"}
    cases |= {"refusal": "refusal", "empty": "empty_answer", "truncated": "truncated_answer"}
    js = jobs(len(cases) + 1)
    for job, behaviour in zip(js, [*cases, "429"], strict=True):
        server.script[job.pair] = [behaviour] if behaviour != "429" else ["429", "ok"]
    judge = judge_for(server, tmp_path, max_tokens=100)
    recs = judge.judge(js)
    assert not server.invalid, server.invalid
    for rec, (behaviour, reason) in zip(recs, cases.items(), strict=False):
        assert (rec["status"], rec["reason"]) == ("failed", reason), behaviour
        assert all(rec[c] is None for c in CRITERIA)
    by = {r["pair"]: r for r in recs}
    assert by[js[0].pair]["raw"].startswith('{"instruction": "raise your arm"')  # the garbage, kept
    assert by[js[3].pair]["raw"] == "I can't help with that."  # the refusal's words, kept
    assert recs[-1]["status"] == "ok"  # rate-limited once, retried by the client (Retry-After honoured)
    assert judge.report()["failed"] == len(cases) and judge.report()["ok"] == 1
    # answers that say something about the request are cached: a re-run does not pay for them again
    n = len(server.chat_requests())
    judge_for(server, tmp_path, max_tokens=100).judge(js)
    assert len(server.chat_requests()) == n


def test_the_budget_stops_requests_and_a_rerun_goes_on(server, tmp_path):
    js = jobs(5)
    judge = judge_for(server, tmp_path, max_requests=2, max_concurrency=1)
    recs = judge.judge(js)
    assert len(server.chat_requests()) == 2
    assert [r["status"] for r in recs] == ["ok", "ok", "skipped_budget", "skipped_budget", "skipped_budget"]
    assert judge.report() | {"judge": None} == {
        "judge": None, "requests": 2, "cached": 0, "ok": 2, "failed": 0, "skipped_budget": 3,
        "cost_usd": pytest.approx(2 * (300 * 2.5 + 60 * 10.0) / 1e6),
    }  # fmt: skip
    assert row_columns(recs[2])["judge_instruction"] is None
    # a dollar budget is never crossed: each request reserves its worst case before it is sent and
    # settles at what the answer cost (0.00135 $), so room for one worst case and one answer allows two
    probe = judge_for(server, tmp_path)
    worst = worst_case_cost(probe.cfg, build_request(js[2], probe.cfg, probe.prompt))
    answer = (300 * 2.5 + 60 * 10.0) / 1e6
    judge = judge_for(server, tmp_path, max_cost_usd=worst + 1.5 * answer, max_concurrency=1)
    recs = judge.judge(js)
    assert [r["cached"] for r in recs[:2]] == [True, True]  # the first run's answers cost nothing now
    assert [r["status"] for r in recs[2:]] == ["ok", "ok", "skipped_budget"]
    assert len(server.chat_requests()) == 4 and judge.budget.cost == pytest.approx(2 * answer)
    assert judge.budget.cost <= worst + 1.5 * answer


def test_the_judge_needs_a_model_and_a_key(tmp_path, monkeypatch):
    from curation.captions.llm import CaptionSetupError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(CaptionSetupError, match="--model"):
        EditJudge(CaptionConfig(), tmp_path).setup()
    with pytest.raises(CaptionSetupError, match="no API key"):
        EditJudge(CaptionConfig(captioner="openai", model="m"), tmp_path).setup()
    with pytest.raises(CaptionSetupError, match="unknown judge prompt version"):
        EditJudge(CaptionConfig(captioner="openai", model="m"), tmp_path, api_key=KEY, prompt_version="v9").setup()


def test_a_judgement_must_be_the_schema():
    ok = {c: {"score": 3, "reason": "fine"} for c in CRITERIA}

    def body(content):
        return {"choices": [{"message": {"content": content}, "finish_reason": "stop"}], "usage": {}}

    assert parse_judgement(body(json.dumps(ok)))[0] == "ok"
    for bad in (ok | {"extra": 1}, {**ok, "identity_kept": {"score": 3, "reason": " "}}, {"identity_kept": 3}):
        assert parse_judgement(body(json.dumps(bad)))[:2] == ("failed", "invalid_answer")
    assert parse_judgement({"choices": []})[:2] == ("failed", "empty_answer")
