"""`Output`: the one owner of an output, a local folder or any fsspec URL (`Output.open(url)`).

Everything that writes into an output or reads its shards goes through it, and none of its callers
says whether the output is local or remote:

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
import shutil
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa

from schemas.captions import CAPTIONS_DIR
from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE
from schemas.shard import SIZES_FILE, ShardSample, decode_sample

from .faults import crash_point
from .files import (
    GENERATION,
    TAR_NAME,
    TMP_SUFFIX,
    UNIT_ID,
    StoreError,
    atomic_write,
    check_name,
    fsync_dir,
    replace_link,
    write_json,
    write_parquet,
)
from .layout import (
    CARD_FILE,
    CURRENT_LINK,
    GENERATIONS,
    LISTING,
    PARTS,
    PUBLISHED,
    SHARDS,
    TARS,
    Committed,
    committed,
    is_remote,
)
from .lock import LeaseLost, RemoteLease, WriterLock
from .shards import ShardSet

log = logging.getLogger(__name__)

TOP_LINKS = (SAMPLES_FILE, REJECTS_FILE, STATS_FILE, SHARDS)
LEGACY_SETS = "shardsets"  # layout of earlier versions (OUT/shards -> shardsets/<set>)

_HELD: dict[str, OutputLock] = {}  # this process's output locks, by output: taking one again nests


class Output:
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
        from .remote import RemoteMirror, default_staging

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

    def lock(self, command: str, wait: float | None = None) -> OutputLock:
        """The writer lock (and lease), for `with`. Taken once per process: a nested `with` reuses it."""
        return OutputLock(self, command, wait)

    def ticket(self) -> dict[str, Any] | None:
        """What another process (a Dask worker) needs to check it writes for the current holder."""
        held = _HELD.get(self.key)
        return held.ticket() if held is not None else self._ticket

    def check_fence(self) -> None:
        """Raise LeaseLost when this writer no longer holds the output (another took it over). A caller
        that took no lock (a library user, a test) is not checked."""
        held = _HELD.get(self.key)
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
        atomic_write(
            self.record_path(uid),
            lambda f: f.write(json.dumps(record, indent=2, sort_keys=True, default=str).encode()),
            point="record_fsync",
        )  # the commit
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
            import pandas as pd

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

    # ---- generations -----------------------------------------------------------------------------
    def current(self) -> str | None:
        """The current generation's name (the remote pointer for a remote output)."""
        if self._remote is not None:
            return self._remote.current()
        return self._local_current()

    def _local_current(self) -> str | None:
        """From the link `current`; where `current` is a plain folder, from the listing it holds."""
        link = self.root / CURRENT_LINK
        try:
            return check_name("generation", Path(os.readlink(link)).name, GENERATION)
        except FileNotFoundError:
            return None
        except OSError:
            pass
        try:
            name = json.loads((link / LISTING).read_text())["generation"]
            return check_name("generation", name, GENERATION)
        except (OSError, ValueError, KeyError, TypeError, StoreError) as e:
            raise StoreError(f"{self.root}: cannot tell the current generation ({CURRENT_LINK}: {e})") from e

    def committed(self, generation: str | None = None) -> Committed:
        """The committed listing (what readers read); a StoreError when the output has none."""
        return committed(self.url, generation)

    def generation_names(self) -> list[str]:
        if not self.generations.is_dir():
            return []
        return sorted(p.name for p in self.generations.iterdir() if GENERATION.match(p.name))

    def meta(self, generation: str | None = None) -> dict[str, Any] | None:
        """A generation's listing (the current one unless named; a named one from the working folder)."""
        if generation is None and self._remote is not None:
            return self._remote.meta()
        gen = generation or self._local_current()
        if gen is None:
            return None
        try:
            return json.loads((self.generations / gen / LISTING).read_text())
        except (OSError, ValueError):
            return None

    def read_generation_file(self, rel: str) -> bytes:
        """A file of the current generation (samples.parquet, rejects.parquet, stats.json)."""
        with fsspec.open(self.committed().file_url(rel), "rb") as f:
            return f.read()

    def write_generation(
        self,
        samples: pa.Table,
        rejects: pa.Table,
        stats: dict[str, Any],
        files: dict[str, dict[str, Any]],
        meta: dict[str, Any],
    ) -> str:
        """A complete new generation, then the pointer. `files`: tar name -> samples, bytes, sha256 (all
        in the pool; on a remote output the tars the bucket lacks go up first)."""
        remote = self._remote
        if remote is not None:
            self.check_fence()
            remote.push_tars(files, self.tars)
        names = self.generation_names() + ([remote.current()] if remote is not None and remote.current() else [])
        gen = f"g{(max(int(n[1:]) for n in names) + 1 if names else 1):06d}"
        d = self.generations / gen
        if d.exists():  # a leftover that never became current (clean() runs under the lock first)
            shutil.rmtree(d)
        shard_dir = d / SHARDS
        shard_dir.mkdir(parents=True)
        if remote is None:
            for name in sorted(files):
                src = self.tars / check_name("tar", name, TAR_NAME)
                if not src.is_file():
                    raise StoreError(f"{self.root}: tar {name} of the new generation is missing from the pool")
                try:
                    os.link(src, shard_dir / name)
                except OSError:  # no hard links on this filesystem
                    os.symlink(os.path.relpath(src, shard_dir), shard_dir / name)
        write_json(shard_dir / SIZES_FILE, {n: f["samples"] for n, f in sorted(files.items())})
        write_parquet(d / SAMPLES_FILE, samples)
        write_parquet(d / REJECTS_FILE, rejects)
        write_json(d / STATS_FILE, stats | {"generation": gen})
        fsync_dir(shard_dir)
        crash_point("finalize")
        write_json(d / LISTING, meta | {"generation": gen, "shards": dict(sorted(files.items()))})
        fsync_dir(d)
        fsync_dir(self.generations)
        if remote is not None:
            remote.push_generation(gen, before_switch=self._before_switch)
        else:
            self._before_switch()
            link = self.root / CURRENT_LINK
            if link.is_dir() and not link.is_symlink():  # a plain folder (a copy made with cp -rL): set aside
                os.replace(link, self.root / f".{CURRENT_LINK}-{os.getpid()}{TMP_SUFFIX}")
            replace_link(link, f"{GENERATIONS}/{gen}")
            crash_point("after_pointer")
            self.ensure_links()
        log.info("generation %s is current in %s", gen, self.url)
        return gen

    def _before_switch(self) -> None:
        crash_point("before_pointer")
        self.check_fence()

    def ensure_links(self) -> None:
        """OUT/samples.parquet etc. point through OUT/current (replacing the files of earlier versions)."""
        if self._remote is not None:
            return
        for name in TOP_LINKS:
            link = self.root / name
            want = f"{CURRENT_LINK}/{name}"
            if link.is_symlink() and os.readlink(link) == want:
                continue
            if link.is_dir() and not link.is_symlink():  # a real folder of tars from an early version
                legacy = self.root / LEGACY_SETS / "legacy"
                legacy.parent.mkdir(exist_ok=True)
                os.replace(link, legacy)
            replace_link(link, want)

    def repair(self) -> list[str]:
        """Put back what an interrupted writer left out of step: a remote output's top-level copies of
        the current generation's files (and the dataset card); local links. Returns what was redone."""
        if self._remote is None:
            if self._local_current() is not None:
                self.ensure_links()
            return []
        self.check_fence()
        card = self.root / CARD_FILE
        return self._remote.repair_copies(card if card.is_file() else None)

    # ---- maintenance (under the lock) ------------------------------------------------------------
    def referenced_tars(self, generations: list[str] | None = None) -> set[str]:
        names: set[str] = set()
        for rec in self.records():
            names.update(rec.get("files", {}))
        for gen in self.generation_names() if generations is None else generations:
            m = self.meta(gen)
            if m:
                names.update(m.get("shards", {}))
        return names

    def clean(self) -> list[str]:
        """Remove what a dead writer left. Only the lock holder may call this. Generations are judged by
        their records (listing.json) and the current one's name; when that name cannot be read, no
        generation is touched (one warning)."""
        removed: list[str] = []

        def rm(p: Path) -> None:
            removed.append(str(p.relative_to(self.root)))
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

        try:
            cur = self._local_current()
            readable = True
        except StoreError as e:
            log.warning("leaving every generation alone: %s", e)
            cur, readable = None, False
        if readable:
            for gen in self.generation_names():
                incomplete = not (self.generations / gen / LISTING).is_file()
                never_current = cur is None or gen > cur
                if gen != cur and (incomplete or never_current):
                    rm(self.generations / gen)
        folders = [self.root, self.parts, self.tars, self.root / CAPTIONS_DIR, self.generations]
        folders += [self.generations / g for g in self.generation_names()]
        folders += [self.generations / g / SHARDS for g in self.generation_names()]
        for folder in folders:
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.name.endswith(TMP_SUFFIX):
                        rm(p)
        if self.tars.is_dir() and readable:
            keep = self.referenced_tars()
            for p in self.tars.iterdir():
                if p.suffix == ".tar" and p.name not in keep:
                    rm(p)
        for uid in {p.name.split(".")[0] for p in self.parts.glob("*.parquet")} if self.parts.is_dir() else ():
            if not (self.parts / f"{uid}.json").exists():  # parts of a unit that never committed
                for kind in ("samples", "rejects"):
                    p = self.parts / f"{uid}.{kind}.parquet"
                    if p.exists():
                        rm(p)
        if removed:
            log.info("removed %d leftovers of an earlier run: %s", len(removed), ", ".join(removed[:5]))
        return removed

    def gc(self, keep: int = 1) -> dict[str, Any]:
        """Delete generations older than the current one and the `keep` before it, and tars that no
        remaining generation and no committed unit uses. Only the lock holder may call this. An output
        whose current generation cannot be told is left alone (StoreError, one line)."""
        if self._remote is not None:
            self.check_fence()
            summary = self._remote.gc(keep=keep, check=self.check_fence)
            self._gc_local(keep)  # the staging copy follows
            return summary
        return self._gc_local(keep)

    def _gc_local(self, keep: int) -> dict[str, Any]:
        cur = self._local_current()
        names = [g for g in self.generation_names() if cur is None or g <= cur]
        kept = names[-(keep + 1) :] if names else []
        if cur is not None and cur not in kept:  # pragma: no cover - a current generation without its folder
            kept.append(cur)
        dropped = [g for g in names if g not in kept]
        for g in dropped:
            shutil.rmtree(self.generations / g)
            crash_point("gc")
        legacy = self.root / LEGACY_SETS
        if legacy.is_dir():
            shutil.rmtree(legacy)
            dropped.append(LEGACY_SETS)
        referenced = self.referenced_tars(kept)
        tars = []
        if self.tars.is_dir():
            for p in sorted(self.tars.glob("*.tar")):
                if p.name not in referenced:
                    tars.append(p.name)
                    p.unlink()
        if dropped or tars:
            fsync_dir(self.root)
        return {"generations_kept": kept, "generations_removed": dropped, "tars_removed": len(tars)}

    def verify(self) -> list[str]:
        from .verify import verify

        return verify(self.url)


