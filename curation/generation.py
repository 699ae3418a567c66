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
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.manifest import rejects_table, samples_table
from schemas.records import Level, RejectReason, Stage

from .captions.published import apply_published, published_choice
from .captions.quality import generation_caption_quality, keypoint_verdicts, llm_checks
from .captions.rows import read_caption_rows
from .plan import result_versions
from .report.card import card
from .report.page import write_report
from .report.yields import yield_by_class
from .store import Output, StoreError
from .store.dedupe import drop_near_duplicates
from .store.files import TMP_SUFFIX
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
    tables = (pq.read_table(p, schema=schema) for p in out.local_parts(unit_ids, kind))
    return concat_parts(tables) or schema.empty_table()


PARTS_PER_CHUNK = 256


def concat_parts(tables: Iterable[pa.Table]) -> pa.Table | None:
    """The tables one after another, made contiguous every PARTS_PER_CHUNK tables: a table of 12,500
    parts' small chunks costs several times its data in chunk bookkeeping and allocator rounding."""
    chunks, batch = [], []
    for t in tables:
        batch.append(t)
        if len(batch) == PARTS_PER_CHUNK:
            chunks.append(pa.concat_tables(batch).combine_chunks())
            batch = []
    if batch:
        chunks.append(pa.concat_tables(batch).combine_chunks())
    return pa.concat_tables(chunks) if chunks else None


# The columns of samples a generation decides from (order, near-duplicates, captions, stats, yield, the
# card): read from every part; the rest (poses, figures) only streamed from the parts into the manifest.
SPINE_COLUMNS = [
    *("schema_version", "pair_id", "clip_id", "before_index", "after_index", "before_phash", "after_phash"),
    *("source", "licence", "uri", "label", "split", "video_id", "extra", "shard"),
    *("caption", "caption_captioner", "caption_model", "caption_prompt_version", "caption_created_at"),
]
CHANGED_COLUMNS = ["shard", *SPINE_COLUMNS[-5:]]  # what near-duplicates and the published captions change
PART, ROW = "__part", "__row"  # where a spine row comes from
ROWS_PER_GROUP = 32768  # rows of the manifest in memory at once while it is written (one row group)


def read_spine(paths: list, schema: pa.Schema) -> tuple[pa.Table, np.ndarray]:
    """The spine columns of every part, in the generation's order (the order concatenating the parts
    and sorting by SAMPLE_ORDER gives: the sort is stable), each row with its part and row; and the
    parts' first rows' offsets."""
    spine_schema = pa.schema([schema.field(c) for c in SPINE_COLUMNS])
    sizes = []

    def parts() -> Iterator[pa.Table]:
        for k, p in enumerate(paths):
            t = pq.read_table(p, schema=schema, columns=SPINE_COLUMNS).select(SPINE_COLUMNS).cast(spine_schema)
            sizes.append(t.num_rows)
            t = t.append_column(PART, pa.array(np.full(t.num_rows, k, np.int32)))
            yield t.append_column(ROW, pa.array(np.arange(t.num_rows, dtype=np.int32)))

    spine = concat_parts(parts())
    if spine is None:
        empty = spine_schema.append(pa.field(PART, pa.int32())).append(pa.field(ROW, pa.int32()))
        return empty.empty_table(), np.zeros(1, np.int64)
    order = pc.sort_indices(spine, sort_keys=SAMPLE_ORDER)
    spine = spine.take(order).combine_chunks()
    return spine, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


