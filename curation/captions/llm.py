"""Difference captions from a multimodal LLM through the `openai` client (OpenAI, vLLM, Ollama, ...).

Each request sends the before and after frames as JPEG data URLs with the grounding the pipeline
already has (action label or narration, measured pose change, the offline instruction), asks for a
strict JSON schema (schemas.captions.CaptionAnswer), validates the answer and keeps it raw.

Safe under a provider's limits: concurrency cap, requests- and tokens-per-minute limiters, the
client's retries (which honour Retry-After) and timeouts, and a budget (requests or dollars) that stops
cleanly. Every answer is cached on disk the moment it arrives, keyed by (pair, image content, model,
prompt text, image settings, answer length, grounding text): a re-run never pays twice, also after a
crash, and any change to what is asked is asked again. Large runs can go through the Batch API instead
(`caption.batch`), resumable from its state file. One captioner is one run: its budget and its rate
limits hold over every request it makes, however many units or callers feed it (see stage.py).

The caption version is `<model>@<prompt version>-<prompt sha256[:8]>`: editing a prompt file makes a new
version. Each answer's structured changes are checked against the keypoints (agreement.py).

The API key is never logged, stored or put into an error message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openai
from aiolimiter import AsyncLimiter
from pydantic import ValidationError

from schemas.captions import CAPTIONS_DIR, CaptionAnswer, CaptionStatus, answer_json_schema
from schemas.records import FramePair, caption_version

from ..config import CaptionConfig
from ..store import write_json
from .agreement import check_caption
from .offline import describe

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).parent / "prompts"
# failures that say something about the request itself: cached, so a re-run does not pay for them again
DETERMINISTIC_FAILURES = {"refusal", "empty_answer", "invalid_json", "invalid_answer", "truncated_answer"}


class CaptionSetupError(RuntimeError):
    """Captioning cannot start (no key, no model, unknown prompt version): a clear one-line error."""


@dataclass
class CaptionJob:
    pair: FramePair
    before_jpg: bytes
    after_jpg: bytes


@dataclass(frozen=True)
class Prompt:
    version: str
    system: str
    user: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.system}\0{self.user}".encode()).hexdigest()

    @property
    def tagged_version(self) -> str:
        """'v1-3fa2b1c9': the prompt's name and its text's hash (an edited file is a new version)."""
        return f"{self.version}-{self.sha256[:8]}"

    @classmethod
    def load(cls, version: str) -> Prompt:
        path = PROMPTS_DIR / f"{version}.md"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.md")))
            raise CaptionSetupError(f"unknown prompt version {version!r}; known: {known}")
        text = path.read_text()
        parts = text.split("# user")
        return cls(version=version, system=parts[0].replace("# system", "", 1).strip(), user=parts[1].strip())


def grounding(pair: FramePair) -> str:
    """What the pipeline already knows, as text for the model (and for the server to check)."""
    lines = [f"pair: {pair.pair_id}"]
    if pair.clip.label:
        kind = "narration" if pair.clip.source == "epic" else "action label"
        lines.append(f"{kind}: {pair.clip.label}")
    m = pair.motion
    lines.append(f"time between frames: {pair.after_time_s - pair.before_time_s:.2f} s")
    if m.pose_change is not None:
        lines.append(
            f"measured pose change: {m.pose_change:.2f} torso lengths (largest joint {m.max_joint_change:.2f}, "
            f"body moved {m.translation:.2f})"
        )
    if pair.before_pose is not None and pair.after_pose is not None:
        guess = describe(pair.before_pose, pair.after_pose)  # None: no body-relative description
        lines.append(f"pose-based guess: {guess if guess is not None else 'none (the pose is hard to describe)'}")
    return "\n".join(lines)


def image_url(jpg: bytes, max_side: int) -> str:
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("image does not decode")
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        jpg = buf.tobytes()
    return "data:image/jpeg;base64," + base64.b64encode(jpg).decode()


def current_version(cfg: CaptionConfig) -> str:
    """The caption version a run with these settings makes (reads the prompt file)."""
    return caption_version(cfg.model or "?", Prompt.load(cfg.prompt_version).tagged_version)


def cache_key(job: CaptionJob, cfg: CaptionConfig, prompt: Prompt) -> str:
    """Everything that shapes the answer: pair, both images, model, the prompt's text, image settings,
    answer length and the grounding text. Limits, budgets and timeouts are not in it."""
    h = hashlib.sha256()
    for part in (
        job.pair.pair_id,
        hashlib.sha256(job.before_jpg).hexdigest(),
        hashlib.sha256(job.after_jpg).hexdigest(),
        cfg.model or "",
        prompt.sha256,
        cfg.image_detail,
        str(cfg.image_max_side),
        str(cfg.max_tokens),
        grounding(job.pair),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


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


def estimated_tokens(cfg: CaptionConfig) -> int:
    """A pessimistic token estimate for the tokens-per-minute limiter."""
    per_image = 85 if cfg.image_detail == "low" else 85 + 170 * 4
    return 2 * per_image + 400 + cfg.max_tokens


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


class CaptionCache:
    """One JSON file per request key, written atomically as soon as the answer arrives."""

    def __init__(self, directory: Path):
        self.dir = directory

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        write_json(self._path(key), record)


class Budget:
    def __init__(self, max_requests: int | None, max_cost_usd: float | None):
        self.max_requests = max_requests
        self.max_cost = max_cost_usd
        self.requests = 0
        self.cost = 0.0

    def exhausted(self) -> bool:
        return (self.max_requests is not None and self.requests >= self.max_requests) or (
            self.max_cost is not None and self.cost >= self.max_cost
        )


@dataclass
class RunSummary:
    requests: int = 0  # requests paid for in this run (cache hits are free)
    cached: int = 0
    ok: int = 0
    failed: int = 0
    not_visible: int = 0
    skipped_budget: int = 0
    cost_usd: float = 0.0


class LLMCaptioner:
    """Model-backed caption stage. `setup()` makes the client; `caption(jobs)` returns one row per job
    attempted (schemas.captions.CAPTION_ROWS_SCHEMA), cached or paid for."""

    name = "openai"

    def __init__(self, cfg: CaptionConfig, out: Path, api_key: str | None = None, run_id: str | None = None):
        self.cfg = cfg
        self.cache = CaptionCache(Path(out) / CAPTIONS_DIR / "cache")
        self.state_dir = Path(out) / CAPTIONS_DIR
        self._api_key = api_key
        self.run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self.prompt: Prompt | None = None
        self.version = caption_version(cfg.model or "?", cfg.prompt_version)  # tagged with the prompt's hash in setup
        self.summary = RunSummary()
        self.budget = Budget(cfg.max_requests, cfg.max_cost_usd)  # one per run: every request counts against it
        self._limits: tuple[AsyncLimiter, AsyncLimiter, asyncio.Semaphore] | None = None
        self.min_conf = 0.5

    # ------------------------------------------------------------------ set-up

    def _key(self) -> str:
        key = self._api_key or os.environ.get(self.cfg.api_key_env)
        if not key:
            raise CaptionSetupError(f"no API key: set ${self.cfg.api_key_env} (or a Prefect Secret in flows)")
        return key

    def _client_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "api_key": self._key(),
            "timeout": self.cfg.timeout_s,
            "max_retries": self.cfg.max_retries,
        }
        base = self.cfg.base_url or os.environ.get("OPENAI_BASE_URL")
        if base:
            args["base_url"] = base
        return args

    def setup(self) -> LLMCaptioner:
        if not self.cfg.model:
            raise CaptionSetupError("caption.model is required (--model)")
        self.prompt = Prompt.load(self.cfg.prompt_version)
        self.version = caption_version(self.cfg.model, self.prompt.tagged_version)
        self._client_args()  # fails now, not mid-run, when there is no key
        return self

    def scrub(self, text: str) -> str:
        key = self._api_key or os.environ.get(self.cfg.api_key_env) or ""
        return text.replace(key, "***") if len(key) >= 4 else text

    # ------------------------------------------------------------------ rows

    def _row(self, job: CaptionJob, key: str, rec: dict[str, Any], cached: bool) -> dict[str, Any]:
        return {
            "pair_id": job.pair.pair_id,
            "clip_id": job.pair.clip.clip_id,
            "run_id": self.run_id,
            "caption_version": self.version,
            "captioner": self.name,
            "model": self.cfg.model,
            "prompt_version": self.prompt.tagged_version,
            "prompt_sha256": self.prompt.sha256,
            "cached": cached,
            "cache_key": key,
            **rec,
            **self._agreement(job, rec),
        }

    def _agreement(self, job: CaptionJob, rec: dict[str, Any]) -> dict[str, Any]:
        """Check the answer's structured changes against the pair's keypoints."""
        from schemas.captions import MotionChange

        if rec.get("status") != CaptionStatus.OK:
            return {"pose_agreement": None, "agreement_detail": None}
        try:
            changes = [MotionChange.model_validate(c) for c in json.loads(rec.get("changes") or "[]")]
        except (ValueError, TypeError):
            changes = []
        v = check_caption(job.pair.before_pose, job.pair.after_pose, changes, self.min_conf)
        return {"pose_agreement": v.agreement, "agreement_detail": v.detail}

    def _record(
        self, status: str, reason: str | None, answer: CaptionAnswer | None, raw, tin: int, tout: int, seconds: float
    ) -> dict[str, Any]:
        cost = (tin * self.cfg.usd_per_1m_input_tokens + tout * self.cfg.usd_per_1m_output_tokens) / 1e6
        return {
            "status": status,
            "reason": reason,
            "text": answer.instruction if answer else None,
            "before_text": answer.before if answer else None,
            "after_text": answer.after if answer else None,
            "changes": json.dumps([c.model_dump() for c in answer.changes]) if answer else None,
            "raw": None if raw is None else self.scrub(str(raw)),
            "tokens_in": tin,
            "tokens_out": tout,
            "cost_usd": cost,
            "seconds": round(seconds, 3),
            "created_at": datetime.now(timezone.utc).isoformat(),
        }

    def _count(self, rec: dict[str, Any], cached: bool) -> None:
        s = self.summary
        if cached:
            s.cached += 1
        else:
            s.requests += 1
            s.cost_usd += rec["cost_usd"]
        if rec["status"] == CaptionStatus.OK:
            s.ok += 1
        elif rec["status"] == CaptionStatus.NOT_VISIBLE:
            s.not_visible += 1
        else:
            s.failed += 1

    # ------------------------------------------------------------------ live calls

    def caption(self, jobs: list[CaptionJob], on_row: Callable[[dict], None] | None = None) -> list[dict[str, Any]]:
        if self.prompt is None:
            self.setup()
        if self.cfg.batch:
            return self._caption_batch(jobs)
        return asyncio.run(self._run_once(jobs, on_row))

    async def _run_once(self, jobs: list[CaptionJob], on_row) -> list[dict[str, Any]]:
        try:
            return await self.caption_async(jobs, on_row)
        finally:
            await self.aclose()

    def _client(self) -> openai.AsyncOpenAI:
        if getattr(self, "_aclient", None) is None:
            self._aclient = openai.AsyncOpenAI(**self._client_args())
        return self._aclient

    async def aclose(self) -> None:
        client, self._aclient = getattr(self, "_aclient", None), None
        self._limits = None
        if client is not None:
            await client.close()

    def limits(self) -> tuple[AsyncLimiter, AsyncLimiter, asyncio.Semaphore]:
        """Made once per event loop and shared by every request of the run."""
        if self._limits is None:
            # capacity 1: never more than the configured rate in any window, no burst at the start
            rpm = AsyncLimiter(1, 60.0 / self.cfg.requests_per_minute)
            tpm = AsyncLimiter(max(self.cfg.tokens_per_minute, estimated_tokens(self.cfg)), 60.0)
            self._limits = (rpm, tpm, asyncio.Semaphore(self.cfg.max_concurrency))
        return self._limits

    async def caption_async(self, jobs: list[CaptionJob], on_row=None) -> list[dict[str, Any]]:
        """Caption `jobs` within the run's budget and rate limits (call from one event loop)."""
        if self.prompt is None:
            self.setup()
        client = self._client()
        rpm, tpm, gate = self.limits()
        budget = self.budget
        tokens = estimated_tokens(self.cfg)
        rows: list[dict[str, Any] | None] = [None] * len(jobs)

        async def one(i: int, job: CaptionJob) -> None:
            key = cache_key(job, self.cfg, self.prompt)
            hit = self.cache.get(key)
            if hit is not None:
                rows[i] = self._row(job, key, hit, cached=True)
                self._count(hit, cached=True)
                return
            async with gate:
                if budget.exhausted():
                    self.summary.skipped_budget += 1
                    return
                budget.requests += 1
                t0 = time.perf_counter()
                try:
                    # the request is made before its rate slot: the slot gates the send, not the JPEG
                    # encoding and the client's first-use imports, so requests leave at the set rate
                    body = build_request(job, self.cfg, self.prompt)
                    create = client.chat.completions.create
                    await tpm.acquire(tokens)
                    await rpm.acquire()
                    t0 = time.perf_counter()
                    resp = await create(**body)
                    rec = self._record(*parse_completion(resp.model_dump()), time.perf_counter() - t0)
                except openai.APIError as e:
                    took = time.perf_counter() - t0
                    rec = self._record(CaptionStatus.FAILED, failure_reason(e), None, None, 0, 0, took)
                    log.warning("caption request for %s failed: %s", job.pair.pair_id, self.scrub(str(e))[:300])
                except Exception as e:  # one pair's trouble (an image that does not decode) is that pair's row
                    took = time.perf_counter() - t0
                    rec = self._record(CaptionStatus.FAILED, type(e).__name__, None, None, 0, 0, took)
                    log.warning("caption of %s failed: %s", job.pair.pair_id, self.scrub(str(e))[:300])
                budget.cost += rec["cost_usd"]
            if rec["status"] != CaptionStatus.FAILED or rec["reason"] in DETERMINISTIC_FAILURES:
                self.cache.put(key, rec)
            rows[i] = self._row(job, key, rec, cached=False)
            self._count(rec, cached=False)
            if on_row is not None:
                on_row(rows[i])

        await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))
        if self.summary.skipped_budget:
            log.warning("budget reached: %d pairs left uncaptioned (run again to go on)", self.summary.skipped_budget)
        return [r for r in rows if r is not None]

    # ------------------------------------------------------------------ Batch API

    def _caption_batch(self, jobs: list[CaptionJob]) -> list[dict[str, Any]]:
        """Write the JSONL, upload it, create a batch, poll, ingest. The batch id is kept in a state
        file, so a stopped run picks up the same batch instead of paying again."""
        keyed = [(cache_key(j, self.cfg, self.prompt), j) for j in jobs]
        rows: dict[str, dict[str, Any]] = {}
        pending = []
        for key, job in keyed:
            hit = self.cache.get(key)
            if hit is not None:
                rows[key] = self._row(job, key, hit, cached=True)
                self._count(hit, cached=True)
            else:
                pending.append((key, job))
        if pending:
            if self.budget.max_requests is not None:
                room = max(0, self.budget.max_requests - self.budget.requests)
                if len(pending) > room:
                    self.summary.skipped_budget += len(pending) - room
                    pending = pending[:room]
                self.budget.requests += len(pending)
            client = openai.OpenAI(**self._client_args())
            set_id = hashlib.sha256("".join(k for k, _ in pending).encode()).hexdigest()[:16]
            state_path = self.state_dir / f"batch-{set_id}.json"
            state = json.loads(state_path.read_text()) if state_path.exists() else None
            if state is None:
                lines = [
                    json.dumps(
                        {
                            "custom_id": key,
                            "method": "POST",
                            "url": "/v1/chat/completions",
                            "body": build_request(job, self.cfg, self.prompt),
                        }
                    )
                    for key, job in pending
                ]
                upload = client.files.create(file=(f"{set_id}.jsonl", "\n".join(lines).encode()), purpose="batch")
                batch = client.batches.create(
                    input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
                )
                state = {"batch_id": batch.id, "input_file_id": upload.id, "requests": len(pending)}
                write_json(state_path, state)
                log.info("batch %s submitted with %d requests", batch.id, len(pending))
            batch = client.batches.retrieve(state["batch_id"])
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(self.cfg.batch_poll_s)
                batch = client.batches.retrieve(state["batch_id"])
            results: dict[str, dict[str, Any]] = {}
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    for line in client.files.content(file_id).text.splitlines():
                        if line.strip():
                            item = json.loads(line)
                            results[item["custom_id"]] = item
            for key, job in pending:
                item = results.get(key)
                resp = (item or {}).get("response") or {}
                if resp.get("status_code") == 200:
                    rec = self._record(*parse_completion(resp.get("body") or {}), 0.0)
                else:
                    reason = f"batch_{batch.status}" if item is None else f"http_{resp.get('status_code', 'error')}"
                    rec = self._record(CaptionStatus.FAILED, reason, None, None, 0, 0, 0.0)
                if rec["status"] != CaptionStatus.FAILED or rec["reason"] in DETERMINISTIC_FAILURES:
                    self.cache.put(key, rec)
                rows[key] = self._row(job, key, rec, cached=False)
                self._count(rec, cached=False)
            state_path.unlink(missing_ok=True)
        return [rows[k] for k, _ in keyed if k in rows]
