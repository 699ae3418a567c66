"""Outputs at any fsspec URL (s3:// through s3fs, gs://, ...): a local working copy, mirrored.

The build runs unchanged against a local staging folder; the remote is its published mirror. A
committed unit is uploaded tars and parts first and its record last (one object PUT each, atomic on
object stores), so a unit without its record on the remote never happened and is redone. Finalize
uploads the manifests. A fresh machine pulls the small records and parts first, so it resumes and
builds incrementally like a local run. Remote layout: the same as a local output, with the tars
directly under <url>/shards/ (object stores have no links; `publish` works on local outputs only).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import fsspec

from schemas.captions import CAPTIONS_DIR

log = logging.getLogger(__name__)

PARTS = "parts"
SHARDS = "shards"
MANIFESTS = ("shards/sizes.json", "samples.parquet", "rejects.parquet", "stats.json")  # uploaded in this order


def is_remote(url: str) -> bool:
    protocol = fsspec.core.split_protocol(str(url))[0]
    return protocol not in (None, "file", "local")


def default_staging(url: str) -> Path:
    base = Path(os.environ.get("MOTIONPAIRS_STAGING", Path.home() / ".cache" / "motionpairs" / "staging"))
    return base / hashlib.sha1(url.encode()).hexdigest()[:16]


class RemoteMirror:
    def __init__(self, url: str, staging: Path):
        self.url = url.rstrip("/")
        self.staging = staging
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def pull_state(self) -> None:
        """Unit records, their parts and the manifests: what a plan needs to know what is done."""
        self.staging.mkdir(parents=True, exist_ok=True)
        (self.staging / PARTS).mkdir(exist_ok=True)
        remote_parts = self._remote(PARTS)
        if self.fs.exists(remote_parts):
            local = {p.name for p in (self.staging / PARTS).iterdir()}
            for path in self.fs.ls(remote_parts, detail=False):
                name = path.rsplit("/", 1)[-1]
                if name not in local:
                    self.fs.get(path, str(self.staging / PARTS / name))
            remote_names = {p.rsplit("/", 1)[-1] for p in self.fs.ls(remote_parts, detail=False)}
            for p in (self.staging / PARTS).glob("*.json"):  # a local record the remote lacks: not published
                if p.name not in remote_names:
                    p.unlink()

    def push_unit(self, record: dict) -> None:
        shard_dir = (self.staging / SHARDS).resolve()
        for name in sorted(record["shards"]):
            self.fs.put_file(str(shard_dir / name), self._remote(f"{SHARDS}/{name}"))
        uid = record["unit_id"]
        for kind in ("samples", "rejects"):
            self.fs.put_file(
                str(self.staging / PARTS / f"{uid}.{kind}.parquet"), self._remote(f"{PARTS}/{uid}.{kind}.parquet")
            )
        rows = self.staging / CAPTIONS_DIR / f"rows-{uid}.parquet"  # the unit's LLM caption attempts
        if rows.exists():
            self.fs.put_file(str(rows), self._remote(f"{CAPTIONS_DIR}/{rows.name}"))
        self.fs.put_file(str(self.staging / PARTS / f"{uid}.json"), self._remote(f"{PARTS}/{uid}.json"))  # the commit
        log.info("unit %s published to %s", uid, self.url)

    def push_manifests(self) -> None:
        for rel in MANIFESTS:
            local = self.staging / rel
            if local.exists():
                self.fs.put_file(str(local.resolve()), self._remote(rel))

    def drop_units(self, records: list[dict]) -> None:
        """Remove superseded units from the remote: record first (un-commit), then what it held."""
        for rec in records:
            uid = rec["unit_id"]
            paths = [self._remote(f"{PARTS}/{uid}.json")]
            paths += [self._remote(f"{PARTS}/{uid}.{k}.parquet") for k in ("samples", "rejects")]
            paths += [self._remote(f"{SHARDS}/{n}") for n in rec["shards"]]
            for p in paths:
                if self.fs.exists(p):
                    self.fs.rm(p)
