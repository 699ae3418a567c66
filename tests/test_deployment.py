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


def test_a_scheduled_build_whose_api_key_lives_only_in_a_prefect_secret(prefect_server, tmp_path):
    from fake_openai import FakeOpenAI
    from prefect.blocks.system import Secret
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from curation.captions.recaption import read_caption_rows

    url, env = prefect_server
    key = "sk-test-ONLY-IN-A-SECRET-77"
    llm = FakeOpenAI(api_key=key).start()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    out = tmp_path / "out"
    conf = tmp_path / "build.yaml"
    conf.write_text(
        "decode:\n  max_frames: 16\n"
        f"caption:\n  captioner: openai\n  model: m1\n  base_url: {llm.base_url}\n"
        "  api_key_env: MOTIONPAIRS_TEST_NO_SUCH_KEY\n  api_key_secret: openai-key\n"
    )
    serve_env = {k: v for k, v in env.items() if "OPENAI" not in k} | {"PREFECT_API_URL": url}
    log = open(tmp_path / "serve.log", "w")
    serve = None
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            Secret(value=key).save("openai-key", overwrite=True)
            serve = subprocess.Popen(
                [sys.executable, "-m", "flows.deploy", "--name", "with-secret", "--cron", "0 4 * * *"]
                + ["--input", str(folder), "--output", str(out), "--config", str(conf)],
                env=serve_env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 180
            while True:
                try:
                    run = run_deployment("build_dataset/with-secret", timeout=600)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            assert run.state.is_completed(), (run.state, (tmp_path / "serve.log").read_text()[-3000:])
    finally:
        if serve is not None:
            stop(serve)
        llm.stop()
    rows = read_caption_rows(out)
    assert len(rows) >= 1 and (rows.status == "ok").all() and llm.requests  # authorised with the Secret's key
    s = pd.read_parquet(out / "samples.parquet")
    assert (s.caption_captioner == "openai").all()
    for p in out.rglob("*"):
        if p.is_file():
            assert key.encode() not in p.read_bytes(), p
    assert key not in (tmp_path / "serve.log").read_text()
