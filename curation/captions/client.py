"""One Chat Completions request and its answer: the request body (system text, user text, both frames
as JPEG data URLs, a strict JSON-schema answer format), the client's settings, and the answer parsed
into a status, a reason and the validated answer (kept raw too). Captions and the edit judge alike."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import cv2
import numpy as np
import openai
from pydantic import ValidationError

from schemas.captions import CaptionAnswer, CaptionStatus, answer_json_schema
from schemas.shard import decode_jpeg, encode_jpeg

from ..config import CaptionConfig
from .prompts import CaptionJob, Prompt, grounding

# failures that asking again would repeat: cached like answers, so a re-run does not pay for them again
DETERMINISTIC_FAILURES = {"refusal", "empty_answer", "invalid_json", "invalid_answer", "truncated_answer"}
OPENAI_URL = "https://api.openai.com/v1"


def server_url(cfg: CaptionConfig) -> str:
    """The server the requests go to: caption.base_url, else $OPENAI_BASE_URL, else OpenAI."""
    return (cfg.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")


def client_args(cfg: CaptionConfig, api_key: str) -> dict[str, Any]:
    args: dict[str, Any] = {"api_key": api_key, "timeout": cfg.timeout_s, "max_retries": cfg.max_retries}
    if cfg.base_url or os.environ.get("OPENAI_BASE_URL"):
        args["base_url"] = server_url(cfg)
    return args


def image_url(jpg: bytes, max_side: int) -> str:
    img = decode_jpeg(jpg)
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        jpg = encode_jpeg(np.ascontiguousarray(img), 90)
    return "data:image/jpeg;base64," + base64.b64encode(jpg).decode()


def build_request(job: CaptionJob, cfg: CaptionConfig, prompt: Prompt) -> dict[str, Any]:
    """The Chat Completions request body (the same for live calls and Batch API lines)."""
    text = prompt.user.format(grounding=grounding(job.pair))
    return chat_request(cfg, prompt, text, (job.before_jpg, job.after_jpg), "caption_answer", answer_json_schema())


def chat_request(
    cfg: CaptionConfig, prompt: Prompt, text: str, jpgs: tuple[bytes, ...], name: str, schema: dict[str, Any]
) -> dict[str, Any]:
    """A Chat Completions body: the prompt's system text, the user text with the images as data URLs,
    and a strict JSON-schema answer format (captions and the edit judge alike)."""
    images = [
        {"type": "image_url", "image_url": {"url": image_url(jpg, cfg.image_max_side), "detail": cfg.image_detail}}
        for jpg in jpgs
    ]
    return {
        "model": cfg.model,
        "messages": [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": [{"type": "text", "text": text}, *images]},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": schema},
        },
        "max_completion_tokens": cfg.max_tokens,
        "temperature": 0,
    }


def parse_completion(body: dict[str, Any]) -> tuple[str, str | None, CaptionAnswer | None, str | None, int, int]:
    """(status, reason, answer, raw content, tokens in, tokens out) from a chat.completion body."""
    usage = body.get("usage") or {}
    tin, tout = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    choices = body.get("choices") or []
    if not choices:
        return CaptionStatus.FAILED, "empty_answer", None, None, tin, tout
    msg = choices[0].get("message") or {}
    raw = msg.get("content")
    if msg.get("refusal"):
        return CaptionStatus.FAILED, "refusal", None, str(msg["refusal"]), tin, tout
    if choices[0].get("finish_reason") == "length":
        return CaptionStatus.FAILED, "truncated_answer", None, raw, tin, tout
    if not raw or not str(raw).strip():
        return CaptionStatus.FAILED, "empty_answer", None, raw, tin, tout
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return CaptionStatus.FAILED, "invalid_json", None, raw, tin, tout
    try:
        answer = CaptionAnswer.model_validate(data)
    except ValidationError:
        return CaptionStatus.FAILED, "invalid_answer", None, raw, tin, tout
    status = CaptionStatus.OK if answer.visible_change else CaptionStatus.NOT_VISIBLE
    return status, None, answer, raw, tin, tout


def failure_reason(e: Exception) -> str:
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection_error"
    if isinstance(e, openai.RateLimitError):
        return "rate_limited"
    if isinstance(e, openai.APIStatusError):
        return f"http_{e.status_code}"
    return type(e).__name__
