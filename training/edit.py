"""Run a trained checkpoint on an image and an instruction: `motionpairs edit`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from .config import TrainConfig
from .model import PoseConditionedConvIn, add_pose_branch, build_editor, render_pose
from .transforms import center_crop_geometry


def edit_input(image: Image.Image, resolution: int) -> Image.Image:
    """The image as training saw its frames: short side resized to the resolution, centre crop."""
    rgb = np.asarray(image.convert("RGB"))
    return Image.fromarray(center_crop_geometry(rgb.shape[0], rgb.shape[1], resolution).image(rgb))


def device() -> str:
    """The accelerator's device: the GPU when there is one."""
    from accelerate import PartialState

    return str(PartialState().device)


def load_editor(checkpoint: Path):
    """The pipeline of a run's checkpoint (the run's train_config.json tells how it was built)."""
    run = checkpoint.parent
    cfg = TrainConfig.model_validate_json((run / "train_config.json").read_text())
    parts = build_editor(cfg.pretrained, cfg.seed, cfg.resolution)
    if cfg.pose_conditioning:
        add_pose_branch(parts)
    weights = sorted(checkpoint.glob("model*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no model weights in {checkpoint}")
    parts.unet.load_state_dict(load_file(str(weights[0])))
    pipe = parts.pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, cfg


def target_pose(path: Path, image_size: tuple[int, int], resolution: int | None = None) -> torch.Tensor:
    """A target pose file -> (1, 17, 3) keypoints in [0, 1] coordinates of the edit's input crop. The
    file holds {"keypoints": [[x, y, conf] * 17]} in pixels (null for a missing point); a pose as the
    manifest stores it (with frame_width/frame_height) is read in its own frame's pixels, otherwise in
    the input image's. Without `resolution`, in [0, 1] of the whole image."""
    doc = json.loads(path.read_text())
    kp = np.array([[np.nan if v is None else v for v in row] for row in doc["keypoints"]], dtype=np.float32)
    if kp.shape != (17, 3):
        raise ValueError(f"{path}: expected 17 keypoints of [x, y, conf], got shape {kp.shape}")
    w, h = doc.get("frame_width") or image_size[0], doc.get("frame_height") or image_size[1]
    kp[:, 0] *= image_size[0] / w  # into the input image's pixels
    kp[:, 1] *= image_size[1] / h
    if resolution is None:
        kp[:, 0] /= image_size[0]
        kp[:, 1] /= image_size[1]
    else:
        g = center_crop_geometry(image_size[1], image_size[0], resolution)
        kp = g.keypoints(kp, mask=False).astype(np.float32)  # as training feeds the pose branch
        kp[:, :2] /= resolution
    return torch.from_numpy(kp)[None]


def main(args: argparse.Namespace) -> int:
    pipe, cfg = load_editor(Path(args.checkpoint))
    dev = device()
    pipe.to(dev)
    source = Image.open(args.image).convert("RGB")
    image = edit_input(source, cfg.resolution)
    branch = pipe.unet.conv_in if isinstance(pipe.unet.conv_in, PoseConditionedConvIn) else None
    if args.pose and branch is None:
        raise SystemExit(f"--pose: {args.checkpoint} was trained without --pose-conditioning")
    if branch is not None and args.pose:
        pose = target_pose(Path(args.pose), source.size, cfg.resolution)
        maps = render_pose(pose, cfg.resolution // pipe.vae_scale_factor)
        branch.pose_maps = torch.cat([maps] * 3).to(dev)  # the classifier-free guidance batch: text, image, none
    out = pipe(
        args.instruction,
        image=image,
        num_inference_steps=args.steps,
        image_guidance_scale=args.image_guidance,
        guidance_scale=args.text_guidance,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="np",
    ).images[0]
    Image.fromarray((out * 255).astype(np.uint8)).save(args.output)
    print(json.dumps({"output": args.output, "instruction": args.instruction, "pose": args.pose}))
    return 0
