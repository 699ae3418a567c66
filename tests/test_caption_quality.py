"""Captions measured as a set (stats.json's caption_quality, the report, the card): empty and sentinel
captions, exact and near duplicates across the dataset, too short or long, vocabulary, and the share the
keypoints contradict, per caption version; a model that answers one sentence for every pair shows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from fake_openai import FakeOpenAI
from posekit import RIGHT_ARM_UP, make_pose

from curation.captions.quality import caption_quality, text_figures
from curation.config import CaptionConfig

KEY = "sk-test-QUALITY-0123456789"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def sample(pid: str, caption: str, before=None, after=None, label: str | None = None, captioner="offline") -> dict:
    b, a = before or make_pose(), after or make_pose(RIGHT_ARM_UP)
    flat = lambda p: np.asarray(p.keypoints, float).ravel().tolist()  # noqa: E731
    return {
        "pair_id": pid, "label": label, "caption": caption, "caption_captioner": captioner,
        "frame_width": 640, "frame_height": 480,
        "before_keypoints": flat(b), "before_box": b.box, "before_score": b.score,
        "after_keypoints": flat(a), "after_box": a.box, "after_score": a.score,
    }  # fmt: skip


def row(pid: str, version: str, text: str | None, changes: list[dict], status="ok", reason=None, k=0) -> dict:
    return {
        "pair_id": pid, "caption_version": version, "status": status, "reason": reason, "text": text,
        "captioner": "openai", "changes": json.dumps(changes), "created_at": T0 + timedelta(seconds=k),
    }  # fmt: skip


RIGHT_UP = [{"side": "right", "part": "arm", "direction": "up"}]
LEFT_UP = [{"side": "left", "part": "arm", "direction": "up"}]


def test_figures_count_empty_duplicate_near_duplicate_and_contradicted_captions():
    offline = pd.DataFrame(
        [
            sample("p1", "tai chi: raise your right arm above your head", label="tai chi"),
            sample("p2", "tai chi: raise your right arm above your head", label="tai chi"),
            sample("p3", "Tai chi, raise your RIGHT arm above your head.", label="tai chi"),  # a near duplicate
            sample("p4", "tai chi: change your pose", label="tai chi"),  # says nothing: empty
            sample("p5", "tai chi: raise your left arm", label="tai chi"),  # the keypoints: the right one rose
            sample("p6", "raise", label=None),  # too short
        ]
    )
    version = "same-vlm@v1-0123abcd"
    rows = pd.DataFrame(
        [row(p, version, "raise your right arm", RIGHT_UP, k=i) for i, p in enumerate(["p1", "p2", "p3", "p4"])]
        + [row("p5", version, "raise your right arm", LEFT_UP, k=5)]  # left and right mixed up
        + [row("p6", version, None, [], status="failed", reason="empty", k=6)]
        + [row("p1", "other@v1-ffffffff", "lift the right hand", RIGHT_UP, k=7)]
    )
    rejects = pd.DataFrame(
        [
            {"reason": "caption_failed", "level": "candidate", "detail": "abstained: the body is not upright ..."},
            {"reason": "caption_failed", "level": "candidate", "detail": "abstained: no torso axis"},
            {"reason": "caption_failed", "level": "clip", "detail": "no pair got a caption"},
        ]
    )
    q = caption_quality(offline, None, rows, rejects)
    off = q["versions"]["offline"]
    assert off["pairs"] == 6 and off["missing"] == 0
    assert off["empty"] == 1 and off["exact_duplicates"] == 1 and off["near_duplicates"] == 1
    assert off["too_short"] == 1 and off["too_long"] == 0 and off["abstained"] == 2
    assert off["top"][0] == {"text": "tai chi: raise your right arm above your head", "pairs": 2}
    assert off["agreement"]["contradict"] == 1 and off["agreement"]["contradicted_by"]["side"] == 1
    assert off["agreement"]["agree"] == 3  # p1, p2, p3; "change your pose" and "raise" claim nothing
    llm = q["versions"][version]
    assert llm["pairs"] == 5 and llm["missing"] == 1 and llm["failed"] == {"empty": 1}
    assert llm["distinct"] == 1 and llm["top_share"] == 1.0 and llm["exact_duplicates"] == 4
    assert llm["agreement"]["contradict"] == 1 and llm["agreement"]["contradicted_by"] == {
        "side": 1,
        "direction": 0,
        "limb": 0,
    }
    assert llm["vocabulary"] == 4  # raise your right arm
    assert q["versions"]["other@v1-ffffffff"]["pairs"] == 1
    assert any(w.startswith(f"{version}: one caption for 100% of its 5 pairs") for w in q["warnings"]), q["warnings"]
    assert any("contradicted by the keypoints" in w for w in q["warnings"])


def test_text_figures_of_nothing_and_of_long_captions():
    assert text_figures([])["pairs"] == 0 and text_figures([])["top_share"] == 0.0
    f = text_figures(["", None, "n/a", " ".join(["word"] * 41)])
    assert f["empty"] == 3 and f["too_long"] == 1 and f["too_short"] == 1  # "" (None is no caption at all)


@pytest.mark.slow
def test_a_model_that_says_one_sentence_for_every_pair_shows_in_stats_report_and_card(built, monkeypatch):
    """Against the loopback server answering the same instruction for every pair: the build's figures,
    its report and its card say so (and the pairs it contradicts are counted as the rows say)."""
    from curation.captions.recaption import publish, read_caption_rows, recaption
    from curation.report.page import write_report

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = FakeOpenAI(api_key=KEY).start()
    try:
        server.instruction = "raise your right arm"
        samples = pd.read_parquet(built / "samples.parquet")
        server.script[samples.pair_id.iloc[0]] = ["empty"]
        base = {"captioner": "openai", "model": "parrot-vlm", "base_url": server.base_url, "max_retries": 0}
        recaption(built, CaptionConfig(**base, requests_per_minute=6000))
    finally:
        server.stop()
    publish(built, caption_version="parrot-vlm@v1")
    stats = json.loads((built / "stats.json").read_text())
    q = stats["caption_quality"]
    (version,) = [v for v in q["versions"] if v.startswith("parrot-vlm@v1-")]
    f = q["versions"][version]
    n = len(samples)
    assert f["pairs"] == n - 1 and f["failed"] == {"empty_answer": 1} and f["missing"] == 1
    assert f["distinct"] == 1 and f["top_share"] == 1.0 and f["exact_duplicates"] == n - 2
    assert f["top"] == [{"text": "raise your right arm", "pairs": n - 1}]
    rows = read_caption_rows(built)
    assert f["agreement"]["contradict"] == int((rows.pose_agreement == "contradict").sum())
    assert q["published"]["pairs"] == n and q["published"]["by_captioner"].get("openai") == n - 1
    assert q["versions"]["offline"]["pairs"] == n
    if n - 1 >= 4:
        assert any(w.startswith(f"{version}: one caption for 100%") for w in q["warnings"]), q["warnings"]
    write_report(str(built))
    page = (built / "report" / "index.html").read_text()
    assert 'id="caption-quality"' in page and version in page and "raise your right arm (100%)" in page
    card = (built / "README.md").read_text()  # rewritten by the publish, with its generation
    assert "## Captions" in card and f"`{version}`" in card and "raise your right arm (100%)" in card


@pytest.mark.slow
def test_caption_require_agreement_keeps_the_offline_caption_where_the_keypoints_disagree(
    real_build, built, monkeypatch
):
    """caption.require_agreement: a build's LLM captions are published only where the keypoints agree
    (a model that mixes up left and right keeps the offline caption there); the figures count the rest."""
    from curation.build import build
    from curation.captions.recaption import read_caption_rows

    cfg0, _, _ = real_build
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = FakeOpenAI(api_key=KEY).start()
    server.default = "mirrored"
    try:
        caption = CaptionConfig(
            captioner="openai", model="mirror-vlm", base_url=server.base_url, max_retries=0,
            requests_per_minute=6000, require_agreement=True,
        )  # fmt: skip
        stats = build(cfg0.model_copy(update={"output": str(built), "caption": caption}))
    finally:
        server.stop()
    assert json.loads((built / "captions" / "published.json").read_text())["agreement"] == "require"
    rows = read_caption_rows(built)
    agree = set(rows[rows.pose_agreement == "agree"].pair_id)
    s = pd.read_parquet(built / "samples.parquet")
    assert (s[~s.pair_id.isin(agree)].caption_captioner == "offline").all()
    assert (s[s.pair_id.isin(agree)].caption_captioner == "openai").all()
    (version,) = [v for v in stats["caption_quality"]["versions"] if v.startswith("mirror-vlm@")]
    f = stats["caption_quality"]["versions"][version]
    assert f["agreement"]["contradict"] == (rows.pose_agreement == "contradict").sum() >= 1
    assert sum(f["agreement"]["contradicted_by"].values()) >= f["agreement"]["contradict"]  # each says how
    assert stats["caption_quality"]["published"]["by_captioner"].get("openai", 0) == len(agree & set(s.pair_id))