class StreamedSamples:
    """samples.parquet, written a row group at a time (`Chunks`): the parts' rows, each put where the
    spine (the generation's order, near-duplicates dropped, shards and captions decided) says, its
    changed columns from the spine. The rows are first sorted out into runs of ROWS_PER_GROUP (temp
    IPC files in `tmp`), each run then ordered in memory: a part's rows are spread over the whole
    order, so neither the parts nor the manifest are whole in memory. The keypoint checks of the
    caption figures are made as the parts go by (`keypoint_verdicts`)."""

    def __init__(self, paths, offsets, spine: pa.Table, schema: pa.Schema, tmp: Path, checks: dict, min_conf: float):
        self.schema = schema
        self.spine = spine
        self.runs: list[Path] = []
        self.verdicts: dict = {}
        n = spine.num_rows
        dest = np.full(int(offsets[-1]), -1, np.int64)  # part row -> its row in the manifest
        dest[offsets[spine.column(PART).to_numpy()] + spine.column(ROW).to_numpy()] = np.arange(n)
        groups = max(1, -(-n // ROWS_PER_GROUP))
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        run_schema = schema.append(pa.field(ROW, pa.int64()))
        writers = []
        pending: dict[int, list[pa.Table]] = {}
        buffered = 0

        def flush() -> None:
            for g, tables in sorted(pending.items()):
                writers[g].write_table(pa.concat_tables(tables).combine_chunks())
            pending.clear()

        try:
            for g in range(groups):
                self.runs.append(tmp / f"run-{g:05d}.arrow")
                writers.append(pa.ipc.new_file(str(self.runs[-1]), run_schema, options=options))
            for k, p in enumerate(paths):
                where = dest[offsets[k] : offsets[k + 1]]
                keep = where >= 0
                if not keep.any():
                    continue
                part = pq.read_table(p, schema=schema).filter(pa.array(keep))
                where = where[keep]
                keypoint_verdicts(part, checks, self.verdicts, min_conf)
                # the part's rows in the order of their groups, then a slice per group: one take for
                # the part, not a filter per group (a part's rows reach every group of a large build)
                order = np.argsort(where // ROWS_PER_GROUP, kind="stable")
                where = where[order]
                part = part.take(pa.array(order)).append_column(ROW, pa.array(where))
                group = where // ROWS_PER_GROUP
                starts = np.flatnonzero(np.diff(group, prepend=-1))
                for a, b in zip(starts, [*starts[1:], len(group)], strict=True):
                    pending.setdefault(int(group[a]), []).append(part.slice(int(a), int(b - a)))
                buffered += part.num_rows
                if buffered >= ROWS_PER_GROUP // 4:  # written in batches of some size: few chunks to read back
                    flush()
                    buffered = 0
            flush()
        finally:
            for w in writers:
                w.close()

    def __iter__(self) -> Iterator[pa.Table]:
        for g, run in enumerate(self.runs):
            with pa.memory_map(str(run)) as f:
                table = pa.ipc.open_file(f).read_all()
            table = table.take(pc.sort_indices(table.column(ROW)))
            first = g * ROWS_PER_GROUP
            spine = self.spine.slice(first, table.num_rows)
            expected = np.arange(first, first + table.num_rows)
            if not np.array_equal(table.column(ROW).to_numpy(), expected):
                raise RuntimeError("the manifest's rows did not all come back from the parts")
            table = table.drop_columns([ROW])
            for c in CHANGED_COLUMNS:
                table = table.set_column(table.schema.get_field_index(c), c, spine.column(c))
            yield table.combine_chunks()
            del table


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
    """Memory that grows with the dataset: the spine (SPINE_COLUMNS of every sample, no poses) and the
    rejects; samples.parquet is written a row group at a time from the parts (StreamedSamples)."""
    records = basis.records
    unit_ids = [r["unit_id"] for r in records]
    schema = samples_table([]).schema
    paths = out.local_parts(unit_ids, "samples")
    spine, offsets = read_spine(paths, schema)
    files: dict[str, dict[str, Any]] = {}
    for r in records:
        files.update(r["files"])
    spine, files, dup_rows, dedup = drop_near_duplicates(out, spine, files, basis.max_duplicate_distance)
    rejects = basis.rejects
    if dup_rows:
        rejects = pa.concat_tables([rejects, rejects_table(dup_rows)])
    rejects = rejects.sort_by(REJECT_ORDER)
    offline = spine  # the units' own captions, before the published choice
    spine, files, applied = apply_published(out, spine, files)
    caption_rows = read_caption_rows(out.root)
    with tempfile.TemporaryDirectory(prefix=".generation-", suffix=TMP_SUFFIX, dir=out.root) as tmp:
        samples = StreamedSamples(
            paths, offsets, spine, schema, Path(tmp), llm_checks(caption_rows), basis.keypoint_conf
        )  # the parts sorted out into runs (the keypoint checks made on the way)
        stats = generation_stats(basis, spine, rejects, files)
        stats["yield"] = _yield(basis, spine, rejects)
        stats["caption_quality"] = generation_caption_quality(
            out.root, offline, spine, rejects, basis.keypoint_conf, samples.verdicts, caption_rows
        )
        del offline, caption_rows
        samples.verdicts = {}
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
    write_card(out, stats, spine, rejects, files)
    out.uncommit([u for u in stale or [] if u not in set(unit_ids)])  # after the switch
    if keep is not None:
        out.gc(keep=keep)
    del samples, spine, rejects  # the report reads the generation back: not both in memory at its peak
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
    machines: Counter[str] = Counter(json.dumps(r["machine"], sort_keys=True) for r in records if r.get("machine"))
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
        "machines": [json.loads(m) | {"units": n} for m, n in sorted(machines.items())],
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
