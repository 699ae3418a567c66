"""Tars of one work unit, written into the output's tar pool (OUT/tars/).

Each tar is written under a temp name, fsynced, renamed when complete and the folder fsynced, so a
reader never sees a partial tar and a committed record never points at a short one. Every finished
tar is described by its sample count, byte size and sha256: what the unit record commits.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import webdataset as wds

from schemas.records import FramePair
from schemas.shard import META, ShardSample, decode_sample, encode_sample

from .faults import crash_point
from .files import FILE_MODE, TMP_SUFFIX, fsync_dir, sha256_file

TAR_BLOCK = 512

# Every member's mtime: a tar holds the same bytes whenever and on whichever engine it is written.
TAR_MTIME = 0.0


def _padded(n: int) -> int:
    return TAR_BLOCK + (n + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


def describe_tar(path: Path, samples: int) -> dict[str, Any]:
    return {"samples": samples, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


class ShardSet:
    """Tars for one work unit, rolled over by sample count and bytes."""

    def __init__(self, directory: Path, prefix: str, max_samples: int, max_bytes: int):
        self.dir = Path(directory)
        self.prefix = prefix
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.files: dict[str, dict[str, Any]] = {}  # finished tar name -> samples, bytes, sha256
        self._k = 0
        self._writer: wds.TarWriter | None = None
        self._tmp: Path | None = None
        self._name = ""
        self._count = 0
        self._bytes = 0

    @property
    def sizes(self) -> dict[str, int]:
        return {n: f["samples"] for n, f in self.files.items()}

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._name = f"{self.prefix}-{self._k:04d}.tar"
        self._tmp = self.dir / f".{self._name}{TMP_SUFFIX}"
        self._writer = wds.TarWriter(str(self._tmp), mtime=TAR_MTIME)
        self._count = self._bytes = 0

    def _close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        assert self._tmp is not None
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(self._tmp, FILE_MODE)
        final = self.dir / self._name
        os.replace(self._tmp, final)
        fsync_dir(self.dir)
        self.files[self._name] = describe_tar(final, self._count)
        self._writer = None
        self._k += 1
        crash_point("after_tar")

    def write(self, item: Any) -> str:
        """Write one sample (anything with .pair, .before_jpg, .after_jpg); returns the tar's name."""
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

    def write_raw(self, sample: dict[str, Any]) -> None:
        """A sample dict as webdataset reads it (publish copies samples through here)."""
        if self._writer is None:
            self._open()
        self._writer.write(sample)
        self._count += 1

    def close(self) -> dict[str, dict[str, Any]]:
        self._close()
        return self.files

    def abort(self) -> None:
        """Remove what this unit wrote: the open temp tar and the finished tars (never committed)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
            self._writer = None
        for p in [self._tmp] + [self.dir / n for n in self.files]:
            if p is not None:
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
        self.files.clear()


def rewrite_tar(
    tars: Path, src_name: str, dst_name: str, edit: Callable[[FramePair], FramePair | None]
) -> dict[str, Any] | None:
    """Copy pool tar `src_name` into a new pool tar `dst_name` (temp, fsync, rename), passing every
    sample's record through `edit`: the same record keeps the sample as it is, a changed one is written
    with the new record, None leaves the sample out. Returns the new tar's description, or None (and
    no file) when nothing is left in it."""
    tmp = tars / f".{dst_name}{TMP_SUFFIX}"
    n = 0
    try:
        with wds.TarWriter(str(tmp), mtime=TAR_MTIME) as w:
            for raw in wds.WebDataset(str(tars / src_name), shardshuffle=False, empty_check=False):
                sample = {k: v for k, v in raw.items() if not k.startswith("__") or k == "__key__"}
                pair = decode_sample(raw).pair
                before = pair.model_dump_json()
                new = edit(pair)
                if new is None:
                    continue
                if new.model_dump_json() != before:
                    sample[META] = new.model_dump_json().encode()
                    decode_sample(sample)  # never write what the reader would refuse
                w.write(sample)
                n += 1
        if n == 0:
            tmp.unlink()
            return None
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, tars / dst_name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(tars)
    return describe_tar(tars / dst_name, n)


def read_tar(url: str) -> Iterator[ShardSample]:
    """The samples of one tar (a path or any fsspec URL), decoded by schemas' codec."""
    with fsspec.open(url, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tf:
        current: dict[str, Any] = {}
        for m in tf:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            if current and current["__key__"] != key:
                yield decode_sample(current)
                current = {}
            current["__key__"] = key
            current[ext] = tf.extractfile(m).read()
        if current:
            yield decode_sample(current)
