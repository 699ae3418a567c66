"""`OutputLock`: the writer lock of an `Output` as a whole, taken once per process (nested use reuses
it): the working folder's flock (lock.WriterLock) and, for a remote output, its lease with the fencing
number (lock.RemoteLease). `HELD` maps each output this process holds to its lock; `Output.check_fence`
asks it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .lock import OnWait, RemoteLease, WriterLock

if TYPE_CHECKING:
    from .output import Output

HELD: dict[str, OutputLock] = {}  # this process's output locks, by output: taking one again nests


class OutputLock:
    """The writer lock of an output: the working folder's flock and, for a remote output, its lease.
    Nested use in one process (the CLI around a flow around run_build) reuses the outer one. On first
    entry it cleans what a dead writer left and repairs what an interrupted one left out of step."""

    def __init__(self, out: Output, command: str, wait: float | None = None, on_wait: OnWait = None):
        self.out = out
        self.command = command
        self.wait = wait
        self.on_wait = on_wait  # called when the lock or the lease has to be waited for (another writer holds it)
        self.owner: dict[str, Any] | None = None
        self._local: WriterLock | None = None
        self._lease: RemoteLease | None = None
        self._outer: OutputLock | None = None
        self._depth = 0

    def acquire(self) -> OutputLock:
        held = HELD.get(self.out.key)
        if held is not None:
            held._depth += 1
            self._outer = held
            self.owner = held.owner
            return self
        self.out.prepare()
        self._local = WriterLock(self.out.root, self.command, self.wait, self.on_wait).acquire()
        try:
            if self.out._remote is not None:
                self._lease = self.out._remote.lease(self.command, self.wait, self.on_wait).acquire()
            self.owner = (self._lease or self._local).owner
            HELD[self.out.key] = self
            self._depth = 1
            self.out.clean()
        except BaseException:
            self._release()
            raise
        return self

    def ticket(self) -> dict[str, Any]:
        if self._lease is not None:
            return {"token": self._lease.owner["token"], "fence": self._lease.fence}
        return {"token": self._local.owner["token"]}

    def check(self) -> None:
        if self._lease is not None:
            self._lease.check()
        elif self._local is not None:
            self._local.check()

    def _release(self) -> None:
        HELD.pop(self.out.key, None)
        try:
            if self._lease is not None:
                self._lease.release()
        finally:
            self._lease = None
            if self._local is not None:
                self._local.release()
                self._local = None

    def release(self) -> None:
        if self._outer is not None:
            self._outer._depth -= 1
            self._outer = None
            return
        self._depth -= 1
        if self._depth <= 0:
            self._release()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
