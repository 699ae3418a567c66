"""Crash points for the kill tests: MOTIONPAIRS_CRASH_AT=<point>[:<n>] kills this process with SIGKILL
the n-th time (default 1st) the store reaches <point>. Unset (always, outside tests) it does nothing."""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    spec = os.environ.get("MOTIONPAIRS_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
