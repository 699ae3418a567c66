"""The training benchmark runs end to end (on CPU, with the tiny model) and prints its figures: what a GPU
machine runs with `--pretrained sd15-random`. No timing is asserted: figures are for reading."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def run_bench(*args: str) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "train_throughput.py"), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout[r.stdout.index("{") :])


def test_training_benchmark_reports_steady_state_figures_and_loader_headroom():
    fig = run_bench(
        "train", "--pretrained", "tiny", "--resolution", "32", "--batch", "4", "--steps", "3", "--warmup", "1",
        "--samples", "32", "--workers", "0", "--variants", "full", "frozen_xattn",
    )  # fmt: skip
    assert fig["pretrained"] == "tiny" and fig["precision"] == "no"  # CPU: fp32
    for variant in ("full", "frozen_xattn"):
        assert fig[variant]["samples_per_s"] > 0 and fig[variant]["step_s"] > 0 and fig[variant]["params_trained_m"] > 0
    assert fig["frozen_xattn"]["params_trained_m"] <= fig["full"]["params_trained_m"]
    assert fig["loader_samples_per_s"] > 0 and fig["loader_headroom"] > 0 and fig["peak_rss_gb"] > 0


def test_loader_benchmark_counts_every_sample():
    fig = run_bench("loader", "--samples", "40", "--workers", "0", "--resolution", "32")
    assert fig["samples"] == 40 and fig["samples_per_s_workers_0"] > 0
