"""The build: plan (what is new), process work units (clips -> tars + parts), finalize (a generation).

Plain Python: the CLI runs it directly and the Prefect flow wraps the same three functions. Everything
it writes goes through the output's store (curation.store): one writer at a time (the lock), units
committed durably (tars, parts, then the record), the manifests switched as one generation.
Resumable and idempotent: a re-run keeps a committed unit when every clip in it is still listed with
the same clip key (settings fingerprint + versions + the clip as listed + its content identity) and
redoes the rest; a unit whose clips failed for a transient reason (internal or I/O error) is redone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import STATS_FILE, reject_row, rejects_table, sample_row, samples_table, with_clip_metadata
from schemas.records import TRANSIENT_REASONS, Clip, Level

from .config import BuildConfig
from .ingest import ContentIds, Listing, list_sources
from .pipeline import ClipProcessor, ClipResult
from .store import Output, RemoteMirror, atomic_write, default_staging, is_remote
from .store.layout import CARD_FILE

log = logging.getLogger(__name__)

CONTENT_IDS = ".content-ids.json"  # cache of the inputs' content identities, in the (staging) output

# Set by the CLI's SIGTERM/SIGINT handler: the build stops at the next unit boundary.
STOP = threading.Event()


class BuildStopped(RuntimeError):
    """The build was asked to stop (SIGTERM/SIGINT); committed units stand, the rest is redone next run."""


class SetupError(RuntimeError):
    """The run cannot start (the model does not load on the device, ...): nothing is recorded."""


@dataclass(frozen=True)
class WorkUnit:
    unit_id: str
    clips: tuple[Clip, ...]


@dataclass
class BuildPlan:
    listing: Listing
    units: list[WorkUnit]  # pending work
    done: set[str]  # clip_ids already committed with these settings
    fingerprint: str  # the settings fingerprint
    stale_units: list[str] = field(default_factory=list)  # other settings, or a clip no longer listed
    kept_units: list[str] = field(default_factory=list)  # committed units that stand
    listing_digest: str = ""

    @property
    def pending_clips(self) -> int:
        return sum(len(u.clips) for u in self.units)


def local_view(cfg: BuildConfig) -> tuple[BuildConfig, RemoteMirror | None]:
    """For an output at a remote URL: the same config on its local staging copy, and the mirror."""
    if not is_remote(cfg.output):
        return cfg, None
    staging = Path(cfg.staging_dir) if cfg.staging_dir else default_staging(cfg.output)
    return cfg.model_copy(update={"output": str(staging)}), RemoteMirror(cfg.output, staging)


@contextmanager
def writer_lock(cfg: BuildConfig, command: str = "build", wait: float | None = None) -> Iterator[Output]:
    """Hold the output for writing (the staging folder, and the lease on a remote output); clean what a
    dead writer left. Nested use in one process (the CLI around a flow) is fine."""
    local, mirror = local_view(cfg)
    out = Output(local.output)
    with ExitStack() as stack:
        stack.enter_context(out.lock(command, wait))
        if mirror is not None:
            stack.enter_context(mirror.lease(command, wait))
        out.clean()
        yield out


def plan_build(cfg: BuildConfig) -> BuildPlan:
    cfg, mirror = local_view(cfg)
    if mirror is not None:
        mirror.pull_state()
    out = Output(cfg.output)
    identity = ContentIds(Path(cfg.output) / CONTENT_IDS if Path(cfg.output).is_dir() else None)
    listing = list_sources(cfg.sources, identity)
    fp = cfg.fingerprint()
    keys = cfg.clip_keys(listing.clips, identity)
    identity.save()
    done: set[str] = set()
    stale: list[str] = []
    kept: list[str] = []
    for rec in out.records():
        rec_keys = rec.get("clip_keys")  # records of older versions have none (or no tar checksums): redone
        standing = (
            rec.get("fingerprint") == fp
            and rec_keys
            and "files" in rec
            and not rec.get("retry")
            and all(keys.get(c) == k for c, k in rec_keys.items())
        )
        if standing:
            done.update(rec_keys)
            kept.append(rec["unit_id"])
        else:
            stale.append(rec["unit_id"])
    pending = [c for c in listing.clips if c.clip_id not in done]
    n = cfg.shards.clips_per_unit
    units = []
    for i in range(0, len(pending), n):
        chunk = tuple(pending[i : i + n])
        digest = hashlib.sha1("\n".join(f"{c.clip_id} {keys[c.clip_id]}" for c in chunk).encode()).hexdigest()[:12]
        units.append(WorkUnit(unit_id=f"u{digest}", clips=chunk))
    return BuildPlan(
        listing=listing,
        units=units,
        done=done,
        fingerprint=fp,
        stale_units=stale,
        kept_units=kept,
        listing_digest=listing_digest(listing),
    )


def listing_digest(listing: Listing) -> str:
    """What the sources list (clips and ingest-level rejects): a manifest made from another listing is
    out of date even when no unit changed. Where the files are mounted does not count."""
    h = hashlib.sha1()
    for c in sorted(listing.clips, key=lambda c: c.clip_id):
        h.update(c.model_dump_json(exclude={"uri"}).encode())
    for r in sorted(listing.rejects, key=lambda r: r.clip_id):
        h.update(r.model_dump_json(exclude={"uri"}).encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _processor_for(cfg_json: str) -> ClipProcessor:
    try:
        return ClipProcessor(BuildConfig.model_validate_json(cfg_json)).setup()
    except SetupError:
        raise
    except Exception as e:  # the model cannot load here: a problem of the run, not of any clip
        raise SetupError(f"the pose model cannot be set up: {type(e).__name__}: {str(e).splitlines()[0]}") from e


def get_processor(cfg: BuildConfig) -> ClipProcessor:
    """One loaded processor per worker process and config (the pose model loads once, whatever the
    output folder)."""
    return _processor_for(cfg.model_copy(update={"output": "-"}).model_dump_json())


def process_unit(
    cfg: BuildConfig,
    unit: WorkUnit,
    processor: ClipProcessor | None = None,
    on_clip: Callable[[ClipResult], None] | None = None,
    upcoming: list[Clip] | None = None,
) -> dict[str, Any]:
    """Process the unit's clips, write its tars and parts, then commit its record (and publish the unit
    to a remote output). Returns the record. Captions here are the offline ones: LLM captions are the
    caption stage's (curation.captions.stage), which never holds up this work. `upcoming`: the next
    unit's clips in this process, decoded early so the pose model never waits at a unit boundary."""
    cfg, mirror = local_view(cfg)
    processor = processor or get_processor(cfg)
    out = Output(cfg.output)
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
            "fingerprint": cfg.fingerprint(),
            "versions": processor.versions,
            "clip_keys": cfg.clip_keys(unit.clips),
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
        shards.abort()  # nothing of an uncommitted unit stays behind
        raise
    if retry:
        log.warning(
            "unit %s: %d clips failed for a transient reason and are retried next run", unit.unit_id, len(retry)
        )
    if mirror is not None:
        mirror.push_unit(record)
    return record


