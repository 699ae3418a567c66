"""`Output`: the only thing that writes into or lists a local output folder (see layout.py).

- units: `shard_writer()` then `commit_unit()` (tars fsynced, then parts, then the record, then the folder)
- generations: `write_generation()` writes a complete new set of manifests beside the old ones and moves
  the one pointer; readers of the old generation are undisturbed until `gc()`
- `clean()` (under the lock) removes what dead writers left: temp files, tars no record or generation
  claims, generations that never became current
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.captions import CAPTIONS_DIR
from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE
from schemas.shard import SIZES_FILE

from .faults import crash_point
from .files import (
    GENERATION,
    TAR_NAME,
    TMP_SUFFIX,
    UNIT_ID,
    StoreError,
    check_name,
    fsync_dir,
    replace_link,
    write_json,
    write_parquet,
)
from .layout import CURRENT_LINK, GENERATIONS, LISTING, PARTS, SHARDS, TARS, _local_generation
from .lock import WriterLock
from .shards import ShardSet

log = logging.getLogger(__name__)

TOP_LINKS = (SAMPLES_FILE, REJECTS_FILE, STATS_FILE, SHARDS)
LEGACY_SETS = "shardsets"  # layout of earlier versions (OUT/shards -> shardsets/<set>)


class Output:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.parts = self.root / PARTS
        self.tars = self.root / TARS
        self.generations = self.root / GENERATIONS

    # ---- the output as a whole -------------------------------------------------------------------
    def prepare(self) -> Output:
        """Create the folder and prove it is writable; a StoreError (one line) when it is not."""
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

    def lock(self, command: str, wait: float | None = None) -> WriterLock:
        self.prepare()
        return WriterLock(self.root, command, wait)

    # ---- units -----------------------------------------------------------------------------------
    def part(self, unit_id: str, kind: str) -> Path:
        return self.parts / f"{check_name('unit', unit_id, UNIT_ID)}.{kind}.parquet"

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
        uid = check_name("unit", record["unit_id"], UNIT_ID)
        write_parquet(self.part(uid, "samples"), samples)
        write_parquet(self.part(uid, "rejects"), rejects)
        crash_point("before_record")
        write_json(self.parts / f"{uid}.json", record)  # the commit
        crash_point("after_record")

    def uncommit(self, unit_ids: list[str]) -> None:
        """Take units out of the build state (their files stay for older generations until gc)."""
        for uid in unit_ids:
            (self.parts / f"{check_name('unit', uid, UNIT_ID)}.json").unlink(missing_ok=True)
        if unit_ids:
            fsync_dir(self.parts)

    # ---- generations -----------------------------------------------------------------------------
    def current(self) -> str | None:
        return _local_generation(self.root)

    def generation_names(self) -> list[str]:
        if not self.generations.is_dir():
            return []
        return sorted(p.name for p in self.generations.iterdir() if GENERATION.match(p.name))

    def meta(self, generation: str | None = None) -> dict[str, Any] | None:
        gen = generation or self.current()
        if gen is None:
            return None
        try:
            return json.loads((self.generations / gen / LISTING).read_text())
        except (OSError, ValueError):
            return None

    def write_generation(
        self,
        samples: pa.Table,
        rejects: pa.Table,
        stats: dict[str, Any],
        files: dict[str, dict[str, Any]],
        meta: dict[str, Any],
        link_tars: bool = True,
        after: str | None = None,
    ) -> str:
        """A complete new generation, then the pointer. `files`: tar name -> samples, bytes, sha256 (all
        in the pool). `link_tars=False` for a remote output's staging copy, which may lack the tars;
        `after`: a generation the new one must be numbered after (the remote's current one)."""
        names = self.generation_names() + ([after] if after else [])
        gen = f"g{(max(int(n[1:]) for n in names) + 1 if names else 1):06d}"
        d = self.generations / gen
        shard_dir = d / SHARDS
        shard_dir.mkdir(parents=True)
        if link_tars:
            for name in sorted(files):
                src = self.tars / check_name("tar", name, TAR_NAME)
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
        replace_link(self.root / CURRENT_LINK, f"{GENERATIONS}/{gen}")
        self.ensure_links()
        log.info("generation %s is current in %s", gen, self.root)
        return gen

    def ensure_links(self) -> None:
        """OUT/samples.parquet etc. point through OUT/current (replacing the files of earlier versions)."""
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
        """Remove what a dead writer left. Only the lock holder may call this."""
        removed: list[str] = []

        def rm(p: Path) -> None:
            removed.append(str(p.relative_to(self.root)))
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

        cur = self.current()
        for gen in self.generation_names():
            incomplete = not (self.generations / gen / LISTING).is_file()
            never_current = cur is None or gen > cur
            if incomplete or never_current:
                rm(self.generations / gen)
        folders = [self.root, self.parts, self.tars, self.root / CAPTIONS_DIR, self.generations]
        folders += [self.generations / g for g in self.generation_names()]
        folders += [self.generations / g / SHARDS for g in self.generation_names()]
        for folder in folders:
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.name.endswith(TMP_SUFFIX):
                        rm(p)
        if self.tars.is_dir():
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
        remaining generation and no committed unit uses. Only the lock holder may call this."""
        cur = self.current()
        names = [g for g in self.generation_names() if cur is None or g <= cur]
        kept = names[-(keep + 1) :] if names else []
        dropped = [g for g in names if g not in kept]
        for g in dropped:
            shutil.rmtree(self.generations / g)
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
