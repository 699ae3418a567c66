"""Local OpenAI-compatible VLM servers (docs/captions.md, "Local VLM servers"): each documented caption
profile (vLLM, Ollama, SGLang), read from the doc itself and pointed at the loopback server, sends what
such a server needs (base_url with /v1, the key from its own variable, both frames in one user message
as JPEG data URLs, a strict json_schema answer format, max_completion_tokens); and the mistakes the doc's
table names show the way it says."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from fake_openai import FakeOpenAI
from posekit import RIGHT_ARM_UP, make_pose

from curation.captions.llm import CaptionJob, CaptionSetupError, LLMCaptioner
from curation.config import CaptionConfig
from schemas.records import Clip, FramePair, MotionFigures, make_pair_id

DOC = Path(__file__).resolve().parent.parent / "docs" / "captions.md"
PROFILE = re.compile(r"<!-- vlm-profile: (\w+) -->\s*```yaml\n(.*?)```", re.S)
KEY = "local-0123456789abcdef"
REQUIRED = {"instruction", "before", "after", "visible_change", "changes"}


def profiles() -> dict[str, dict]:
    return {name: yaml.safe_load(block)["caption"] for name, block in PROFILE.findall(DOC.read_text("utf-8"))}


def documented(name: str, server: FakeOpenAI, **kw) -> CaptionConfig:
    """The documented profile with its host and port replaced by the loopback server's (the path kept)."""
    caption = dict(profiles()[name])
    caption["base_url"] = re.sub(r"^http://[^/]+", f"http://127.0.0.1:{server.port}", caption["base_url"])
    return CaptionConfig(**{**caption, "timeout_s": 5.0, "max_retries": 0, **kw})


def job() -> CaptionJob:
    clip = Clip(source="folder", clip_id="clip0", uri="/x/clip0.mp4")
    figures = MotionFigures(
        pose_change=0.5,
        max_joint_change=1.2,
        translation=0.0,
        body_size_px=100,
        camera_motion=0.0,
        scene_similarity=1.0,
        keypoints_compared=17,
    )
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
        before_pose=make_pose(),
        after_pose=make_pose(RIGHT_ARM_UP),
        motion=figures,
    )
    rng = np.random.default_rng(0)
    jpg = [cv2.imencode(".jpg", rng.integers(0, 255, (96, 128, 3), np.uint8))[1].tobytes() for _ in range(2)]
    return CaptionJob(pair, jpg[0], jpg[1])


@pytest.fixture()
def keyed():
    s = FakeOpenAI(api_key=KEY).start()  # vLLM started with --api-key
    yield s
    s.stop()


@pytest.fixture()
def keyless():
    s = FakeOpenAI(api_key=None).start()  # Ollama, SGLang, vLLM without --api-key: any key
    yield s
    s.stop()


def caption(cfg: CaptionConfig, tmp_path: Path) -> dict:
    rows = LLMCaptioner(cfg, tmp_path).setup().caption([job()])
    assert len(rows) == 1
    return rows[0]


def test_the_doc_has_the_three_profiles():
    found = profiles()
    assert set(found) == {"vllm", "ollama", "sglang"}
    for name, caption in found.items():
        assert caption["captioner"] == "openai" and caption["model"], name
        assert caption["base_url"].startswith("http://127.0.0.1:") and caption["base_url"].endswith("/v1"), name
        assert caption["api_key_env"] == "LOCAL_VLM_KEY", name
        assert "batch" not in caption or caption["batch"] is False
        CaptionConfig(**caption)  # every key is a real caption key


@pytest.mark.parametrize("name", ["vllm", "ollama", "sglang"])
def test_a_documented_profile_sends_what_the_server_needs(name, keyed, keyless, monkeypatch, tmp_path):
    server = keyed if name == "vllm" else keyless
    monkeypatch.setenv("LOCAL_VLM_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-leave")  # another variable: never sent
    server.image_limit = 2  # vLLM's --limit-mm-per-prompt '{"image": 2}'
    cfg = documented(name, server)
    row = caption(cfg, tmp_path)
    assert server.invalid == [] and len(server.requests) == 1
    assert row["status"] == "ok" and row["model"] == profiles()[name]["model"]
    body = server.requests[0]["body"]
    assert body["model"] == profiles()[name]["model"]
    users = [m for m in body["messages"] if m["role"] == "user"]
    assert len(users) == 1  # both frames in one message, with the text
    images = [c for c in users[0]["content"] if c["type"] == "image_url"]
    assert len(images) == 2 and all(c["image_url"]["url"].startswith("data:image/jpeg;base64,") for c in images)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert set(fmt["json_schema"]["schema"]["required"]) == REQUIRED
    # vLLM and SGLang read max_completion_tokens; Ollama's /v1 reads only max_tokens (the doc says so)
    assert body["max_completion_tokens"] == cfg.max_tokens and "max_tokens" not in body


def test_a_base_url_without_v1_is_a_404_row_per_pair(keyless, monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_VLM_KEY", KEY)
    cfg = documented("ollama", keyless)
    cfg = cfg.model_copy(update={"base_url": cfg.base_url.removesuffix("/v1")})
    row = caption(cfg, tmp_path)
    assert row["status"] == "failed" and row["reason"] == "http_404" and keyless.requests == []


def test_an_unset_key_stops_the_run_before_any_request(keyless, monkeypatch, tmp_path):
    monkeypatch.delenv("LOCAL_VLM_KEY", raising=False)
    with pytest.raises(CaptionSetupError, match=r"no API key: set \$LOCAL_VLM_KEY"):
        LLMCaptioner(documented("sglang", keyless), tmp_path).setup()
    assert keyless.requests == []


def test_another_key_than_the_servers_is_a_401_row(keyed, monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_VLM_KEY", "not-the-servers-key")
    row = caption(documented("vllm", keyed), tmp_path)
    assert row["status"] == "failed" and row["reason"] == "http_401"


def test_a_server_limited_to_one_image_refuses_each_pair(keyed, monkeypatch, tmp_path):
    """A server whose per-prompt image limit is 1 (vLLM's old default) refuses every request: a failed
    row with the status, not a crashed run; the row is not cached, so a fixed server is asked again."""
    monkeypatch.setenv("LOCAL_VLM_KEY", KEY)
    keyed.image_limit = 1
    cfg = documented("vllm", keyed)
    row = caption(cfg, tmp_path)
    assert row["status"] == "failed" and row["reason"] == "http_400"
    assert keyed.invalid == ["at most 1 image(s) may be provided in one request"]
    keyed.image_limit = 2
    again = caption(cfg, tmp_path)
    assert again["status"] == "ok" and len(keyed.requests) == 2
