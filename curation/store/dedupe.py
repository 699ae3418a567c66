"""Near-duplicate pairs across the whole dataset, decided when a generation is made.

Two pairs are near-duplicates when the perceptual hashes of both their before and their after frames
are within `quality.max_duplicate_distance` bits (re-uploads, the same footage cut into two clips,
a loop). The first by the generation's order (clip_id, before_index, after_index) is kept; the others
become `duplicate` rejects (a candidate row each, and a clip row for a clip left with no pair), and the
tars that held them are rewritten into the pool under names derived from their content and the drop,
like a publish. It is recomputed over every committed sample at each build, so adding clips in a
later run gives the same answer as building them all at once."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.manifest import reject_row
from schemas.records import Level, Reject, RejectReason, Stage

from ..stages.quality import near_duplicates
from .output import Output
from .shards import describe_tar, rewrite_tar


def _dedup_name(name: str, sha256: str, dropped: list[str]) -> str:
    digest = hashlib.sha1(json.dumps([sha256, sorted(dropped)]).encode()).hexdigest()[:10]
    return f"{name[: -len('.tar')]}-d{digest}.tar"


def _clip_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The clip's label, split, video and dataset ids, as its sample row carries them."""
    extra = json.loads(row["extra"]) if isinstance(row.get("extra"), str) and row["extra"] else {}
    return {"label": row.get("label"), "split": row.get("split"), "video_id": row.get("video_id"), "extra": extra}


def drop_near_duplicates(
    out: Output,
    samples: pa.Table,
    files: dict[str, dict[str, Any]],
    max_distance: int,
) -> tuple[pa.Table, dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(samples without near-duplicates, the generation's tars, reject rows, a summary)."""
    cols = samples.select(
        ["pair_id", "clip_id", "source", "uri", "label", "split", "video_id", "extra"]
        + ["before_phash", "after_phash", "shard"]
    ).to_pylist()
    keys = [(r["pair_id"], r["before_phash"], r["after_phash"]) for r in cols if r["before_phash"] and r["after_phash"]]
    dropped = near_duplicates(keys, max_distance)
    if not dropped:
        return samples, files, [], {"near_duplicates": 0}
    by_id = {r["pair_id"]: r for r in cols}
    rejects: list[dict[str, Any]] = []
    for pid, kept in dropped.items():
        r, k = by_id[pid], by_id[kept]
        detail = f"near-duplicate of pair {kept} of clip {k['clip_id']} (both frames within {max_distance} pHash bits)"
        rejects.append(
            reject_row(
                Reject(
                    clip_id=r["clip_id"],
                    source=r["source"],
                    uri=r["uri"],
                    stage=Stage.PAIRING,
                    reason=RejectReason.DUPLICATE,
                    level=Level.CANDIDATE,
                    detail=detail,
                    pair_id=pid,
                    **_clip_meta(r),
                )
            )
        )
    left = defaultdict(int)
    for r in cols:
        if r["pair_id"] not in dropped:
            left[r["clip_id"]] += 1
    for clip_id in sorted({by_id[p]["clip_id"] for p in dropped} - set(left)):
        r = next(x for x in cols if x["clip_id"] == clip_id)
        firsts = sorted({dropped[p] for p in dropped if by_id[p]["clip_id"] == clip_id})
        others = sorted({by_id[k]["clip_id"] for k in firsts})
        rejects.append(
            reject_row(
                Reject(
                    clip_id=clip_id,
                    source=r["source"],
                    uri=r["uri"],
                    stage=Stage.PAIRING,
                    reason=RejectReason.DUPLICATE,
                    detail=f"every pair is a near-duplicate of a pair of {', '.join(others)[:500]}",
                    **_clip_meta(r),
                )
            )
        )
    by_shard: dict[str, list[str]] = defaultdict(list)
    for pid in dropped:
        by_shard[by_id[pid]["shard"]].append(pid)
    new_files = dict(files)
    renamed: dict[str, str | None] = {}
    for name, pids in sorted(by_shard.items()):
        dst = _dedup_name(name, files[name]["sha256"], pids)
        drop = set(pids)
        del new_files[name]
        if (out.tars / dst).is_file():
            entry = describe_tar(out.tars / dst, files[name]["samples"] - len(drop))
        else:
            out.local_tar(name)  # a tar another machine built: into this one's pool first
            entry = rewrite_tar(out.tars, name, dst, lambda p, drop=drop: None if p.pair_id in drop else p)
        if entry is not None:
            new_files[dst] = entry
        renamed[name] = dst if entry is not None else None
    keep = pc.invert(pc.is_in(samples.column("pair_id"), value_set=pa.array(list(dropped))))
    kept = samples.filter(keep)
    shard = [renamed.get(s, s) for s in kept.column("shard").to_pylist()]
    kept = kept.set_column(kept.schema.get_field_index("shard"), "shard", pa.array(shard, pa.string()))
    summary = {"near_duplicates": len(dropped), "shards_rewritten": len(renamed)}
    return kept, new_files, rejects, summary
