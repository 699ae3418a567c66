"""INT8 pose on CPU against fp32: the same YOLO11n-pose weights exported to OpenVINO with static INT8
quantization (NNCF, through ultralytics' exporter, `quantize=8`), calibrated on sampled frames of one
folder of clips and measured on the sampled frames of another.

    pip install 'motionpairs[int8]'   # nncf
    python bench/int8_pose.py [--calib tests/data/real] [--input ../shared/data/videos] [--json]

Prints one JSON object (asserts nothing): calib_frames, frames, export_seconds, pose_only_fps_fp32 and
pose_only_fps_int8 (OpenVINO, batches of 16, model loaded and warmed up, two passes each, the better),
speedup, and int8_vs_fp32 (bench/build_throughput.py's keypoint_deviation: the share of frames with the
same number of people, the largest and the 95th-percentile keypoint distance over the box height).
The INT8 model is not a setting of the build: on 2026-12-04 it changed too many decisions (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from build_throughput import decode_all, keypoint_deviation  # noqa: E402

from curation.config import load_config  # noqa: E402

CALIB_YAML = """path: {root}
train: images/val
val: images/val
kpt_shape: [17, 3]
flip_idx: [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
names:
  0: person
"""


def sampled_frames(folder: str) -> list:
    """Every sampled frame of the clips in `folder`, decoded as the build does (RGB)."""
    cfg = load_config(None, output=tempfile.gettempdir(), sources=[{"root": folder}])
    return decode_all(cfg, [c for s in cfg.sources for c in s.listing().clips])[0]


def export_int8(weights: Path, calib: list, work: Path) -> Path:
    """The weights exported to OpenVINO INT8, calibrated on `calib` (written as a label-less YOLO dataset)."""
    import cv2
    from ultralytics import YOLO

    from curation.stages.engines import no_openvino_telemetry

    no_openvino_telemetry()  # before the exporter imports openvino (and NNCF)
    images = work / "calib" / "images" / "val"
    images.mkdir(parents=True)
    for i, f in enumerate(calib):
        cv2.imwrite(str(images / f"{i:04d}.jpg"), f[..., ::-1])
    (work / "calib.yaml").write_text(CALIB_YAML.format(root=work / "calib"))
    shutil.copy2(weights, work / weights.name)
    out = YOLO(str(work / weights.name), task="pose").export(
        format="openvino", imgsz=640, dynamic=True, quantize=8, data=str(work / "calib.yaml"), verbose=False
    )
    return Path(out)


def measure(model_file: Path | None, frames: list, keep: list) -> float:
    """Frames per second of the OpenVINO engine, `model_file` instead of the fp32 export when given."""
    import curation.stages.pose as pose

    cfg = load_config(None, output=tempfile.gettempdir(), sources=[{"root": tempfile.gettempdir()}])
    det = pose.PoseDetector(cfg.pose.model_copy(update={"engine": "openvino", "path": "predictor"}))
    if model_file is not None:
        exported, pose.exported_model = pose.exported_model, lambda *a, **k: model_file
        try:
            det.setup()
        finally:
            pose.exported_model = exported
    det(frames[:16])
    best = 0.0
    for attempt in range(2):
        got = []
        t0 = time.perf_counter()
        for i in range(0, len(frames), 16):
            got.extend(det(frames[i : i + 16]))
        best = max(best, len(frames) / (time.perf_counter() - t0))
        if attempt == 0:
            keep.extend(got)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", default=str(REPO / "tests" / "data" / "real"), help="clips to calibrate on")
    ap.add_argument("--input", default=str(REPO.parent / "shared" / "data" / "videos"), help="clips to measure on")
    ap.add_argument("--calib-frames", type=int, default=320)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()
    try:
        import nncf  # noqa: F401
    except ImportError:
        print("int8_pose: nncf is not installed (pip install 'motionpairs[int8]')", file=sys.stderr)
        raise SystemExit(2) from None
    from curation.stages.pose import default_weights

    calib = sampled_frames(args.calib)
    calib = calib[:: max(1, len(calib) // args.calib_frames)][: args.calib_frames]
    frames = sampled_frames(args.input)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        int8 = export_int8(default_weights(), calib, Path(tmp))
        export_s = time.perf_counter() - t0
        ref, low = [], []
        fp32 = measure(None, frames, ref)
        q = measure(int8, frames, low)
    figures = {
        "calib": args.calib,
        "input": args.input,
        "calib_frames": len(calib),
        "frames": len(frames),
        "export_seconds": round(export_s, 1),
        "pose_only_fps_fp32": round(fp32, 1),
        "pose_only_fps_int8": round(q, 1),
        "speedup": round(q / fp32, 2),
        "int8_vs_fp32": keypoint_deviation(ref, low),
    }
    print(json.dumps(figures, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
