"""Build throughput in one run on the same clips: decode only, pose only per installed engine, end to end.

    python bench/build_throughput.py [--input DIR] [--device cpu|cuda] [--json] [--rss-check]
    make bench

Prints one JSON object (asserts nothing): decode_only_fps (sampled frames decoded per second, one
process), pose_only_fps_<engine> for every installed engine and pose_only_fps (the best) and
pose_only_fps_torch, end_to_end_fps and clips_per_s (a whole local build with the default engine, model
already loaded), engine, ceiling_fps (CPU: 1 / (1/decode + 1/pose), both stages share the cores; GPU:
decode_only_fps) and ratio = end_to_end_fps / ceiling_fps, pose_only_fps_device (the best engine through
the device path: letterbox, normalisation and NMS as tensor ops, the GPU path), peak_rss_mb (this process,
with the model) and peak_rss_workers_mb (the decode workers together, sampled every 0.1 s), and on a GPU
peak_gpu_mb and gpu_util_pct (sampled while the build runs), video_hours_per_gpu_hour and
pairs_per_gpu_hour (the build's wall time on its one GPU), pose_only_fps_device_fp32/_fp16 and fp16_vs_fp32
(fp16 keypoints against fp32's on the same frames). video_hours_per_core_hour and pairs_per_core_hour: the
same build's video seconds and pairs over wall x cores (model loaded: no start-up in it). An engine that
cannot export or load is reported as pose_failed_<engine>, not fatal. --rss-check adds rss_10s_mb, rss_10min_mb and
rss_growth: the peak RSS of a build of one 10 s clip and of one 10 min clip (a real clip of the input looped
back and forth, at most 640 px; each build in a fresh process), which the frame cap per clip and the
bounded decode window keep flat.
--coarse-compare instead builds the input with the coarse pass off (decode.coarse_frames 0) and on (the
default), alternately --repeat times each in this one process (model loaded first), and prints for each
video_hours_per_core_hour (video seconds in MANIFEST.csv, else the header's / (wall x cores)),
video_hours_per_cpu_hour (CPU time of this process and its decode workers), frames_decoded and the
decisions (reason per clip, pair ids), and whether the two agree.
Default input: ../shared/data/videos (the real test clips).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.build import build, get_processor  # noqa: E402
from curation.config import load_config  # noqa: E402
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


def pose_fps(cfg, engine: str, frames: list, path: str = "auto", half: bool = False, keep: list | None = None) -> float:
    """Frames per second of one engine and path (model loaded and warmed up first); `keep`, when given,
    receives every frame's poses."""
    det = PoseDetector(cfg.pose.model_copy(update={"engine": engine, "path": path, "half": half})).setup()
    step = det.batch_size
    det(frames[:step])  # warm-up: compile, allocate
    t0 = time.perf_counter()
    for i in range(0, len(frames), step):
        got = det(frames[i : i + step])
        if keep is not None:
            keep.extend(got)
    return len(frames) / (time.perf_counter() - t0)


def keypoint_deviation(ref: list, other: list) -> dict:
    """How far `other`'s poses are from `ref`'s (fp32), frame by frame: the share of frames with the same
    number of people, and over the best-scored person of frames where both see one, the largest and the
    95th-percentile distance of confident keypoints (both > 0.5) as a fraction of that person's box height."""
    import numpy as np

    same = 0
    devs: list[float] = []
    for a, b in zip(ref, other, strict=True):
        same += len(a) == len(b)
        if not a or not b:
            continue
        ka, kb = np.asarray(a[0].keypoints, float), np.asarray(b[0].keypoints, float)
        height = max(a[0].box[3] - a[0].box[1], 1.0)
        ok = (ka[:, 2] > 0.5) & (kb[:, 2] > 0.5)
        devs.extend((np.linalg.norm(ka[ok, :2] - kb[ok, :2], axis=1) / height).tolist())
    return {
        "same_people_count_share": round(same / max(len(ref), 1), 4),
        "keypoint_dev_max": round(max(devs), 4) if devs else None,
        "keypoint_dev_p95": round(float(np.percentile(devs, 95)), 4) if devs else None,
    }


