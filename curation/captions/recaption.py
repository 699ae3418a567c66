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

import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from schemas.captions import CAPTIONS_DIR
from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE

from ..config import CaptionConfig, QualityConfig
from ..errors import RunError
from ..generation import Basis, make_generation, without_near_duplicates
from ..store import Output, StoreError, write_json
from ..store.layout import PUBLISHED
from .llm import CaptionJob, LLMCaptioner, RunSummary
from .rows import (
    AGREEMENT_POLICIES,
    read_caption_rows,
    resolve_version,
    write_caption_rows,
)
from .where import FilterError, select_rows

log = logging.getLogger(__name__)


class RecaptionError(RunError, ValueError):
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
