"""The build: plan (what is new), process work units (clips -> shards + parts), finalize (manifests).

Plain Python: the CLI runs it directly and the Prefect flow wraps the same three functions.
Resumable and idempotent: a unit is committed by writing its record last. A re-run keeps a committed
unit when every clip in it is still listed with the same clip key (settings fingerprint + the clip as
its source lists it) and redoes the rest: new clips and sources are added, changed settings redo what
they affect, and a unit holding a clip that is gone from the sources is dropped (its other clips redone),
so the dataset is always what the current sources and settings give.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import (
    REJECTS_FILE,
    SAMPLES_FILE,
    STATS_FILE,
    reject_row,
    rejects_table,
    sample_row,
    samples_table,
)
from schemas.records import Clip, Level
from schemas.shard import SIZES_FILE

from .config import BuildConfig
from .ingest import Listing, list_sources
from .pipeline import ClipProcessor, ClipResult, EncodedPair
from .sink import SHARDS, ShardSet, current_shard_set, write_json, write_parquet
from .storage import RemoteMirror, default_staging, is_remote

log = logging.getLogger(__name__)

PARTS = "parts"


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


def committed_units(out: Path) -> list[dict[str, Any]]:
    records = []
    for p in sorted((out / PARTS).glob("*.json")):
        try:
            records.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as e:  # pragma: no cover - the rename makes this unlikely
            log.warning("ignoring unreadable unit record %s: %s", p, e)
    return records


def plan_build(cfg: BuildConfig) -> BuildPlan:
    cfg, mirror = local_view(cfg)
    if mirror is not None:
        mirror.pull_state()
    out = Path(cfg.output)
    listing = list_sources(cfg.sources)
    fp = cfg.fingerprint()
    keys = cfg.clip_keys(listing.clips)
    done: set[str] = set()
    stale: list[str] = []
    kept: list[str] = []
    referenced: set[str] = set()
    for rec in committed_units(out):
        rec_keys = rec.get("clip_keys")  # records of older versions have none: redone
        if rec["fingerprint"] == fp and rec_keys and all(keys.get(c) == k for c, k in rec_keys.items()):
            done.update(rec_keys)
            kept.append(rec["unit_id"])
        else:
            stale.append(rec["unit_id"])
        referenced.update(rec["shards"])
    _remove_orphans(out, referenced)
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
    out of date even when no unit changed."""
    h = hashlib.sha1()
    for c in sorted(listing.clips, key=lambda c: c.clip_id):
        h.update(c.model_dump_json().encode())
    for r in sorted(listing.rejects, key=lambda r: r.clip_id):
        h.update(r.model_dump_json().encode())
    return h.hexdigest()[:16]


def _remove_orphans(out: Path, referenced: set[str]) -> None:
    """Tars (and temp files) no committed unit claims: left by a run that stopped mid-unit."""
    for d in (out / SHARDS, out / PARTS):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            orphan_tar = d.name == SHARDS and p.suffix == ".tar" and p.name not in referenced
            if p.name.endswith(".tmp") or orphan_tar:
                log.info("removing leftover %s", p)
                p.unlink()


@functools.lru_cache(maxsize=4)
def _processor_for(cfg_json: str) -> ClipProcessor:
    return ClipProcessor(BuildConfig.model_validate_json(cfg_json)).setup()


def get_processor(cfg: BuildConfig) -> ClipProcessor:
    """One loaded processor per worker process and config (the pose model loads once, whatever the
    output folder)."""
    return _processor_for(cfg.model_copy(update={"output": "-"}).model_dump_json())


