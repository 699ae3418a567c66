"""The generations side of an `Output` (a mixin): which generation is current, its listing, writing a
complete new one and moving the one pointer (a link locally, the CURRENT object remotely), and putting
back what an interrupted writer left out of step (top-level links and copies)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa

from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE
from schemas.shard import SIZES_FILE

from .faults import crash_point
from .files import (
    GENERATION,
    TAR_NAME,
    TMP_SUFFIX,
    Chunks,
    StoreError,
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
    LEGACY_SETS,
    LISTING,
    SHARDS,
    TOP_LINKS,
    UNITS_FILE,
    Committed,
    committed,
)

log = logging.getLogger(__name__)


class Generations:
    """Generation methods of `Output` (self.root, self.url, self._remote, self.generations, self.tars)."""

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
        samples: pa.Table | Chunks,
        rejects: pa.Table,
        stats: dict[str, Any],
        files: dict[str, dict[str, Any]],
        meta: dict[str, Any],
        records: list[dict[str, Any]] | None = None,
    ) -> str:
        """A complete new generation, then the pointer. `files`: tar name -> samples, bytes, sha256 (all
        in the pool; on a remote output the tars the bucket lacks go up first). `samples`: a table or
        `Chunks` (written a row group at a time). `records`: the units it
        holds, kept as its units.json (a new machine reads them in one request)."""
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
        if records is not None:
            write_json(d / UNITS_FILE, {r["unit_id"]: r for r in records})
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
