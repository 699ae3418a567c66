"""Caption versions after a build: recaption a chosen subset, then publish the chosen captions.

- `recaption(out, where=...)` captions the samples that a pandas query over samples.parquet selects
  and appends the answers as a new caption run (OUT/captions/rows-<run>.parquet); nothing else changes.
- `publish(out, caption_version=...)` records the choice (OUT/captions/published.json) and writes a
  complete new generation: one caption per sample (the newest usable one of that version; samples
  without one keep theirs), changed tars rewritten into the pool under new names, the others shared,
  then the one pointer moves. Readers of the old generation are not disturbed until `gc`. Every later
  build applies the same choice to its generation. Each pair in the shards also carries every usable
  caption version known for it (`captions`), so training can choose one (`motionpairs train
  --caption-version`) without another publish. Unit records and parts are never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from schemas.captions import CAPTIONS_DIR
from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE
from schemas.records import Caption
from schemas.shard import decode_sample

from .captions.llm import CaptionJob, LLMCaptioner, RunSummary
from .captions.quality import generation_caption_quality
from .captions.rows import (
    AGREEMENT_POLICIES,
    choose_captions,
    known_versions,
    read_caption_rows,
    resolve_version,
    write_caption_rows,
)
from .captions.select import FilterError, select_rows
from .config import CaptionConfig
from .store import Output, StoreError, require_local, write_json
from .store.faults import crash_point
from .store.layout import PUBLISHED, SHARDS
from .store.shards import describe_tar, rewrite_tar

log = logging.getLogger(__name__)


class RecaptionError(ValueError):
    """A bad query or an output folder without a finished build: a clear one-line error."""


def load_samples(out: Path | str) -> pd.DataFrame:
    try:
        require_local(str(out), "recaption and publish")
    except StoreError as e:
        raise RecaptionError(str(e)) from e
    path = Path(out) / SAMPLES_FILE
    if not path.is_file():
        raise RecaptionError(f"{out} holds no finished build (no {SAMPLES_FILE})")
    return pd.read_parquet(path)


def select(samples: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """The rows a --where filter (a DuckDB SQL boolean expression, no file or code access) selects."""
    try:
        return select_rows(samples, where)
    except FilterError as e:
        raise RecaptionError(str(e)) from e


def load_jobs(out: Path, subset: pd.DataFrame) -> list[CaptionJob]:
    """Images and records of the chosen pairs, read back from their shards."""
    wanted = defaultdict(set)
    for pid, shard in zip(subset.pair_id, subset.shard, strict=True):
        wanted[shard].add(pid)
    jobs = []
    for shard, ids in sorted(wanted.items()):
        for raw in wds.WebDataset(str(Path(out) / SHARDS / shard), shardshuffle=False):
            s = decode_sample(raw)
            if s.pair.pair_id in ids:
                jobs.append(CaptionJob(s.pair, s.before, s.after))
    order = {p: i for i, p in enumerate(subset.pair_id)}
    return sorted(jobs, key=lambda j: order[j.pair.pair_id])


def recaption(
    out: Path | str,
    cfg: CaptionConfig,
    where: str | None = None,
    api_key: str | None = None,
    wait: float | None = None,
) -> tuple[RunSummary, str]:
    samples = load_samples(out)
    out = Path(out)
    subset = select(samples, where)
    with Output(out).lock("recaption", wait):
        return _recaption(out, cfg, subset, samples, api_key)


def _recaption(out: Path, cfg: CaptionConfig, subset: pd.DataFrame, samples: pd.DataFrame, api_key: str | None):
    captioner = LLMCaptioner(cfg, out, api_key=api_key).setup()
    jobs = load_jobs(out, subset)
    log.info("recaptioning %d of %d samples with %s", len(jobs), len(samples), captioner.version)
    rows = captioner.caption(jobs)
    write_caption_rows(out, captioner.run_id, rows)
    return captioner.summary, captioner.run_id


def _caption_columns(table: pa.Table, chosen: dict[str, Caption]) -> pa.Table:
    df = table.to_pandas()
    for i, pid in enumerate(df.pair_id):
        c = chosen.get(pid)
        if c is not None:
            df.at[i, "caption"] = c.text
            df.at[i, "caption_captioner"] = c.captioner
            df.at[i, "caption_model"] = c.model
            df.at[i, "caption_prompt_version"] = c.prompt_version
            df.at[i, "caption_created_at"] = pd.Timestamp(c.created_at)
    return pa.Table.from_pandas(df, schema=table.schema, preserve_index=False)


def published_choice(out: Output) -> dict[str, Any] | None:
    """The caption choice a publish made for this output ({"caption_version": ...}), or None."""
    try:
        data = json.loads((out.root / CAPTIONS_DIR / PUBLISHED).read_text())
    except (OSError, ValueError):
        return None
    return {"caption_version": data.get("caption_version"), "agreement": data.get("agreement", "any")}


def _published_name(name: str, sha256: str, changes: list[tuple[str, str, list[str]]]) -> str:
    digest = hashlib.sha1(json.dumps([sha256, changes]).encode()).hexdigest()[:10]
    return f"{name[: -len('.tar')]}-c{digest}.tar"


def _rewrite_tar(out: Output, src_name: str, dst_name: str, chosen: dict, versions: dict) -> dict[str, Any]:
    """Copy a pool tar into a new pool tar with the chosen captions."""

    def edit(pair):
        if pair.pair_id in chosen or pair.pair_id in versions:
            for c in versions.get(pair.pair_id, []):  # every version travels with the pair
                pair.add_caption(c)
            if pair.pair_id in chosen:
                pair.caption = chosen[pair.pair_id]
        return pair

    return rewrite_tar(out.tars, src_name, dst_name, edit)


def apply_published(
    out: Output,
    samples: pa.Table,
    files: dict[str, dict[str, Any]],
    fetch: Callable[[str], None] | None = None,
) -> tuple[pa.Table, dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Apply the output's published caption choice to a generation being made: tars holding a pair
    whose caption changes are rewritten into the pool under a name derived from their content and the
    change (made once, reused by later generations); the samples get the same captions and tar names."""
    choice = published_choice(out)
    if choice is None:
        return samples, files, None
    rows = read_caption_rows(out.root)
    ids = set(samples.column("pair_id").to_pylist())
    chosen = {
        p: c for p, c in choose_captions(rows, choice["caption_version"], choice["agreement"]).items() if p in ids
    }
    versions = {p: v for p, v in known_versions(rows).items() if p in ids}
    by_shard: dict[str, list[str]] = defaultdict(list)
    for pid, shard in zip(samples.column("pair_id").to_pylist(), samples.column("shard").to_pylist(), strict=True):
        if pid in chosen or pid in versions:
            by_shard[shard].append(pid)
    renamed: dict[str, str] = {}
    new_files = dict(files)
    for i, (name, pids) in enumerate(sorted(by_shard.items())):
        changes = [
            (p, chosen[p].model_dump_json() if p in chosen else "", [c.model_dump_json() for c in versions.get(p, [])])
            for p in sorted(pids)
        ]
        dst = _published_name(name, files[name]["sha256"], changes)
        if fetch is not None and not (out.tars / dst).is_file():
            fetch(name)  # a remote output: the source tar into the staging pool
        entry = _rewrite_tar(out, name, dst, chosen, versions) if not (out.tars / dst).is_file() else None
        if entry is None:
            entry = describe_tar(out.tars / dst, files[name]["samples"])
        del new_files[name]
        new_files[dst] = entry
        renamed[name] = dst
        if i == 0:
            crash_point("publish")
    df = _caption_columns(samples, chosen).to_pandas()
    df["shard"] = df["shard"].map(lambda s: renamed.get(s, s))
    table = pa.Table.from_pandas(df, schema=samples.schema, preserve_index=False)
    return table, new_files, choice | {"captions_applied": len(chosen), "shards_rewritten": len(renamed)}


