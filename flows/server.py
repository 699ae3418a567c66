"""A Prefect API for one CLI run that dies with it.

Prefect's own ephemeral API is a `uvicorn` subprocess that outlives a killed parent (225 MB a time).
This one is the same app started with the parent-death signal set (Linux prctl PR_SET_PDEATHSIG), so
SIGKILL of the CLI takes it down too; a normal exit, SIGTERM or SIGINT stop it in `finally`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

from curation.errors import RunError

PR_SET_PDEATHSIG = 1


try:  # resolved here, not in the forked child (loading a library there can deadlock on another thread's lock)
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except OSError:  # not Linux: a normal exit still stops the server
    _PRCTL = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class APIError(RunError, RuntimeError):
    """The run's Prefect API did not start: a problem of the run (one line, exit 2)."""


class EphemeralAPI:
    """The Prefect API of one CLI run: `start()` launches it on a free loopback port and returns at
    once (it takes seconds: the CLI starts it before its own imports and set-up), `serve()` waits until
    it answers and points Prefect at it for the block, then stops it; `stop()` alone stops one that is
    not needed after all. Nothing is started when PREFECT_API_URL is set (a real server is in use)."""

    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120))
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self._log = None  # the API's own output: its internals, not the CLI's one line (read on a failed start)

    def start(self) -> EphemeralAPI:
        if os.environ.get("PREFECT_API_URL") or self.proc is not None:
            return self
        import prefect
        from prefect.settings import get_current_settings

        port = _free_port()
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
        cmd = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on",
        ]  # fmt: skip
        # its own session: a Ctrl-C at the terminal is the CLI's to handle (stop after the unit), not the API's;
        # its output to a file: uvicorn's shutdown noise (a traceback when stopped with services still starting)
        # must not reach the CLI's stderr
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(  # noqa: PLW1509 - prctl only
            cmd,
            env=env,
            preexec_fn=_die_with_parent,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.url = f"http://127.0.0.1:{port}/api"
        return self

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        if os.environ.get("PREFECT_API_URL"):
            yield os.environ["PREFECT_API_URL"]
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self.start()
        proc, url = self.proc, self.url
        try:
            self._wait_up(proc, url)
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        finally:
            try:  # send the logs and events still queued while the API is up (what Prefect does at exit)
                from prefect._internal.concurrency.services import QueueService

                QueueService.drain_all(timeout=10)
            except Exception:  # an internal of Prefect's; without it a late log line only fails to reach the API
                pass
            self.stop()

    def _wait_up(self, proc: subprocess.Popen, url: str) -> None:
        """Until the API at `url` answers its health check; APIError if it exits (naming what it said)
        or the time runs out."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            if proc.poll() is not None:
                raise APIError(f"the Prefect API exited during start-up (status {proc.returncode}){self._said()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise APIError(f"the Prefect API did not start within {self.timeout_s:.0f} s")
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop it; the next `start()` makes another (the CLI waiting for another writer stops it meanwhile)."""
        proc, self.proc = self.proc, None
        log, self._log = self._log, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None:
            log.close()

    def _said(self) -> str:
        """': ' and the first error line the API wrote (else its last line), or ''."""
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = [x.strip() for x in self._log.read(200_000).decode(errors="replace").splitlines() if x.strip()]
        errors = [x for x in lines if "error" in x.lower()]
        return f": {errors[0] if errors else lines[-1]}" if lines else ""


@contextlib.contextmanager
def ephemeral_api(timeout_s: float | None = None) -> Iterator[str]:
    """Start the Prefect API on a free loopback port for the duration of the block; yields its URL.
    Does nothing when PREFECT_API_URL is set (a real server is in use)."""
    with EphemeralAPI(timeout_s).serve() as url:
        yield url
