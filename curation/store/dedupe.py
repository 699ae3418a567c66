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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.manifest import reject_row
from schemas.records import Level, Reject, RejectReason, Stage

from ..stages.quality import near_duplicates as reference_near_duplicates
from .output import Output
from .shards import describe_tar, rewrite_tar


def _dedup_name(name: str, sha256: str, dropped: list[str]) -> str:
    digest = hashlib.sha1(json.dumps([sha256, sorted(dropped)]).encode()).hexdigest()[:10]
    return f"{name[: -len('.tar')]}-d{digest}.tar"


def _clip_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The clip's label, split, video and dataset ids, as its sample row carries them."""
    extra = json.loads(row["extra"]) if isinstance(row.get("extra"), str) and row["extra"] else {}
    return {"label": row.get("label"), "split": row.get("split"), "video_id": row.get("video_id"), "extra": extra}


def near_duplicates(keys: list[tuple[str, str, str]], max_distance: int) -> dict[str, str]:
    """The answer of curation.stages.quality.near_duplicates (the same dropped pairs, each with the same
    kept pair), found in time that grows with the dataset rather than its square: the reference
    compares each pair with every kept pair sharing a band of its before hash (64 / (d + 1) bits, so
    about n / 2^bits of them: quadratic), this sorts the pairs once per (before band, after band): two
    pairs within d bits on both hashes share at least one of each, and random pairs almost never share
    both. Then, in order, a pair is dropped for the kept pair the reference finds first (the earliest
    before band they share, then the earliest kept)."""
    n = len(keys)
    if n < 2:
        return {}
    bands = max_distance + 1
    width = 64 // bands
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    before = np.array([int(h, 16) for _, h, _ in keys], dtype=np.uint64)
    after = np.array([int(h, 16) for _, _, h in keys], dtype=np.uint64)
    bb = [(before >> np.uint64(i * width)) & mask for i in range(bands)]
    ab = [(after >> np.uint64(i * width)) & mask for i in range(bands)]
    lo_parts, hi_parts = [], []
    budget = 50 * n + 1_000_000  # candidate pairs before the reference's way is cheaper
    for i in range(bands):
        for j in range(bands):
            order = np.lexsort((ab[j], bb[i]))
            x, y = bb[i][order], ab[j][order]
            same = (x[1:] == x[:-1]) & (y[1:] == y[:-1])
            if not same.any():
                continue
            step = np.diff(np.concatenate(([False], same, [False])).astype(np.int8))
            starts, ends = np.flatnonzero(step == 1), np.flatnonzero(step == -1)
            sizes = (ends - starts + 1).astype(np.int64)
            budget -= int((sizes * (sizes - 1) // 2).sum())
            if budget < 0:  # many pairs share both bands (a large cluster of alike frames): the reference
                return reference_near_duplicates(keys, max_distance)
            two = sizes == 2  # most runs: one pair, taken at once
            lo_parts.append(np.minimum(order[starts[two]], order[starts[two] + 1]))
            hi_parts.append(np.maximum(order[starts[two]], order[starts[two] + 1]))
            for s0, e0 in zip(starts[~two], ends[~two], strict=True):  # a run order[s0..e0] shares both bands
                members = np.sort(order[s0 : e0 + 1])
                a_idx, b_idx = np.triu_indices(len(members), 1)
                lo_parts.append(members[a_idx])
                hi_parts.append(members[b_idx])
    if not lo_parts:
        return {}
    edges = np.unique(np.concatenate(lo_parts).astype(np.int64) * n + np.concatenate(hi_parts).astype(np.int64))
    lo, hi = edges // n, edges % n
    close = (np.bitwise_count(before[lo] ^ before[hi]) <= max_distance) & (
        np.bitwise_count(after[lo] ^ after[hi]) <= max_distance
    )
    lo, hi = lo[close], hi[close]
    if not len(lo):
        return {}
    first_band = np.argmax(np.stack([bb[i][lo] == bb[i][hi] for i in range(bands)]), axis=0)
    order = np.lexsort((lo, first_band, hi))
    kept = np.ones(n, dtype=bool)
    dropped: dict[str, str] = {}
    for e in order:
        h, low = int(hi[e]), int(lo[e])
        if kept[h] and kept[low]:  # the first kept pair this one repeats, in the reference's order
            kept[h] = False
            dropped[keys[h][0]] = keys[low][0]
    return dropped


def drop_near_duplicates(
    out: Output,
    samples: pa.Table,
    files: dict[str, dict[str, Any]],
    max_distance: int,
) -> tuple[pa.Table, dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(samples without near-duplicates, the generation's tars, reject rows, a summary). Only the rows
    of dropped pairs and the pairs they repeat become Python objects."""
    pair_ids = samples.column("pair_id").to_pylist()
    before = samples.column("before_phash").to_pylist()
    after = samples.column("after_phash").to_pylist()
    keys = [(p, b, a) for p, b, a in zip(pair_ids, before, after, strict=True) if b and a]
    del before, after
    dropped = near_duplicates(keys, max_distance)
    del keys
    if not dropped:
        return samples, files, [], {"near_duplicates": 0}
    position = {p: i for i, p in enumerate(pair_ids)}
    involved = sorted({position[p] for p in dropped} | {position[k] for k in dropped.values()})
    cols = ["pair_id", "clip_id", "source", "uri", "label", "split", "video_id", "extra", "shard"]
    by_id = {r["pair_id"]: r for r in samples.take(involved).select(cols).to_pylist()}
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
    hit_clips = {by_id[p]["clip_id"] for p in dropped}
    left: dict[str, int] = defaultdict(int)
    for pid, cid in zip(pair_ids, samples.column("clip_id").to_pylist(), strict=True):
        if cid in hit_clips and pid not in dropped:
            left[cid] += 1
    first_row: dict[str, dict[str, Any]] = {}
    for p in sorted(dropped, key=position.__getitem__):  # a clip left with no pair: all its rows dropped
        first_row.setdefault(by_id[p]["clip_id"], by_id[p])
    repeats: dict[str, set[str]] = defaultdict(set)  # clip -> the clips of the pairs its pairs repeat
    for p, k in dropped.items():
        repeats[by_id[p]["clip_id"]].add(by_id[k]["clip_id"])
    for clip_id in sorted(hit_clips - set(left)):
        r = first_row[clip_id]
        others = sorted(repeats[clip_id])
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
