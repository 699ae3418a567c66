"""Durable, atomic file writes and the checks on names the store accepts.

A write goes to a temp file beside its target, is fsynced, renamed over the target, and the folder is
fsynced, so after a crash or a power loss the target is the old or the new file, never a short one.
Files are created readable by others per the umask (like any file the user writes), not 0600.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import RunError
from .faults import crash_point

TMP_SUFFIX = ".tmp"


class StoreError(RunError, RuntimeError):
    """A problem of the output itself (not writable, locked, corrupt): one line for the user."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any], point: str | None = None) -> None:
    """Write through `write(fileobj)` into a temp file beside `path`, fsync, rename over it, fsync the
    folder. `point`: a crash point between the rename and the folder's fsync (the kill tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
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
    if point is not None:
        crash_point(point)
    fsync_dir(path.parent)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True, default=str).encode()))


def record_bytes(record: dict[str, Any]) -> bytes:
    """A unit record as its file holds it (the same bytes wherever it is written: their MD5 is the
    record object's ETag on S3)."""
    return json.dumps(record, indent=2, sort_keys=True, default=str).encode()


def write_parquet(path: Path, table: pa.Table | Chunks) -> None:
    """A table, or `Chunks` (a schema and the tables to write in turn, one row group or more each: a
    manifest that is never whole in memory)."""
    if isinstance(table, pa.Table):
        atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd"))
        return

    def write(f) -> None:
        with pq.ParquetWriter(f, table.schema, compression="zstd") as writer:
            for chunk in table:
                writer.write_table(chunk)

    atomic_write(path, write)


class Chunks(Protocol):
    """A table written a part at a time (`write_parquet`)."""

    schema: pa.Schema

    def __iter__(self) -> Iterator[pa.Table]: ...


def sha256_file(path: Path | str, opener: Callable[[str], Any] | None = None) -> str:
    h = hashlib.sha256()
    with opener(str(path)) if opener else open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def replace_link(link: Path, target: str) -> None:
    """Point `link` at `target` (a relative path) in one atomic rename."""
    tmp = link.parent / f".{link.name}.{os.getpid()}{TMP_SUFFIX}"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


UNIT_ID = re.compile(r"^u[0-9a-f]{12}$")
TAR_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}\.tar$")
GENERATION = re.compile(r"^g\d{6}$")


def check_name(kind: str, name: str, pattern: re.Pattern[str]) -> str:
    """Names read from records (local or remote) are used as paths: only plain names pass."""
    if not isinstance(name, str) or not pattern.match(name):
        raise StoreError(f"refusing {kind} name {name!r} from a record: not a plain name")
    return name


def replace_folder(src: Path, dst: Path) -> None:
    """Put the finished folder `src` at `dst` (a report): copied beside it under a temp name, then
    swapped in with two renames (a reader sees the old folder, the new one, or for an instant none,
    never a half-written one); leftovers of a crash end
    in TMP_SUFFIX and the next writer's clean() removes them."""
    tag = uuid.uuid4().hex[:8]
    staged = dst.parent / f".{dst.name}-{tag}{TMP_SUFFIX}"
    old = dst.parent / f".{dst.name}-old-{tag}{TMP_SUFFIX}"
    shutil.copytree(src, staged)
    os.chmod(staged, 0o755)
    if dst.exists():
        os.replace(dst, old)
    os.replace(staged, dst)
    fsync_dir(dst.parent)
    shutil.rmtree(old, ignore_errors=True)