def looped_clip(src: Path, seconds: float, dest: Path) -> Path:
    """A real clip's frames repeated to `seconds` of video at its own frame rate."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    h, w = frames[0].shape[:2]
    scale = min(1.0, 640 / max(h, w))  # the build decodes at most 640 px anyway
    w, h = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
    frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(int(seconds * fps)):
        k = i % (2 * len(frames) - 2)  # back and forth: no jump at the loop point
        writer.write(frames[k if k < len(frames) else 2 * len(frames) - 2 - k])
    writer.release()
    return dest


class RssSampler(threading.Thread):
    """Peak resident memory of this process and of its workers (all descendants together), sampled every
    0.1 s. (getrusage's maxrss carries a parent's figure across fork and exec: no use for workers.)"""

    def __init__(self):
        super().__init__(daemon=True)
        self.main_mb = 0.0
        self.workers_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.wait(0.1):
            try:
                self.main_mb = max(self.main_mb, me.memory_info().rss / 2**20)
                kids = 0
                for p in me.children(recursive=True):
                    try:
                        kids += p.memory_info().rss
                    except psutil.Error:
                        continue
                self.workers_mb = max(self.workers_mb, kids / 2**20)
            except psutil.Error:
                continue

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()

    def __enter__(self) -> RssSampler:
        self.start()
        return self


def rss_probe(folder: str) -> None:
    """A build of `folder` in this fresh process; prints the peak RSS (MB) of this process and its workers."""
    with tempfile.TemporaryDirectory() as out, RssSampler() as rss:
        build(load_config(None, output=out, sources=[{"root": folder}]))
    print(json.dumps({"peak_rss_mb": round(rss.main_mb), "peak_rss_workers_mb": round(rss.workers_mb)}))


def rss_check(input_dir: str) -> dict:
    preferred = Path(input_dir) / "mmskeleton__resource_data_example_ta_chi.mp4"  # a person in motion
    src = preferred if preferred.is_file() else sorted(Path(input_dir).glob("*.mp4"))[0]
    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, seconds in (("10s", 10), ("10min", 600)):
            folder = Path(tmp) / name
            folder.mkdir()
            looped_clip(src, seconds, folder / "clip.mp4")
            run = subprocess.run([sys.executable, __file__, "--rss-probe", str(folder)], capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(f"rss probe failed: {run.stderr.strip().splitlines()[-1:]}")
            got[name] = json.loads(run.stdout.strip().splitlines()[-1])
    return {
        "rss_10s_mb": got["10s"]["peak_rss_mb"],
        "rss_10min_mb": got["10min"]["peak_rss_mb"],
        "rss_growth": round(got["10min"]["peak_rss_mb"] / got["10s"]["peak_rss_mb"] - 1, 3),
        "rss_workers_10s_mb": got["10s"]["peak_rss_workers_mb"],
        "rss_workers_10min_mb": got["10min"]["peak_rss_workers_mb"],
    }


class GpuSampler(threading.Thread):
    """GPU utilisation, sampled every 0.2 s through NVML while the build runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - no NVML: no figure
            return
        while not self.stop.wait(0.2):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)


def video_seconds(folder: str, clips) -> float:
    """The input's duration: MANIFEST.csv's duration_s where it has one, else each file's frames / fps."""
    import csv

    known: dict[str, float] = {}
    manifest = Path(folder) / "MANIFEST.csv"
    if manifest.is_file():
        with open(manifest, newline="") as f:
            known = {r["file"]: float(r["duration_s"] or 0) for r in csv.DictReader(f)}
    total = 0.0
    for uri in {c.uri for c in clips}:
        name = Path(uri).name
        if name in known:
            total += known[name]
            continue
        import cv2

        cap = cv2.VideoCapture(uri)
        fps = cap.get(cv2.CAP_PROP_FPS) or 0
        total += cap.get(cv2.CAP_PROP_FRAME_COUNT) / fps if fps > 0 else 0.0
        cap.release()
    return total


