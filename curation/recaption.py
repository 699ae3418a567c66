"""Caption versions after a build: recaption a chosen subset, then publish the chosen captions.

- `recaption(out, where=...)` captions the samples that a pandas query over samples.parquet selects
  and appends the answers as a new caption run (OUT/captions/rows-<run>.parquet); nothing else changes.
- `publish(out, caption_version=...)` picks one caption per sample (the newest usable one of that
  version; samples without one keep theirs), writes a complete new shard set beside the old one, and
  only then swaps OUT/shards (a symlink) to it in one atomic rename. Readers of the old set are not
  disturbed; samples.parquet and the unit parts get the same captions. Each pair in the shards also
  carries every usable caption version known for it (`captions`), so training can choose one
  (`motionpairs train --caption-version`) without another publish.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from schemas.captions import CAPTION_ROWS_SCHEMA, CAPTIONS_DIR, CaptionStatus
from schemas.manifest import SAMPLES_FILE
from schemas.records import Caption
from schemas.shard import META, SIZES_FILE, decode_sample

from .config import CaptionConfig
from .llm import CaptionJob, LLMCaptioner, RunSummary
from .sink import SHARDS, atomic_write, current_shard_set, new_shard_set, swap_shard_set, write_json, write_parquet

log = logging.getLogger(__name__)


class RecaptionError(ValueError):
    """A bad query or an output folder without a finished build: a clear one-line error."""


def write_caption_rows(out: Path, run_id: str, rows: list[dict[str, Any]]) -> Path | None:
    if not rows:
        return None
    clean = [{**r, "created_at": pd.Timestamp(r["created_at"]).to_pydatetime()} for r in rows]
    path = Path(out) / CAPTIONS_DIR / f"rows-{run_id}.parquet"
    write_parquet(path, pa.Table.from_pylist(clean, schema=CAPTION_ROWS_SCHEMA))
    return path


def read_caption_rows(out: Path) -> pd.DataFrame:
    files = sorted((Path(out) / CAPTIONS_DIR).glob("rows-*.parquet"))
    if not files:
        return CAPTION_ROWS_SCHEMA.empty_table().to_pandas()
    return pd.concat([pq.read_table(f, schema=CAPTION_ROWS_SCHEMA).to_pandas() for f in files], ignore_index=True)


def load_samples(out: Path | str) -> pd.DataFrame:
    from .storage import is_remote

    if is_remote(str(out)):
        raise RecaptionError(
            f"{out}: recaption and publish work on a local output (a remote build's staging folder holds one)"
        )
    path = Path(out) / SAMPLES_FILE
    if not path.is_file():
        raise RecaptionError(f"{out} holds no finished build (no {SAMPLES_FILE})")
    return pd.read_parquet(path)


def select(samples: pd.DataFrame, where: str | None) -> pd.DataFrame:
    if not where:
        return samples
    try:
        return samples.query(where)
    except Exception as e:  # pandas raises many kinds for a bad expression
        raise RecaptionError(f"bad --where query {where!r}: {type(e).__name__}: {e}") from e


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
    out: Path | str, cfg: CaptionConfig, where: str | None = None, api_key: str | None = None
) -> tuple[RunSummary, str]:
    samples = load_samples(out)
    out = Path(out)
    subset = select(samples, where)
    captioner = LLMCaptioner(cfg, out, api_key=api_key).setup()
    jobs = load_jobs(out, subset)
    log.info("recaptioning %d of %d samples with %s", len(jobs), len(samples), captioner.version)
    rows = captioner.caption(jobs)
    write_caption_rows(out, captioner.run_id, rows)
    return captioner.summary, captioner.run_id


def _caption(r) -> Caption:
    return Caption(
        text=r.text, captioner=r.captioner, model=r.model, prompt_version=r.prompt_version, created_at=r.created_at
    )


def choose_captions(rows: pd.DataFrame, caption_version: str | None) -> dict[str, Caption]:
    """Per pair: the newest usable caption (of `caption_version` when given)."""
    ok = rows[rows.status == CaptionStatus.OK]
    if caption_version:
        ok = ok[ok.caption_version == caption_version]
    ok = ok.sort_values("created_at").drop_duplicates("pair_id", keep="last")
    return {r.pair_id: _caption(r) for r in ok.itertuples()}


def known_versions(rows: pd.DataFrame) -> dict[str, list[Caption]]:
    """Per pair: the newest usable caption of every version, oldest first (what the shards carry)."""
    ok = rows[rows.status == CaptionStatus.OK].sort_values("created_at")
    ok = ok.drop_duplicates(["pair_id", "caption_version"], keep="last")
    out: dict[str, list[Caption]] = {}
    for r in ok.itertuples():
        out.setdefault(r.pair_id, []).append(_caption(r))
    return out


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


def publish(out: Path | str, caption_version: str | None = None) -> dict[str, Any]:
    samples = load_samples(out)
    out = Path(out)
    rows = read_caption_rows(out)
    if caption_version and caption_version not in set(rows.caption_version):
        known = ", ".join(sorted(set(rows.caption_version))) or "none"
        raise RecaptionError(f"no captions of version {caption_version!r}; known versions: {known}")
    ids = set(samples.pair_id)
    chosen = {p: c for p, c in choose_captions(rows, caption_version).items() if p in ids}
    versions = {p: v for p, v in known_versions(rows).items() if p in ids}
    old_dir = current_shard_set(out)
    sizes = json.loads((old_dir / SIZES_FILE).read_text())
    new_dir = new_shard_set(out)
    changed_shards = set(samples[samples.pair_id.isin(chosen) | samples.pair_id.isin(versions)].shard)
    for name in sizes:
        src, dst = old_dir / name, new_dir / name
        if name not in changed_shards:
            try:
                os.link(src, dst)  # unchanged: share the bytes
            except OSError:
                shutil.copy2(src, dst)
            continue
        tmp = new_dir / f".{name}.tmp"
        with wds.TarWriter(str(tmp)) as w:
            for raw in wds.WebDataset(str(src), shardshuffle=False):
                sample = {k: v for k, v in raw.items() if not k.startswith("__") or k == "__key__"}
                pair = decode_sample(raw).pair
                if pair.pair_id in chosen or pair.pair_id in versions:
                    for c in versions.get(pair.pair_id, []):  # every version travels with the pair
                        pair.add_caption(c)
                    if pair.pair_id in chosen:
                        pair.caption = chosen[pair.pair_id]
                    sample[META] = pair.model_dump_json().encode()
                    decode_sample(sample)  # never write what the reader would refuse
                w.write(sample)
        os.replace(tmp, dst)
    write_json(new_dir / SIZES_FILE, sizes)
    # manifests first (their captions now match the new set), then the one atomic switch
    for part in sorted((out / "parts").glob("*.samples.parquet")):
        write_parquet(part, _caption_columns(pq.read_table(part), chosen))
    write_parquet(out / SAMPLES_FILE, _caption_columns(pq.read_table(out / SAMPLES_FILE), chosen))
    swap_shard_set(out, new_dir)
    shutil.rmtree(old_dir, ignore_errors=True)
    summary = {
        "published_at": datetime.now(timezone.utc).isoformat(),
        "caption_version": caption_version,
        "samples": len(samples),
        "captions_applied": len(chosen),
        "shards_rewritten": len(changed_shards),
        "shard_set": new_dir.name,
    }
    atomic_write(out / CAPTIONS_DIR / "published.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    return summary
