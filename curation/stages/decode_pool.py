"""Decode in worker processes, ahead of the pose stage, through a bounded window.

The pose model runs in the build's process; the sampled frames of the next clips are decoded meanwhile
in `decode.workers` processes (spawned once per process and reused), at most `decode.prefetch_clips`
clips ahead, so memory stays bounded by that many clips' sampled frames (`decode.max_frames` each)
whatever the video lengths. Each clip's frames arrive in the batches the serial path would have made,
so the output is the same. A worker that dies (a decoder crashing in C, the OOM killer) breaks the
pool: the clip is tried once more in a fresh pool, and a clip that kills its worker again becomes that
clip's `internal_error` reject; the build goes on."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from schemas.records import Clip, RejectReason

from ..config import DecodeConfig
from ..store.faults import crash_point
from .decode import DecodeFailure, FrameBatch, VideoInfo, VideoSource

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    """One clip's sampled frames (or why there are none), as the pose stage takes them."""

    plan: list[int] = field(default_factory=list)
    batches: list[FrameBatch] = field(default_factory=list)
    info: VideoInfo | None = None
    seconds: float = 0.0
    failure: tuple[RejectReason, str] | None = None  # a DecodeFailure: the clip's reject
    error: tuple[str, str, bool] | None = None  # (type, message, an OSError) of anything else

    def raise_for_problem(self) -> None:
        if self.failure is not None:
            raise DecodeFailure(*self.failure)
        if self.error is not None:
            kind, message, os_error = self.error
            raise (OSError if os_error else RuntimeError)(f"{kind}: {message}")


def decode_clip(clip: Clip, cfg: DecodeConfig) -> Decoded:
    """Every sampled frame of the clip, batch by batch; never raises (a worker's result must pickle)."""
    t0 = time.perf_counter()
    out = Decoded()
    try:
        with VideoSource(clip, cfg) as video:
            out.plan = video.plan()
            out.info = video.info
            out.batches = list(video.batches(out.plan))
    except DecodeFailure as e:
        out.failure = (e.reason, e.detail)
    except Exception as e:  # noqa: BLE001 - reported as the clip's io_error / internal_error
        out.error = (type(e).__name__, str(e)[:500], isinstance(e, (OSError, MemoryError)))
    out.seconds = time.perf_counter() - t0
    return out


def _worker_decode(clip: Clip, cfg: DecodeConfig) -> Decoded:
    crash_point("decode_worker")  # the kill test
    return decode_clip(clip, cfg)


def _ready() -> bool:
    return True


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class DecodePool:
    """Decoded clips in input order, decoded ahead in worker processes (workers=0: in this process)."""

    def __init__(self, cfg: DecodeConfig):
        self.cfg = cfg
        self.workers = default_workers() if cfg.workers is None else cfg.workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor | None:
        if self._pool is None and self.workers > 0:
            if multiprocessing.current_process().daemon:  # a daemonic worker (some Dask setups) has no children
                log.info("decode runs in this process: daemonic processes cannot start workers")
                self.workers = 0
                return None
            pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            try:  # workers that cannot even start are a problem of the run, never of the clips they'd get
                pool.submit(_ready).result(timeout=300)
            except Exception as e:  # noqa: BLE001 - e.g. a script without `if __name__ == "__main__":`
                pool.shutdown(wait=False, cancel_futures=True)
                log.warning(
                    "decode workers could not start (%s: %s); decoding in this process. A script that builds "
                    'must call the build under `if __name__ == "__main__":` (workers are spawned)',
                    type(e).__name__,
                    e,
                )
                self.workers = 0
                return None
            self._pool = pool
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _submit(self, clip: Clip) -> Future:
        pool = self._executor()
        if pool is None:
            f: Future = Future()
            f.set_result(decode_clip(clip, self.cfg))
            return f
        try:
            return pool.submit(_worker_decode, clip, self.cfg)
        except BrokenProcessPool as e:  # another clip's worker died meanwhile: handled where results are read
            f = Future()
            f.set_exception(e)
            return f

    def _retry(self, clip: Clip) -> Decoded:
        """The clip once more in a fresh pool; a second death is the clip's reject."""
        self.close()
        try:
            return self._submit(clip).result()
        except BrokenProcessPool:
            self.close()
            log.error("clip %s: the decode worker died twice on it", clip.clip_id)
            return Decoded(error=("WorkerDied", "the decode worker process died on this clip (twice)", False))

    def map(self, clips: Iterable[Clip]) -> Iterator[tuple[Clip, Decoded]]:
        todo = deque(clips)
        window: deque[tuple[Clip, Future]] = deque()
        ahead = max(1, self.cfg.prefetch_clips)
        while todo or window:
            while todo and len(window) < ahead:
                clip = todo.popleft()
                window.append((clip, self._submit(clip)))
            clip, fut = window.popleft()
            try:
                decoded = fut.result()
            except BrokenProcessPool:
                log.warning("clip %s: a decode worker died; trying the clip again", clip.clip_id)
                waiting = [c for c, _ in window]
                window.clear()
                decoded = self._retry(clip)
                todo.extendleft(reversed(waiting))  # the others go again, in order
            yield clip, decoded
