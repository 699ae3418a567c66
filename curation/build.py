"""The build, one driver loop: plan (once; curation.plan), execute work units (clips -> tars + parts),
finalize (a generation; curation.generation).

Plain Python and engine-agnostic: `build(cfg, executor)` is the loop; the CLI runs it in-process (`InProcess`), the
Prefect flow passes its tasks, and on Dask its task runner. Everything it writes goes through the output's store
(curation.store): one writer at a time (the lock), units committed durably (tars, parts, then the record), the
manifests switched as one generation; local folder or object store alike (`Output.open`: the store alone knows which).
Resumable and idempotent: a re-run keeps a committed unit when every clip in it is still listed with
the same clip key (settings fingerprint + versions + the clip as listed + its content identity) and
redoes the rest; a unit whose clips failed for a transient reason (internal or I/O error) is redone.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Protocol

import pyarrow as pa

from schemas.manifest import STATS_FILE, reject_row, rejects_table, sample_row, samples_table, with_clip_metadata
from schemas.records import TRANSIENT_REASONS, Clip, Level

from .captions.llm import LLMCaptioner
from .captions.published import published_choice
from .captions.stage import CaptionStage, lacking_captions
from .config import BuildConfig
from .errors import RunError
from .generation import Basis, make_generation, read_parts, units_digest
from .pipeline import ClipProcessor, ClipResult
from .plan import BuildPlan, WorkUnit, clip_keys, fingerprint, plan_build
from .store import OnWait, Output

log = logging.getLogger(__name__)

STOP = threading.Event()  # set by the CLI's SIGTERM/SIGINT handler: the build stops at the next unit boundary


class BuildStopped(RuntimeError):
    """The build was asked to stop (SIGTERM/SIGINT); committed units stand, the rest is redone next run."""


class SetupError(RunError, RuntimeError):
    """The run cannot start (the model does not load on the device, ...): nothing is recorded."""


def open_output(cfg: BuildConfig, ticket: dict | None = None) -> Output:
    """The build's output (a folder or an fsspec URL, worked on through `staging_dir`)."""
    return Output.open(cfg.output, cfg.staging_dir, ticket=ticket)


@contextmanager
def writer_lock(
    cfg: BuildConfig, command: str = "build", wait: float | None = None, on_wait: OnWait = None
) -> Iterator[Output]:
    """Hold the output for writing (taken once per process: nested use, the CLI around a flow, reuses
    it; `on_wait` runs when another writer makes it wait); what a dead writer left is cleaned first."""
    with open_output(cfg).lock(command, wait, on_wait) as held:
        yield held.out


@functools.lru_cache(maxsize=4)
def _processor_for(cfg_json: str) -> ClipProcessor:
    try:
        return ClipProcessor(BuildConfig.model_validate_json(cfg_json)).setup()
    except SetupError:
        raise
    except Exception as e:  # the model cannot load here: a problem of the run, not of any clip
        raise SetupError(f"the models cannot be set up: {type(e).__name__}: {str(e).splitlines()[0]}") from e


_SETUP = threading.Lock()  # one set-up at a time: a second caller waits for the first's processor
_EARLY_FAILED: dict[str, SetupError] = {}  # a PlanAhead set-up that failed, for the build's own call


def _setup_key(cfg: BuildConfig) -> str:
    return cfg.model_copy(update={"output": "-"}).model_dump_json()


def get_processor(cfg: BuildConfig, *, early: bool = False) -> ClipProcessor:
    """One loaded processor per worker process and config (the pose model loads once, whatever the
    output folder). A failed PlanAhead set-up (`early`) is raised to the next caller, not retried."""
    key = _setup_key(cfg)
    with _SETUP:
        if (failed := _EARLY_FAILED.pop(key, None)) is not None:
            raise failed
        try:
            return _processor_for(key)
        except SetupError as e:
            if early:
                _EARLY_FAILED[key] = e
            raise


