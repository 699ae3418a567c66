import os
import subprocess
import sys

import pandas as pd
from conftest import ACCEPTED, video

MP = [sys.executable, "-m", "flows.cli"]


def run(args, **kw):
    return subprocess.run(MP + args, capture_output=True, text=True, timeout=600, env=os.environ.copy(), **kw)


def test_missing_input_folder_is_a_one_line_error(tmp_path):
    r = run(["build", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out"), "--engine", "local"])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "input folder does not exist" in r.stderr
    assert not (tmp_path / "out").exists()


def test_invalid_config_key_is_a_one_line_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pairing:\n  pairs_per_clipp: 3\n")
    r = run(["build", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--config", str(cfg)])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "unknown config key 'pairing.pairs_per_clipp'; did you mean 'pairing.pairs_per_clip'?" in r.stderr


def _servers_of(home) -> list[int]:
    """Processes whose environment names this PREFECT_HOME (the CLI's Prefect API inherits it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"PREFECT_HOME={home}".encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_run_that_fails_after_its_prefect_api_started_stops_it(tmp_path):
    """The default engine starts its API before it takes the output; an output it cannot write is still
    one line and exit 2, and the API it started is gone when the command returns."""
    inp = tmp_path / "in"
    inp.mkdir()
    home = tmp_path / "prefect-home"
    env = os.environ.copy() | {"PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    r = subprocess.run(
        MP + ["build", "--input", str(inp), "--output", "/proc/motionpairs-no/out"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not writable" in r.stderr, r.stderr
    left = {pid: open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")[:200] for pid in _servers_of(home)}
    assert left == {}


def test_build_on_the_default_prefect_engine_then_inspect(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    (folder / "empty.mp4").write_bytes(b"")
    out = tmp_path / "out"
    r = run(["build", "--input", str(folder), "--output", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "clips accepted" in r.stderr and "pairs" in r.stderr  # the summary table
    s = pd.read_parquet(out / "samples.parquet")
    assert set(s.clip_id) == {"dribbler"} and {"pair_id", "clip_id", "source", "caption"} <= set(s.columns)
    rj = pd.read_parquet(out / "rejects.parquet")
    assert rj[["clip_id", "stage", "reason"]].values.tolist() == [["empty", "ingest", "empty_file"]]
    assert list((out / "shards").glob("*.tar"))
    r = run(["inspect", str(out)])
    assert r.returncode == 0 and "empty_file" in r.stdout and "clips in" in r.stdout
    r = run(["inspect", str(tmp_path / "nothing")])
    assert r.returncode == 2 and "no finished build" in r.stderr


def test_build_a_dataset_source_from_the_command_line(tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    (root / "Kop0sDqOn-c_000253_000263.mp4").symlink_to(video(ACCEPTED["tai_chi_forest"]))
    ann = tmp_path / "val.csv"
    ann.write_text(
        'label,youtube_id,time_start,time_end,split,is_cc\n"tai chi",Kop0sDqOn-c,253,263,val,0\n'
        "abseiling,0wR5jVB-WPk,417,427,val,0\n"
    )
    out = tmp_path / "out"
    args = ["build", "--source", "kinetics", "--root", str(root), "--annotations", str(ann), "--output", str(out)]
    r = run(args + ["--engine", "local"])
    assert r.returncode == 0, r.stderr[-2000:]
    s = pd.read_parquet(out / "samples.parquet")
    assert set(s.clip_id) == {"Kop0sDqOn-c_000253_000263"} and (s.label == "tai chi").all()
    rj = pd.read_parquet(out / "rejects.parquet")
    assert rj[["clip_id", "reason"]].values.tolist() == [["0wR5jVB-WPk_000417_000427", "missing_file"]]
    r = run(["build", "--input", str(root), "--root", str(root), "--output", str(out)])
    assert r.returncode == 2 and "not both" in r.stderr


def test_a_prefect_api_that_cannot_start_says_why_in_one_line(tmp_path, monkeypatch):
    """The API's own output goes to a file, not the CLI's stderr (uvicorn's tracebacks when stopped
    while starting are its internals); when it cannot start, its first error line is in the one-line
    error.
    Here its port is taken."""
    import socket

    import pytest

    from flows import server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        monkeypatch.setattr(server, "_free_port", lambda: taken.getsockname()[1])
        with pytest.raises(server.APIError) as e, server.EphemeralAPI(timeout_s=300).serve():
            pass
    said = str(e.value)
    assert "exited during start-up" in said and "address already in use" in said.lower() and "\n" not in said, said
