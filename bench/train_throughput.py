"""Training throughput: the data loader on CPU, and real training steps of a Stable-Diffusion-sized editor.

    python bench/train_throughput.py loader [--shards OUT] [--samples 2000] [--workers 0 2]
    python bench/train_throughput.py train [--pretrained sd15-random] [--resolution 256] [--batch 8]
        [--steps 20] [--precision bf16] [--workers 4] [--variants full frozen_xattn contrastive pose]

`loader` streams shards through training.data + the paired transform + a torch DataLoader and prints
samples/s (with no --shards it writes synthetic 640x360 JPEG pairs in the real shard format first).
`train` runs training.train.Trainer (what `motionpairs train` runs: VAE and text encoder, the 8-channel
UNet, AdamW, the InstructPix2Pix objective, accelerate mixed precision) on such shards, with
`--pretrained sd15-random` (Stable Diffusion 1.5's layout, random weights, ~860M UNet parameters) by
default; per variant it prints steady-state samples/s and seconds per step (first steps excluded), peak
GPU memory on a GPU, then the loader's samples/s on the same shards with the same workers and the
headroom (loader / fastest training variant: above 1, the loader is not the bottleneck). Figures only."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

INSTRUCTIONS = ["raise your right arm", "lower both arms", "bend your left knee", "turn to the left"]


def synthetic_shards(folder: Path, n: int) -> Path:
    import cv2
    import webdataset as wds

    from schemas.records import Caption, Clip, FramePair, MotionFigures, Pose17, make_pair_id
    from schemas.shard import encode_sample

    rng = np.random.default_rng(0)
    base = (rng.random((360, 640, 3)) * 255).astype(np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 3)
    pose = Pose17(
        keypoints=[[float(100 + 10 * i), float(50 + 15 * i), 0.9] for i in range(17)],
        frame_width=640,
        frame_height=360,
        box=[50, 20, 400, 340],
        score=0.9,
    )
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / "bench-%04d.tar"), maxcount=500) as sink:
        for i in range(n):
            clip = Clip(source="folder", clip_id=f"clip{i // 2}", uri="synthetic")
            img = np.roll(base, i * 7, axis=1)
            jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            pair = FramePair(
                pair_id=make_pair_id(clip.clip_id, i, i + 10),
                clip=clip,
                strategy="max_motion",
                before_time_s=0.0,
                after_time_s=1.0,
                before_index=i,
                after_index=i + 10,
                frame_width=640,
                frame_height=360,
                caption=Caption(text=INSTRUCTIONS[i % len(INSTRUCTIONS)], captioner="offline"),
                before_pose=pose,
                after_pose=pose,
                motion=MotionFigures(
                    pose_change=0.5,
                    max_joint_change=1.0,
                    translation=0.0,
                    body_size_px=100,
                    camera_motion=0.0,
                    scene_similarity=1.0,
                    keypoints_compared=17,
                ),
            )
            sink.write(encode_sample(pair, jpg, jpg))
    return folder


class LegacyDecode:
    """The loader before this change, for the before/after figure: PIL decodes the full-size JPEG into
    a numpy array, OpenCV resizes it (what training.data and training.transforms did)."""

    def __call__(self, sample):
        import io

        from PIL import Image

        from schemas.shard import decode_sample

        s = decode_sample(sample)
        s.before, s.after = (np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in (s.before, s.after))
        return s


class LegacyTransform:
    def __init__(self, r: int):
        self.r = r

    def __call__(self, s) -> dict:
        import cv2

        r = self.r
        h, w = s.before.shape[:2]
        scale = r / min(h, w)
        nh, nw = max(r, round(h * scale)), max(r, round(w * scale))
        top, left = (nh - r) // 2, (nw - r) // 2

        def image(img):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)[top : top + r, left : left + r]
            return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1.0

        return {"before": image(s.before), "after": image(s.after), "text": s.pair.caption.text}


def bench_loader(args) -> dict:
    """Samples/s of the training loader now (torchvision JPEG decode, resize on tensors, one DataLoader
    with persistent workers across epochs) and before (PIL full-size decode, OpenCV resize, a new
    DataLoader each epoch), same shards, same workers, `--epochs` passes each."""
    import webdataset as wds

    from training.config import TrainConfig
    from training.data import SkipCounter, shard_urls
    from training.train import EpochStream

    with tempfile.TemporaryDirectory() as tmp:
        spec = args.shards or str(synthetic_shards(Path(tmp), args.samples))
        urls = shard_urls(spec)
        out = {"shards": len(urls), "resolution": args.resolution, "epochs": args.epochs}
        cfg = TrainConfig(shards=[spec], output=tmp, resolution=args.resolution, train_batch_size=32, flip_p=0.0)
        for workers in args.workers:
            t0, n = time.perf_counter(), 0
            for _epoch in range(args.epochs):
                ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).shuffle(256)
                ds = ds.map(LegacyDecode()).map(LegacyTransform(args.resolution))
                for batch in torch.utils.data.DataLoader(ds, batch_size=32, num_workers=workers):
                    n += batch["before"].shape[0]
            out[f"before_samples_per_s_workers_{workers}"] = round(n / (time.perf_counter() - t0), 1)
            stream = EpochStream(urls, cfg, 0, 0, SkipCounter(), held_out=False, decode_device="cpu")
            loader = torch.utils.data.DataLoader(
                stream, batch_size=32, num_workers=workers, persistent_workers=workers > 0
            )
            t0, n = time.perf_counter(), 0
            for _epoch in range(args.epochs):
                for batch in loader:
                    n += batch["before"].shape[0]
            out[f"samples_per_s_workers_{workers}"] = round(n / (time.perf_counter() - t0), 1)
            out["samples"] = n // args.epochs
    return out


def bench_train(args) -> dict:
    """Real training steps through training.train.Trainer (VAE + text encoder + UNet + AdamW, the
    InstructPix2Pix objective) on real-format shards; steady-state figures exclude the first steps."""
    import gc
    import resource

    from training.config import TrainConfig
    from training.train import Trainer

    class NoSave(Trainer):  # no checkpoint writes: an SD-sized one is ~10 GB of disk
        def save(self):
            return self.out

    cuda = torch.cuda.is_available()
    out: dict = {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)"}
    precision = args.precision if cuda else "no"  # CPU: fp32
    out.update(pretrained=args.pretrained, resolution=args.resolution, batch=args.batch, precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        spec = args.shards or str(synthetic_shards(Path(tmp) / "shards", args.samples))
        for variant in args.variants:
            cfg = TrainConfig(
                shards=[spec],
                output=str(Path(tmp) / f"run-{variant}"),
                pretrained=args.pretrained,
                resolution=args.resolution,
                train_batch_size=args.batch,
                max_train_steps=args.warmup + args.steps,
                mixed_precision=precision,
                allow_tf32=cuda,
                gradient_checkpointing=args.gradient_checkpointing,
                freeze_cross_attention=variant == "frozen_xattn",
                contrastive_weight=0.1 if variant == "contrastive" else 0.0,
                pose_conditioning=variant == "pose",
                num_workers=args.workers,
                checkpointing_steps=10**9,
            )
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            trainer = NoSave(cfg)
            trained = sum(p.numel() for p in trainer.params)
            summary = trainer.train()
            rows = [json.loads(x) for x in (Path(cfg.output) / "metrics.jsonl").read_text().splitlines()]
            steady = rows[args.warmup - 1 :] if args.warmup else [{"elapsed_s": 0.0}, *rows]
            seconds = steady[-1]["elapsed_s"] - steady[0]["elapsed_s"]
            fig = {
                "params_trained_m": round(trained / 1e6, 1),
                "samples_per_s": round(args.batch * (len(steady) - 1) / seconds, 2),
                "step_s": round(seconds / (len(steady) - 1), 3),
                "final_loss": round(summary["loss"], 4),
            }
            if cuda:
                fig["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            out[variant] = fig
            del trainer
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        # the loader alone, on the same shards with the same workers: it must outpace training
        args.shards, args.workers, args.epochs = spec, [args.workers], 1
        loader = bench_loader(args)
        out["loader_samples_per_s"] = loader[f"samples_per_s_workers_{args.workers[0]}"]
        fastest = max(out[v]["samples_per_s"] for v in args.variants)
        out["loader_headroom"] = round(out["loader_samples_per_s"] / fastest, 2)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="part", required=True)
    lo = sub.add_parser("loader")
    lo.add_argument("--shards")
    lo.add_argument("--samples", type=int, default=2000)
    lo.add_argument("--resolution", type=int, default=256)
    lo.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    lo.add_argument("--epochs", type=int, default=2, help="passes over the shards (persistent workers matter)")
    tr = sub.add_parser("train")
    tr.add_argument("--pretrained", default="sd15-random", help="sd15-random (SD-1.5 size), tiny, or a pipeline")
    tr.add_argument("--shards", help="shards to train on (default: synthetic 640x360 pairs)")
    tr.add_argument("--samples", type=int, default=512, help="synthetic pairs to write")
    tr.add_argument("--resolution", type=int, default=256)
    tr.add_argument("--batch", type=int, default=8)
    tr.add_argument("--steps", type=int, default=20, help="timed steps")
    tr.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    tr.add_argument("--precision", choices=("no", "fp16", "bf16"), default="bf16", help="on a GPU")
    tr.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    tr.add_argument("--gradient-checkpointing", action="store_true")
    tr.add_argument(
        "--variants",
        nargs="+",
        default=["full", "frozen_xattn"],
        choices=("full", "frozen_xattn", "contrastive", "pose"),
        help="full UNet; EditAction's frozen cross-attention / contrastive loss; pose branch",
    )
    args = ap.parse_args()
    print(json.dumps(bench_loader(args) if args.part == "loader" else bench_train(args), indent=2))


if __name__ == "__main__":
    main()