class PlanAhead:
    """The build planned in a thread from now, while this process waits for something else (the CLI for
    its Prefect API), and when the plan has work the processor (pose model, decode workers) set up
    after it, so that a run with nothing to do loads nothing. Start it only under the output's writer
    lock, held until the build ends: the plan is then the one the build would make. `plan` is the
    future of the plan (or its exception), set as soon as it is made; the build's own get_processor
    finds the processor ready or waits for it (a set-up that failed here is raised there, not tried
    again). `close()` (the run is over): no set-up starts any more, one under way is waited for, so
    that nothing loads a model while the interpreter shuts down, and a failure nobody took is dropped."""

    def __init__(self, cfg: BuildConfig):
        self.plan: Future[BuildPlan] = Future()
        self._key = _setup_key(cfg)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cfg,), name="plan-ahead", daemon=True)
        self._thread.start()

    def _run(self, cfg: BuildConfig) -> None:
        try:
            plan = plan_build(cfg)
        except BaseException as e:  # noqa: BLE001 - raised where the plan is taken
            self.plan.set_exception(e)
            return
        self.plan.set_result(plan)
        if plan.units and not self._closed.is_set():
            try:
                get_processor(cfg, early=True)
            except Exception as e:  # noqa: BLE001 - the build's own call raises it as a problem of the run
                log.debug("early set-up failed (the build's call raises it): %s: %s", type(e).__name__, e)

    def close(self, timeout: float = 600) -> None:
        self._closed.set()
        self._thread.join(timeout)
        with _SETUP:
            _EARLY_FAILED.pop(self._key, None)


def process_unit(
    cfg: BuildConfig,
    unit: WorkUnit,
    processor: ClipProcessor | None = None,
    on_clip: Callable[[ClipResult], None] | None = None,
    upcoming: list[Clip] | None = None,
    ticket: dict | None = None,
) -> dict[str, Any]:
    """Process the unit's clips, write its tars and parts, then commit its record through the store.
    Returns the record. Captions here are the offline ones: LLM captions are the caption stage's
    (curation.captions.stage), which never holds up this work. `upcoming`: the next unit's clips in
    this process, decoded early so the pose model never waits at a unit boundary. `ticket`: the lock
    holder's (a Dask worker's unit is checked against it at commit)."""
    processor = processor or get_processor(cfg)
    out = open_output(cfg, ticket)
    shards = out.shard_writer(unit.unit_id, cfg.shards.max_samples, cfg.shards.max_bytes)
    sample_rows: list[dict[str, Any]] = []
    reject_rows: list[dict[str, Any]] = []
    retry: list[str] = []
    seconds: Counter[str] = Counter()
    funnel: Counter[str] = Counter()
    frames = 0
    t0 = time.perf_counter()
    results: list[ClipResult] = []
    try:
        for res in processor.run_all(list(unit.clips), upcoming):  # decoded ahead in worker processes
            results.append(res)
            reject_rows += [reject_row(r) for r in res.rejects]
            if any(r.level is Level.CLIP and r.reason in TRANSIENT_REASONS for r in res.rejects):
                retry.append(res.clip.clip_id)
            seconds.update(res.seconds)
            funnel.update(res.funnel)
            funnel["clips_decoded"] += res.frames_decoded > 0
            frames += res.frames_decoded
            if on_clip is not None:
                on_clip(res)
        for res in results:
            for item in res.pairs:
                shard = shards.write(item)
                sample_rows.append(sample_row(item.pair, shard, unit.unit_id))
        files = shards.close()
        record = {
            "unit_id": unit.unit_id,
            "fingerprint": fingerprint(cfg),
            "versions": processor.versions,
            "machine": processor.machine,  # the CPU/GPU and pose precision it ran on (provenance)
            "clip_keys": clip_keys(cfg, unit.clips),
            "retry": retry,  # clips that failed for a transient reason: the unit is redone next run
            "files": files,  # tar name -> samples, bytes, sha256
            "shards": {n: f["samples"] for n, f in files.items()},
            "shard_bytes": sum(f["bytes"] for f in files.values()),
            "samples": len(sample_rows),
            "rejects": len(reject_rows),
            "frames_decoded": frames,
            "funnel": dict(funnel),  # frame and candidate counts of the motion funnel, summed over clips
            "seconds": {k: round(v, 3) for k, v in seconds.items()} | {"wall": round(time.perf_counter() - t0, 3)},
            "committed_at": datetime.now(timezone.utc).isoformat(),
        }
        out.commit_unit(record, samples_table(sample_rows), rejects_table(reject_rows))
    except BaseException:
        if not out.is_committed(unit.unit_id):  # committed means kept: an abort after the record is no abort
            shards.abort()  # nothing of an uncommitted unit stays behind
        raise
    if retry:
        log.warning(
            "unit %s: %d clips failed for a transient reason and are retried next run", unit.unit_id, len(retry)
        )
    return record


