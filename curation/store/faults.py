"""Crash points for the kill tests: MOTIONPAIRS_CRASH_AT=<point>[:<n>] kills this process with SIGKILL
the n-th time (default 1st) the store reaches <point>; MOTIONPAIRS_PAUSE_AT=<point>:<seconds> sleeps
there once (a writer caught holding the lock, for the concurrency tests). Unset (always, outside tests)
they do nothing."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    pause = os.environ.get("MOTIONPAIRS_PAUSE_AT", "")
    if pause.partition(":")[0] == name and not _hits[f"pause:{name}"]:
        _hits[f"pause:{name}"] += 1
        time.sleep(float(pause.partition(":")[2] or 10))
    spec = os.environ.get("MOTIONPAIRS_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
