"""Outputs at any fsspec URL (s3:// through s3fs, gs://, ...): the remote side of an `Output`.

`Output.open(url)` works in a local staging folder and uses this class to push and pull; nothing
outside the store calls it. A
committed unit is uploaded tars and parts first and its record last (one object PUT each, atomic on
object stores), so a unit without its record on the remote never happened and is redone. A generation
is uploaded file by file with its listing last, then the CURRENT object (the pointer readers follow),
then convenience copies of its manifests at the top. Superseded units are un-committed only after the
new generation is current; their tars go with `gc`. A fresh machine pulls the small records and parts
first, so it resumes and builds incrementally like a local run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import fsspec

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
    atomic_write,
    check_name,
    fsync_dir,
    record_bytes,
)
from .layout import (
    CURRENT_OBJECT,
    GENERATIONS,
    LISTING,
    PARTS,
    PUBLISHED,
    REMOTE_POOL,
    SHARDS,
    TARS,
    UNITS_FILE,
    current_generation,
    unit_records,
)
from .lock import OnWait, RemoteLease

log = logging.getLogger(__name__)

TOP_COPIES = (f"{SHARDS}/{SIZES_FILE}", SAMPLES_FILE, REJECTS_FILE, STATS_FILE)


def default_staging(url: str) -> Path:
    base = Path(os.environ.get("MOTIONPAIRS_STAGING", Path.home() / ".cache" / "motionpairs" / "staging"))
    return base / hashlib.sha1(url.encode()).hexdigest()[:16]


class RemoteMirror:
    def __init__(self, url: str, staging: Path):
        self.url = url.rstrip("/")
        self.staging = Path(staging)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def lease(self, command: str, wait: float | None = None, on_wait: OnWait = None) -> RemoteLease:
        return RemoteLease(self.fs, self.root, command, wait, on_wait=on_wait)

    def pull_state(self) -> None:
        """Unit records: what a plan needs to know what is done. One listing of parts/; a record this
        folder lacks is taken from the current generation's units.json (one object for every unit it
        holds) when the bucket's copy is the same bytes (its ETag is their MD5), else fetched, all
        missing ones at once. Parts are fetched when they are read (`Output.local_part`)."""
        parts = self.staging / PARTS
        parts.mkdir(parents=True, exist_ok=True)
        remote_parts = self._remote(PARTS)
        self.fs.invalidate_cache()
        remote_names: set[str] = set()
        missing: dict[str, str] = {}  # record name -> its ETag on the bucket
        if self.fs.exists(remote_parts):
            local = {p.name for p in parts.iterdir()}
            for info in self.fs.ls(remote_parts, detail=True):
                name = info["name"].rstrip("/").rsplit("/", 1)[-1]
                uid = name.split(".", 1)[0]
                check_name("unit", uid, UNIT_ID)  # names from the bucket become local paths
                remote_names.add(name)
                if name.endswith(".json") and name not in local:
                    missing[name] = str(info.get("ETag") or info.get("etag") or "").strip('"')
        for p in parts.glob("*.json"):  # a local record the remote lacks: not published
            if p.name not in remote_names:
                p.unlink()
        if not missing:
            return
        for uid, rec in self.generation_units().items():
            name = f"{uid}.json"
            if name in missing:
                data = record_bytes(rec)
                if missing[name] and hashlib.md5(data).hexdigest() == missing[name]:
                    atomic_write(parts / name, lambda f, data=data: f.write(data))
                    del missing[name]
        if missing:
            names = sorted(missing)
            self.fs.get([f"{remote_parts}/{n}" for n in names], [str(parts / f".{n}{TMP_SUFFIX}") for n in names])
            for n in names:
                os.replace(parts / f".{n}{TMP_SUFFIX}", parts / n)
        fsync_dir(parts)

    def generation_units(self) -> dict[str, dict]:
        """The current generation's unit records (units.json), {} when it has none (older versions)."""
        gen = self.current()
        if gen is None:
            return {}
        try:
            return json.loads(self.fs.cat_file(self._remote(f"{GENERATIONS}/{gen}/{UNITS_FILE}")))
        except (FileNotFoundError, ValueError):
            return {}

    def fetch_parts(self, names: list[str]) -> None:
        """Parts (file names under parts/) into the staging copy, all at once."""
        if not names:
            return
        local = self.staging / PARTS
        local.mkdir(parents=True, exist_ok=True)
        self.fs.get([self._remote(f"{PARTS}/{n}") for n in names], [str(local / f".{n}{TMP_SUFFIX}") for n in names])
        for n in names:
            os.replace(local / f".{n}{TMP_SUFFIX}", local / n)

    def pool_url(self, name: str) -> str:
        protocol = fsspec.core.split_protocol(self.url)[0]
        name = check_name("tar", name, TAR_NAME)
        return f"{protocol}://{self._remote(f'{REMOTE_POOL}/{name}')}"

    def push_unit(self, record: dict, before_record=None) -> None:
        for name in sorted(record["files"]):
            check_name("tar", name, TAR_NAME)
            self.fs.put_file(str(self.staging / TARS / name), self._remote(f"{REMOTE_POOL}/{name}"))
        uid = check_name("unit", record["unit_id"], UNIT_ID)
        for kind in ("samples", "rejects"):
            self.fs.put_file(
                str(self.staging / PARTS / f"{uid}.{kind}.parquet"), self._remote(f"{PARTS}/{uid}.{kind}.parquet")
            )
        rows = self.staging / CAPTIONS_DIR / f"rows-{uid}.parquet"  # the unit's LLM caption attempts
        if rows.exists():
            self.fs.put_file(str(rows), self._remote(f"{CAPTIONS_DIR}/{rows.name}"))
        if before_record is not None:
            before_record()  # the fencing check, just before the commit
        self.fs.put_file(str(self.staging / PARTS / f"{uid}.json"), self._remote(f"{PARTS}/{uid}.json"))  # commit
        log.info("unit %s published to %s", uid, self.url)

    def pull_captions(self) -> None:
        """Caption rows and the published choice (what publish and finalize apply)."""
        remote = self._remote(CAPTIONS_DIR)
        local = self.staging / CAPTIONS_DIR
        if not self.fs.exists(remote):
            return
        local.mkdir(parents=True, exist_ok=True)
        for path in self.fs.ls(remote, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if (name.startswith("rows-") and name.endswith(".parquet")) or name == PUBLISHED:
                if name == PUBLISHED or not (local / name).exists():
                    self.fs.get(path, str(local / name))

    def push_file(self, rel: str) -> None:
        """A file of the staging copy (the dataset card, caption rows, the published choice) to the bucket."""
        self.fs.put_file(str(self.staging / rel), self._remote(rel))

    def fetch_file(self, rel: str) -> None:
        """One file of the bucket into the staging copy (temp name, then renamed)."""
        local = self.staging / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        self.fs.get(self._remote(rel), str(tmp))
        os.replace(tmp, local)

    def fetch_tar(self, name: str) -> None:
        """A pool tar into the staging pool (publish rewrites tars other machines built)."""
        local = self.staging / TARS / check_name("tar", name, TAR_NAME)
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{name}.tmp")
            self.fs.get(self._remote(f"{REMOTE_POOL}/{name}"), str(tmp))
            os.replace(tmp, local)

    def push_tars(self, files: dict, tars: Path) -> None:
        """Tars of a generation the bucket lacks (rewritten: near-duplicates dropped, captions
        published), before the generation goes up."""
        self.fs.invalidate_cache(self._remote(REMOTE_POOL))
        try:  # one listing of the pool, not a request per tar
            there = {p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._remote(REMOTE_POOL), detail=False)}
        except FileNotFoundError:
            there = set()
        for name in sorted(files):
            check_name("tar", name, TAR_NAME)
            target = self._remote(f"{REMOTE_POOL}/{name}")
            if name not in there:
                if not (tars / name).is_file():
                    raise StoreError(f"{self.url}: tar {name} of the new generation is neither here nor on the bucket")
                self.fs.put_file(str(tars / name), target)

    def current(self) -> str | None:
        self.fs.invalidate_cache()
        return current_generation(self.url)

    def meta(self) -> dict | None:
        gen = self.current()
        if gen is None:
            return None
        try:
            return json.loads(self.fs.cat_file(self._remote(f"{GENERATIONS}/{gen}/{LISTING}")))
        except (FileNotFoundError, ValueError):
            return None

    def push_generation(self, gen: str, before_switch=None) -> None:
        """The staging generation `gen` becomes the remote's current one: files, listing, then CURRENT
        (after `before_switch`: the fencing check), then the copies at the top."""
        check_name("generation", gen, GENERATION)
        local = self.staging / GENERATIONS / gen
        base = f"{GENERATIONS}/{gen}"
        if before_switch is not None:
            before_switch()  # nothing of a generation goes up from a writer that lost the output
        files = (SAMPLES_FILE, REJECTS_FILE, STATS_FILE, f"{SHARDS}/{SIZES_FILE}", UNITS_FILE, LISTING)
        for rel in files:
            if rel != UNITS_FILE or (local / rel).is_file():
                self.fs.put_file(str(local / rel), self._remote(f"{base}/{rel}"))
        if before_switch is not None:
            before_switch()
        self.fs.pipe_file(self._remote(CURRENT_OBJECT), gen.encode())  # the switch
        crash_point("after_pointer")
        for rel in TOP_COPIES:  # convenience copies
            self.fs.put_file(str(local / rel), self._remote(rel))

    def repair_copies(self, card: Path | None) -> list[str]:
        """The top-level copies of the current generation's files (and the card) where one is missing
        or differs (an upload that failed or was cut short)."""
        gen = self.current()
        if gen is None:
            return []
        redone = []
        for rel in TOP_COPIES:
            src, dst = self._remote(f"{GENERATIONS}/{gen}/{rel}"), self._remote(rel)
            try:
                src_info = self.fs.info(src)
            except FileNotFoundError:
                continue
            if not self._same(src_info, dst, lambda src=src: self.fs.cat_file(src)):
                self.fs.copy(src, dst)
                redone.append(rel)
        if card is not None:
            data = card.read_bytes()
            info = {"size": len(data), "ETag": hashlib.md5(data).hexdigest()}
            if not self._same(info, self._remote(card.name), lambda: data):
                self.fs.put_file(str(card), self._remote(card.name))
                redone.append(card.name)
        if redone:
            log.warning("%s: put back %s (an earlier upload was cut short)", self.url, ", ".join(redone))
        return redone

    def _same(self, want: dict, path: str, content) -> bool:
        """Whether the object at `path` holds what `want` (an info: size, ETag) describes: by size and
        ETag where both have one (no download), else by content."""
        try:
            have = self.fs.info(path)
        except FileNotFoundError:
            return False
        if have.get("size") != want.get("size"):
            return False
        a, b = (str(i.get("ETag") or "").strip('"') for i in (want, have))
        if a and a == b:
            return True
        if a and b and "-" not in a + b:  # both MD5s of the content (not multipart uploads)
            return False
        return self.fs.cat_file(path) == content()

    def uncommit(self, unit_ids: list[str]) -> None:
        for uid in unit_ids:
            p = self._remote(f"{PARTS}/{check_name('unit', uid, UNIT_ID)}.json")
            if self.fs.exists(p):
                self.fs.rm(p)

    def gc(self, keep: int = 1, check=None) -> dict:
        """Remote retention: generations before the current one and `keep` older ones go, then tars that
        no remaining generation and no committed unit uses, then parts of uncommitted units."""
        self.fs.invalidate_cache()
        cur = self.current()
        gens_dir = self._remote(GENERATIONS)
        names = (
            sorted(
                n
                for n in (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(gens_dir, detail=False))
                if GENERATION.match(n) and (cur is None or n <= cur)
            )
            if self.fs.exists(gens_dir)
            else []
        )
        kept = names[-(keep + 1) :]
        for g in names:
            if g not in kept:
                if check is not None:
                    check()
                self.fs.rm(self._remote(f"{GENERATIONS}/{g}"), recursive=True)
                crash_point("gc")
        referenced: set[str] = set()
        for g in kept:
            referenced.update(json.loads(self.fs.cat_file(self._remote(f"{GENERATIONS}/{g}/{LISTING}")))["shards"])
        units: set[str] = set()
        if self.fs.exists(self._remote(PARTS)):
            records, _ = unit_records(self.fs, self.root, kept[-1:])
            for rec in records.values():
                units.add(rec["unit_id"])
                referenced.update(rec.get("files", {}))
            for p in self.fs.glob(self._remote(f"{PARTS}/*.parquet")):
                if p.rsplit("/", 1)[-1].split(".", 1)[0] not in units:
                    self.fs.rm(p)
        removed = 0
        if check is not None:
            check()
        for p in self.fs.glob(self._remote(f"{REMOTE_POOL}/*.tar")):
            if p.rsplit("/", 1)[-1] not in referenced:
                self.fs.rm(p)
                removed += 1
        return {
            "generations_kept": kept,
            "generations_removed": [g for g in names if g not in kept],
            "tars_removed": removed,
        }
