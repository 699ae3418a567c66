"""One writer at a time per output: build, recaption, publish and gc take the lock; readers never do.

Local outputs: an flock on OUT/.lock (filelock). The kernel drops it when the holder dies, however it
dies, so a killed holder's lock is simply taken over; OUT/.lock.owner names the holder (host, pid,
command, start time) for the message a second writer gets. Object stores: a lease object
<url>/LOCK with an expiry, renewed by the holder while it runs; an expired lease is taken over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .files import StoreError, write_json

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.owner"
LEASE_OBJECT = "LOCK"


class LockHeld(StoreError):
    """Another writer holds the output."""


def owner_info(command: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": command,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }


def describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process"
    who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
    return f"{owner.get('command', '?')} ({who}, since {owner.get('started_at', '?')})"


_HELD: dict[str, WriterLock] = {}  # this process's locks: taking one it already holds nests


class WriterLock:
    """Context manager. `wait`: None or 0 fails at once with LockHeld; a number waits that many seconds;
    float('inf') waits for as long as it takes."""

    def __init__(self, root: Path, command: str, wait: float | None = None):
        self.root = Path(root)
        self.command = command
        self.wait = wait or 0
        self._lock = FileLock(str(self.root / LOCK_FILE), thread_local=False)
        self.owner: dict[str, Any] | None = None
        self._key = os.path.realpath(self.root)
        self._nested = False

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> WriterLock:
        held = _HELD.get(self._key)
        if held is not None:  # this process already holds it (the CLI around a flow): nest
            self._nested = True
            self.owner = held.owner
            return self
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            try:
                self._lock.acquire(timeout=0)
                break
            except Timeout:
                if time.monotonic() >= deadline:
                    msg = f"{self.root} is locked by {describe(self.holder())}; retry later or pass --wait"
                    raise LockHeld(msg) from None
                if not told:
                    log.warning("waiting for %s: locked by %s", self.root, describe(self.holder()))
                    told = True
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self.owner = owner_info(self.command)
        write_json(self.root / OWNER_FILE, self.owner)
        _HELD[self._key] = self
        return self

    def release(self) -> None:
        if self._nested:
            self._nested = False
            return
        if self._lock.is_locked:
            _HELD.pop(self._key, None)
            try:
                (self.root / OWNER_FILE).unlink()
            except FileNotFoundError:
                pass
            self._lock.release()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _dead_here(owner: dict[str, Any]) -> bool:
    """A lease taken on this host by a process that no longer runs (killed): free to take over."""
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


class RemoteLease:
    """A lease object on an object store: {owner, expires_at}. Taken when absent, expired, or held by a
    dead process of this host; renewed by a background thread every ttl/3 while held, deleted on
    release. Object stores have no compare-and-swap here, so the taker reads its lease back after a
    short pause and backs off when another won."""

    def __init__(self, fs, root: str, command: str, wait: float | None = None, ttl_s: float = 600):
        self.fs = fs
        self.path = f"{root.rstrip('/')}/{LEASE_OBJECT}"
        self.command = command
        self.wait = wait or 0
        self.ttl = ttl_s
        self.owner: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except (FileNotFoundError, ValueError):
            return None

    def _write(self) -> None:
        assert self.owner is not None
        lease = self.owner | {"expires_at": time.time() + self.ttl}
        self.fs.pipe_file(self.path, json.dumps(lease).encode())

    def acquire(self) -> RemoteLease:
        deadline = time.monotonic() + self.wait
        while True:
            self.fs.invalidate_cache()
            cur = self._read()
            if cur is None or cur.get("expires_at", 0) < time.time() or _dead_here(cur):
                self.owner = owner_info(self.command)
                self._write()
                time.sleep(0.2)
                self.fs.invalidate_cache()
                back = self._read()
                if back and back.get("token") == self.owner["token"]:
                    break
                cur = back
            if time.monotonic() >= deadline:
                raise LockHeld(f"{self.path} is held by {describe(cur)}; retry later or pass --wait")
            time.sleep(1.0)
        self._thread = threading.Thread(target=self._renew, daemon=True, name="lease-renew")
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._write()
            except Exception as e:  # pragma: no cover - network trouble: the next renewal tries again
                log.warning("could not renew the lease %s: %s", self.path, e)

    def release(self) -> None:
        self._stop.set()
        if self.owner is None:
            return
        cur = self._read()
        if cur and cur.get("token") == self.owner["token"]:
            self.fs.rm(self.path)
        self.owner = None

    def __enter__(self) -> RemoteLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