def publish(
    out: Path | str,
    caption_version: str | None = None,
    wait: float | None = None,
    staging_dir: str | None = None,
    agreement: str = "any",
) -> dict[str, Any]:
    """Apply a caption choice as a new generation of a finished build, local or at an fsspec URL.
    `agreement`: any; prefer (captions whose structured changes agree with the keypoints first); require
    (only agreeing captions; the others keep the offline caption)."""
    if agreement not in AGREEMENT_POLICIES:
        raise RecaptionError(f"agreement must be one of {', '.join(AGREEMENT_POLICIES)}, not {agreement!r}")
    from .store import RemoteMirror, default_staging, is_remote

    mirror = None
    if is_remote(str(out)):
        mirror = RemoteMirror(str(out), Path(staging_dir) if staging_dir else default_staging(str(out)))
        store = Output(mirror.staging)
    else:
        load_samples(out)
        store = Output(out)
    with store.lock("publish", wait):
        if mirror is not None:
            lease = mirror.lease("publish", wait).acquire()
        try:
            store.clean()
            return _publish(store, mirror, caption_version, agreement)
        finally:
            if mirror is not None:
                lease.release()


def _publish(store: Output, mirror, caption_version: str | None, agreement: str) -> dict[str, Any]:
    import tempfile

    if mirror is not None:
        mirror.pull_state()
        mirror.pull_captions()
        meta = mirror.meta()
    else:
        meta = store.meta()
    if meta is None:
        raise RecaptionError(f"{mirror.url if mirror else store.root} holds no finished build (no current generation)")
    rows = read_caption_rows(store.root)
    if caption_version and resolve_version(rows, caption_version) is None:
        known = ", ".join(sorted(set(rows.caption_version))) or "none"
        raise RecaptionError(f"no captions of version {caption_version!r}; known versions: {known}")
    choice = {"caption_version": resolve_version(rows, caption_version), "agreement": agreement}
    write_json(store.root / CAPTIONS_DIR / PUBLISHED, choice)
    if mirror is not None:
        mirror.push_published()
    records = [r for r in store.records() if r["unit_id"] in meta["units"]]
    if {r["unit_id"] for r in records} != set(meta["units"]):
        raise RecaptionError("the current generation's units are not all committed; run the build first")
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".publish-", suffix=".tmp") as tmp:  # clean() knows it
        if mirror is not None:
            for name in (SAMPLES_FILE, REJECTS_FILE, STATS_FILE):
                mirror.fetch_generation_file(name, Path(tmp) / name)
            current = Path(tmp)
        else:
            current = store.root
        schema = pq.read_schema(current / SAMPLES_FILE)
        rejects = pq.read_table(current / REJECTS_FILE)
        stats = json.loads((current / STATS_FILE).read_text())
    parts = [pq.read_table(store.part(r["unit_id"], "samples"), schema=schema) for r in records]
    samples = pa.concat_tables(parts) if parts else schema.empty_table()
    samples = samples.sort_by([("clip_id", "ascending"), ("before_index", "ascending"), ("after_index", "ascending")])
    files: dict[str, dict[str, Any]] = {}
    for r in records:
        files.update(r["files"])
    offline = samples
    samples, files, applied = apply_published(store, samples, files, fetch=mirror.fetch_tar if mirror else None)
    stats |= {"shards": len(files), "shard_bytes": sum(f["bytes"] for f in files.values()), "published": applied}
    conf = ((stats.get("config") or {}).get("motion") or {}).get("keypoint_conf", 0.5)
    stats["caption_quality"] = generation_caption_quality(store.root, offline, samples, rejects, conf)
    new_meta = meta | {"published": published_choice(store)}
    if mirror is not None:
        mirror.push_tars(files)
    gen = store.write_generation(
        samples, rejects, stats, files, new_meta, link_tars=mirror is None, after=mirror.current() if mirror else None
    )
    if mirror is not None:
        mirror.push_generation(gen)
    from .runner import write_card

    write_card(store, mirror, stats, samples, rejects, files)  # the card describes the new generation
    return {
        "published_at": datetime.now(timezone.utc).isoformat(),
        "caption_version": choice["caption_version"],
        "agreement": agreement,
        "samples": samples.num_rows,
        "captions_applied": applied["captions_applied"] if applied else 0,
        "shards_rewritten": applied["shards_rewritten"] if applied else 0,
        "generation": gen,
    }