def process_unit(
    cfg: BuildConfig,
    unit: WorkUnit,
    processor: ClipProcessor | None = None,
    on_clip: Callable[[ClipResult], None] | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Process the unit's clips, write its tars and parts, then commit its record (and publish the unit
    to a remote output). Returns the record."""
    cfg, mirror = local_view(cfg)
    out = Path(cfg.output)
    processor = processor or get_processor(cfg)
    shards = ShardSet(current_shard_set(out), unit.unit_id, cfg.shards.max_samples, cfg.shards.max_bytes)
    sample_rows: list[dict[str, Any]] = []
    reject_rows: list[dict[str, Any]] = []
    seconds: Counter[str] = Counter()
    frames = 0
    t0 = time.perf_counter()
    results: list[ClipResult] = []
    try:
        for clip in unit.clips:
            res = processor(clip)
            results.append(res)
            reject_rows += [reject_row(r) for r in res.rejects]
            seconds.update(res.seconds)
            frames += res.frames_decoded
            if on_clip is not None:
                on_clip(res)
        if cfg.caption.captioner != "offline":
            t1 = time.perf_counter()
            caption_with_llm(cfg, unit.unit_id, [item for r in results for item in r.pairs], api_key)
            seconds["llm_caption"] += time.perf_counter() - t1
        for res in results:
            for item in res.pairs:
                shard = shards.write(item)
                sample_rows.append(sample_row(item.pair, shard, unit.unit_id))
        sizes = shards.close()
    except BaseException:
        shards.abort()
        raise
    parts = out / PARTS
    write_parquet(parts / f"{unit.unit_id}.samples.parquet", samples_table(sample_rows))
    write_parquet(parts / f"{unit.unit_id}.rejects.parquet", rejects_table(reject_rows))
    record = {
        "unit_id": unit.unit_id,
        "fingerprint": cfg.fingerprint(),
        "versions": processor.versions,
        "clip_keys": cfg.clip_keys(unit.clips),
        "shards": sizes,
        "shard_bytes": sum((current_shard_set(out) / name).stat().st_size for name in sizes),
        "samples": len(sample_rows),
        "rejects": len(reject_rows),
        "frames_decoded": frames,
        "seconds": {k: round(v, 3) for k, v in seconds.items()} | {"wall": round(time.perf_counter() - t0, 3)},
        "committed_at": datetime.now(timezone.utc).isoformat(),
    }
    write_json(parts / f"{unit.unit_id}.json", record)  # the commit
    if mirror is not None:
        mirror.push_unit(record)
    return record


def caption_with_llm(cfg: BuildConfig, unit_id: str, items: list[EncodedPair], api_key: str | None = None) -> None:
    """Replace the offline captions of a unit's pairs with the LLM's where it gave a usable answer. A
    pair whose request failed keeps its offline caption; every attempt is recorded as a caption row
    (recaption later with --where "caption_captioner == 'offline'")."""
    from schemas.captions import CaptionStatus
    from schemas.records import Caption

    from .llm import CaptionJob, LLMCaptioner
    from .recaption import write_caption_rows

    if not items:
        return
    captioner = LLMCaptioner(cfg.caption, Path(cfg.output), api_key=api_key, run_id=unit_id).setup()
    rows = captioner.caption([CaptionJob(i.pair, i.before_jpg, i.after_jpg) for i in items])
    by_pair = {r["pair_id"]: r for r in rows}
    for item in items:
        r = by_pair.get(item.pair.pair_id)
        if r is not None and r["status"] == CaptionStatus.OK:
            caption = Caption(
                text=r["text"], captioner=captioner.name, model=cfg.caption.model, prompt_version=r["prompt_version"]
            )
            item.pair.add_caption(caption, publish=True)  # the offline caption stays among its versions
    write_caption_rows(Path(cfg.output), unit_id, rows)


def _read_parts(out: Path, unit_ids: list[str], kind: str, schema: pa.Schema) -> pa.Table:
    tables = [pq.read_table(out / PARTS / f"{u}.{kind}.parquet", schema=schema) for u in unit_ids]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def finalize(cfg: BuildConfig, plan: BuildPlan, run_seconds: float | None = None) -> dict[str, Any]:
    """Consolidate committed units into samples.parquet, rejects.parquet, shards/sizes.json, stats.json."""
    cfg, mirror = local_view(cfg)
    if mirror is not None:  # units may have been published by other machines (Dask workers)
        mirror.pull_state()
    out = Path(cfg.output)
    stale_records = [r for r in committed_units(out) if r["unit_id"] in set(plan.stale_units)]
    standing = set(plan.kept_units) | {u.unit_id for u in plan.units}
    records = [r for r in committed_units(out) if r["unit_id"] in standing]
    unit_ids = [r["unit_id"] for r in records]
    samples = _read_parts(out, unit_ids, "samples", samples_table([]).schema)
    rejects = _read_parts(out, unit_ids, "rejects", rejects_table([]).schema)
    listing_rejects = rejects_table([reject_row(r) for r in plan.listing.rejects])
    rejects = pa.concat_tables([rejects, listing_rejects])
    samples = samples.sort_by([("clip_id", "ascending"), ("before_index", "ascending"), ("after_index", "ascending")])
    rejects = rejects.sort_by([("clip_id", "ascending"), ("level", "ascending"), ("stage", "ascending")])
    write_parquet(out / SAMPLES_FILE, samples)
    write_parquet(out / REJECTS_FILE, rejects)

    sizes: dict[str, int] = {}
    for r in records:
        sizes.update(r["shards"])
    write_json(current_shard_set(out) / SIZES_FILE, dict(sorted(sizes.items())))
    _drop_stale(out, plan.stale_units)

    stats = build_stats(plan, records, samples, rejects, sizes)
    if run_seconds is not None:
        stats["last_run_seconds"] = round(run_seconds, 2)
    write_json(out / STATS_FILE, stats)
    if mirror is not None:
        mirror.drop_units(stale_records)
        mirror.push_manifests()
    if stats["unaccounted_clips"] or stats["double_counted_clips"]:
        log.error(
            "clip accounting does not add up: unaccounted %s, double %s",
            stats["unaccounted_clips"][:5],
            stats["double_counted_clips"][:5],
        )
    return stats


def _drop_stale(out: Path, stale_units: list[str]) -> None:
    for u in stale_units:
        rec_path = out / PARTS / f"{u}.json"
        try:
            rec = json.loads(rec_path.read_text())
        except FileNotFoundError:
            continue
        rec_path.unlink()  # un-commit first, then remove what it held
        for name in rec["shards"]:
            (out / SHARDS / name).unlink(missing_ok=True)
        for kind in ("samples", "rejects"):
            (out / PARTS / f"{u}.{kind}.parquet").unlink(missing_ok=True)


def build_stats(
    plan: BuildPlan, records: list[dict], samples: pa.Table, rejects: pa.Table, sizes: dict[str, int]
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
    for r in records:
        seconds.update(r.get("seconds", {}))
    versions = records[-1]["versions"] if records else {}
    return {
        "fingerprint": plan.fingerprint,
        "listing_digest": plan.listing_digest,
        "versions": versions,
        "clips_in": len(all_ids),
        "clips_accepted": len(accepted),
        "clips_rejected": len(rejected_ids),
        "pairs": samples.num_rows,
        "rejects_by_reason": dict(sorted(Counter(f"{st}/{rs}" for _, st, rs in clip_rejects).items())),
        "candidate_rejects": levels.count(Level.CANDIDATE.value),
        "unaccounted_clips": sorted(set(all_ids) - set(outcomes)),
        "double_counted_clips": sorted(c for c, n in outcomes.items() if n > 1),
        "ignored_files": len(plan.listing.ignored),
        "unlisted_files": len(plan.listing.unlisted),
        "shards": len(sizes),
        "shard_bytes": sum(r["shard_bytes"] for r in records),  # standing records all have clip keys and bytes
        "units": len(records),
        "frames_decoded": sum(r.get("frames_decoded", 0) for r in records),
        "seconds": {k: round(v, 2) for k, v in sorted(seconds.items())},
        "finalized_at": datetime.now(timezone.utc).isoformat(),
    }


def run_build(
    cfg: BuildConfig, on_clip: Callable[[ClipResult], None] | None = None, api_key: str | None = None
) -> dict[str, Any]:
    """The whole build in this process: the same steps the Prefect flow runs as tasks."""
    t0 = time.perf_counter()
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
    for unit in plan.units:
        process_unit(cfg, unit, on_clip=on_clip, api_key=api_key)
    return finalize(cfg, plan, time.perf_counter() - t0)


def nothing_to_do(cfg: BuildConfig, plan: BuildPlan) -> bool:
    """No pending unit, nothing stale, manifests in place and made from this same listing: a re-run is a
    no-op (nothing is rewritten)."""
    if plan.units or plan.stale_units:
        return False
    local, mirror = local_view(cfg)
    files = (SAMPLES_FILE, REJECTS_FILE, STATS_FILE)
    if mirror is not None:
        present = all(mirror.fs.exists(f"{mirror.root}/{f}") for f in files)
    else:
        present = all((Path(cfg.output) / f).is_file() for f in files)
    return present and current_stats(cfg).get("listing_digest") == plan.listing_digest


def current_stats(cfg: BuildConfig) -> dict[str, Any]:
    _, mirror = local_view(cfg)
    if mirror is not None:
        return json.loads(mirror.fs.cat_file(f"{mirror.root}/{STATS_FILE}"))
    return json.loads((Path(cfg.output) / STATS_FILE).read_text())


__all__ = ["BuildPlan", "WorkUnit", "plan_build", "process_unit", "finalize", "run_build", "get_processor"]