class OutputLock:
    """The writer lock of an output: the working folder's flock and, for a remote output, its lease.
    Nested use in one process (the CLI around a flow around run_build) reuses the outer one. On first
    entry it cleans what a dead writer left and repairs what an interrupted one left out of step."""

    def __init__(self, out: Output, command: str, wait: float | None = None):
        self.out = out
        self.command = command
        self.wait = wait
        self.owner: dict[str, Any] | None = None
        self._local: WriterLock | None = None
        self._lease: RemoteLease | None = None
        self._outer: OutputLock | None = None
        self._depth = 0

    def acquire(self) -> OutputLock:
        held = _HELD.get(self.out.key)
        if held is not None:
            held._depth += 1
            self._outer = held
            self.owner = held.owner
            return self
        self.out.prepare()
        self._local = WriterLock(self.out.root, self.command, self.wait).acquire()
        try:
            if self.out._remote is not None:
                self._lease = self.out._remote.lease(self.command, self.wait).acquire()
            self.owner = (self._lease or self._local).owner
            _HELD[self.out.key] = self
            self._depth = 1
            self.out.clean()
        except BaseException:
            self._release()
            raise
        return self

    def ticket(self) -> dict[str, Any]:
        if self._lease is not None:
            return {"token": self._lease.owner["token"], "fence": self._lease.fence}
        return {"token": self._local.owner["token"]}

    def check(self) -> None:
        if self._lease is not None:
            self._lease.check()
        elif self._local is not None:
            self._local.check()

    def _release(self) -> None:
        _HELD.pop(self.out.key, None)
        try:
            if self._lease is not None:
                self._lease.release()
        finally:
            self._lease = None
            if self._local is not None:
                self._local.release()
                self._local = None

    def release(self) -> None:
        if self._outer is not None:
            self._outer._depth -= 1
            self._outer = None
            return
        self._depth -= 1
        if self._depth <= 0:
            self._release()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


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


def replace_folder(src: Path, dst: Path) -> None:
    """Put the finished folder `src` at `dst` (a report): copied beside it under a temp name, then
    swapped in with two renames (a reader sees the old folder, the new one, or for an instant none,
    never a half-written one); leftovers of a crash end
    in TMP_SUFFIX and the next writer's clean() removes them."""
    import uuid

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


__all__ = ["LeaseLost", "Output", "OutputLock", "PUBLISHED", "read_tar", "replace_folder"]
