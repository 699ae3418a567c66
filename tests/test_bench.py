"""The training benchmark runs end to end (on CPU, with the tiny model) and prints its figures: what a GPU
machine runs with `--pretrained sd15-random`. No timing is asserted: figures are for reading."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
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


def test_build_benchmark_prints_the_throughput_figures(tmp_path):
    """`make bench` on a small folder: decode only, pose only per installed engine, end to end, the
    ceiling and the ratio, in one JSON object."""
    from conftest import ACCEPTED, video

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    cmd = [sys.executable, str(REPO / "bench" / "build_throughput.py"), "--json", "--input", str(folder), "--rss-check"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    fig = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("decode_only_fps", "pose_only_fps", "pose_only_fps_torch", "end_to_end_fps", "ceiling_fps", "ratio"):
        assert fig[key] > 0, key
    assert fig["engine"] == "openvino" and fig["pose_only_fps"] == max(
        fig["pose_only_fps_torch"], fig["pose_only_fps_openvino"]
    )
    assert fig["ceiling_fps"] < min(fig["decode_only_fps"], fig["pose_only_fps"])  # CPU: the stages share the cores
    # the ratio of the unrounded figures; the two printed fps are rounded to 0.1 (a few fps under load)
    e2e, ceiling = fig["end_to_end_fps"], fig["ceiling_fps"]
    assert (e2e - 0.05) / (ceiling + 0.05) - 0.0005 <= fig["ratio"] <= (e2e + 0.05) / (ceiling - 0.05) + 0.0005
    assert fig["sampled_frames"] == 14 and fig["clips"] == 1
    for key in ("pose_only_fps_device", "peak_rss_mb", "peak_rss_workers_mb", "rss_10s_mb", "rss_10min_mb"):
        assert fig[key] > 0, key  # --rss-check: a 10 s and a 10 min build, each in its own process
    assert fig["rss_growth"] == pytest.approx(fig["rss_10min_mb"] / fig["rss_10s_mb"] - 1, abs=0.002)
    assert fig["path"] == "predictor" and fig["pose_batch"] == 16 and fig["decode_workers"] >= 1
