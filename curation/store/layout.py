"""Where things are in an output, and how readers find the committed generation (local or fsspec URL).

    OUT/
      current -> generations/g000007      the one pointer; switching it switches everything below
      samples.parquet -> current/samples.parquet
      rejects.parquet -> current/rejects.parquet
      stats.json      -> current/stats.json
      shards          -> current/shards   exactly the generation's tars (links) + sizes.json
      generations/g000007/{samples.parquet, rejects.parquet, stats.json, shards/, units.json, listing.json}
                          listing.json is written last: a generation without it never happened;
                          units.json holds its units' records (a new machine reads them at once)
      tars/<unit>-<k>.tar                 the tar pool (immutable files; gc removes unreferenced ones)
      parts/<unit>.json                   a unit's commit record (tars with size and sha256), written
      parts/<unit>.{samples,rejects}.parquet   after its tars and parts
      captions/                           caption rows, cache, published choice
      .lock, .lock.owner                  the writer lock

On an object store (no links) the pointer is the object CURRENT (the generation's name), the pool is
<url>/shards/ and <url>/samples.parquet etc. are copies of the current generation's files, written
after the pointer moves. Readers follow CURRENT.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import fsspec

from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE
from schemas.shard import SIZES_FILE

from .files import GENERATION, TAR_NAME, StoreError, check_name, record_bytes

PARTS = "parts"
TARS = "tars"
SHARDS = "shards"
GENERATIONS = "generations"
CURRENT_LINK = "current"
CURRENT_OBJECT = "CURRENT"
LISTING = "listing.json"
UNITS_FILE = "units.json"  # generations/<g>/units.json: the records of every unit the generation holds
GENERATION_FILES = (SAMPLES_FILE, REJECTS_FILE, STATS_FILE)
REMOTE_POOL = SHARDS  # on object stores the tar pool is <url>/shards/
CARD_FILE = "README.md"  # the Hugging Face dataset card, rewritten with each generation
PUBLISHED = "published.json"  # captions/published.json: the caption choice of the last publish
TOP_LINKS = (SAMPLES_FILE, REJECTS_FILE, STATS_FILE, SHARDS)  # OUT/<name> -> current/<name> (local)
LEGACY_SETS = "shardsets"  # layout of earlier versions (OUT/shards -> shardsets/<set>)


def is_remote(url: str | os.PathLike) -> bool:
    return fsspec.core.split_protocol(str(url))[0] not in (None, "file", "local")


@dataclass(frozen=True)
class ShardEntry:
    name: str
    url: str
    samples: int
    bytes: int
    sha256: str


@dataclass
class Committed:
    """The committed generation of an output, as readers see it."""

    root: str
    generation: str
    meta: dict
    shards: list[ShardEntry]

    def file_url(self, name: str) -> str:
        return f"{self.root}/{GENERATIONS}/{self.generation}/{name}"


def _local_generation(root: Path) -> str | None:
    """From the link `current`, or where it is a plain folder (a copy), from the listing it holds."""
    link = root / CURRENT_LINK
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError:
        try:
            return check_name("generation", json.loads((link / LISTING).read_text())["generation"], GENERATION)
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return check_name("generation", Path(target).name, GENERATION)


def current_generation(url: str) -> str | None:
    if not is_remote(url):
        return _local_generation(Path(url))
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()  # listings cached by this process are no guide to what writers did since
    try:
        name = fs.cat_file(f"{root.rstrip('/')}/{CURRENT_OBJECT}").decode().strip()
    except FileNotFoundError:
        return None
    return check_name("generation", name, GENERATION)


def unit_records(fs, root: str, generations: Iterable[str] = ()) -> tuple[dict[str, dict], list[str]]:
    """Every unit record under <root>/parts/ as {file name: record}, and the names that do not parse.
    One listing; a record the listing's ETag (the MD5 of its bytes, on S3) shows to be the copy in one of
    `generations`' units.json is taken from there, the rest are read in one batch (`fs.cat` of the list),
    not one request each."""
    parts = f"{root}/{PARTS}"
    try:
        infos = fs.ls(parts, detail=True)
    except FileNotFoundError:
        return {}, []
    listed: dict[str, str] = {}
    for info in infos:
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".json"):
            listed[name] = str(info.get("ETag") or "").strip('"')
    known: dict[str, dict] = {}
    for g in generations:
        try:
            units = json.loads(fs.cat_file(f"{root}/{GENERATIONS}/{g}/{UNITS_FILE}"))
            known |= {f"{u}.json": r for u, r in units.items()}
        except (FileNotFoundError, ValueError, AttributeError):
            continue
    records: dict[str, dict] = {}
    rest = []
    for name, etag in listed.items():
        rec = known.get(name)
        if rec is not None and etag and hashlib.md5(record_bytes(rec)).hexdigest() == etag:
            records[name] = rec
        else:
            rest.append(name)
    bad = []
    if rest:
        got = fs.cat([f"{parts}/{n}" for n in rest], on_error="return")
        by_name = {k.rstrip("/").rsplit("/", 1)[-1]: v for k, v in got.items()}
        for n in rest:
            try:
                data = by_name[n]
                if isinstance(data, BaseException):
                    raise data
                records[n] = json.loads(data)
            except (KeyError, ValueError, FileNotFoundError):
                bad.append(n)
    return records, bad


def committed(url: str | os.PathLike, generation: str | None = None) -> Committed:
    """The committed listing of an output (its current generation unless named). Raises StoreError when
    the output has none."""
    url = str(url).rstrip("/")
    gen = generation or current_generation(url)
    if gen is None:
        raise StoreError(
            f"{url} holds no committed build (no {CURRENT_LINK if not is_remote(url) else CURRENT_OBJECT})"
        )
    try:
        with fsspec.open(f"{url}/{GENERATIONS}/{gen}/{LISTING}", "rb") as f:
            meta = json.loads(f.read())
    except (FileNotFoundError, ValueError) as e:
        raise StoreError(f"{url}: generation {gen} has no readable {LISTING}: {e}") from e
    base = f"{url}/{REMOTE_POOL}" if is_remote(url) else f"{url}/{GENERATIONS}/{gen}/{SHARDS}"
    entries = [
        ShardEntry(check_name("tar", n, TAR_NAME), f"{base}/{n}", int(e["samples"]), int(e["bytes"]), e["sha256"])
        for n, e in sorted(meta["shards"].items())
    ]
    return Committed(root=url, generation=gen, meta=meta, shards=entries)


__all__ = [
    "PARTS",
    "TARS",
    "SHARDS",
    "GENERATIONS",
    "CURRENT_LINK",
    "CURRENT_OBJECT",
    "LISTING",
    "SIZES_FILE",
    "ShardEntry",
    "Committed",
    "committed",
    "current_generation",
    "is_remote",
]