def standing_records(out: Output, plan: BuildPlan) -> list[dict[str, Any]]:
    standing = set(plan.kept_units) | {u.unit_id for u in plan.units}
    return [r for r in out.records() if r["unit_id"] in standing]


def finalize(cfg: BuildConfig, plan: BuildPlan, run_seconds: float | None = None) -> dict[str, Any]:
    """Consolidate the committed units into a new generation (see curation.generation), switch to it,
    then un-commit superseded units and apply retention."""
    out = open_output(cfg)
    out.pull()  # units may have been committed by other machines (Dask workers)
    records = standing_records(out, plan)
    unit_ids = [r["unit_id"] for r in records]
    rejects = read_parts(out, unit_ids, "rejects", rejects_table([]).schema)
    listing_rejects = rejects_table([reject_row(r) for r in plan.listing.rejects])
    rejects = pa.concat_tables([rejects, listing_rejects])
    rejects = with_clip_metadata(rejects, plan.listing.clips)  # each reject names its clip's label and split
    clips = [c.model_dump(include={"source", "clip_id", "label", "extra"}) for c in plan.listing.clips]
    clips += [r.model_dump(include={"source", "clip_id", "label", "extra"}) for r in plan.listing.rejects]
    basis = Basis(
        records=records,
        rejects=rejects,
        all_ids=[c.clip_id for c in plan.listing.clips] + [r.clip_id for r in plan.listing.rejects],
        clips=clips,
        fingerprint=plan.fingerprint,
        listing_digest=plan.listing_digest,
        config=cfg.model_dump(mode="json", exclude={"output", "staging_dir"}),  # the thresholds applied
        max_duplicate_distance=cfg.quality.max_duplicate_distance,
        keypoint_conf=cfg.motion.keypoint_conf,
        ignored_files=len(plan.listing.ignored),
        unlisted_files=len(plan.listing.unlisted),
    )
    return make_generation(
        out, basis, stale=plan.stale_units, keep=cfg.shards.keep_generations, run_seconds=run_seconds
    )


class InProcess:
    """Units one after another in this process, the next unit's clips decoded while this one is
    detected (the executor `build` uses unless given another: the Prefect flow passes its tasks)."""

    def __init__(self, on_clip: Callable[[ClipResult], None] | None = None):
        self.on_clip = on_clip

    def plan(self, cfg: BuildConfig) -> BuildPlan:
        return plan_build(cfg)

    def run_units(self, cfg: BuildConfig, plan: BuildPlan, ticket: dict | None) -> Iterator[dict[str, Any]]:
        for k, unit in enumerate(plan.units):
            check_stop()
            upcoming = list(plan.units[k + 1].clips) if k + 1 < len(plan.units) else None
            yield process_unit(cfg, unit, on_clip=self.on_clip, upcoming=upcoming)

    def finalize(self, cfg: BuildConfig, plan: BuildPlan, run_seconds: float) -> dict[str, Any]:
        return finalize(cfg, plan, run_seconds)


class Executor(Protocol):
    """Where the three steps run: plan once, each pending unit (its committed record back, in any
    order), finalize once. In-process (`InProcess`), Prefect tasks or Dask (flows.build)."""

    def plan(self, cfg: BuildConfig) -> BuildPlan: ...

    def run_units(self, cfg: BuildConfig, plan: BuildPlan, ticket: dict | None) -> Iterator[dict[str, Any]]: ...

    def finalize(self, cfg: BuildConfig, plan: BuildPlan, run_seconds: float) -> dict[str, Any]: ...


