"""One writer at a time per output: build, recaption, publish and gc take the lock; readers never do.

Local outputs: an flock on OUT/.lock (filelock). The kernel drops it when the holder dies, however it
dies, so a killed holder's lock is simply taken over; OUT/.lock.owner names the holder (host, pid,
command, start time) for the message a second writer gets. Object stores: a lease object
<url>/LOCK with an expiry, renewed by the holder while it runs; an expired lease is taken over.

Fencing: each lease has a number that grows at every takeover, claimed as <url>/leases/<number> with
a create-only write (S3's If-None-Match: *), so two takers never hold the same number. `check()` says
whether this holder is still the newest (no higher number claimed): the store calls it before every
unit commit and pointer switch, and a writer paused past its lease (SIGSTOP, a stall, a partition)
learns there that it lost the output (LeaseLost) before it writes anything. A local flock cannot be
taken over while its holder lives; its check compares the owner file's token.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .files import StoreError, write_json

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.owner"
LEASE_OBJECT = "LOCK"


LEASES = "leases"  # <url>/leases/<fence>: the fencing numbers claimed so far
LEASE_TTL_ENV = "MOTIONPAIRS_LEASE_TTL"  # seconds a lease lasts without renewal (default 600)


class LockHeld(StoreError):
    """Another writer holds the output."""


class LeaseLost(StoreError):
    """This writer no longer holds the output (another took the lease over): it must stop writing."""


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
OnWait = Callable[[], None] | None  # called when a lock has to be waited for (another writer holds it)


class WriterLock:
    """Context manager. `wait`: None or 0 fails at once with LockHeld; a number waits that many seconds;
    float('inf') waits for as long as it takes; `on_wait` is called once when the waiting begins."""

    def __init__(self, root: Path, command: str, wait: float | None = None, on_wait: OnWait = None):
        self.root = Path(root)
        self.command = command
        self.wait = wait or 0
        self.on_wait = on_wait
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
                    if self.on_wait is not None:
                        self.on_wait()
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self.owner = owner_info(self.command)
        write_json(self.root / OWNER_FILE, self.owner)
        _HELD[self._key] = self
        return self

    def check(self, token: str | None = None) -> None:
        """Raise LeaseLost unless the owner file still names this holder (or `token`)."""
        want = token or (self.owner or {}).get("token")
        cur = self.holder()
        if not want or not cur or cur.get("token") != want:
            raise LeaseLost(f"{self.root}: this writer no longer holds the output (now {describe(cur)}); stopped")

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


def lease_ttl() -> float:
    try:
        return float(os.environ.get(LEASE_TTL_ENV, "") or 600)
    except ValueError:
        raise StoreError(f"{LEASE_TTL_ENV} must be a number of seconds") from None


class RemoteLease:
    """A lease object on an object store: {owner, fence, expires_at}. Taken when absent, expired, or
    held by a dead process of this host; the taker then claims the next fencing number (create-only:
    one taker wins it); renewed by a background thread every ttl/3 while it is still the newest, deleted
    on release."""

    def __init__(
        self,
        fs,
        root: str,
        command: str,
        wait: float | None = None,
        ttl_s: float | None = None,
        on_wait: OnWait = None,
    ):
        self.fs = fs
        self.root = root.rstrip("/")
        self.path = f"{self.root}/{LEASE_OBJECT}"
        self.command = command
        self.wait = wait or 0
        self.on_wait = on_wait
        self.ttl = ttl_s if ttl_s is not None else lease_ttl()
        self.owner: dict[str, Any] | None = None
        self.fence = 0
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except (FileNotFoundError, ValueError):
            return None

    def _write(self) -> None:
        assert self.owner is not None
        lease = self.owner | {"fence": self.fence, "expires_at": time.time() + self.ttl}
        self.fs.pipe_file(self.path, json.dumps(lease).encode())

    def newest_fence(self) -> int:
        """The highest fencing number claimed on this output (0: none)."""
        d = f"{self.root}/{LEASES}"
        self.fs.invalidate_cache(d)
        try:
            names = self.fs.ls(d, detail=False)
        except FileNotFoundError:
            return 0
        nums = [int(n) for n in (p.rstrip("/").rsplit("/", 1)[-1] for p in names) if n.isdigit()]
        return max(nums, default=0)

    def _claim(self, fence: int) -> bool:
        data = json.dumps(self.owner | {"fence": fence}).encode()
        try:
            self.fs.pipe_file(f"{self.root}/{LEASES}/{fence:012d}", data, mode="create")
        except FileExistsError:
            return False
        except OSError as e:  # S3's answer to a lost create-only write: 412 Precondition Failed
            if "412" in str(e) or "Precondition" in str(e):
                return False
            raise
        return True

    def acquire(self) -> RemoteLease:
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            self.fs.invalidate_cache()
            cur = self._read()
            if cur is None or cur.get("expires_at", 0) < time.time() or _dead_here(cur):
                self.owner = owner_info(self.command)
                self.fence = max(self.newest_fence(), int((cur or {}).get("fence", 0))) + 1
                self._write()
                if self._claim(self.fence):
                    self._write()  # a loser of the claim may have written the object last: name the winner
                    break
                cur = self._read()
            if time.monotonic() >= deadline:
                raise LockHeld(f"{self.path} is held by {describe(cur)}; retry later or pass --wait")
            if not told:
                log.warning("waiting for %s: held by %s", self.path, describe(cur))
                told = True
                if self.on_wait is not None:
                    self.on_wait()
            time.sleep(1.0)
        self._prune()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="lease-renew")
        self._thread.start()
        return self

    def _prune(self) -> None:
        """Claims well below this one are history; the newest few stay (the counter)."""
        try:
            for p in self.fs.ls(f"{self.root}/{LEASES}", detail=False):
                n = p.rstrip("/").rsplit("/", 1)[-1]
                if n.isdigit() and int(n) < self.fence - 8:
                    self.fs.rm(p)
        except (FileNotFoundError, OSError) as e:  # pragma: no cover - pruning is housekeeping only
            log.debug("could not prune old lease claims: %s", e)

    def check(self) -> None:
        """Raise LeaseLost when another writer has taken the output over since this lease was taken."""
        if self.owner is None:
            raise LeaseLost(f"{self.path}: this writer holds no lease; stopped")
        newest = self.newest_fence()
        if self.lost or newest != self.fence:
            self.lost = True
            now = self._read()
            raise LeaseLost(
                f"{self.path}: the lease was taken over by {describe(now)} (fence {newest}, ours {self.fence});"
                " this writer stopped without writing"
            )

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if self.newest_fence() != self.fence:  # taken over while this process was stalled
                    self.lost = True
                    log.warning("the lease %s was taken over by another writer", self.path)
                    return
                self._write()
            except Exception as e:  # pragma: no cover - network trouble: the next renewal tries again
                log.warning("could not renew the lease %s: %s", self.path, e)

    def release(self) -> None:
        self._stop.set()
        if self.owner is None:
            return
        try:
            cur = self._read()
            if cur and cur.get("token") == self.owner["token"] and not self.lost:
                self.fs.rm(self.path)
        finally:
            self.owner = None

    def __enter__(self) -> RemoteLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
