"""Pose engines behind one interface: each installed engine agrees with PyTorch on real frames, the
build decides the same on the shared clips whatever the engine, the engine is recorded, the export is
made once and reused, and an engine that is not installed is a one-line error of the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ACCEPTED, REJECTED, REPO, VIDEOS, video

from curation.config import load_config
from curation.plan import fingerprint
from curation.stages.decode import VideoSource
from curation.stages.pose import ENGINES, PoseDetector, engine_cache, engine_installed
from schemas.records import Clip

pytestmark = pytest.mark.slow
INSTALLED = [e for e in ENGINES if e != "tensorrt" and engine_installed(e)]  # tensorrt needs a GPU


def frames_of(name: str, n: int = 12) -> list[np.ndarray]:
    cfg = load_config(None, output="/tmp/unused")
    clip = Clip(source="folder", clip_id="x", uri=str(video(name)))
    with VideoSource(clip, cfg.decode) as v:
        return [f for b in v.batches(v.plan()[:n]) for f in b.frames]


@pytest.fixture(scope="module")
def real_frames() -> list[np.ndarray]:
    names = [ACCEPTED["tai_chi_glass"], ACCEPTED["dribbler"], REJECTED["ntu_hug"][0], REJECTED["street_dancer"][0]]
    return [f for n in names for f in frames_of(n)]


def detector(engine: str, path: str = "auto") -> PoseDetector:
    pose = {"engine": engine, "device": "cpu", "path": path}
    return PoseDetector(load_config(None, output="/tmp/unused", pose=pose).pose).setup()


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_openvino_is_installed_and_auto_picks_it_on_cpu():
    assert engine_installed("openvino")  # the default install includes it
    assert PoseDetector(load_config(None, output="/tmp/unused", pose={"device": "cpu"}).pose).engine == "openvino"


ENGINE_PATHS = [(e, "predictor") for e in INSTALLED if e != "torch"] + [(e, "device") for e in INSTALLED]


@pytest.mark.parametrize(("engine", "path"), ENGINE_PATHS)
def test_engines_agree_with_torch_on_real_frames(engine, path, real_frames):
    """Every installed engine, through ultralytics' predictor and through the device path (the GPU
    path's code, run on CPU: letterbox, normalisation and NMS as tensor ops), against PyTorch's predictor."""
    ref = detector("torch", "predictor")(real_frames)
    got = detector(engine, path)(real_frames)
    diffs, matched = [], 0
    for r, g in zip(ref, got, strict=True):
        confident_r = [p for p in r if p.score >= 0.5]
        confident_g = [p for p in g if p.score >= 0.5]
        assert abs(len(confident_r) - len(confident_g)) <= 1  # a borderline box may cross 0.5
        for p in confident_r:
            q = max(g, key=lambda q: _iou(p.box, q.box), default=None)
            if q is None or _iou(p.box, q.box) < 0.8:
                continue
            matched += 1
            a, b = np.asarray(p.keypoints), np.asarray(q.keypoints)
            both = (a[:, 2] >= 0.5) & (b[:, 2] >= 0.5)
            diffs += list(np.linalg.norm(a[both, :2] - b[both, :2], axis=1))
            assert abs(p.score - q.score) < 0.1
    assert matched >= 0.9 * sum(1 for r in ref for p in r if p.score >= 0.5)
    diffs = np.asarray(diffs)
    # the device path letterboxes to the full square, the predictor to the smallest stride-aligned
    # rectangle: the model sees other padding, a little more spread at the tail (measured p99 6.1 px)
    tail = 6.0 if path == "predictor" else 8.0
    assert np.median(diffs) < 1.0 and np.percentile(diffs, 99) < tail, (np.median(diffs), diffs.max())


@pytest.mark.parametrize("path", ["predictor", "device"])
def test_openvino_infers_in_fp32_whatever_the_cpu(path, real_frames):
    """OpenVINO's CPU plugin infers in bf16 by default on CPUs with AMX or AVX512-BF16 and in fp32 elsewhere:
    the same clips then gave other keypoints, and other decisions near a threshold, on another machine.
    The engine is compiled with INFERENCE_PRECISION_HINT f32, asked for, not left to the plugin."""
    import openvino as ov

    det = detector("openvino", path)
    backend = (det.model.backend if path == "device" else det.model.predictor.model).backend
    assert backend.compile_model.keywords["config"]["INFERENCE_PRECISION_HINT"] == ov.Type.f32
    assert backend.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert det.precision == "f32" and det.machine["pose_precision"] == "f32"  # as recorded with each unit
    assert sum(map(len, det(real_frames[:4]))) > 0  # the recompiled model still detects


def test_setting_up_openvino_sends_no_usage_events(tmp_path):
    """`import openvino` sends a usage event to Google Analytics, forking the importing process to do it,
    unless the user's consent file declines or CI=true. Set up as a user would run it (no CI variable, a
    home without a consent file), the pose model loads, detects, and nothing is sent nor forked."""
    code = """
import os
forks = []
os.register_at_fork(before=lambda: forks.append(1))  # openvino's sender forks the process to send
import json, numpy as np
from openvino_telemetry.utils.opt_in_checker import OptInChecker
before = OptInChecker().check(False, True)  # openvino's tools ask without a dialog, disabled in CI
from curation.config import load_config
from curation.stages.pose import PoseDetector
pose = {"engine": "openvino", "device": "cpu"}
det = PoseDetector(load_config(None, output="/tmp/unused", pose=pose).pose).setup()
import openvino_telemetry
print(json.dumps({"before": before.name, "after": OptInChecker().check(False, True).name,
    "consent": openvino_telemetry.Telemetry().consent, "forks": len(forks),
    "people": len(det(np.zeros((1, 360, 640, 3), np.uint8))[0])}))
