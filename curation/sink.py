"""Writing results: webdataset tars, parquet parts and manifests, all atomically (temp file, then rename).

Layout under OUT:
  shards/<unit>-<k>.tar       samples (format: schemas.shard)
  shards/sizes.json           {tar name: sample count}
  parts/<unit>.samples.parquet, parts/<unit>.rejects.parquet
  parts/<unit>.json           the unit's commit record, written last: a unit without it never happened
  samples.parquet, rejects.parquet, stats.json   consolidated by finalize
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from schemas.shard import encode_sample

from .pipeline import EncodedPair

TAR_BLOCK = 512
SHARDS = "shards"  # OUT/shards: a symlink to the current set under OUT/shardsets/
SHARD_SETS = "shardsets"


def current_shard_set(out: Path) -> Path:
    """The folder that holds the current tars, creating the first set (and the link) when needed."""
    link = Path(out) / SHARDS
    if link.is_symlink() or link.is_dir():
        return link.resolve()
    first = new_shard_set(out)
    swap_shard_set(out, first)
    return first


def new_shard_set(out: Path) -> Path:
    from datetime import datetime, timezone

    name = datetime.now(timezone.utc).strftime("set-%Y%m%dT%H%M%S%fZ")
    path = Path(out) / SHARD_SETS / name
    path.mkdir(parents=True)
    return path


def swap_shard_set(out: Path, target: Path) -> None:
    """Point OUT/shards at `target` in one atomic rename of a symlink."""
    link = Path(out) / SHARDS
    tmp = Path(out) / f".{SHARDS}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, Path(out)), tmp)
    os.replace(tmp, link)


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Write through `write(fileobj)` into a temp file beside `path`, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True, default=str).encode()))


def write_parquet(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd"))


def _padded(n: int) -> int:
    return TAR_BLOCK + (n + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


class ShardSet:
    """Tars for one work unit, rolled over by sample count and bytes. Each tar is written to a temp
    name and renamed when complete, so a reader never sees a partial tar."""

    def __init__(self, directory: Path, prefix: str, max_samples: int, max_bytes: int):
        self.dir = directory
        self.prefix = prefix
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.sizes: dict[str, int] = {}  # finished tar name -> samples
        self._k = 0
        self._writer: wds.TarWriter | None = None
        self._tmp: Path | None = None
        self._name = ""
        self._count = 0
        self._bytes = 0

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._name = f"{self.prefix}-{self._k:04d}.tar"
        self._tmp = self.dir / f".{self._name}.tmp"
        self._writer = wds.TarWriter(str(self._tmp))
        self._count = self._bytes = 0

    def _close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self._tmp, self.dir / self._name)
        self.sizes[self._name] = self._count
        self._writer = None
        self._k += 1

    def write(self, item: EncodedPair) -> str:
        """Write one sample; returns the name of the tar that holds it."""
        sample = encode_sample(item.pair, item.before_jpg, item.after_jpg)
        size = sum(_padded(len(v)) for k, v in sample.items() if not k.startswith("__"))
        if self._writer is not None and (self._count >= self.max_samples or self._bytes + size > self.max_bytes):
            self._close()
        if self._writer is None:
            self._open()
        self._writer.write(sample)
        self._count += 1
        self._bytes += size
        return self._name

    def close(self) -> dict[str, int]:
        self._close()
        return self.sizes

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()
