"""Finetune an InstructPix2Pix editor on motionpairs shards.

    motionpairs train --shards "OUT/shards/*.tar" --output RUN --pretrained tiny --max-train-steps 100

The InstructPix2Pix objective: the UNet (8 input channels: noisy latent of the after-image + latent of
the before-image) predicts the noise, conditioned on the instruction; conditioning dropout on the
text, the image and both makes classifier-free guidance possible. Options from EditAction: frozen
cross-attention, the contrastive action loss against an instruction that shares no token with the true
one, a regulariser towards the starting UNet. Option from the non-rigid editing paper: the target pose
as a rendered skeleton through a zero-initialised branch. `accelerate` handles devices and mixed
precision; checkpoints hold model, optimizer, RNG and data position, so a resumed run continues exactly.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_scheduler

from curation.store.files import fsync_dir, fsync_file
from schemas.records import version_matches

from .checkpoints import (
    PARTIAL,
    TRAINER_STATE,
    complete_checkpoints,
    describe_skipped,
    incomplete,
    step_of,
    write_durably,
)
from .config import TrainConfig, config_from_args
from .data import SkipCounter, dataset_size, open_shards, shard_urls
from .evaluate import HELD_OUT, Scorer, held_out_cases, score_cases
from .model import EditorParts, add_pose_branch, build_editor, freeze_cross_attention, render_pose
from .transforms import PairTransform

log = logging.getLogger(__name__)

# instructions to contrast with: a negative must share no token with the true instruction
NEGATIVE_POOL = [
    "turn around",
    "crouch down",
    "lean to the left",
    "wave hello",
    "jump",
    "sit",
    "kick",
    "clap hands",
    "open the door",
    "stir the pan",
]


def _null_embedding(parts: EditorParts, device) -> torch.Tensor:
    ids = parts.tokenizer([""], padding="max_length", max_length=parts.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        return parts.text_encoder(ids.input_ids.to(device))[0]


def _token_set(tokenizer, text: str) -> set[int]:
    special = set(tokenizer.all_special_ids)
    return {t for t in tokenizer(text).input_ids if t not in special}


def pick_negatives(texts: list[str], tokenizer, rng: random.Random) -> list[str]:
    """For each instruction, another one (from the batch, else a fixed pool) sharing no token with it."""
    sets = [_token_set(tokenizer, t) for t in texts]
    pool = [(t, _token_set(tokenizer, t)) for t in NEGATIVE_POOL]
    out = []
    for i, s in enumerate(sets):
        cands = [texts[j] for j in range(len(texts)) if j != i and not (sets[j] & s)]
        cands = cands or [t for t, ts in pool if not (ts & s)]
        out.append(rng.choice(cands) if cands else min(pool, key=lambda p: len(p[1] & s))[0])
    return out


class EpochStream(torch.utils.data.IterableDataset):
    """The training samples of one epoch after another: each iteration (in the main process, or in
    each persistent DataLoader worker) is the next epoch, shuffled and augmented with that epoch's seed.
    The first iteration of a resumed run drops the batches it already trained on, undecoded."""

    def __init__(self, urls, cfg: TrainConfig, first_epoch, skip_batches, skipped, held_out, decode_device):
        self.urls, self.cfg = urls, cfg
        self.epoch = first_epoch - 1
        self.skip = skip_batches
        self.skipped = skipped
        self.held_out = held_out
        self.decode_device = decode_device

    def __iter__(self):

        self.epoch += 1
        skip, self.skip = self.skip, 0
        cfg = self.cfg
        ds = open_shards(
            self.urls,
            shuffle=cfg.shuffle_buffer,
            seed=cfg.seed + self.epoch,
            skip_bad=self.skipped,
            skip_batches=skip,
            batch_size=cfg.train_batch_size,
            image_tensors=True,
            decode_device=self.decode_device,
        )
        if self.held_out:  # the pairs --eval-steps scores on are not trained on
            ds = ds.select(lambda s: s.pair.clip.split not in HELD_OUT)
        transform = PairTransform(cfg.resolution, cfg.seed, self.epoch, cfg.flip_p, caption_version=cfg.caption_version)
        return iter(ds.map(transform))


class Trainer:
    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.out = Path(cfg.output)
        self.out.mkdir(parents=True, exist_ok=True)
        # without a GPU, say so: several CPU processes (torchrun) then form one gloo group instead of
        # each training alone and writing the same files
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            cpu=not torch.cuda.is_available(),
        )
        set_seed(cfg.seed)
        parts = build_editor(cfg.pretrained, cfg.seed, cfg.resolution)
        self.pose_conv = add_pose_branch(parts) if cfg.pose_conditioning else None
        self.frozen = freeze_cross_attention(parts.unet) if cfg.freeze_cross_attention else []
        parts.vae.requires_grad_(False)
        parts.text_encoder.requires_grad_(False)
        self.parts = parts
        if cfg.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
        if cfg.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        trainable = [p for p in parts.unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.adam_weight_decay)
        n = self.accelerator.num_processes
        self.urls = [u for s in cfg.shards for u in shard_urls(s)]
        self.size = dataset_size(self.urls)
        self.max_steps = self._max_steps(n)
        # counted in optimizer steps on every process (the prepared scheduler steps once per process)
        lr_scheduler = get_scheduler(
            cfg.lr_scheduler,
            self.optimizer,
            num_warmup_steps=cfg.lr_warmup_steps * n,
            num_training_steps=self.max_steps * n,
        )
        self.unet, self.optimizer, self.lr_scheduler = self.accelerator.prepare(
            parts.unet, self.optimizer, lr_scheduler
        )
        # after prepare: the parameters as they now are (moved to the device, wrapped), and the
        # regulariser's anchor beside them, same device and dtype (rebuilt the same way on resume)
        self.params = [p for p in self.accelerator.unwrap_model(self.unet).parameters() if p.requires_grad]
        self.anchor = [p.detach().clone() for p in self.params] if cfg.regularizer_weight > 0 else None
        device = self.accelerator.device
        # the frozen VAE and text encoder run in the mixed-precision dtype (as diffusers' training scripts
        # do); the trained UNet keeps fp32 weights under autocast
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
        for frozen in (parts.vae, parts.text_encoder):
            if self.weight_dtype == torch.float32:
                frozen.to(device)
            else:
                frozen.to(device, dtype=self.weight_dtype)
        self.null_text = _null_embedding(parts, device)
        self.eval_cases = None  # a fixed held-out subset for --eval-steps (the split the build assigned)
        self.scorer = None
        if cfg.eval_steps:
            self.eval_cases = held_out_cases(self.urls, cfg.resolution, cfg.eval_samples)
        self.skipped = SkipCounter()
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0

    def _max_steps(self, processes: int) -> int:
        cfg = self.cfg
        if cfg.num_train_epochs is None:
            return cfg.max_train_steps
        if not self.size:
            raise ValueError("--num-train-epochs needs the dataset size (sizes.json beside the shards)")
        per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps * processes
        return max(1, math.ceil(cfg.num_train_epochs * self.size / per_step))

    # ------------------------------------------------------------------ data

    def make_loader(self, skip_batches: int = 0) -> torch.utils.data.DataLoader:
        """One DataLoader for the whole run: with workers, they persist from epoch to epoch (each worker's
        stream knows its epoch) and batches go to pinned memory when training on a GPU."""
        cfg = self.cfg
        workers = cfg.num_workers
        on_gpu = self.accelerator.device.type == "cuda"
        stream = EpochStream(
            self.urls,
            cfg,
            first_epoch=self.epoch,
            skip_batches=skip_batches,
            skipped=self.skipped,
            held_out=self.eval_cases is not None,
            decode_device=str(self.accelerator.device) if on_gpu and workers == 0 else "cpu",
        )
        # its own generator: starting a loader must not draw from the global RNG the training
        # steps use, or a resumed run (which starts one more loader) would drift
        return torch.utils.data.DataLoader(
            stream,
            batch_size=cfg.train_batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=workers > 0 and on_gpu,
            generator=torch.Generator().manual_seed(cfg.seed + self.epoch),
        )

    def batches(self) -> Iterator[dict[str, Any]]:
        """Endless batches, epoch after epoch, in a deterministic order; resumes mid-epoch. The batches a
        resumed run already trained on are dropped before decoding (all but fewer than one per worker)."""
        workers = max(1, self.cfg.num_workers)
        start = self.batches_in_epoch
        skip_unread = start - start % workers
        loader = self.make_loader(skip_unread)
        n = skip_unread
        while True:
            got = 0
            for batch in loader:
                got += 1
                n += 1
                if n <= self.batches_in_epoch:
                    continue  # consumed before the checkpoint this run resumed from
                self.batches_in_epoch = n
                yield batch
            if got == 0 and n == 0:
                last = self.skipped.last or "in DataLoader workers, see their warnings"
                why = f"; {self.skipped.count} samples skipped, the last: {last}" if self.skipped.count else ""
                raise RuntimeError(f"no readable samples in {len(self.urls)} shards{why}")
            self.epoch += 1
            self.batches_in_epoch = 0
            n = 0

    # ------------------------------------------------------------------ the objective

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tok = self.parts.tokenizer
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return self.parts.text_encoder(ids.input_ids.to(self.accelerator.device))[0]

    def loss(self, batch: dict[str, Any], rng: random.Random) -> dict[str, torch.Tensor]:
        cfg, parts, device = self.cfg, self.parts, self.accelerator.device
        before = batch["before"].to(device, dtype=self.weight_dtype)
        after = batch["after"].to(device, dtype=self.weight_dtype)
        bsz = before.shape[0]
        with torch.no_grad():
            latents = parts.vae.encode(after).latent_dist.sample() * parts.vae.config.scaling_factor
            image_latents = parts.vae.encode(before).latent_dist.mode()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, parts.scheduler.config.num_train_timesteps, (bsz,), device=device).long()
        noisy = parts.scheduler.add_noise(latents, noise, timesteps)
        text = self.encode_text(list(batch["text"]))
        p = cfg.conditioning_dropout_prob
        if p > 0:  # as in InstructPix2Pix: drop text, image, or both, p each
            r = torch.rand(bsz, device=device)
            text = torch.where((r < 2 * p).view(bsz, 1, 1), self.null_text.expand_as(text), text)
            keep_image = 1 - ((r >= p) & (r < 3 * p)).to(image_latents.dtype)
            image_latents = image_latents * keep_image.view(bsz, 1, 1, 1)
        if self.pose_conv is not None:
            self.pose_conv.pose_maps = render_pose(batch["pose"].to(device), noisy.shape[-1])
        model_in = torch.cat([noisy, image_latents], dim=1)
        pred = self.unet(model_in, timesteps, encoder_hidden_states=text).sample
        per_sample = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
        out = {"loss_mse": per_sample.mean()}
        total = out["loss_mse"]
        if cfg.contrastive_weight > 0:
            negatives = self.encode_text(pick_negatives(list(batch["text"]), parts.tokenizer, rng))
            pred_neg = self.unet(model_in, timesteps, encoder_hidden_states=negatives).sample
            per_neg = F.mse_loss(pred_neg.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
            # the diffusion model as a classifier: the true instruction must explain the edit better
            out["loss_contrastive"] = F.softplus(per_sample - per_neg).mean()
            total = total + cfg.contrastive_weight * out["loss_contrastive"]
        if self.anchor is not None:
            out["loss_reg"] = sum(((p - a) ** 2).sum() for p, a in zip(self.params, self.anchor, strict=True))
            total = total + cfg.regularizer_weight * out["loss_reg"]
        if self.pose_conv is not None:
            self.pose_conv.pose_maps = None
        out["loss"] = total
        return out

    # ------------------------------------------------------------------ checkpoints

    def checkpoints(self) -> list[Path]:
        """The run's complete checkpoints, oldest first."""
        return complete_checkpoints(self.out)[0]

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def save(self) -> Path:
        """Every process writes its part into RUN/checkpoint-N.partial; then the main process writes the
        run's config and the checkpoint's trainer_state.json (last: its presence marks a complete
        checkpoint), flushes everything to disk and renames the folder to checkpoint-N. A job killed
        while saving leaves only a .partial folder, which resume skips; the others wait for the main one."""
        final = self.out / f"checkpoint-{self.step}"
        partial = final.with_name(final.name + PARTIAL)
        if self.main and partial.exists():  # an earlier save of this step that was cut short
            shutil.rmtree(partial)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(partial))
        self.accelerator.wait_for_everyone()  # every process's files are in
        if self.main:
            write_durably(self.out / "train_config.json", self.cfg.model_dump_json(indent=2))
            state = {"step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}
            for f in partial.rglob("*"):
                if f.is_file():
                    fsync_file(f)
            write_durably(partial / TRAINER_STATE, json.dumps(state))
            if final.exists():  # this step saved before (a run resumed from an earlier checkpoint)
                shutil.rmtree(final)
            os.replace(partial, final)
            fsync_dir(self.out)
            limit = self.cfg.checkpoints_total_limit
            if limit:
                for old in self.checkpoints()[:-limit]:
                    shutil.rmtree(old)
        self.accelerator.wait_for_everyone()
        return final

    def resume(self, which: str) -> None:
        if which == "latest":
            done, skipped = complete_checkpoints(self.out)
            if not done:
                why = f" (skipped: {describe_skipped(skipped)})" if skipped else ""
                raise FileNotFoundError(f"no complete checkpoint to resume from in {self.out}{why}")
            path = done[-1]
            newer = [(p, why) for p, why in skipped if step_of(p) >= step_of(path)]
            if newer and self.main:
                log.warning("resuming from %s; skipped %s", path.name, describe_skipped(newer))
        else:
            path = Path(which)
            problem = incomplete(path)
            if problem:
                raise FileNotFoundError(f"{path} is not a complete checkpoint: {problem}")
        self.accelerator.load_state(str(path))
        state = json.loads((path / TRAINER_STATE).read_text())
        self.step, self.epoch, self.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]
        metrics = self.out / "metrics.jsonl"
        if metrics.exists() and self.main:  # drop what the stopped run logged after this checkpoint
            keep = [ln for ln in metrics.read_text().splitlines() if ln and json.loads(ln)["step"] <= self.step]
            metrics.write_text("".join(k + "\n" for k in keep))
        self.accelerator.wait_for_everyone()
        log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ validation

    def validate(self) -> Path | None:
        from PIL import Image

        cfg = self.cfg
        plain = PairTransform(cfg.resolution, flip_p=0.0, random_crop=False, caption_version=cfg.caption_version)
        ds = open_shards(self.urls, skip_bad=self.skipped).map(plain)
        rows = []
        pipe = self.parts.pipeline()
        pipe.unet = self.accelerator.unwrap_model(self.unet)
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator("cpu").manual_seed(cfg.seed)
        for i, s in enumerate(ds):
            if i >= cfg.validation_samples:
                break

            def pil(t: torch.Tensor) -> Image.Image:
                return Image.fromarray(((t.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8))

            if self.pose_conv is not None:
                maps = render_pose(s["pose"][None], cfg.resolution // pipe.vae_scale_factor)
                self.pose_conv.pose_maps = torch.cat([maps] * 3).to(self.accelerator.device)  # CFG batch of 3
            with self.accelerator.autocast():
                edited = pipe(
                    s["text"],
                    image=pil(s["before"]),
                    num_inference_steps=cfg.validation_inference_steps,
                    generator=generator,
                    output_type="np",
                ).images[0]
            if self.pose_conv is not None:
                self.pose_conv.pose_maps = None
            edited_u8 = (edited * 255).astype(np.uint8)
            rows.append(np.concatenate([np.asarray(pil(s["before"])), np.asarray(pil(s["after"])), edited_u8], 1))
        if not rows:
            return None
        path = self.out / "validation" / f"step-{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, 0)).save(path)
        return path

    def evaluate(self) -> dict[str, float | None]:
        """`motionpairs evaluate` on the fixed held-out subset, on the main process: the model's figures
        (with the no-edit floor and oracle ceiling) for metrics.jsonl."""
        out: dict[str, float | None] = {}
        if self.main and self.eval_cases:
            self.scorer = self.scorer or Scorer(str(self.accelerator.device))
            pipe = self.parts.pipeline()
            pipe.unet = self.accelerator.unwrap_model(self.unet)
            pipe.set_progress_bar_config(disable=True)
            self.unet.eval()
            with self.accelerator.autocast():
                m, _, _ = score_cases(pipe, self.eval_cases, self.scorer, self.cfg.eval_inference_steps, self.cfg.seed)
            self.unet.train()
            for system in ("model", "no_edit", "oracle"):
                for k in ("pck@0.1", "oks", "direction_agreement", "mas", "background_ssim"):
                    out[f"eval_{system}_{k}"] = m[system].get(k)
        self.accelerator.wait_for_everyone()
        return out

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.resume_from_checkpoint:
            self.resume(cfg.resume_from_checkpoint)
        metrics = open(self.out / "metrics.jsonl", "a") if self.main else None  # one writer
        data = self.batches()
        t0, samples = time.perf_counter(), 0
        wanted = 0  # samples that had the requested --caption-version (the rest used their published caption)
        last: dict[str, float] = {}
        self.unet.train()
        while self.step < self.max_steps:
            rng = random.Random(cfg.seed * 1000003 + self.step)  # negatives: the same on a resumed run
            for _ in range(cfg.gradient_accumulation_steps):
                batch = next(data)
                with self.accelerator.accumulate(self.unet):
                    losses = self.loss(batch, rng)
                    self.accelerator.backward(losses["loss"])
                    if self.accelerator.sync_gradients:
                        self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm)
                    self.optimizer.step()
                    self.lr_scheduler.step()
                    self.optimizer.zero_grad()
                samples += batch["before"].shape[0]
                wanted += sum(version_matches(v, cfg.caption_version) for v in batch["caption_version"])
            self.step += 1
            last = {k: float(v.detach()) for k, v in losses.items()}
            eval_now = bool(cfg.eval_steps) and self.step % cfg.eval_steps == 0
            if self.step % cfg.logging_steps == 0 or eval_now:
                elapsed = time.perf_counter() - t0
                rec = {"step": self.step, "epoch": self.epoch, **last, "lr": self.lr_scheduler.get_last_lr()[0]}
                rec.update(samples_per_s=round(samples / elapsed, 2), elapsed_s=round(elapsed, 3))
                if cfg.caption_version:
                    rec["caption_version_share"] = round(wanted / samples, 4)
                    if wanted == 0 and self.step == cfg.logging_steps:
                        log.warning(
                            "no sample so far has caption version %r: they train on their published captions "
                            "(motionpairs inspect OUT lists the versions)",
                            cfg.caption_version,
                        )
                if eval_now:
                    rec.update(self.evaluate())
                if metrics is not None:
                    metrics.write(json.dumps(rec) + "\n")
                    metrics.flush()
            if self.step % cfg.checkpointing_steps == 0 or self.step == self.max_steps:
                self.accelerator.wait_for_everyone()
                self.save()
            if cfg.validation_steps and self.step % cfg.validation_steps == 0:
                if self.main:
                    self.validate()
                self.accelerator.wait_for_everyone()
        if metrics is not None:
            metrics.close()
        summary = {"step": self.step, "epoch": self.epoch, "skipped_samples": self.skipped.count, **last}
        if self.size:
            summary["dataset_size"] = self.size
        return summary


# ---------------------------------------------------------------- CLI


def main(args: argparse.Namespace) -> int:
    try:  # a bad flag, a missing shard folder, an unknown --pretrained: a clear message, not a traceback
        trainer = Trainer(config_from_args(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"motionpairs train: error: {e}", file=sys.stderr)
        return 2
    summary = trainer.train()
    if trainer.main:  # one summary, not one per process
        print(json.dumps(summary))
    return 0 if math.isfinite(summary.get("loss", 0.0)) else 1
