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
from .model import add_pose_branch, build_tiny, load_pretrained


def load_editor(checkpoint: Path):
    """The pipeline of a run's checkpoint (the run's train_config.json tells how it was built)."""
    run = checkpoint.parent
    cfg = TrainConfig.model_validate_json((run / "train_config.json").read_text())
    parts = build_tiny(cfg.seed, cfg.resolution) if cfg.pretrained == "tiny" else load_pretrained(cfg.pretrained)
    if cfg.pose_conditioning:
        add_pose_branch(parts)
    weights = sorted(checkpoint.glob("model*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no model weights in {checkpoint}")
    parts.unet.load_state_dict(load_file(str(weights[0])))
    pipe = parts.pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, cfg


def main(args: argparse.Namespace) -> int:
    pipe, cfg = load_editor(Path(args.checkpoint))
    image = Image.open(args.image).convert("RGB").resize((cfg.resolution, cfg.resolution))
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
    print(json.dumps({"output": args.output, "instruction": args.instruction}))
    return 0
