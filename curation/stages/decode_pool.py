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
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

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
    part: str | None = None  # "coarse" / "rest": that share of the plan's frames only (coarse_frames)

    def raise_for_problem(self) -> None:
        if self.failure is not None:
            raise DecodeFailure(*self.failure)
        if self.error is not None:
            kind, message, os_error = self.error
            raise (OSError if os_error else RuntimeError)(f"{kind}: {message}")


def _problem(e: Exception) -> Decoded:
    if isinstance(e, DecodeFailure):
        return Decoded(failure=(e.reason, e.detail))
    return Decoded(error=(type(e).__name__, str(e)[:500], isinstance(e, (OSError, MemoryError))))


def coarse_indices(plan: list[int], k: int) -> list[int]:
    """`k` frames of the plan spread evenly, first and last included (the whole plan when k covers it)."""
    if k <= 0 or k >= len(plan):
        return list(plan)
    return [plan[p] for p in np.unique(np.round(np.linspace(0, len(plan) - 1, k)).astype(int))]


def part_of(plan: list[int], k: int, part: str | None) -> list[int]:
    """The frames of `plan` that `part` decodes: all (None), the coarse pass's or the rest."""
    if part is None:
        return plan
    coarse = coarse_indices(plan, k)
    if part == "coarse":
        return coarse
    taken = set(coarse)
    return [i for i in plan if i not in taken]


def merged(coarse: Decoded, rest: Decoded, batch_frames: int) -> Decoded:
    """A clip's coarse and rest frames as one decoding of its whole plan, in the batches of that."""
    if rest.failure is not None or rest.error is not None:
        return Decoded(failure=rest.failure, error=rest.error, seconds=coarse.seconds + rest.seconds)
    frames = sorted(
        (x for d in (coarse, rest) for b in d.batches for x in zip(b.indices, b.times, b.frames, strict=True)),
        key=lambda x: x[0],
    )
    batches = [
        FrameBatch([i for i, _, _ in chunk], [t for _, t, _ in chunk], np.stack([f for _, _, f in chunk]))
        for chunk in (frames[k : k + batch_frames] for k in range(0, len(frames), batch_frames))
    ]
    return Decoded(plan=coarse.plan, batches=batches, info=coarse.info, seconds=coarse.seconds + rest.seconds)


def decode_clips(clips: list[Clip], cfg: DecodeConfig, part: str | None = None) -> list[Decoded]:
    """Every sampled frame of each clip (or `part` of them: part_of), batch by batch, for clips of one
    file (consecutive segments of one video: EPIC's narrations) through one reader: the file is opened
    once. Never raises (a worker's result must pickle); a file that cannot be opened is each of its
    clips' problem."""
    t0 = time.perf_counter()
    video = VideoSource(clips[0], cfg)
    try:
        video.open()
    except Exception as e:  # noqa: BLE001 - reported as the clips' rejects
        failed = _problem(e)
        failed.seconds = (time.perf_counter() - t0) / len(clips)
        return [failed for _ in clips]
    out = []
    try:
        for clip in clips:
            d = Decoded(part=part)
            try:
                video.retarget(clip)
                d.plan = video.plan()
                d.info = video.info
                d.batches = list(video.batches(part_of(d.plan, cfg.coarse_frames, part)))
            except Exception as e:  # noqa: BLE001 - this segment's reject; the others go on
                d = _problem(e)
            d.seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            out.append(d)
    finally:
        video.close()
    return out


def decode_clip(clip: Clip, cfg: DecodeConfig, part: str | None = None) -> Decoded:
    return decode_clips([clip], cfg, part)[0]


def _worker_decode(clips: list[Clip], cfg: DecodeConfig, part: str | None = None) -> list[Decoded]:
    crash_point("decode_worker")  # the kill test
    return decode_clips(clips, cfg, part)


def _ready() -> bool:
    return True