def _read_parts(out: Output, unit_ids: list[str], kind: str, schema: pa.Schema) -> pa.Table:
    tables = [pq.read_table(out.part(u, kind), schema=schema) for u in unit_ids]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _units_digest(records: list[dict]) -> dict[str, str]:
    return {
        r["unit_id"]: hashlib.sha1(json.dumps(r.get("files", {}), sort_keys=True).encode()).hexdigest()[:16]
        for r in records
    }


def standing_records(out: Output, plan: BuildPlan) -> list[dict[str, Any]]:
    standing = set(plan.kept_units) | {u.unit_id for u in plan.units}
    return [r for r in out.records() if r["unit_id"] in standing]


def finalize(cfg: BuildConfig, plan: BuildPlan, run_seconds: float | None = None) -> dict[str, Any]:
    """Consolidate the committed units into a new generation (samples.parquet, rejects.parquet,
    stats.json, the shard listing), switch to it, then un-commit superseded units and apply retention."""
    cfg, mirror = local_view(cfg)
    if mirror is not None:  # units may have been published by other machines (Dask workers)
        mirror.pull_state()
    out = Output(cfg.output)
    records = standing_records(out, plan)
    unit_ids = [r["unit_id"] for r in records]
    samples = _read_parts(out, unit_ids, "samples", samples_table([]).schema)
    rejects = _read_parts(out, unit_ids, "rejects", rejects_table([]).schema)
    listing_rejects = rejects_table([reject_row(r) for r in plan.listing.rejects])
    rejects = pa.concat_tables([rejects, listing_rejects])
    samples = samples.sort_by([("clip_id", "ascending"), ("before_index", "ascending"), ("after_index", "ascending")])
    rejects = rejects.sort_by([("clip_id", "ascending"), ("level", "ascending"), ("stage", "ascending")])
    files: dict[str, dict[str, Any]] = {}
    for r in records:
        files.update(r["files"])
    from .captions.quality import generation_caption_quality
    from .recaption import apply_published, published_choice
    from .store.dedupe import drop_near_duplicates

    if mirror is not None:
        mirror.pull_captions()
    fetch = mirror.fetch_tar if mirror else None
    samples, files, dup_rows, dedup = drop_near_duplicates(
        out, samples, files, cfg.quality.max_duplicate_distance, fetch=fetch
    )
    if dup_rows:
        rejects = pa.concat_tables([rejects, rejects_table(dup_rows)])
        rejects = rejects.sort_by([("clip_id", "ascending"), ("level", "ascending"), ("stage", "ascending")])
    offline = samples  # the units' own captions, before the published choice
    samples, files, applied = apply_published(out, samples, files, fetch=fetch)
    if mirror is not None:
        mirror.push_tars(files)
    rejects = with_clip_metadata(rejects, plan.listing.clips)  # each reject names its clip's label and split
    stats = build_stats(plan, records, samples, rejects, files)
    stats["yield"] = _yield(plan, samples, rejects)
    stats["caption_quality"] = generation_caption_quality(out.root, offline, samples, rejects, cfg.motion.keypoint_conf)
    stats["near_duplicates"] = dedup["near_duplicates"]
    if applied:
        stats["published"] = applied
    previous = (mirror.meta() if mirror is not None else out.meta()) or {}
    if previous.get("versions") and previous["versions"] != stats["versions"]:
        stats["changed_versions"] = {
            k: [previous["versions"].get(k), v]
            for k, v in stats["versions"].items()
            if previous["versions"].get(k) != v
        }
    if run_seconds is not None:
        stats["last_run_seconds"] = round(run_seconds, 2)
    stats["config"] = cfg.model_dump(mode="json", exclude={"output", "staging_dir"})  # the thresholds applied
    meta = {
        "listing_digest": plan.listing_digest,
        "fingerprint": plan.fingerprint,
        "versions": stats["versions"],
        "units": _units_digest(records),
        "published": published_choice(out),  # compared by the next run's no-op check
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    gen = out.write_generation(
        samples, rejects, stats, files, meta, link_tars=mirror is None, after=mirror.current() if mirror else None
    )
    if mirror is not None:
        mirror.push_generation(gen)
    write_card(out, mirror, stats, samples, rejects, files)
    stale = [u for u in plan.stale_units if u not in set(unit_ids)]
    out.uncommit(stale)  # after the switch: until then the old generation and its units stand
    if mirror is not None:
        mirror.uncommit(stale)
    out.gc(keep=cfg.shards.keep_generations)
    if mirror is not None:
        mirror.gc(keep=cfg.shards.keep_generations)
    stats["report"] = _report(mirror.url if mirror is not None else cfg.output)
    if stats["unaccounted_clips"] or stats["double_counted_clips"]:
        log.error(
            "clip accounting does not add up: unaccounted %s, double %s",
            stats["unaccounted_clips"][:5],
            stats["double_counted_clips"][:5],
        )
    return stats | {"generation": gen}


def _report(url: str) -> dict[str, Any]:
    """The QA report of the generation just made (OUT/report/index.html). The data is committed by
    now: a report that cannot be written is a warning, and `motionpairs report OUT` makes it again."""
    from .report.page import write_report

    try:
        return write_report(url)
    except Exception as e:
        log.warning("the QA report was not written: %s: %s", type(e).__name__, e)
        return {"error": f"{type(e).__name__}: {e}"}


def write_card(out: Output, mirror, stats: dict, samples: pa.Table, rejects: pa.Table, files: dict) -> None:
    """OUT/README.md, the Hugging Face dataset card, for the generation just made."""
    from .report.card import card

    text = card(stats, samples.to_pandas(), rejects.to_pandas(), sorted(files))
    atomic_write(out.root / CARD_FILE, lambda f: f.write(text.encode()))
    if mirror is not None:
        mirror.push_file(CARD_FILE)


def _yield(plan: BuildPlan, samples: pa.Table, rejects: pa.Table) -> dict[str, Any]:
    """Clips in, pairs out and top reject reasons per source and per action label."""
    from .report.yields import yield_by_class

    clips = [c.model_dump(include={"source", "clip_id", "label", "extra"}) for c in plan.listing.clips]
    clips += [r.model_dump(include={"source", "clip_id", "label", "extra"}) for r in plan.listing.rejects]
    cols = ["source", "clip_id", "label", "extra", "stage", "reason", "level"]
    return yield_by_class(
        clips,
        samples.select(cols[:4]).to_pandas(),
        rejects.select([c for c in cols if c in rejects.column_names]).to_pandas(),
    )


def build_stats(
    plan: BuildPlan, records: list[dict], samples: pa.Table, rejects: pa.Table, files: dict[str, dict]
) -> dict[str, Any]:
    all_ids = [c.clip_id for c in plan.listing.clips] + [r.clip_id for r in plan.listing.rejects]
    accepted = set(samples.column("clip_id").to_pylist())
    levels = rejects.column("level").to_pylist()
    clip_rejects = [
        (cid, st, rs)
        for cid, st, rs, lv in zip(
            rejects.column("clip_id").to_pylist(),
            rejects.column("stage").to_pylist(),
            rejects.column("reason").to_pylist(),
            levels,
            strict=True,
        )
        if lv == Level.CLIP.value
    ]
    rejected_ids = Counter(cid for cid, _, _ in clip_rejects)
    outcomes = Counter(list(accepted) + list(rejected_ids.elements()))
    seconds: Counter[str] = Counter()
    funnel: Counter[str] = Counter()
    for r in records:
        seconds.update(r.get("seconds", {}))
        funnel.update(r.get("funnel", {}))
    from .config import result_versions

    versions = records[-1]["versions"] if records else {}
    return {
        "fingerprint": plan.fingerprint,
        "listing_digest": plan.listing_digest,
        "versions": versions or {"code": "", **result_versions()},
        "clips_in": len(all_ids),
        "clips_accepted": len(accepted),
        "clips_rejected": len(rejected_ids),
        "pairs": samples.num_rows,
        "rejects_by_reason": dict(sorted(Counter(f"{st}/{rs}" for _, st, rs in clip_rejects).items())),
        "candidate_rejects": levels.count(Level.CANDIDATE.value),
        "unaccounted_clips": sorted(set(all_ids) - set(outcomes)),
        "double_counted_clips": sorted(c for c, n in outcomes.items() if n > 1),
        "retried_next_run": sorted(c for r in records for c in r.get("retry", [])),
        "ignored_files": len(plan.listing.ignored),
        "unlisted_files": len(plan.listing.unlisted),
        "shards": len(files),
        "shard_bytes": sum(f["bytes"] for f in files.values()),
        "units": len(records),
        "frames_decoded": sum(r.get("frames_decoded", 0) for r in records),
        "funnel": dict(funnel),
        "seconds": {k: round(v, 2) for k, v in sorted(seconds.items())},
        "finalized_at": datetime.now(timezone.utc).isoformat(),
    }


def run_build(
    cfg: BuildConfig,
    on_clip: Callable[[ClipResult], None] | None = None,
    api_key: str | None = None,
    wait: float | None = None,
) -> dict[str, Any]:
    """The whole build in this process: the same steps the Prefect flow runs as tasks."""
    t0 = time.perf_counter()
    with writer_lock(cfg, "build", wait) as out:
        plan = plan_build(cfg)
        log.info(
            "%d clips listed, %d already done, %d to process in %d units",
            len(plan.listing.clips),
            len(plan.done),
            plan.pending_clips,
            len(plan.units),
        )
        if nothing_to_do(cfg, plan):
            log.info("nothing new: %s is up to date", cfg.output)
            return current_stats(cfg)
        if plan.units:
            get_processor(cfg)  # a model that cannot load stops the run before any clip is marked
        stage = start_caption_stage(cfg, out, plan, api_key)
        try:
            for k, unit in enumerate(plan.units):
                check_stop()
                upcoming = list(plan.units[k + 1].clips) if k + 1 < len(plan.units) else None
                record = process_unit(cfg, unit, on_clip=on_clip, upcoming=upcoming)
                if stage is not None:
                    stage.submit(record)
            if stage is not None:
                stage.finish()
        except BaseException:
            if stage is not None:
                stage.abort()
            raise
        return finalize(cfg, plan, time.perf_counter() - t0)


def start_caption_stage(cfg: BuildConfig, out: Output, plan: BuildPlan, api_key: str | None = None):
    """The run's one LLM caption pool (None with the offline captioner), already fed the committed units
    that still lack captions of the requested version."""
    if cfg.caption.captioner != "openai":
        return None
    from .captions.stage import CaptionStage

    _, mirror = local_view(cfg)
    stage = CaptionStage(cfg, out, api_key=api_key, mirror=mirror).start()
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
    stale generation (a crash inside finalize) is made again."""
    if plan.units or plan.stale_units:
        return False
    local, mirror = local_view(cfg)
    out = Output(local.output)
    meta = mirror.meta() if mirror is not None else out.meta()
    if not meta:
        return False
    from .recaption import published_choice

    if mirror is not None:
        mirror.pull_captions()
    from .captions.stage import lacking_captions

    records = standing_records(out, plan)
    same = (
        meta.get("listing_digest") == plan.listing_digest
        and meta.get("units") == _units_digest(records)
        and meta.get("published") == published_choice(out)
        and lacking_captions(out, cfg, records) == 0
    )
    if same and mirror is None:
        out.ensure_links()
    return same


def current_stats(cfg: BuildConfig) -> dict[str, Any]:
    from .store import committed

    c = committed(cfg.output)
    import fsspec

    with fsspec.open(c.file_url(STATS_FILE), "rb") as f:
        return json.loads(f.read())


__all__ = [
    "BuildPlan",
    "BuildStopped",
    "SetupError",
    "WorkUnit",
    "plan_build",
    "process_unit",
    "finalize",
    "run_build",
    "get_processor",
    "writer_lock",
]
