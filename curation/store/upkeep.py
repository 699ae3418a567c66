"""Upkeep of an `Output` (a mixin), under the writer lock: clean() removes what a dead writer left,
gc() applies retention, verify() checks the committed output against its records."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from schemas.captions import CAPTIONS_DIR

from .faults import crash_point
from .files import TMP_SUFFIX, StoreError, fsync_dir
from .layout import LEGACY_SETS, LISTING, SHARDS
from .verify import verify as verify_url

log = logging.getLogger(__name__)


class Upkeep:
    """Maintenance methods of `Output`."""

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
        return verify_url(self.url)
