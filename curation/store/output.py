"""`Output`: the one owner of an output, a local folder or any fsspec URL (`Output.open(url)`).

Everything that writes into an output or reads its shards goes through it, and none of its callers
says whether the output is local or remote. This file holds the output as a whole, its units and its
tars; generations.py the generations and the pointer, upkeep.py clean/gc/verify (both mixins of
`Output`), holder.py the lock taken once per process:

- the lock: `with out.lock(command):` once, at the entry point (CLI command or flow); re-entrant in
  one process. An flock on the working folder, and on a remote output a lease with a fencing number;
  `check_fence()` runs before every unit commit and every pointer switch (LeaseLost: a one-line error)
- the working folder `out.root`: the output itself when local; for a remote output a local staging
  copy (`staging`, default ~/.cache/motionpairs/staging/<hash>) that is pushed as it commits and
  pulled (`pull()`) at the start, so a new machine goes on where the bucket stands
- units: `shard_writer()` then `commit_unit()` (tars fsynced, then parts, then the record, then the
  folder; on a remote output tars, parts and caption rows go up first and the record last)
- generations: `write_generation()` writes a complete new set of manifests beside the old ones and
  moves the one pointer; readers of the old generation are undisturbed until `gc()`
- readers: `committed()` (the listing) and `samples(pair_ids)`; `verify()`
- `clean()` (under the lock) removes what dead writers left: temp files, tars no record or generation
  claims, generations that never became current. Which generation is current is read from the pointer
  or, where `current` is a plain folder (an output copied with `cp -rL`), from its listing: a
  generation a reader may use is never removed on a guess.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa

from schemas.manifest import SAMPLES_FILE
from schemas.shard import ShardSample

from .faults import crash_point
from .files import (
    TAR_NAME,
    TMP_SUFFIX,
    UNIT_ID,
    StoreError,
    atomic_write,
    check_name,
    fsync_dir,
    record_bytes,
    replace_folder,
    write_parquet,
)
from .generations import Generations
from .holder import HELD, OutputLock
from .layout import GENERATIONS, PARTS, PUBLISHED, TARS, is_remote
from .lock import LeaseLost, OnWait, WriterLock
from .remote import RemoteMirror, default_staging
from .shards import ShardSet, read_tar
from .upkeep import Upkeep

log = logging.getLogger(__name__)


class Output(Generations, Upkeep):
    def __init__(self, root: Path | str, url: str | None = None, remote=None, ticket: dict | None = None):
        self.root = Path(root)
        self.url = (url or str(root)).rstrip("/") or "/"
        self._remote = remote  # RemoteMirror of a remote output (its staging copy is self.root)
        self._ticket = ticket  # the lock holder's token, for units written by other processes (Dask)
        self.parts = self.root / PARTS
        self.tars = self.root / TARS
        self.generations = self.root / GENERATIONS

    @classmethod
    def open(cls, url: str | os.PathLike, staging: str | os.PathLike | None = None, ticket: dict | None = None):
        """The output at `url`: a local folder, or any fsspec URL worked on through a local staging copy."""
        url = str(url)
        if not is_remote(url):
            return cls(Path(url), ticket=ticket)
        stage = Path(staging) if staging else default_staging(url)
        remote = RemoteMirror(url, stage)
        return cls(stage, url=remote.url, remote=remote, ticket=ticket)

    @property
    def key(self) -> str:
        return self.url if self._remote is not None else os.path.realpath(self.root)

    def __repr__(self) -> str:
        return f"Output({self.url!r})"

    # ---- the output as a whole -------------------------------------------------------------------
    def prepare(self) -> Output:
        """Create the (working) folder and prove it is writable; a StoreError (one line) when it is not."""
        try:
            if self.root.exists() and not self.root.is_dir():
                raise StoreError(f"output {self.root} exists and is not a folder")
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=TMP_SUFFIX, dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise StoreError(f"output {self.root} is not writable: {e.strerror or e}") from e
        return self

    def lock(self, command: str, wait: float | None = None, on_wait: OnWait = None) -> OutputLock:
        """The writer lock (and lease), for `with`. Taken once per process: a nested `with` reuses it.
        `on_wait`: called when another writer holds it and `wait` allows waiting."""
        return OutputLock(self, command, wait, on_wait)

    def ticket(self) -> dict[str, Any] | None:
        """What another process (a Dask worker) needs to check it writes for the current holder."""
        held = HELD.get(self.key)
        return held.ticket() if held is not None else self._ticket

    def held_token(self) -> str | None:
        """The token of the writer lock this process holds on this output (None when it holds none)."""
        held = HELD.get(self.key)
        return held.ticket()["token"] if held is not None else None

    def check_fence(self) -> None:
        """Raise LeaseLost when this writer no longer holds the output (another took it over). A caller
        that took no lock (a library user, a test) is not checked."""
        held = HELD.get(self.key)
        if held is not None:
            held.check()
        elif self._ticket:
            if self._remote is not None:
                lease = self._remote.lease("check")
                lease.owner, lease.fence = {"token": self._ticket["token"]}, int(self._ticket["fence"])
                lease.check()
            else:
                WriterLock(self.root, "check").check(self._ticket["token"])

    def pull(self) -> None:
        """A remote output's unit records, parts, caption rows and published choice into the working
        folder (nothing to do for a local one)."""
        if self._remote is not None:
            self._remote.pull_state()
            self._remote.pull_captions()

    def push(self, rel: str) -> None:
        """A file of the working folder (caption rows, the published choice) to a remote output."""
        if self._remote is not None:
            self.check_fence()
            self._remote.push_file(rel)

    def write_file(self, rel: str, data: bytes) -> None:
        """A top-level file of the output (the dataset card), durably, then pushed."""
        atomic_write(self.root / rel, lambda f: f.write(data))
        self.push(rel)

    # ---- units -----------------------------------------------------------------------------------
    def part(self, unit_id: str, kind: str) -> Path:
        return self.parts / f"{check_name('unit', unit_id, UNIT_ID)}.{kind}.parquet"

    def local_part(self, unit_id: str, kind: str) -> Path:
        """A committed unit's part in the working folder, fetched when another machine committed it."""
        path = self.part(unit_id, kind)
        if not path.is_file() and self._remote is not None:
            self._remote.fetch_file(f"{PARTS}/{path.name}")
        return path

    def local_parts(self, unit_ids: Iterable[str], kind: str) -> list[Path]:
        """Committed units' parts in the working folder; those another machine committed are fetched,
        all at once."""
        paths = [self.part(u, kind) for u in unit_ids]
        if self._remote is not None:
            self._remote.fetch_parts([p.name for p in paths if not p.is_file()])
        return paths

    def record_path(self, unit_id: str) -> Path:
        return self.parts / f"{check_name('unit', unit_id, UNIT_ID)}.json"

    def records(self) -> list[dict[str, Any]]:
        """Committed unit records, names checked (they become paths)."""
        out = []
        if not self.parts.is_dir():
            return out
        for p in sorted(self.parts.glob("*.json")):
            try:
                rec = json.loads(p.read_text())
                check_name("unit", rec["unit_id"], UNIT_ID)
                for n in rec.get("files", {}):
                    check_name("tar", n, TAR_NAME)
            except (OSError, ValueError, KeyError, TypeError, StoreError) as e:
                log.warning("ignoring unit record %s: %s", p.name, e)
                continue
            out.append(rec)
        return out

    def shard_writer(self, unit_id: str, max_samples: int, max_bytes: int) -> ShardSet:
        return ShardSet(self.tars, check_name("unit", unit_id, UNIT_ID), max_samples, max_bytes)

    def commit_unit(self, record: dict[str, Any], samples: pa.Table, rejects: pa.Table) -> None:
        """Parts, then (if this writer still holds the output) the record: the commit. On a remote
        output the unit then goes up: tars, parts and caption rows, the record last."""
        uid = check_name("unit", record["unit_id"], UNIT_ID)
        write_parquet(self.part(uid, "samples"), samples)
        write_parquet(self.part(uid, "rejects"), rejects)
        crash_point("before_record")
        self.check_fence()
        data = record_bytes(record)
        atomic_write(self.record_path(uid), lambda f: f.write(data), point="record_fsync")  # the commit
        crash_point("after_record")
        if self._remote is not None:
            self.check_fence()
            self._remote.push_unit(record, before_record=self._before_remote_commit)

    def _before_remote_commit(self) -> None:
        crash_point("push_unit")
        self.check_fence()

    def is_committed(self, unit_id: str) -> bool:
        """The unit's record is in the working folder: its tars are committed data (never deleted by an
        abort; clean() and gc() decide from records and generations)."""
        return self.record_path(unit_id).exists()

    def uncommit(self, unit_ids: list[str]) -> None:
        """Take units out of the build state (their files stay for older generations until gc)."""
        if not unit_ids:
            return
        if self._remote is not None:
            self.check_fence()
            self._remote.uncommit(unit_ids)
        for uid in unit_ids:
            self.record_path(uid).unlink(missing_ok=True)
        fsync_dir(self.parts)

    # ---- tars ------------------------------------------------------------------------------------
    def local_tar(self, name: str) -> Path:
        """A pool tar in the working folder, fetched from a remote output when another machine built it
        (generations rewrite tars: near-duplicates dropped, captions published)."""
        path = self.tars / check_name("tar", name, TAR_NAME)
        if not path.is_file() and self._remote is not None:
            self._remote.fetch_tar(name)
        return path

    def tar_url(self, name: str) -> str:
        """Where a pool tar is read: the working folder when it is there, else the remote pool."""
        path = self.tars / check_name("tar", name, TAR_NAME)
        if path.is_file() or self._remote is None:
            return str(path)
        return self._remote.pool_url(name)

    def samples(self, pair_ids: Iterable[str], shards: Mapping[str, str] | None = None) -> Iterator[ShardSample]:
        """The decoded samples of these pairs, read from the pool: `shards` (pair_id -> tar name) for
        pairs of committed units not yet in a generation, otherwise looked up in the committed listing.
        In tar order; pairs that are not found are left out."""
        wanted = set(pair_ids)
        if shards is None:
            c = self.committed()
            with fsspec.open(c.file_url(SAMPLES_FILE), "rb") as f:
                table = pd.read_parquet(f, columns=["pair_id", "shard"])
            shards = dict(zip(table.pair_id, table.shard, strict=True))
        by_tar: dict[str, set[str]] = defaultdict(set)
        for pid in wanted:
            if pid in shards:
                by_tar[shards[pid]].add(pid)
        for name, ids in sorted(by_tar.items()):
            for sample in read_tar(self.tar_url(name)):
                if sample.pair.pair_id in ids:
                    yield sample


__all__ = ["LeaseLost", "Output", "OutputLock", "PUBLISHED", "read_tar", "replace_folder"]
