"""Making a generation: the one function a build's finalize and a publish both end in.

From the committed units (their sample parts, with the offline captions) and the reject rows so far,
`make_generation` decides the near-duplicates across the whole dataset, applies the output's published
caption choice, computes stats.json (counts, yield, caption quality), writes the generation through the
store and moves its pointer, writes the dataset card, un-commits superseded units, applies retention
and writes the QA report. A published generation therefore differs from a build's only in its captions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.manifest import rejects_table, samples_table
from schemas.records import Level, RejectReason, Stage

from .captions.published import apply_published, published_choice
from .captions.quality import generation_caption_quality
from .plan import result_versions
from .report.card import card
from .report.page import write_report
from .report.yields import yield_by_class
from .store import Output, StoreError
from .store.dedupe import drop_near_duplicates
from .store.layout import CARD_FILE

log = logging.getLogger(__name__)

SAMPLE_ORDER = [("clip_id", "ascending"), ("before_index", "ascending"), ("after_index", "ascending")]
REJECT_ORDER = [("clip_id", "ascending"), ("level", "ascending"), ("stage", "ascending")]


@dataclass
class Basis:
    """What a generation is made of, before near-duplicates and captions are decided."""

    records: list[dict[str, Any]]  # the committed units it holds
    rejects: pa.Table  # every reject row so far (units' and the listing's), with their clips' metadata
    all_ids: list[str]  # every clip that went in (for the accounting check)
    clips: list[dict[str, Any]]  # {source, clip_id, label, extra} of the listed clips (yield by class)
    fingerprint: str
    listing_digest: str
    config: dict[str, Any]  # the thresholds applied (stats.json's config)
    max_duplicate_distance: int
    keypoint_conf: float
    ignored_files: int = 0
    unlisted_files: int = 0
    extra_stats: dict[str, Any] = field(default_factory=dict)


def units_digest(records: list[dict]) -> dict[str, str]:
    return {
        r["unit_id"]: hashlib.sha1(json.dumps(r.get("files", {}), sort_keys=True).encode()).hexdigest()[:16]
        for r in records
    }


def read_parts(out: Output, unit_ids: list[str], kind: str, schema: pa.Schema) -> pa.Table:
    tables = [pq.read_table(p, schema=schema) for p in out.local_parts(unit_ids, kind)]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def without_near_duplicates(rejects: pa.Table) -> pa.Table:
    """Reject rows less the ones a generation's near-duplicate step adds (pairing/duplicate), so a
    publish starts from what the build started from."""
    dup = pc.and_(
        pc.equal(rejects.column("stage"), Stage.PAIRING.value),
        pc.equal(rejects.column("reason"), RejectReason.DUPLICATE.value),
    )
    return rejects.filter(pc.invert(pc.fill_null(dup, False)))


def make_generation(
    out: Output,
    basis: Basis,
    stale: list[str] | None = None,
    keep: int | None = None,
    run_seconds: float | None = None,
) -> dict[str, Any]:
    records = basis.records
    unit_ids = [r["unit_id"] for r in records]
    samples = read_parts(out, unit_ids, "samples", samples_table([]).schema).sort_by(SAMPLE_ORDER)
    files: dict[str, dict[str, Any]] = {}
    for r in records:
        files.update(r["files"])
    samples, files, dup_rows, dedup = drop_near_duplicates(out, samples, files, basis.max_duplicate_distance)
    rejects = basis.rejects
    if dup_rows:
        rejects = pa.concat_tables([rejects, rejects_table(dup_rows)])
    rejects = rejects.sort_by(REJECT_ORDER)
    offline = samples  # the units' own captions, before the published choice
    samples, files, applied = apply_published(out, samples, files)
    stats = generation_stats(basis, samples, rejects, files)
    stats["yield"] = _yield(basis, samples, rejects)
    stats["caption_quality"] = generation_caption_quality(out.root, offline, samples, rejects, basis.keypoint_conf)
    stats["near_duplicates"] = dedup["near_duplicates"]
    if applied:
        stats["published"] = applied
    previous = out.meta() or {}
    if previous.get("versions") and previous["versions"] != stats["versions"]:
        stats["changed_versions"] = {
            k: [previous["versions"].get(k), v]
            for k, v in stats["versions"].items()
            if previous["versions"].get(k) != v
        }
    stats |= basis.extra_stats
    if run_seconds is not None:
        stats["last_run_seconds"] = round(run_seconds, 2)
    stats["config"] = basis.config
    meta = {
        "listing_digest": basis.listing_digest,
        "fingerprint": basis.fingerprint,
        "versions": stats["versions"],
        "units": units_digest(records),
        "published": published_choice(out),  # compared by the next run's no-op check
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    gen = out.write_generation(samples, rejects, stats, files, meta, records)
    write_card(out, stats, samples, rejects, files)
    out.uncommit([u for u in stale or [] if u not in set(unit_ids)])  # after the switch
    if keep is not None:
        out.gc(keep=keep)
    del samples, offline, rejects  # the report reads the generation back: not both in memory at its peak
    stats["report"] = _report(out.url)
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
    try:
        return write_report(url)
    except Exception as e:
        log.warning("the QA report was not written: %s: %s", type(e).__name__, e)
        return {"error": f"{type(e).__name__}: {e}"}


def write_card(out: Output, stats: dict, samples: pa.Table, rejects: pa.Table, files: dict) -> None:
    """OUT/README.md, the Hugging Face dataset card, for the generation just made."""
    text = card(stats, _columns(samples, CARD_SAMPLE_COLUMNS), _columns(rejects, CARD_REJECT_COLUMNS), sorted(files))
    out.write_file(CARD_FILE, text.encode())


CARD_SAMPLE_COLUMNS = ["schema_version", "source", "licence", "split", "clip_id", "pair_id", "extra"]
CARD_REJECT_COLUMNS = ["stage", "reason", "level"]


def _columns(table: pa.Table, names: list[str]):
    """The columns the card reads, as a DataFrame (not the whole manifest: keypoints are most of it)."""
    return table.select([n for n in names if n in table.column_names]).to_pandas()


def _yield(basis: Basis, samples: pa.Table, rejects: pa.Table) -> dict[str, Any]:
    """Clips in, pairs out and top reject reasons per source and per action label."""
    cols = ["source", "clip_id", "label", "extra", "stage", "reason", "level"]
    return yield_by_class(
        basis.clips,
        samples.select(cols[:4]).to_pandas(),
        rejects.select([c for c in cols if c in rejects.column_names]).to_pandas(),
    )


def generation_stats(basis: Basis, samples: pa.Table, rejects: pa.Table, files: dict[str, dict]) -> dict[str, Any]:
    records = basis.records
    all_ids = basis.all_ids
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
    versions = records[-1]["versions"] if records else {}
    return {
        "fingerprint": basis.fingerprint,
        "listing_digest": basis.listing_digest,
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
        "ignored_files": basis.ignored_files,
        "unlisted_files": basis.unlisted_files,
        "shards": len(files),
        "shard_bytes": sum(f["bytes"] for f in files.values()),
        "units": len(records),
        "frames_decoded": sum(r.get("frames_decoded", 0) for r in records),
        "funnel": dict(funnel),
        "seconds": {k: round(v, 2) for k, v in sorted(seconds.items())},
        "finalized_at": datetime.now(timezone.utc).isoformat(),
    }


def collect_garbage(url: str, keep: int = 1, wait: float | None = None) -> dict[str, Any]:
    """Apply retention to a finished output: keep the current generation and `keep` older ones, delete
    the rest and the tars only they used (readers of them are done), under the writer lock (what a
    dead writer left is cleaned first)."""
    out = Output.open(url)
    if out.current() is None:
        raise StoreError(f"{url} holds no finished build")
    with out.lock("motionpairs gc", wait):
        return out.gc(keep=keep)
