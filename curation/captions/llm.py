"""Difference captions from a multimodal LLM through the `openai` client (OpenAI, vLLM, Ollama, ...).

Each request sends the before and after frames as JPEG data URLs with the grounding the pipeline
already has (action label or narration, measured pose change, the offline instruction), asks for a
strict JSON schema (schemas.captions.CaptionAnswer), validates the answer and keeps it raw.

The parts: prompts.py (what is asked), client.py (one request and its answer), cache.py (every answer
on disk the moment it arrives, keyed by everything that shapes it: a re-run never pays twice),
limits.py (rate limits, concurrency and a budget that is never exceeded), batch.py (the Batch API,
split at its limits, resumable per part). This module is the captioner that runs them: one captioner is
one run, its budget and rate limits hold over every request it makes, however many units or callers
feed it (see stage.py).

The caption version is `<model>@<prompt version>-<prompt sha256[:8]>`: editing a prompt file makes a new
version. Each answer's structured changes are checked against the keypoints (agreement.py).

The API key is never logged, stored or put into an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import openai
from aiolimiter import AsyncLimiter

from schemas.captions import CAPTIONS_DIR, CaptionAnswer, CaptionStatus, MotionChange
from schemas.records import caption_version

from ..config import CaptionConfig
from .agreement import check_caption
from .batch import caption_batch
from .cache import CaptionCache, cache_key
from .client import (
    DETERMINISTIC_FAILURES,
    build_request,
    chat_request,
    client_args,
    failure_reason,
    image_url,
    parse_completion,
)
from .limits import Budget, estimated_tokens, rate_limits, worst_case_cost
from .prompts import PROMPTS_DIR, CaptionJob, CaptionSetupError, Prompt, current_version, grounding

__all__ = [
    "DETERMINISTIC_FAILURES",
    "PROMPTS_DIR",
    "Budget",
    "CaptionCache",
    "CaptionJob",
    "CaptionSetupError",
    "LLMCaptioner",
    "Prompt",
    "RunSummary",
    "build_request",
    "cache_key",
    "chat_request",
    "current_version",
    "estimated_tokens",
    "failure_reason",
    "grounding",
    "image_url",
    "parse_completion",
    "worst_case_cost",
]

log = logging.getLogger(__name__)


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
        return client_args(self.cfg, self._key())

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
        """Made once per event loop and shared by every request of the run (limits.rate_limits)."""
        if self._limits is None:
            self._limits = rate_limits(self.cfg)
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
                t0 = time.perf_counter()
                worst = 0.0
                try:
                    # the request is made before its rate slot: the slot gates the send, not the JPEG
                    # encoding and the client's first-use imports, so requests leave at the set rate
                    body = build_request(job, self.cfg, self.prompt)
                    worst = worst_case_cost(self.cfg, body)
                    if not budget.reserve(worst):  # what is left cannot pay for this request's worst case
                        self.summary.skipped_budget += 1
                        return
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
                budget.settle(worst, rec["cost_usd"])
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
        """Cache hits first; the rest through the Batch API (batch.py), within the run's budget."""
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
            jobs_by_key = dict(pending)
            for key, rec in caption_batch(self, pending).items():
                rows[key] = self._row(jobs_by_key[key], key, rec, cached=False)
                self._count(rec, cached=False)
        if self.summary.skipped_budget:
            log.warning("budget reached: %d pairs left uncaptioned (run again to go on)", self.summary.skipped_budget)
        return [rows[k] for k, _ in keyed if k in rows]
