"""Build throughput in one run on the same clips: decode only, pose only per installed engine, end to end.

    python bench/build_throughput.py [--input DIR] [--device cpu|cuda] [--json]
    make bench

Prints one JSON object (asserts nothing): decode_only_fps (sampled frames decoded per second, one
process), pose_only_fps_<engine> for every installed engine and pose_only_fps (the best) and
pose_only_fps_torch, end_to_end_fps and clips_per_s (a whole local build with the default engine, model
already loaded), engine, ceiling_fps (CPU: 1 / (1/decode + 1/pose), both stages share the cores; GPU:
decode_only_fps) and ratio = end_to_end_fps / ceiling_fps, peak_rss_mb, and on a GPU peak_gpu_mb.
Default input: ../shared/data/videos (the real test clips).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.config import load_config  # noqa: E402
from curation.ingest import list_source  # noqa: E402
from curation.runner import get_processor, run_build  # noqa: E402
from curation.stages.decode import DecodeFailure, VideoSource  # noqa: E402
from curation.stages.pose import ENGINES, PoseDetector, engine_installed, resolve_device, resolve_engine  # noqa: E402


def decode_all(cfg, clips) -> tuple[list, float]:
    """Every sampled frame of every clip, decoded as the build does; (frames, seconds)."""
    frames = []
    t0 = time.perf_counter()
    for clip in clips:
        try:
            with VideoSource(clip, cfg.decode) as v:
                for b in v.batches(v.plan()):
                    frames.extend(b.frames)
        except DecodeFailure:
            continue
    return frames, time.perf_counter() - t0


def pose_fps(cfg, engine: str, frames: list) -> float:
    det = PoseDetector(cfg.pose.model_copy(update={"engine": engine})).setup()
    step = cfg.decode.batch_frames
    det(frames[:step])  # warm-up: compile, allocate
    t0 = time.perf_counter()
    for i in range(0, len(frames), step):
        det(frames[i : i + step])
    return len(frames) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-frames", type=int, default=16)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            None,
            output=out,
            sources=[{"root": args.input}],
            pose={"device": args.device},
            decode={"batch_frames": args.batch_frames},
        )
        clips = [c for src in cfg.sources for c in list_source(src).clips]
        frames, decode_s = decode_all(cfg, clips)
        device = resolve_device(cfg.pose.device)
        engines = [e for e in ENGINES if engine_installed(e) and (e != "tensorrt" or device.startswith("cuda"))]
        pose = {e: pose_fps(cfg, e, frames) for e in engines}
        engine = resolve_engine(cfg.pose.engine, device)
        get_processor(cfg)  # the model loads before the clock starts, as in a long build
        t0 = time.perf_counter()
        stats = run_build(cfg)
        wall = time.perf_counter() - t0
    import torch

    on_gpu = device.startswith("cuda")
    decode_fps = len(frames) / decode_s
    best = max(pose.values())
    ceiling = decode_fps if on_gpu else 1.0 / (1.0 / decode_fps + 1.0 / best)
    e2e = stats["frames_decoded"] / wall
    figures = {
        "device": torch.cuda.get_device_name(0) if on_gpu else f"cpu x{os.cpu_count()}",
        "clips": stats["clips_in"],
        "pairs": stats["pairs"],
        "sampled_frames": len(frames),
        "decode_only_fps": round(decode_fps, 1),
        **{f"pose_only_fps_{e}": round(v, 1) for e, v in pose.items()},
        "pose_only_fps": round(best, 1),
        "pose_only_fps_torch": round(pose["torch"], 1),
        "engine": engine,
        "end_to_end_fps": round(e2e, 1),
        "clips_per_s": round(stats["clips_in"] / wall, 3),
        "end_to_end_s": round(wall, 1),
        "ceiling_fps": round(ceiling, 1),
        "ratio": round(e2e / ceiling, 3),
        "end_to_end_over_torch_pose": round(e2e / pose["torch"], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if on_gpu:
        figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(figures, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
