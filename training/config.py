"""Training configuration: every flag of `motionpairs train` (light to import: the CLI builds its
help from these descriptions without loading torch or diffusers)."""

from __future__ import annotations

import argparse
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Every flag of `motionpairs train` (the CLI help is generated from these descriptions)."""

    model_config = ConfigDict(extra="forbid")

    shards: list[str] = Field(..., description="output folder(s), globs, brace patterns or tar paths")
    output: str = Field(..., description="run folder: metrics.jsonl, checkpoint-*/, validation/")
    pretrained: str = Field(
        "tiny",
        description="'tiny' or 'sd15-random' (random weights built in code, no download; sd15-random has Stable "
        "Diffusion 1.5's size) or an InstructPix2Pix pipeline folder/hub id",
    )
    resolution: int = Field(64, ge=16, description="training image size (square)")
    train_batch_size: int = Field(4, ge=1, description="pairs per step per device")
    gradient_accumulation_steps: int = Field(1, ge=1, description="batches summed into one optimizer step")
    max_train_steps: int = Field(100, ge=1, description="optimizer steps to train for (a resumed run counts on)")
    num_train_epochs: float | None = Field(
        None,
        gt=0,
        description="train for this many passes over the shards instead (steps from the dataset size in "
        "sizes.json: epochs x samples / (batch x accumulation x processes), rounded up)",
    )
    learning_rate: float = Field(1e-4, gt=0, description="AdamW peak learning rate")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "constant", description="learning-rate schedule over max_train_steps (diffusers.optimization)"
    )
    lr_warmup_steps: int = Field(0, ge=0, description="linear warm-up steps of the schedule")
    adam_weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    conditioning_dropout_prob: float = Field(0.05, ge=0, le=0.33, description="text, image, both: p each")
    freeze_cross_attention: bool = Field(False, description="EditAction: text cross-attention stops learning")
    contrastive_weight: float = Field(0.0, ge=0, description="EditAction's contrastive action loss weight")
    regularizer_weight: float = Field(0.0, ge=0, description="L2 pull of the UNet towards its starting weights")
    pose_conditioning: bool = Field(False, description="add the target pose branch (rendered skeleton)")
    shuffle_buffer: int = Field(256, ge=0, description="webdataset sample shuffle buffer (0: shard order)")
    caption_version: str | None = Field(
        None,
        description="caption to train on: 'offline' or MODEL@PROMPT_VERSION (`motionpairs inspect` lists them); "
        "a pair without it uses its published caption (default: the published caption)",
    )
    flip_p: float = Field(0.5, ge=0, le=1, description="horizontal flip probability (swaps left/right too)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (shards are split between them)")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="accelerate mixed precision")
    gradient_checkpointing: bool = Field(
        False, description="recompute UNet activations: less memory, about a third slower"
    )
    allow_tf32: bool = Field(False, description="TF32 matmuls on Ampere+ GPUs (faster fp32)")
    seed: int = Field(0, description="seeds model init, data order, noise and flips")
    logging_steps: int = Field(1, ge=1, description="write a metrics.jsonl line every N steps")
    eval_steps: int = Field(
        0,
        ge=0,
        description="every N steps score edits of a fixed held-out subset (split val/test, not trained on) "
        "with motionpairs evaluate's metrics into metrics.jsonl (0: never)",
    )
    eval_samples: int = Field(8, ge=1, description="held-out pairs scored at each --eval-steps")
    eval_inference_steps: int = Field(10, ge=1, description="inference steps per edit when evaluating")
    checkpointing_steps: int = Field(50, ge=1, description="save RUN/checkpoint-N every N steps (and at the end)")
    checkpoints_total_limit: int | None = Field(None, ge=1, description="keep only the newest N checkpoints")
    resume_from_checkpoint: str | None = Field(None, description="a checkpoint folder, or 'latest'")
    validation_steps: int = Field(0, ge=0, description="write an edit grid every N steps (0: never)")
    validation_samples: int = Field(4, ge=1, description="pairs edited per validation grid")
    validation_inference_steps: int = Field(10, ge=1, description="denoising steps of validation edits")


def add_arguments(p: argparse.ArgumentParser) -> None:
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.default
        helptext = field.description or ""
        if name == "shards":
            p.add_argument(flag, nargs="+", required=True, help=helptext)
        elif field.annotation is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helptext)
        elif name == "output":
            p.add_argument(flag, required=True, help=helptext)
        else:
            kind = type(default) if default is not None and not isinstance(default, str) else str
            if name in ("checkpoints_total_limit",):
                kind = int
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
            p.add_argument(
                flag, type=kind, default=default, choices=choices, help=f"{helptext} (default: {default})".strip()
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{k: getattr(args, k) for k in TrainConfig.model_fields})


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="RUN/checkpoint-N folder")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--instruction", required=True, help='edit instruction, e.g. "raise your right arm"')
    p.add_argument("--output", required=True, help="edited image path (.png)")
    p.add_argument(
        "--pose",
        help="target pose JSON for a --pose-conditioning checkpoint: {'keypoints': [[x, y, conf] x 17]} in pixels "
        "(a manifest's after_pose works as it is); without it the pose branch adds nothing",
    )
    p.add_argument("--steps", type=int, default=20, help="inference steps (default 20; EditAction used 100)")
    p.add_argument("--image-guidance", type=float, default=1.5, help="image guidance scale (default 1.5)")
    p.add_argument("--text-guidance", type=float, default=7.5, help="text guidance scale (default 7.5)")
    p.add_argument("--seed", type=int, default=0)


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a RUN/checkpoint-N folder of motionpairs train")
    p.add_argument("--shards", required=True, action="append", help="output folder(s), globs or tars (repeatable)")
    p.add_argument(
        "--output", required=True, help="folder for metrics.json, samples.parquet, images/, grid.png (and index.html)"
    )
    p.add_argument("--limit", type=int, help="held-out pairs to score at most")
    p.add_argument("--steps", type=int, default=10, help="inference steps per edit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    page = p.add_argument_group("page")
    page.add_argument("--html", action="store_true", help="write OUTPUT/index.html: input | edit | target | scores")
    page.add_argument("--compare", metavar="EVAL", help="an earlier evaluate OUTPUT: its edits beside these (--html)")
    page.add_argument("--sort-by", default="pck@0.1", help="the score the page's rows are sorted by, worst first")
    j = p.add_argument_group("judge", "a multimodal LLM scores every edit (see training/judge.py)")
    j.add_argument("--judge", choices=["openai"], help="judge with an OpenAI-compatible server")
    j.add_argument("--model", help="the judge model's name on the server")
    j.add_argument("--base-url", help="server URL (default: $OPENAI_BASE_URL, else OpenAI)")
    j.add_argument("--api-key-env", help="environment variable holding the API key (default OPENAI_API_KEY)")
    j.add_argument("--judge-prompt-version", default="v1", help="the judge prompt (training/judge.py)")
    j.add_argument("--judge-cache", help="answer cache folder (default OUTPUT/judge-cache; share it between runs)")
    j.add_argument("--max-requests", type=int, help="budget: requests this run may pay for")
    j.add_argument("--max-cost-usd", type=float, help="budget: estimated dollars this run may spend")
    j.add_argument("--usd-per-1m-input-tokens", type=float, help="price, for the cost estimate")
    j.add_argument("--usd-per-1m-output-tokens", type=float, help="price, for the cost estimate")
    j.add_argument("--requests-per-minute", type=float, help="rate limit (default 60)")
    j.add_argument("--tokens-per-minute", type=float, help="rate limit (default 200000)")
    j.add_argument("--max-concurrency", type=int, help="requests in flight at most (default 4)")
    j.add_argument("--timeout-s", type=float, help="per request (default 60)")
    j.add_argument("--max-retries", type=int, help="client retries on 429/5xx/timeouts (default 4)")
    j.add_argument("--max-tokens", type=int, help="answer length cap (default 300)")
    j.add_argument("--image-detail", choices=["low", "high", "auto"], help="image detail sent (default low)")
    j.add_argument("--image-max-side", type=int, help="images are sent at most this large (default 512)")
