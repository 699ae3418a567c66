"""A scheduled deployment on a real `prefect server start --host 127.0.0.1`, triggered through the API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
from conftest import ACCEPTED, REPO, video


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError("prefect server did not become healthy")


@pytest.fixture()
def prefect_server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url, proc)
        yield url, env
    finally:
        stop(proc)


def test_scheduled_deployment_runs_end_to_end(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, env = prefect_server
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_glass"]))
    out = tmp_path / "out"
    serve_env = {**env, "PREFECT_API_URL": url, "PREFECT_LOGGING_LEVEL": "INFO"}
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.deploy", "--name", "nightly", "--cron", "0 3 * * *"]
        + ["--input", str(folder), "--output", str(out)],
        env=serve_env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            import anyio

            async def deployment():
                async with get_client() as client:
                    for _ in range(120):
                        try:
                            return await client.read_deployment_by_name("build_dataset/nightly")
                        except Exception:
                            await anyio.sleep(1)
                raise TimeoutError("deployment was not registered")

            dep = anyio.run(deployment)
            assert dep.schedules and dep.schedules[0].schedule.cron == "0 3 * * *"
            run = run_deployment("build_dataset/nightly", timeout=600)
            assert run.state.is_completed(), (run.state, (tmp_path / "serve.log").read_text()[-3000:])
            assert run.name == f"build {out}"

            async def logs():
                from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

                async with get_client() as client:
                    return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))

            names = {entry.name for entry in anyio.run(logs)}
            assert any(n.startswith("curation") for n in names), names  # curation's logs reach the UI
    finally:
        stop(serve)
    s = pd.read_parquet(out / "samples.parquet")
    assert set(s.clip_id) == {"tai_chi"}
