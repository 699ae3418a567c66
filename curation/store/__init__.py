"""The single owner of an output (a local folder or an fsspec URL): `Output.open(url)` holds the writer
lock or lease (with its fencing number), the staging copy of a remote output and its push and pull,
durable unit commits, generations switched by one pointer, the committed listing and `samples()` every
reader uses, retention (gc) and integrity checks (verify). See layout.py for the files."""

from .files import StoreError, atomic_write, write_json, write_parquet
from .layout import Committed, ShardEntry, committed, current_generation, is_remote
from .lock import LeaseLost, LockHeld, OnWait, RemoteLease, WriterLock
from .output import Output, OutputLock, read_tar
from .shards import ShardSet
from .verify import verify

__all__ = [
    "Committed",
    "LeaseLost",
    "LockHeld",
    "OnWait",
    "Output",
    "OutputLock",
    "RemoteLease",
    "ShardEntry",
    "ShardSet",
    "StoreError",
    "WriterLock",
    "atomic_write",
    "committed",
    "current_generation",
    "is_remote",
    "read_tar",
    "verify",
    "write_json",
    "write_parquet",
]
