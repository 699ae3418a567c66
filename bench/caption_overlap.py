"""Does LLM captioning hold up the pose work? The same clips built twice: with the offline captioner,
and with `--captioner openai` against a loopback OpenAI-compatible server that takes `--slow-s` seconds
per answer (the project's test server, tests/fake_openai.py). Prints one JSON object: pose seconds and
wall seconds of both builds, and how many captions the slow server gave.

    python bench/caption_overlap.py [--input DIR] [--slow-s 2] [--max-frames 48]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-"))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the loopback OpenAI-compatible server

from curation.build import build  # noqa: E402
from curation.config import load_config  # noqa: E402

CLIPS = [
    "mmskeleton__resource_data_example_ta_chi.mp4",
    "mmskeleton__resource_media_Kop0sDqOn-c.mp4",
    "mmhuman3d__demo_resources_single_person_demo.mp4",
]


def build_folder(folder: Path, out: Path, max_frames: int, caption: dict) -> tuple[dict, float]:
    cfg = load_config(
        None, output=str(out), sources=[{"root": str(folder)}], decode={"max_frames": max_frames}, caption=caption
    )
    t0 = time.perf_counter()
    stats = build(cfg)
    return stats, time.perf_counter() - t0


def main() -> None:
    from fake_openai import FakeOpenAI

    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=str(ROOT.parent / "shared" / "data" / "videos"))
    ap.add_argument("--slow-s", type=float, default=2.0)
    ap.add_argument("--max-frames", type=int, default=48)
    args = ap.parse_args()
    key = "sk-bench-0000"
    server = FakeOpenAI(api_key=key, slow_s=args.slow_s).start()
    server.default = "slow"
    os.environ["OPENAI_API_KEY"] = key
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "in"
            folder.mkdir()
            for name in CLIPS:
                (folder / name).symlink_to(Path(args.input) / name)
            build_folder(folder, Path(tmp) / "warm-up", args.max_frames, {"captioner": "offline"})  # model load, caches
            offline, wall_off = build_folder(folder, Path(tmp) / "offline", args.max_frames, {"captioner": "offline"})
            llm = {"captioner": "openai", "model": "bench-vlm", "base_url": server.base_url, "max_concurrency": 4}
            online, wall_on = build_folder(folder, Path(tmp) / "openai", args.max_frames, llm)
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "clips": len(CLIPS),
                "pairs": online["pairs"],
                "slow_s_per_answer": args.slow_s,
                "pose_s_offline": offline["seconds"].get("pose"),
                "pose_s_openai": online["seconds"].get("pose"),
                "unit_wall_s_offline": offline["seconds"].get("wall"),
                "unit_wall_s_openai": online["seconds"].get("wall"),
                "build_wall_s_offline": round(wall_off, 2),
                "build_wall_s_openai": round(wall_on, 2),
                "llm_answers": len(server.requests),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
