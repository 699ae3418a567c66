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
import io
import json
import logging
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.captions import CAPTIONS_DIR
from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE
from schemas.records import Caption

from .captions.llm import CaptionJob, LLMCaptioner, RunSummary
from .captions.rows import (
    AGREEMENT_POLICIES,
    choose_captions,
    known_versions,
    read_caption_rows,
    resolve_version,
    write_caption_rows,
)
from .captions.where import FilterError, select_rows
from .config import CaptionConfig, QualityConfig
from .store import Output, StoreError, write_json
from .store.faults import crash_point
from .store.layout import PUBLISHED
from .store.shards import describe_tar, rewrite_tar

log = logging.getLogger(__name__)


class RecaptionError(ValueError):
    """A bad query or an output folder without a finished build: a clear one-line error."""


def _output(out: Output | Path | str, staging_dir: str | None = None) -> Output:
    return out if isinstance(out, Output) else Output.open(out, staging_dir)


def load_samples(out: Output | Path | str) -> pd.DataFrame:
    """The current generation's samples.parquet (a local folder or an fsspec URL)."""
    out = _output(out)
    try:
        data = out.read_generation_file(SAMPLES_FILE)
    except (StoreError, FileNotFoundError) as e:
        raise RecaptionError(f"{out.url} holds no finished build (no {SAMPLES_FILE})") from e
    return pd.read_parquet(io.BytesIO(data))


def select(samples: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """The rows a --where filter (a DuckDB SQL boolean expression, no file or code access) selects."""
    try:
        return select_rows(samples, where)
    except FilterError as e:
        raise RecaptionError(str(e)) from e


def load_jobs(out: Output | Path | str, subset: pd.DataFrame) -> list[CaptionJob]:
    """Images and records of the chosen pairs, read back through the store."""
    shards = dict(zip(subset.pair_id, subset.shard, strict=True))
    jobs = [CaptionJob(s.pair, s.before, s.after) for s in _output(out).samples(shards, shards=shards)]
    order = {p: i for i, p in enumerate(subset.pair_id)}
    return sorted(jobs, key=lambda j: order[j.pair.pair_id])


def recaption(
    out: Output | Path | str,
    cfg: CaptionConfig,
    where: str | None = None,
    api_key: str | None = None,
    wait: float | None = None,
    staging_dir: str | None = None,
) -> tuple[RunSummary, str]:
    out = _output(out, staging_dir)
    samples = load_samples(out)
    subset = select(samples, where)
    with out.lock("recaption", wait):
        out.pull()
        captioner = LLMCaptioner(cfg, out.root, api_key=api_key).setup()
        jobs = load_jobs(out, subset)
        log.info("recaptioning %d of %d samples with %s", len(jobs), len(samples), captioner.version)
        rows = captioner.caption(jobs)
        path = write_caption_rows(out.root, captioner.run_id, rows)
        if path is not None:
            out.push(f"{CAPTIONS_DIR}/{path.name}")
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
        if not (out.tars / dst).is_file():
            out.local_tar(name)  # a remote output: the source tar into the staging pool
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
    out: Output | Path | str,
    caption_version: str | None = None,
    wait: float | None = None,
    staging_dir: str | None = None,
    agreement: str = "any",
) -> dict[str, Any]:
    """Apply a caption choice as a new generation of a finished build, local or at an fsspec URL.
    `agreement`: any; prefer (captions whose structured changes agree with the keypoints first); require
    (only agreeing captions; the others keep the offline caption). The generation is made the way a
    build makes one (curation.generation): near-duplicates, stats, card and report included."""
    if agreement not in AGREEMENT_POLICIES:
        raise RecaptionError(f"agreement must be one of {', '.join(AGREEMENT_POLICIES)}, not {agreement!r}")
    out = _output(out, staging_dir)
    load_samples(out)  # a finished build, before the lock
    with out.lock("publish", wait):
        out.pull()
        return _publish(out, caption_version, agreement)


def _publish(out: Output, caption_version: str | None, agreement: str) -> dict[str, Any]:
    from .generation import Basis, make_generation, without_near_duplicates

    meta = out.meta()
    if meta is None:
        raise RecaptionError(f"{out.url} holds no finished build (no current generation)")
    rows = read_caption_rows(out.root)
    if caption_version and resolve_version(rows, caption_version) is None:
        known = ", ".join(sorted(set(rows.caption_version))) or "none"
        raise RecaptionError(f"no captions of version {caption_version!r}; known versions: {known}")
    choice = {"caption_version": resolve_version(rows, caption_version), "agreement": agreement}
    records = [r for r in out.records() if r["unit_id"] in meta["units"]]
    if {r["unit_id"] for r in records} != set(meta["units"]):
        raise RecaptionError("the current generation's units are not all committed; run the build first")
    write_json(out.root / CAPTIONS_DIR / PUBLISHED, choice)
    out.push(f"{CAPTIONS_DIR}/{PUBLISHED}")
    current = pq.read_table(io.BytesIO(out.read_generation_file(SAMPLES_FILE)), columns=["clip_id"])
    rejects = pq.read_table(io.BytesIO(out.read_generation_file(REJECTS_FILE)))
    stats = json.loads(out.read_generation_file(STATS_FILE))
    config = stats.get("config") or {}
    quality = config.get("quality") or {}
    basis = Basis(
        records=records,
        rejects=without_near_duplicates(rejects),  # decided again, the way the build decides them
        all_ids=sorted(set(current.column("clip_id").to_pylist()) | set(rejects.column("clip_id").to_pylist())),
        clips=[],  # yield by class from the manifests' own rows
        fingerprint=meta.get("fingerprint", stats.get("fingerprint", "")),
        listing_digest=meta.get("listing_digest", stats.get("listing_digest", "")),
        config=config,
        max_duplicate_distance=quality.get("max_duplicate_distance", QualityConfig().max_duplicate_distance),
        keypoint_conf=(config.get("motion") or {}).get("keypoint_conf", 0.5),
        ignored_files=stats.get("ignored_files", 0),
        unlisted_files=stats.get("unlisted_files", 0),
    )
    new = make_generation(out, basis)
    applied = new.get("published") or {}
    return {
        "published_at": datetime.now(timezone.utc).isoformat(),
        "caption_version": choice["caption_version"],
        "agreement": agreement,
        "samples": new["pairs"],
        "captions_applied": applied.get("captions_applied", 0),
        "shards_rewritten": applied.get("shards_rewritten", 0),
        "generation": new["generation"],
    }
