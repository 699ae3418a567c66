"""Training throughput: the data loader on CPU, and a Stable-Diffusion-sized InstructPix2Pix UNet.

    python bench/train_throughput.py loader [--shards OUT] [--samples 2000] [--workers 0 2]
    python bench/train_throughput.py unet [--resolution 256] [--batch 8] [--steps 20] [--precision bf16]

`loader` streams shards through training.data + the paired transform + a torch DataLoader and prints
samples/s (with no --shards it writes synthetic 640x360 JPEG pairs in the real shard format first).
`unet` builds the SD-1.5 UNet layout (320/640/1280/1280 channels, 768-d cross-attention, 8 input
channels) with random weights and times forward+backward+AdamW steps at the given resolution; on a GPU
it reports samples/s and peak memory, with and without frozen cross-attention. Prints figures only.
"""

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


def synthetic_shards(folder: Path, n: int) -> Path:
    import cv2
    import webdataset as wds

    from schemas.records import Clip, FramePair, MotionFigures, Pose17, make_pair_id
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


def bench_loader(args) -> dict:
    from training.data import open_shards, shard_urls
    from training.transforms import PairTransform

    with tempfile.TemporaryDirectory() as tmp:
        spec = args.shards or str(synthetic_shards(Path(tmp), args.samples))
        urls = shard_urls(spec)
        out = {"shards": len(urls), "resolution": args.resolution}
        for workers in args.workers:
            ds = open_shards(urls, shuffle=256).map(PairTransform(args.resolution))
            loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=workers)
            t0, n = time.perf_counter(), 0
            for batch in loader:
                n += batch["before"].shape[0]
            out[f"samples_per_s_workers_{workers}"] = round(n / (time.perf_counter() - t0), 1)
            out["samples"] = n
    return out


def sd_unet(freeze_cross_attention: bool):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    if freeze_cross_attention:
        from training.model import freeze_cross_attention as freeze

        freeze(unet)
    return unet


def bench_unet(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}[args.precision]
    out = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "resolution": args.resolution}
    out["batch"] = args.batch
    latent = args.resolution // 8
    for frozen in (False, True):
        unet = sd_unet(frozen).to(device)
        unet.enable_gradient_checkpointing() if args.gradient_checkpointing else None
        params = [p for p in unet.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        x = torch.randn(args.batch, 8, latent, latent, device=device)
        text = torch.randn(args.batch, 77, 768, device=device)
        noise = torch.randn(args.batch, 4, latent, latent, device=device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(args.steps + 2):
            t0 = time.perf_counter()
            with torch.autocast(device, dtype=dtype, enabled=args.precision != "no"):
                pred = unet(x, torch.randint(0, 1000, (args.batch,), device=device), encoder_hidden_states=text).sample
                loss = torch.nn.functional.mse_loss(pred.float(), noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= 2:  # warm-up excluded
                times.append(time.perf_counter() - t0)
        key = "frozen_xattn" if frozen else "full"
        out[f"{key}_params_trained_m"] = round(sum(p.numel() for p in params) / 1e6, 1)
        out[f"{key}_samples_per_s"] = round(args.batch / float(np.median(times)), 2)
        if device == "cuda":
            out[f"{key}_peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        del unet, opt
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="part", required=True)
    lo = sub.add_parser("loader")
    lo.add_argument("--shards")
    lo.add_argument("--samples", type=int, default=2000)
    lo.add_argument("--resolution", type=int, default=256)
    lo.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    un = sub.add_parser("unet")
    un.add_argument("--resolution", type=int, default=256)
    un.add_argument("--batch", type=int, default=8)
    un.add_argument("--steps", type=int, default=20)
    un.add_argument("--precision", choices=("no", "fp16", "bf16"), default="bf16")
    un.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()
    print(json.dumps(bench_loader(args) if args.part == "loader" else bench_unet(args), indent=2))


if __name__ == "__main__":
    main()
