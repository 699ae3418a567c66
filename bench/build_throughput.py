"""Build throughput: clips/s, sampled frames/s by stage, and peak memory, on a folder of videos.

    python bench/build_throughput.py [--input DIR] [--device cpu|cuda] [--repeat-decode N]

Prints figures; asserts nothing. Default input: ../shared/data/videos (the real test clips).
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
from curation.runner import run_build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-frames", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            None,
            output=out,
            sources=[{"root": args.input}],
            pose={"device": args.device},
            decode={"batch_frames": args.batch_frames},
        )
        t0 = time.perf_counter()
        stats = run_build(cfg)
        wall = time.perf_counter() - t0
    sec = stats["seconds"]
    frames = stats["frames_decoded"]
    import torch

    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    dev = torch.cuda.get_device_name(0) if on_gpu else f"cpu x{os.cpu_count()}"
    figures = {
        "device": dev,
        "clips": stats["clips_in"],
        "pairs": stats["pairs"],
        "sampled_frames": frames,
        "wall_s": round(wall, 1),
        "clips_per_s": round(stats["clips_in"] / wall, 3),
        "pose_frames_per_s": round(frames / sec["pose"], 1) if sec.get("pose") else None,
        "decode_frames_per_s": round(frames / sec["decode"], 1) if sec.get("decode") else None,
        "motion_s": sec.get("motion"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if on_gpu:
        figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