"""
    keep = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env = keep | {"HOME": str(tmp_path), "MOTIONPAIRS_ENGINE_CACHE": str(engine_cache())}  # the export made
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == "NO_FILE"  # without the switch openvino would send (no consent file says no)
    assert got == {"before": "NO_FILE", "after": "DECLINED", "consent": False, "forks": 0, "people": 0}
    assert not (tmp_path / "intel").exists()  # no client id, no usage counter written for the user


def test_the_device_path_batches_frames_of_any_size_together(real_frames):
    """Frames of four clips (three sizes) in one batch: each frame's poses are those it gets alone."""
    det = detector("openvino", "device")
    assert det.path == "device" and len({f.shape for f in real_frames}) >= 3
    mixed = real_frames[::3]
    together = det(mixed)
    alone = [det([f])[0] for f in mixed]
    assert sum(map(len, together)) > 0
    for t, a in zip(together, alone, strict=True):
        assert len(t) == len(a)
        for p, q in zip(t, a, strict=True):
            np.testing.assert_allclose(np.asarray(p.keypoints), np.asarray(q.keypoints), atol=0.05)


@pytest.mark.parametrize("path", ["predictor", "device"])
def test_a_call_at_a_smaller_input_size_is_a_model_set_up_at_that_size(path, real_frames):
    """The second look runs its 1280-px model at 960 px on a pair's crop (second_look.people_in): a call's
    `imgsz` gives the detections of a model set up at that size (the export has dynamic shapes), and the
    model's own size is unchanged after it."""

    def at(size: int) -> PoseDetector:
        pose = {"engine": "openvino", "device": "cpu", "path": path, "imgsz": size}
        return PoseDetector(load_config(None, output="/tmp/unused", pose=pose).pose).setup()

    big, small = at(1280), at(960)
    frames = [np.ascontiguousarray(f[: f.shape[0] // 2, : f.shape[1] // 2]) for f in real_frames[::4]]
    own = big(frames)
    for a, b in zip(big(frames, 960), small(frames), strict=True):
        assert [(p.box, p.keypoints, p.score) for p in a] == [(p.box, p.keypoints, p.score) for p in b]
    assert sum(map(len, own)) > 0
    assert [[p.box for p in r] for r in big(frames)] == [[p.box for p in r] for r in own]


def test_the_device_path_is_recorded_as_another_result(tmp_path):
    from curation.plan import result_versions

    predictor = result_versions(engine="torch", device="cpu", path="predictor")
    device = result_versions(engine="torch", device="cpu", path="device")
    assert device["pose_engine"] == predictor["pose_engine"] + "+device-path"
    a = fingerprint(load_config(None, output=str(tmp_path), pose={"path": "predictor", "device": "cpu"}))
    b = fingerprint(load_config(None, output=str(tmp_path), pose={"path": "device", "device": "cpu"}))
    c = load_config(None, output=str(tmp_path), pose={"path": "predictor", "device": "cpu", "batch_size": 64})
    assert a != b and fingerprint(c) == a  # the batch size is tuning, not a result


def test_the_same_decisions_on_the_shared_clips_whatever_the_engine(labelled_build, tmp_path):
    from curation.build import build

    out_auto, stats_auto = labelled_build
    assert (
        stats_auto["versions"]["pose_engine"].startswith("ultralytics-")
        and "openvino-" in stats_auto["versions"]["pose_engine"]
    )
    cfg = load_config(None, output=str(tmp_path / "torch"), sources=[{"root": str(VIDEOS)}], pose={"engine": "torch"})
    stats_torch = build(cfg)
    assert stats_torch["versions"]["pose_engine"].endswith("/torch")
    assert stats_torch["fingerprint"] != stats_auto["fingerprint"]  # another engine: another result version

    from curation.report.labels import check_labels, read_labels

    labels = read_labels(REPO / "tests" / "labels" / "videos.csv")

    def decisions(out):
        s = pd.read_parquet(out / "samples.parquet")
        r = pd.read_parquet(out / "rejects.parquet")
        return {row["file"]: (row["got"], row["ok"]) for row in check_labels(s, r, labels).rows}

    a, b = decisions(out_auto), decisions(tmp_path / "torch")
    assert all(ok for _, ok in a.values()) and all(ok for _, ok in b.values())  # both meet every label
    same = sum(a[f][0] == b[f][0] for f in a)  # accept/reject and the reason itself
    assert same >= len(a) - 1, {f: (a[f][0], b[f][0]) for f in a if a[f][0] != b[f][0]}


def test_the_export_is_made_once_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("MOTIONPAIRS_ENGINE_CACHE", str(tmp_path / "cache"))
    detector("openvino")
    (folder,) = [p for p in engine_cache().iterdir() if p.is_dir()]
    record = json.loads((folder / "exported.json").read_text())
    assert record["engine"] == "openvino" and record["weights"].startswith("yolo11n-pose.pt@")
    stamp = (folder / record["path"]).stat().st_mtime_ns

    import ultralytics

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(ultralytics.YOLO, "export", no_export)
    detector("openvino")
    assert (folder / record["path"]).stat().st_mtime_ns == stamp


def test_an_engine_that_is_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    from curation.stages import engines
    from flows.cli import main

    # onnxruntime is installed here (the text detector runs on it): take it out of this process's view
    real = engines.engine_installed
    monkeypatch.setattr(engines, "engine_installed", lambda engine: engine != "onnx" and real(engine))

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    rc = main(["build", "--input", str(folder), "--output", str(tmp_path / "out"), "--engine", "local",
               "--pose-engine", "onnx"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "onnx" in err[0] and "not installed" in err[0]
    assert not (tmp_path / "out" / "samples.parquet").exists()
