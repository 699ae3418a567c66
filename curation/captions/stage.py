"""The caption stage of a build: LLM captions for the pairs of committed units, beside the pose work.

One pool per run: a thread with one event loop, one client, one budget and one set of rate limits,
fed the units as they commit (from this process, or from Dask workers through the flow), so
`max_requests`, `max_cost_usd` and the per-minute limits hold for the whole run however many units and
workers there are, and the pose model never waits on the network. Pairs that already have a settled
answer of the requested version are not asked again (and the answer cache makes a re-run after a crash
pay nothing twice). At the end the rows are written, the version becomes the output's published choice,
and finalize puts the captions into the generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from schemas.captions import CAPTIONS_DIR

from ..config import BuildConfig
from ..store import Output, write_json
from ..store.layout import PUBLISHED
from .llm import CaptionJob, LLMCaptioner, RunSummary, current_version
from .rows import read_caption_rows, settled, write_caption_rows

log = logging.getLogger(__name__)

_DONE, _ABORT = object(), object()


def unit_pairs(out: Output, record: dict[str, Any]) -> list[tuple[str, str]]:
    """(pair_id, tar name) of a committed unit's samples."""
    t = pq.read_table(out.local_part(record["unit_id"], "samples"), columns=["pair_id", "shard"])
    return list(zip(t.column("pair_id").to_pylist(), t.column("shard").to_pylist(), strict=True))


def lacking_captions(out: Output, cfg: BuildConfig, records: list[dict[str, Any]]) -> int:
    """Pairs of these units without a settled answer of the version these settings make."""
    if cfg.caption.captioner != "openai":
        return 0
    have = settled(read_caption_rows(out.root), current_version(cfg.caption))
    return sum(1 for r in records for pid, _ in unit_pairs(out, r) if pid not in have)


class CaptionStage:
    def __init__(self, cfg: BuildConfig, out: Output, api_key: str | None = None):
        run_id = "build-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self.captioner = LLMCaptioner(cfg.caption, out.root, api_key=api_key, run_id=run_id).setup()
        self.captioner.min_conf = cfg.motion.keypoint_conf
        self.out = out
        self.done = settled(read_caption_rows(out.root), self.captioner.version)
        self.rows: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="caption-stage", daemon=True)
        self._seen: set[str] = set()

    @property
    def summary(self) -> RunSummary:
        return self.captioner.summary

    def start(self) -> CaptionStage:
        self._thread.start()
        return self

    def submit(self, record: dict[str, Any]) -> None:
        """Caption the pairs of a committed unit (returns at once)."""
        self._queue.put(record)

    # ---- the stage's thread -----------------------------------------------------------------------
    def _jobs(self, record: dict[str, Any]) -> list[CaptionJob]:
        """The unit's pairs still lacking this version, read through the store (wherever the unit was
        built: this machine's pool or, for another machine's unit, the remote one)."""
        wanted: dict[str, str] = {}
        for pid, shard in unit_pairs(self.out, record):
            if pid not in self.done and pid not in self._seen:
                self._seen.add(pid)
                wanted[pid] = shard
        return [CaptionJob(s.pair, s.before, s.after) for s in self.out.samples(wanted, shards=wanted)]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by finish()
            self.error = e

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task] = []
        try:
            while True:
                item = await loop.run_in_executor(None, self._queue.get)
                if item is _DONE:
                    break
                if item is _ABORT:
                    for t in tasks:
                        t.cancel()
                    break
                jobs = await loop.run_in_executor(None, self._jobs, item)
                if jobs:
                    tasks.append(asyncio.create_task(self.captioner.caption_async(jobs)))
            for res in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(res, list):
                    self.rows += res
                elif not isinstance(res, asyncio.CancelledError):
                    raise res
        finally:
            await self.captioner.aclose()

    # ---- the end ------------------------------------------------------------------------------------
    def _write(self) -> Path | None:
        path = write_caption_rows(self.out.root, self.captioner.run_id, self.rows)
        if path is not None:
            self.out.push(f"{CAPTIONS_DIR}/{path.name}")
        return path

    def finish(self) -> RunSummary:
        """Wait for every submitted unit, write the rows and make this version the published choice."""
        self._queue.put(_DONE)
        self._thread.join()
        self._write()
        if self.error is not None:
            raise self.error
        choice = self.out.root / CAPTIONS_DIR / PUBLISHED
        try:
            current = json.loads(choice.read_text())
        except (OSError, ValueError):
            current = {}
        agreement = "require" if self.captioner.cfg.require_agreement else "any"
        if (current.get("caption_version"), current.get("agreement", "any")) != (self.captioner.version, agreement):
            write_json(choice, {"caption_version": self.captioner.version, "agreement": agreement})
            self.out.push(f"{CAPTIONS_DIR}/{PUBLISHED}")
        s = self.summary
        log.info(
            "caption stage: %d requests, %d cached, %d ok, %d failed, %d over budget, $%.4f",
            s.requests, s.cached, s.ok, s.failed, s.skipped_budget, s.cost_usd,
        )  # fmt: skip
        return s

    def abort(self) -> None:
        """The build stops: drop what is queued, keep what was answered (cache and rows)."""
        if self._thread.is_alive():
            self._queue.put(_ABORT)
            self._thread.join()
        self._write()
