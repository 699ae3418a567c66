"""The published caption choice (OUT/captions/published.json) applied to a generation being made:
each sample gets the chosen caption, tars holding a changed pair are rewritten into the pool under a
name derived from their content and the change. Made by `publish` (curation.captions.recaption) and
by every later build (curation.generation)."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

import pandas as pd
import pyarrow as pa

from schemas.captions import CAPTIONS_DIR
from schemas.records import Caption

from ..store import Output
from ..store.faults import crash_point
from ..store.layout import PUBLISHED
from ..store.shards import describe_tar, rewrite_tar
from .rows import choose_captions, known_versions, read_caption_rows


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
