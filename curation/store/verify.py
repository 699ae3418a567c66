"""`verify`: check a committed output against its own records, local or at an fsspec URL.

Every tar of the current generation: present, the recorded size, the recorded sha256, the recorded
sample count (complete samples: both images and the record); sizes.json and samples.parquet agree with
the listing; nothing in the pool or the generations is left over (temp files, tars nothing claims,
generations that never became current). Returns the faults, one line each.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter

import fsspec
import pandas as pd

from schemas.manifest import SAMPLES_FILE
from schemas.shard import MEMBERS, SIZES_FILE

from .files import TMP_SUFFIX, StoreError
from .layout import GENERATIONS, LISTING, PARTS, REMOTE_POOL, SHARDS, TARS, committed, is_remote, unit_records


def tar_contents(f) -> tuple[Counter[str], str]:
    """Complete samples per key in a tar read from a file object, and the reading error if any."""
    members: dict[str, set[str]] = {}
    err = ""
    try:
        with tarfile.open(fileobj=f, mode="r|") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                members.setdefault(key, set()).add(ext)
    except (tarfile.TarError, OSError, EOFError) as e:
        err = f"{type(e).__name__}: {e}"
    complete = Counter(k for k, exts in members.items() if set(MEMBERS) <= exts)
    return complete, err


class _Hashing(io.RawIOBase):
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.f.read(len(b))
        self.h.update(data)
        self.n += len(data)
        b[: len(data)] = data
        return len(data)


def verify(url: str) -> list[str]:
    url = str(url).rstrip("/")
    faults: list[str] = []
    try:
        c = committed(url)
    except StoreError as e:
        return [str(e)]
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    keys_by_shard: dict[str, set[str]] = {}
    for e in c.shards:
        try:
            with fsspec.open(e.url, "rb") as f:
                hashing = _Hashing(f)
                complete, err = tar_contents(io.BufferedReader(hashing, 1 << 20))
                while hashing.read(1 << 20):  # the rest, for the byte count and the hash
                    pass
        except FileNotFoundError:
            faults.append(f"{e.name}: missing (recorded {e.samples} samples, {e.bytes} bytes)")
            continue
        keys_by_shard[e.name] = set(complete)
        if hashing.n != e.bytes:
            faults.append(f"{e.name}: {hashing.n} bytes, recorded {e.bytes} (truncated or replaced)")
        elif hashing.h.hexdigest() != e.sha256:
            faults.append(f"{e.name}: sha256 differs from its record (content changed)")
        if err:
            faults.append(f"{e.name}: unreadable tar ({err})")
        if len(complete) != e.samples:
            faults.append(f"{e.name}: {len(complete)} complete samples, recorded {e.samples}")
    try:
        with fsspec.open(c.file_url(f"{SHARDS}/{SIZES_FILE}"), "rb") as f:
            sizes = json.loads(f.read())
        if sizes != {e.name: e.samples for e in c.shards}:
            faults.append(f"{SIZES_FILE} does not match the generation's listing")
    except (FileNotFoundError, ValueError) as ex:
        faults.append(f"{SIZES_FILE}: unreadable ({ex})")
    try:
        with fsspec.open(c.file_url(SAMPLES_FILE), "rb") as f:
            samples = pd.read_parquet(f, columns=["clip_id", "pair_id", "shard"])
        per_shard = samples.groupby("shard").size().to_dict()
        for e in c.shards:
            if per_shard.get(e.name, 0) != e.samples:
                faults.append(f"{SAMPLES_FILE}: {per_shard.get(e.name, 0)} rows for {e.name}, recorded {e.samples}")
        unknown = set(per_shard) - {e.name for e in c.shards}
        if unknown:
            faults.append(f"{SAMPLES_FILE}: rows name tars outside the generation: {sorted(unknown)[:3]}")
        for shard, cid, pid in zip(samples.shard, samples.clip_id, samples.pair_id, strict=True):
            if shard in keys_by_shard and f"{cid}/{pid}" not in keys_by_shard[shard]:
                faults.append(f"{SAMPLES_FILE}: pair {pid} is not in {shard}")
                break
    except (FileNotFoundError, ValueError, OSError) as ex:
        faults.append(f"{SAMPLES_FILE}: unreadable ({ex})")
    faults += _leftovers(fs, root, url, c.generation)
    return faults


def _leftovers(fs, root: str, url: str, current: str) -> list[str]:
    """Files no record or generation accounts for; generations that never became current; a kept
    generation of a local output whose tars are gone from the pool (a reader of it would fail)."""
    faults = []
    gens = []
    gdir = f"{root}/{GENERATIONS}"
    if fs.exists(gdir):
        gens = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(gdir, detail=False))
    referenced: set[str] = set()
    for g in gens:
        if g > current:
            faults.append(f"{GENERATIONS}/{g}: a generation that never became current (current: {current})")
        try:
            shards = json.loads(fs.cat_file(f"{gdir}/{g}/{LISTING}"))["shards"]
        except (FileNotFoundError, ValueError, KeyError):
            faults.append(f"{GENERATIONS}/{g}: incomplete generation (no {LISTING})")
            continue
        referenced.update(shards)
        if not is_remote(url) and g != current:
            gone = [n for n in shards if not os.path.exists(os.path.join(root, GENERATIONS, g, SHARDS, n))]
            if gone:
                faults.append(f"{GENERATIONS}/{g}: {len(gone)} of its tars are missing, e.g. {gone[0]}")
    records, unreadable = unit_records(fs, root, [current])
    for rec in records.values():
        referenced.update(rec.get("files", {}) if isinstance(rec, dict) else {})
    faults += [f"{name}: unreadable unit record" for name in unreadable]
    pool = f"{root}/{REMOTE_POOL if is_remote(url) else TARS}"
    if fs.exists(pool):
        for p in fs.ls(pool, detail=False):
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if name.endswith(TMP_SUFFIX):
                faults.append(f"leftover temp file {name}")
            elif name.endswith(".tar") and name not in referenced:
                faults.append(f"orphan tar {name}: no generation or unit record claims it")
    for folder in (root, f"{root}/{PARTS}"):
        if fs.exists(folder):
            for p in fs.ls(folder, detail=False):
                if p.rstrip("/").endswith(TMP_SUFFIX):
                    faults.append(f"leftover temp file {p.rsplit('/', 1)[-1]}")
    return faults
