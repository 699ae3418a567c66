"""Captions through the Batch API (`caption.batch`): the requests go up as JSONL input files, split at
the API's limits (`caption.batch_max_requests` requests and `caption.batch_max_bytes` bytes per file),
one batch per part. Each part's state (its batch id and request keys) is kept in
OUT/captions/batch-<part>.json from submission until its results are in the cache, so a stopped run
picks up the parts already submitted instead of paying for them again, and submits only the rest.
Every request of a new part is reserved against the run's budget before the part goes up."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai

from schemas.captions import CaptionStatus

from ..store import write_json
from .client import DETERMINISTIC_FAILURES, build_request, client_args, parse_completion
from .limits import worst_case_cost
from .prompts import CaptionJob

if TYPE_CHECKING:
    from .llm import LLMCaptioner

log = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"


def split_parts(lines: list[tuple[str, bytes]], max_requests: int, max_bytes: int) -> list[list[tuple[str, bytes]]]:
    """Consecutive (key, JSONL line) runs of at most max_requests lines and max_bytes bytes (newlines
    included). A line alone over max_bytes is left out (the caller records it as failed)."""
    parts: list[list[tuple[str, bytes]]] = []
    cur: list[tuple[str, bytes]] = []
    size = 0
    for key, line in lines:
        n = len(line) + 1
        if n > max_bytes:
            continue
        if cur and (len(cur) >= max_requests or size + n > max_bytes):
            parts.append(cur)
            cur, size = [], 0
        cur.append((key, line))
        size += n
    if cur:
        parts.append(cur)
    return parts


def _states(state_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for p in sorted(state_dir.glob("batch-*.json")):
        try:
            state = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(state, dict) and "batch_id" in state and isinstance(state.get("keys"), list):
            out.append((p, state))
    return out


def caption_batch(cap: LLMCaptioner, pending: list[tuple[str, CaptionJob]]) -> dict[str, dict[str, Any]]:
    """Records for the pending (key, job)s that got an answer or a failure; the ones the budget left out
    are counted as skipped. Rows and counts are made by the caller's captioner."""
    cfg, budget = cap.cfg, cap.budget
    client = openai.OpenAI(**client_args(cfg, cap._key()))
    by_key = dict(pending)
    records: dict[str, dict[str, Any]] = {}
    # parts a stopped run already submitted: polled, not submitted again
    running = [(p, s) for p, s in _states(cap.state_dir) if by_key.keys() & set(s["keys"])]
    submitted = {k for _, s in running for k in s["keys"]}
    lines: list[tuple[str, bytes]] = []
    reserved: dict[str, float] = {}
    for key, job in pending:
        if key in submitted:
            continue
        try:
            body = build_request(job, cfg, cap.prompt)
        except Exception as e:  # one pair's trouble (an image that does not decode) is that pair's row
            records[key] = cap._record(CaptionStatus.FAILED, type(e).__name__, None, None, 0, 0, 0.0)
            continue
        worst = worst_case_cost(cfg, body)
        if not budget.reserve(worst):
            cap.summary.skipped_budget += 1
            continue
        reserved[key] = worst
        lines.append((key, json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}).encode()))
    parts = split_parts(lines, cfg.batch_max_requests, cfg.batch_max_bytes)
    placed = {k for part in parts for k, _ in part}
    for key, _ in lines:
        if key not in placed:  # a single request over the file limit
            records[key] = cap._record(CaptionStatus.FAILED, "request_too_large", None, None, 0, 0, 0.0)
            budget.settle(reserved.pop(key), 0.0)
    for part in parts:
        keys = [k for k, _ in part]
        part_id = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
        upload = client.files.create(file=(f"{part_id}.jsonl", b"\n".join(line for _, line in part)), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h")
        state = {"batch_id": batch.id, "input_file_id": upload.id, "requests": len(keys), "keys": keys}
        path = cap.state_dir / f"batch-{part_id}.json"
        write_json(path, state)
        running.append((path, state))
        log.info("batch %s submitted with %d requests (part %s)", batch.id, len(keys), part_id)
    for path, state in running:
        batch = client.batches.retrieve(state["batch_id"])
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(cfg.batch_poll_s)
            batch = client.batches.retrieve(state["batch_id"])
        results: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for line in client.files.content(file_id).text.splitlines():
                    if line.strip():
                        item = json.loads(line)
                        results[item["custom_id"]] = item
        for key in state["keys"]:
            if key not in by_key:
                continue
            item = results.get(key)
            resp = (item or {}).get("response") or {}
            if resp.get("status_code") == 200:
                rec = cap._record(*parse_completion(resp.get("body") or {}), 0.0)
            else:
                reason = f"batch_{batch.status}" if item is None else f"http_{resp.get('status_code', 'error')}"
                rec = cap._record(CaptionStatus.FAILED, reason, None, None, 0, 0, 0.0)
            if key in reserved:
                budget.settle(reserved.pop(key), rec["cost_usd"])
            if rec["status"] != CaptionStatus.FAILED or rec["reason"] in DETERMINISTIC_FAILURES:
                cap.cache.put(key, rec)
            records[key] = rec
        path.unlink(missing_ok=True)
    return records
