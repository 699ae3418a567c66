"""One build loop, three engines: the CLI in-process, the Prefect flow and the flow's units on a 2-worker
Dask cluster build byte-identical manifests and tars from the same clips (curation.build.build with the
InProcess executor, and with flows.build.PrefectTasks sequential and parallel)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from conftest import ACCEPTED, REJECTED, make_bad_inputs, video

from flows.build import build_dataset, with_dask

MANIFESTS = ("samples.parquet", "rejects.parquet")


def digests(out) -> dict[str, str]:
    got = {m: hashlib.sha256((out / m).read_bytes()).hexdigest() for m in MANIFESTS}
    got |= {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "shards").glob("*.tar")}
    return got


def test_cli_prefect_flow_and_dask_give_byte_identical_manifests_and_shards(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for short, name in {
        "tai_chi": ACCEPTED["tai_chi_forest"],
        "dribbler": ACCEPTED["dribbler"],
        "bunny": REJECTED["big_buck_bunny"][0],
    }.items():
        (folder / f"{short}.mp4").symlink_to(video(name))
    make_bad_inputs(folder)
    over = {"shards": {"clips_per_unit": 2}}
    config = tmp_path / "build.yaml"
    config.write_text("shards:\n  clips_per_unit: 2\n")

    cli = subprocess.run(
        [sys.executable, "-m", "flows.cli", "build", "--input", str(folder), "--output", str(tmp_path / "cli"),
         "--engine", "local", "--config", str(config)],
        capture_output=True, text=True, timeout=900, env=os.environ.copy(),
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-2000:]
    flow = build_dataset(output=str(tmp_path / "flow"), input=str(folder), overrides=over)
    dask = with_dask(workers=2)(output=str(tmp_path / "dask"), input=str(folder), overrides=over, parallel=True)

    assert flow["pairs"] == dask["pairs"] > 0 and flow["units"] == dask["units"] == 4
    expected = digests(tmp_path / "cli")
    assert digests(tmp_path / "flow") == expected
    assert digests(tmp_path / "dask") == expected
