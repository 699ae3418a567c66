"""The single owner of an output (a local folder or an fsspec URL): the writer lock, durable unit
commits, generations switched by one pointer, the committed listing every reader uses, the remote
mirror, retention (gc) and integrity checks (verify). See layout.py for the files."""

from .files import StoreError, atomic_write, write_json, write_parquet
from .layout import Committed, ShardEntry, committed, current_generation, is_remote
from .lock import LockHeld, RemoteLease, WriterLock
from .output import Output
from .remote import RemoteMirror, default_staging, require_local
from .shards import ShardSet
from .verify import verify

__all__ = [
    "Committed",
    "LockHeld",
    "Output",
    "RemoteLease",
    "RemoteMirror",
    "ShardEntry",
    "ShardSet",
    "StoreError",
    "WriterLock",
    "atomic_write",
    "committed",
    "current_generation",
    "default_staging",
    "is_remote",
    "require_local",
    "verify",
    "write_json",
    "write_parquet",
]