def cpu_seconds() -> float:
    """CPU time of this process and its children, live (decode workers) and reaped."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for p in me.children(recursive=True):
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            continue
    return total


def bench_config(args, out: str, **decode):
    """The build settings of a benchmark run: --input into `out`, on --device, --batch-frames a batch
    (and the `decode` settings given)."""
    return load_config(
        None,
        output=out,
        sources=[{"root": args.input}],
        pose={"device": args.device},
        decode={"batch_frames": args.batch_frames, **decode},
    )


def coarse_compare(args) -> dict:
    """The same input built with the coarse pass off and on, alternately, in one process."""
    import pandas as pd

    from curation.config import DecodeConfig

    on = DecodeConfig().coarse_frames or 8
    runs: dict[int, list[dict]] = {0: [], on: []}
    decisions: dict[int, tuple] = {}
    cores = os.cpu_count() or 1
    video_s = None
    for _ in range(args.repeat):
        for k in (0, on):
            with tempfile.TemporaryDirectory() as out:
                cfg = bench_config(args, out, coarse_frames=k)
                if video_s is None:
                    video_s = video_seconds(args.input, [c for src in cfg.sources for c in src.listing().clips])
                get_processor(cfg)  # loaded before the clock starts
                c0, t0 = cpu_seconds(), time.perf_counter()
                stats = build(cfg)
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                rejects = pd.read_parquet(Path(out) / "rejects.parquet")
                samples = pd.read_parquet(Path(out) / "samples.parquet")
                decisions[k] = (
                    dict(zip(rejects.clip_id, rejects.reason, strict=True)),
                    sorted(samples.pair_id),
                )
                runs[k].append(
                    {
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                        "frames_decoded": stats["frames_decoded"],
                        "video_hours_per_core_hour": round(video_s / (wall * cores), 3),
                        "video_hours_per_cpu_hour": round(video_s / cpu, 3),
                    }
                )
    best = {k: max(r["video_hours_per_core_hour"] for r in v) for k, v in runs.items()}
    best_cpu = {k: max(r["video_hours_per_cpu_hour"] for r in v) for k, v in runs.items()}
    changed = {
        c: (decisions[0][0].get(c), decisions[on][0].get(c))
        for c in set(decisions[0][0]) | set(decisions[on][0])
        if decisions[0][0].get(c) != decisions[on][0].get(c)
    }
    return {
        "input": args.input,
        "cores": cores,
        "video_seconds": round(video_s, 1),
        "coarse_frames": on,
        "off": runs[0],
        "on": runs[on],
        "speedup_core_hour": round(best[on] / best[0], 2),
        "speedup_cpu_hour": round(best_cpu[on] / best_cpu[0], 2),
        "pairs_equal": decisions[0][1] == decisions[on][1],
        "pairs": len(decisions[on][1]),
        "changed_rejects": changed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-frames", type=int, default=16)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--rss-check", action="store_true", help="also compare peak RSS on a 10 s and a 10 min clip")
    ap.add_argument("--rss-probe", help=argparse.SUPPRESS)
    ap.add_argument("--coarse-compare", action="store_true", help="only: builds with the coarse pass off and on")
    ap.add_argument("--repeat", type=int, default=2, help="builds of each kind for --coarse-compare")
    args = ap.parse_args()
    if args.rss_probe:
        return rss_probe(args.rss_probe)
    if args.coarse_compare:
        print(json.dumps(coarse_compare(args), indent=None if args.json else 2))
        return None
    with tempfile.TemporaryDirectory() as out:
        # every sampled frame through every stage, as the ceiling counts them: frames per second against
        # decode + pose alone (the coarse pass, on by default, detects fewer: --coarse-compare measures it)
        cfg = bench_config(args, out, coarse_frames=0)
        clips = [c for src in cfg.sources for c in src.listing().clips]
        frames, decode_s = decode_all(cfg, clips)
        device = resolve_device(cfg.pose.device)
        engines = [e for e in ENGINES if engine_installed(e) and (e != "tensorrt" or device.startswith("cuda"))]
        pose, failed = {}, {}
        for e in engines:  # an engine that cannot export or load here is reported, not fatal
            try:
                pose[e] = pose_fps(cfg, e, frames)
            except Exception as err:  # noqa: BLE001 - the figure says why it is missing
                failed[e] = f"{type(err).__name__}: {err}"[:300]
        best_engine = max(pose, key=pose.get)
        pose_device = pose_fps(cfg, best_engine, frames, path="device")
        on_gpu = device.startswith("cuda")
        half_figures = {}
        if on_gpu:  # fp16 against fp32, through the device path the build uses on a GPU
            ref, low = [], []
            fp32 = pose_fps(cfg, "torch", frames, path="device", keep=ref)
            fp16 = pose_fps(cfg, "torch", frames, path="device", half=True, keep=low)
            half_figures = {
                "pose_only_fps_device_fp32": round(fp32, 1),
                "pose_only_fps_device_fp16": round(fp16, 1),
                "fp16_vs_fp32": keypoint_deviation(ref, low),
            }
        engine = resolve_engine(cfg.pose.engine, device)
        get_processor(cfg)  # the model loads before the clock starts, as in a long build
        sampler = GpuSampler()
        if on_gpu:
            sampler.start()
        t0 = time.perf_counter()
        with RssSampler() as rss:
            stats = build(cfg)
        wall = time.perf_counter() - t0
        sampler.stop.set()
        video_s = video_seconds(args.input, clips)
    import torch

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
        "pose_only_fps_torch": round(pose["torch"], 1) if "torch" in pose else None,
        "pose_only_fps_device": round(pose_device, 1),
        "engine": engine,
        "path": get_processor(cfg).detector.path,
        "pose_batch": get_processor(cfg).detector.batch_size,
        "decode_workers": get_processor(cfg)._decoder.workers if get_processor(cfg)._decoder else 0,
        "end_to_end_fps": round(e2e, 1),
        "clips_per_s": round(stats["clips_in"] / wall, 3),
        "end_to_end_s": round(wall, 1),
        "ceiling_fps": round(ceiling, 1),
        "ratio": round(e2e / ceiling, 3),
        "end_to_end_over_torch_pose": round(e2e / pose["torch"], 3) if "torch" in pose else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_workers_mb": round(rss.workers_mb),
        "video_seconds": round(video_s, 1),
        # the build's own wall time with the model loaded (a long build's steady state, no start-up)
        "video_hours_per_core_hour": round(video_s / (wall * (os.cpu_count() or 1)), 3),
        "pairs_per_core_hour": round(stats["pairs"] / (wall * (os.cpu_count() or 1) / 3600), 1),
        **({f"pose_failed_{e}": why for e, why in failed.items()}),
        **half_figures,
    }
    if on_gpu:
        figures["video_hours_per_gpu_hour"] = round(video_s / wall, 3)
        figures["pairs_per_gpu_hour"] = round(stats["pairs"] / (wall / 3600), 1)
        figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        if sampler.samples:
            figures["gpu_util_pct"] = round(sum(sampler.samples) / len(sampler.samples), 1)
    if args.rss_check:
        figures.update(rss_check(args.input))
    print(json.dumps(figures, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