def build(
    cfg: BuildConfig,
    executor: Executor | None = None,
    *,
    api_key: str | None = None,
    wait: float | None = None,
    command: str = "build",
    on_plan: Callable[[BuildPlan], None] | None = None,
) -> dict[str, Any]:
    """The build, the one driver loop: hold the output, plan once, run the pending units through the
    executor (LLM captions, when asked for, beside them), finalize a generation. Returns stats.json's
    content. A problem of the run (the pose model or the caption server cannot be set up, the output
    is held by another writer) raises before any clip is marked."""
    executor = executor or InProcess()
    t0 = time.perf_counter()
    with writer_lock(cfg, command, wait) as out:  # already held when the CLI took it: nested
        plan = executor.plan(cfg)
        log.info(
            "%d clips listed (%d ignored files), %d already done, %d to process in %d units",
            len(plan.listing.clips),
            len(plan.listing.ignored),
            len(plan.done),
            plan.pending_clips,
            len(plan.units),
        )
        if nothing_to_do(cfg, plan):
            log.info("nothing new: %s is up to date", cfg.output)
            out.repair()  # copies an interrupted upload left out of step
            return current_stats(cfg)
        if cfg.caption.captioner == "openai":
            LLMCaptioner(cfg.caption, out.root, api_key=api_key).setup()  # no key or model: say so before any work
        if plan.units:
            get_processor(cfg)  # a model that cannot load stops the run before any clip is marked
        if on_plan is not None:
            on_plan(plan)  # the work about to run (after every check that can stop the run)
        stage = start_caption_stage(cfg, out, plan, api_key)
        try:
            for record in executor.run_units(cfg, plan, out.ticket()):
                if stage is not None:
                    stage.submit(record)
            check_stop()  # asked during the last unit: stop there too (the next run finalizes)
            if stage is not None:
                log.info("captions: %s", stage.finish())
        except BaseException:
            if stage is not None:
                stage.abort()
            raise
        return executor.finalize(cfg, plan, time.perf_counter() - t0)


class Watcher(Protocol):
    """What follows a build (a progress bar): the plan once made, then each clip done."""

    def plan(self, plan: BuildPlan) -> None: ...

    def clip(self, result: ClipResult) -> None: ...


def build_with_progress(cfg: BuildConfig, watcher: Watcher, wait: float | None = None) -> dict[str, Any]:
    """`build` in this process, told to `watcher` (the CLI's `--engine local`)."""
    return build(cfg, InProcess(watcher.clip), wait=wait, command="motionpairs build", on_plan=watcher.plan)


def start_caption_stage(cfg: BuildConfig, out: Output, plan: BuildPlan, api_key: str | None = None):
    """The run's one LLM caption pool (None with the offline captioner), already fed the committed units
    that still lack captions of the requested version."""
    if cfg.caption.captioner != "openai":
        return None
    stage = CaptionStage(cfg, out, api_key=api_key).start()
    for rec in out.records():
        if rec["unit_id"] in plan.kept_units:
            stage.submit(rec)
    return stage


def check_stop() -> None:
    if STOP.is_set():
        raise BuildStopped("stopped on request after the last committed unit; run the build again to resume")


def nothing_to_do(cfg: BuildConfig, plan: BuildPlan) -> bool:
    """No pending unit, nothing stale, and the current generation made from this same listing, these
    units and this published caption choice: a re-run is a no-op (nothing is rewritten). A missing or
    stale generation (a crash inside finalize) is made again. A plan made under the writer lock still
    held pulled the remote already: nothing can have committed since (no unit is pending, others are
    locked out), so it is not pulled again."""
    if plan.units or plan.stale_units:
        return False
    out = open_output(cfg)
    meta = out.meta()
    if not meta:
        return False
    if plan.pulled_under is None or plan.pulled_under != out.held_token():
        out.pull()  # the plan was made without this lock: what it pulled may be out of date
    records = standing_records(out, plan)
    return (
        meta.get("listing_digest") == plan.listing_digest
        and meta.get("units") == units_digest(records)
        and meta.get("published") == published_choice(out)
        and lacking_captions(out, cfg, records) == 0
    )


def current_stats(cfg: BuildConfig) -> dict[str, Any]:
    return json.loads(open_output(cfg).read_generation_file(STATS_FILE))


__all__ = [
    "BuildPlan",
    "BuildStopped",
    "SetupError",
    "WorkUnit",
    "plan_build",
    "process_unit",
    "finalize",
    "build",
    "build_with_progress",
    "Executor",
    "InProcess",
    "get_processor",
    "PlanAhead",
    "open_output",
    "writer_lock",
]