def _watch_parent(parent: int) -> None:
    """Worker initializer: leave as soon as the build process is gone (SIGKILLed builds must not leave
    decode workers behind, holding its pipes open and waiting forever for work). Ctrl-C in a terminal
    reaches every process of the group: a worker ignores it (no KeyboardInterrupt traceback, no broken
    pool), and the build process decides (stop after the current unit; again: at once)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def default_workers() -> int:
    """cores / 2 (at most 8); 1 inside a Dask worker, where the cluster's processes are the scale-out
    and each runs a pose model of its own (decode.workers sets it for them too)."""
    if _in_dask_worker():
        return 1
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _in_dask_worker() -> bool:
    if "distributed" not in sys.modules:  # a Dask worker has imported it long before
        return False
    try:
        sys.modules["distributed"].get_worker()
        return True
    except (AttributeError, ValueError):
        return False


class DecodePool:
    """Decoded clips in input order, decoded ahead in worker processes (workers=0: in this process)."""

    def __init__(self, cfg: DecodeConfig):
        self.cfg = cfg
        self.workers = default_workers() if cfg.workers is None else cfg.workers
        self._pool: ProcessPoolExecutor | None = None
        self._ready: list[Future] | None = None  # the started workers' first answers, until waited for
        self._early: deque[tuple[list[Clip], Future]] = deque()  # the next call's first clips, started early

    def _executor(self) -> ProcessPoolExecutor | None:
        self._spawn()
        ready, self._ready = self._ready, None
        if ready:
            try:  # workers that cannot even start are a problem of the run, never of the clips they'd get
                for f in ready:
                    f.result(timeout=300)
            except Exception as e:  # noqa: BLE001 - e.g. a script without `if __name__ == "__main__":`
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                log.warning(
                    "decode workers could not start (%s: %s); decoding in this process. A script that builds "
                    'must call the build under `if __name__ == "__main__":` (workers are spawned)',
                    type(e).__name__,
                    e,
                )
                self.workers = 0
        return self._pool

    def _spawn(self) -> None:
        """Start the worker processes (without waiting for them: `_executor` does, once)."""
        if self._pool is None and self.workers > 0:
            if multiprocessing.current_process().daemon:  # a daemonic worker (some Dask setups) has no children
                log.warning(
                    "decode runs in this process: a daemonic process cannot start decode workers "
                    "(Dask: set distributed.worker.daemon to false)"
                )
                self.workers = 0
                return
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
            # a spawn pool starts a worker per task while none is idle: one task each starts them all now
            self._ready = [self._pool.submit(_ready) for _ in range(self.workers)]

    def start(self, wait: bool = True) -> DecodePool:
        """Start the workers now (they import the decoders: seconds), not when the first clip needs them.
        `wait=False`: return at once (the pose model loads meanwhile); the first use waits for them."""
        if wait:
            self._executor()
        else:
            self._spawn()
        return self

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._ready = None

    def _submit(self, clips: list[Clip], part: str | None = None) -> Future:
        pool = self._executor()
        if pool is None:
            f: Future = Future()
            f.set_result(decode_clips(clips, self.cfg, part))
            return f
        try:
            return pool.submit(_worker_decode, clips, self.cfg, part)
        except BrokenProcessPool as e:  # another clip's worker died meanwhile: handled where results are read
            f = Future()
            f.set_exception(e)
            return f

    def _retry(self, clip: Clip, part: str | None = None) -> Decoded:
        """The clip once more, alone, in a fresh pool; a second death is the clip's reject."""
        self.close()
        try:
            return self._submit([clip], part).result()[0]
        except BrokenProcessPool:
            self.close()
            log.error("clip %s: the decode worker died twice on it", clip.clip_id)
            return Decoded(error=("WorkerDied", "the decode worker process died on this clip (twice)", False))

    @staticmethod
    def _take(todo: deque[Clip], room: int) -> list[Clip]:
        """The next clips to decode together: the first, and those after it in the same file (up to room)."""
        group = [todo.popleft()]
        while todo and len(group) < room and todo[0].uri == group[0].uri:
            group.append(todo.popleft())
        return group

    def rest(self, clip: Clip) -> Callable[[], Decoded]:
        """The frames of the clip its coarse pass left out, decoding now in a worker; call for them."""
        fut = self._submit([clip], "rest")

        def result() -> Decoded:
            try:
                return fut.result()[0]
            except (BrokenProcessPool, CancelledError):
                log.warning("clip %s: a decode worker died; trying it again", clip.clip_id)
                return self._retry(clip, "rest")

        return result

    def map(
        self, clips: Iterable[Clip], upcoming: Iterable[Clip] = (), part: Callable[[Clip], str | None] | None = None
    ) -> Iterator[tuple[Clip, Decoded]]:
        """Each clip with its decoded frames, in order. Consecutive clips of one file are decoded
        together through one reader. `upcoming` (the next call's clips, e.g. the next work unit) fills
        the window once these are all submitted, so the pose model does not wait for the first clip of
        the next call; at most `prefetch_clips` clips are in flight either way. `part(clip)`: which of
        its frames to decode (part_of; None: all)."""
        part = part or (lambda clip: None)
        todo = deque(clips)
        window: deque[tuple[list[Clip], Future]] = deque()
        while self._early and len(todo) >= len(self._early[0][0]):
            group = self._early[0][0]
            if [c.clip_id for c in group] != [todo[k].clip_id for k in range(len(group))]:
                break
            window.append(self._early.popleft())
            for _ in group:
                todo.popleft()
        for _, fut in self._early:  # started for another call than this one: not needed
            fut.cancel()
        self._early.clear()
        nxt = deque(upcoming)
        ahead = max(1, self.cfg.prefetch_clips)

        def in_flight() -> int:
            return sum(len(g) for g, _ in window) + sum(len(g) for g, _ in self._early)

        while todo or window:
            while todo and in_flight() < ahead:
                group = self._take(todo, ahead - in_flight())
                window.append((group, self._submit(group, part(group[0]))))
            while not todo and nxt and in_flight() < ahead:
                group = self._take(nxt, ahead - in_flight())
                self._early.append((group, self._submit(group, part(group[0]))))
            group, fut = window.popleft()
            try:
                results = fut.result()
            except (BrokenProcessPool, CancelledError):
                log.warning("clips %s: a decode worker died; trying each again", ", ".join(c.clip_id for c in group))
                waiting = [c for g, _ in window for c in g]
                window.clear()
                results = [self._retry(clip, part(clip)) for clip in group]
                todo.extendleft(reversed(waiting))  # the others go again, in order
            yield from zip(group, results, strict=True)
