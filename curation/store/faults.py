"""Crash points for the kill tests: MOTIONPAIRS_CRASH_AT=<point>[:<n>] kills this process with SIGKILL
the n-th time (default 1st) the store reaches <point>; MOTIONPAIRS_PAUSE_AT=<point>:<seconds> sleeps
there once (a writer caught holding the lock, for the concurrency tests), first creating the file
MOTIONPAIRS_PAUSE_FLAG when set (so a test knows the writer is there). Unset (always, outside tests)
they do nothing. Points: after_tar, before_record, record_fsync, after_record, push_unit (remote: tars
and parts up, record not), finalize, before_pointer, after_pointer, publish, gc."""

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
        flag = os.environ.get("MOTIONPAIRS_PAUSE_FLAG")
        if flag:
            open(flag, "w").close()
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
