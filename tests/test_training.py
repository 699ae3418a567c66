"""Training on real pairs built from the shared clips, on CPU, with the tiny random InstructPix2Pix."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from schemas.records import COCO17, KP
from training.config import TrainConfig
from training.data import open_shards
from training.model import build_editor, render_pose
from training.train import Trainer, pick_negatives
from training.transforms import PairTransform, swap_sides


def config(out, tmp_path, **kw) -> TrainConfig:
    base = dict(
        shards=[str(out)],
        output=str(tmp_path / "run"),
        resolution=32,
        train_batch_size=4,
        learning_rate=1e-3,
        max_train_steps=4,
        checkpointing_steps=2,
        shuffle_buffer=16,
        seed=3,
    )
    return TrainConfig(**{**base, **kw})


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_real_pairs(real_build, tmp_path):
    _, out, stats = real_build
    summary = Trainer(config(out, tmp_path, max_train_steps=40, checkpointing_steps=40)).train()
    losses = [m["loss"] for m in metrics(tmp_path / "run")]
    assert len(losses) == 40 and summary["dataset_size"] == stats["pairs"]
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:8])


def test_checkpoint_resume_continues_bit_for_bit(real_build, tmp_path):
    _, out, _ = real_build
    opts = dict(contrastive_weight=0.1, pose_conditioning=True, lr_scheduler="cosine", lr_warmup_steps=2)
    straight = config(out, tmp_path / "a", **opts)
    Trainer(straight).train()
    first_half = config(out, tmp_path / "b", **opts, max_train_steps=2)
    Trainer(first_half).train()
    resumed = first_half.model_copy(update={"max_train_steps": 4, "resume_from_checkpoint": "latest"})
    Trainer(resumed).train()
    a = load_file(str(tmp_path / "a" / "run" / "checkpoint-4" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "checkpoint-4" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = metrics(tmp_path / "a" / "run"), metrics(tmp_path / "b" / "run")
    assert [m["step"] for m in lb] == [1, 2, 3, 4]
    assert [m["loss"] for m in la] == [m["loss"] for m in lb]
    # the schedule resumed where it was: warm-up to the peak, then the cosine decay over the 4 steps
    lrs = [m["lr"] for m in la]
    assert [m["lr"] for m in lb] == lrs
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == pytest.approx(1e-3) and lrs[1] > lrs[2] > lrs[3]


def test_contrastive_loss_uses_a_disjoint_negative_and_changes_gradients(real_build, tmp_path):
    _, out, _ = real_build
    import random

    t = Trainer(config(out, tmp_path, contrastive_weight=1.0))
    texts = ["raise your right arm", "bend your knees", "raise your left arm"]
    negs = pick_negatives(texts, t.parts.tokenizer, random.Random(0))
    for text, neg in zip(texts, negs, strict=True):
        from training.train import _token_set

        assert not (_token_set(t.parts.tokenizer, text) & _token_set(t.parts.tokenizer, neg)), (text, neg)
    batch = next(t.batches())

    def grads(weight: float) -> list[torch.Tensor]:
        t.cfg = t.cfg.model_copy(update={"contrastive_weight": weight})
        t.optimizer.zero_grad()
        torch.manual_seed(0)
        losses = t.loss(batch, random.Random(0))
        losses["loss"].backward()
        return [p.grad.clone() for p in t.params if p.grad is not None], losses

    g0, l0 = grads(0.0)
    g1, l1 = grads(1.0)
    assert "loss_contrastive" in l1 and "loss_contrastive" not in l0
    assert torch.isfinite(l1["loss_contrastive"]) and l1["loss"] > l0["loss"]
    assert any(not torch.allclose(a, b) for a, b in zip(g0, g1, strict=True))


def test_frozen_cross_attention_does_not_move(real_build, tmp_path):
    _, out, _ = real_build
    t = Trainer(config(out, tmp_path, freeze_cross_attention=True, max_train_steps=3, checkpointing_steps=3))
    start = {n: p.detach().clone() for n, p in t.parts.unet.named_parameters()}
    assert t.frozen and all(".attn2." in n for n in t.frozen)
    t.train()
    after = dict(t.accelerator.unwrap_model(t.unet).named_parameters())
    assert all(torch.equal(start[n], after[n]) for n in t.frozen)
    moved = [n for n in start if n not in t.frozen and not torch.equal(start[n], after[n])]
    assert moved and all(".attn2." not in n for n in moved)
    trainable = sum(p.numel() for p in t.params)
    assert trainable < sum(p.numel() for p in start.values())


def test_pose_conditioning_is_an_extra_input_that_starts_neutral(real_build, tmp_path):
    _, out, _ = real_build
    t = Trainer(config(out, tmp_path, pose_conditioning=True, max_train_steps=3, checkpointing_steps=3))
    unet = t.accelerator.unwrap_model(t.unet)
    x = torch.randn(1, 8, 16, 16)
    ts = torch.tensor([500])
    text = t.encode_text(["raise your right arm"])
    pose_a = torch.rand(1, 17, 3)
    pose_a[..., 2] = 1.0
    pose_b = pose_a.clone()
    pose_b[0, KP["right_wrist"], :2] = torch.tensor([0.05, 0.05])

    def run(pose):
        t.pose_conv.pose_maps = None if pose is None else render_pose(pose, 16)
        with torch.no_grad():
            return unet(x, ts, encoder_hidden_states=text).sample

    assert torch.equal(run(None), run(pose_a))  # zero-initialised: no effect before training
    t.train()
    assert not torch.equal(t.pose_conv.encoder.zero.weight, torch.zeros_like(t.pose_conv.encoder.zero.weight))
    assert not torch.allclose(run(pose_a), run(pose_b))  # after training, the target pose steers the output
    maps = render_pose(pose_a, 16)
    assert maps.shape == (1, 16, 16, 16) and maps.max() > 0.5


def test_flip_swaps_sides_in_images_text_and_keypoints(real_build):
    _, out, _ = real_build
    s = next(iter(open_shards(out)))
    plain = PairTransform(32, flip_p=0.0, random_crop=False)(s)
    flipped = PairTransform(32, flip_p=1.0, random_crop=False)(s)
    assert torch.equal(flipped["before"], plain["before"].flip(-1))
    assert flipped["text"] == swap_sides(plain["text"])
    assert swap_sides("raise your Right arm, lower the left") == "raise your Left arm, lower the right"
    for name in ("left_wrist", "right_ankle", "nose"):
        other = name.replace("left", "#").replace("right", "left").replace("#", "right")
        a, b = plain["pose"][KP[name]], flipped["pose"][COCO17.index(other)]
        if torch.isfinite(a).all():
            assert b[0].item() == pytest.approx(1 - a[0].item(), abs=1e-5) and b[1] == a[1] and b[2] == a[2]


def test_train_and_edit_from_the_command_line(real_build, tmp_path):
    _, out, _ = real_build
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "flows.cli", "train", "--shards", f"{out}/shards/*.tar", "--output", str(run)]
    cmd += ["--pretrained", "tiny", "--max-train-steps", "3", "--resolution", "32", "--validation-steps", "3"]
    cmd += ["--validation-inference-steps", "2", "--validation-samples", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = metrics(run)
    assert [m["step"] for m in lines] == [1, 2, 3] and all("loss" in m for m in lines)
    assert (run / "checkpoint-3" / "model.safetensors").is_file()
    grid = Image.open(run / "validation" / "step-000003.png")
    assert grid.size == (3 * 32, 2 * 32)
    src = tmp_path / "in.png"
    s = next(iter(open_shards(out)))
    Image.fromarray(s.before).save(src)
    edited = tmp_path / "out.png"
    r = subprocess.run(
        [sys.executable, "-m", "flows.cli", "edit", "--checkpoint", str(run / "checkpoint-3"), "--image", str(src)]
        + ["--instruction", "raise your right arm", "--output", str(edited), "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(edited).size == (32, 32)


def test_mixed_precision_gradient_checkpointing_and_pose_validation(real_build, tmp_path):
    """bf16 (CPU autocast) with the frozen VAE/text encoder cast down, gradient checkpointing, the pose
    branch and a validation grid: the path a GPU run takes, exercised on CPU."""
    from accelerate.state import AcceleratorState

    _, out, _ = real_build
    cfg = config(out, tmp_path, mixed_precision="bf16", gradient_checkpointing=True, pose_conditioning=True)
    AcceleratorState._reset_state(True)  # accelerate keeps one precision per process: this test's own
    try:
        t = Trainer(cfg.model_copy(update={"max_train_steps": 2, "validation_steps": 2, "validation_samples": 2}))
        assert t.parts.vae.dtype == torch.bfloat16 and t.parts.text_encoder.dtype == torch.bfloat16
        unet = t.accelerator.unwrap_model(t.unet)
        assert unet.is_gradient_checkpointing and all(p.dtype == torch.float32 for p in t.params)
        t.train()
    finally:
        AcceleratorState._reset_state(True)
    assert all(np.isfinite(m["loss"]) and m["elapsed_s"] > 0 for m in metrics(tmp_path / "run"))
    grid = Image.open(tmp_path / "run" / "validation" / "step-000002.png")
    assert grid.size == (3 * 32, 2 * 32)


def test_sd15_random_has_stable_diffusion_1_5_size():
    """`--pretrained sd15-random` is Stable Diffusion 1.5's layout (built on the meta device: no memory)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        parts = build_editor("sd15-random", resolution=256)

    def millions(m):
        return sum(p.numel() for p in m.parameters()) / 1e6

    assert parts.unet.config.in_channels == 8 and parts.unet.config.cross_attention_dim == 768
    assert 855 < millions(parts.unet) < 865  # SD-1.5: 859.5M with 4 input channels
    assert 83 < millions(parts.vae) < 84.5 and 122 < millions(parts.text_encoder) < 124
    ids = parts.tokenizer(["raise your right arm"]).input_ids[0]
    assert max(ids) < parts.text_encoder.config.vocab_size
    with pytest.raises(ValueError, match="not a folder, a hub id .* tiny, sd15-random"):
        build_editor("sd15-randm")  # a typo is a clear error, not an attempted download


def test_edit_follows_a_target_pose(real_build, tmp_path):
    """`motionpairs edit --pose` feeds a pose-conditioned checkpoint the target pose (a manifest's
    after_pose JSON as it is); moving one wrist in it changes the edit."""
    import argparse

    from training.config import add_edit_arguments
    from training.edit import main as edit_main

    _, out, _ = real_build
    Trainer(config(out, tmp_path, pose_conditioning=True, max_train_steps=3, checkpointing_steps=3)).train()
    s = next(iter(open_shards(out)))
    src = tmp_path / "in.png"
    Image.fromarray(s.before).save(src)
    pose_a = tmp_path / "a.json"
    pose_a.write_text(s.pair.after_pose.model_dump_json())
    moved = s.pair.after_pose.model_copy(deep=True)
    x, y, _ = moved.keypoints[KP["right_wrist"]]
    w, h = moved.frame_width, moved.frame_height  # a corner of the centre crop, far from where the wrist was
    moved.keypoints[KP["right_wrist"]] = [w / 2 - 0.4 * min(w, h) if x > w / 2 else w / 2 + 0.4 * min(w, h), h / 2, 1.0]
    pose_b = tmp_path / "b.json"
    pose_b.write_text(moved.model_dump_json())
    parser = argparse.ArgumentParser()
    add_edit_arguments(parser)

    def edit(name, *extra):
        args = ["--checkpoint", str(tmp_path / "run" / "checkpoint-3"), "--image", str(src), "--steps", "2"]
        args += ["--instruction", "raise your right arm", "--output", str(tmp_path / name), *extra]
        assert edit_main(parser.parse_args(args)) == 0
        return np.asarray(Image.open(tmp_path / name))

    a, b, none = edit("a.png", "--pose", str(pose_a)), edit("b.png", "--pose", str(pose_b)), edit("none.png")
    assert a.shape == (32, 32, 3) and not np.array_equal(a, b) and not np.array_equal(a, none)
    assert np.array_equal(a, edit("a2.png", "--pose", str(pose_a)))  # seeded: the same pose, the same edit


def test_caption_version_choice_is_reported_per_step(real_build, tmp_path, caplog):
    _, out, _ = real_build
    Trainer(config(out, tmp_path / "a", caption_version="offline", max_train_steps=2)).train()
    assert [m["caption_version_share"] for m in metrics(tmp_path / "a" / "run")] == [1.0, 1.0]
    with caplog.at_level("WARNING", logger="training.train"):
        Trainer(config(out, tmp_path / "b", caption_version="no-such-vlm@v9", max_train_steps=2)).train()
    assert [m["caption_version_share"] for m in metrics(tmp_path / "b" / "run")] == [0.0, 0.0]
    assert "no sample so far has caption version 'no-such-vlm@v9'" in caplog.text


def test_train_command_line_mistakes_are_clear_errors(real_build, tmp_path, capsys):
    import argparse

    from training.config import add_arguments
    from training.train import main as train_main

    _, out, _ = real_build
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--shards", str(out), "--output", str(tmp_path / "run")]
    for extra, message in [
        (["--pretrained", "sd15-randm"], "not a folder, a hub id"),
        (["--conditioning-dropout-prob", "0.5"], "conditioning_dropout_prob"),
    ]:
        assert train_main(parser.parse_args(base + extra)) == 2
        assert message in capsys.readouterr().err


def test_epochs_become_steps_from_the_shards_sizes(real_build, tmp_path):
    _, out, stats = real_build
    t = Trainer(config(out, tmp_path, num_train_epochs=2, train_batch_size=4, checkpointing_steps=100))
    assert t.max_steps == -(-2 * stats["pairs"] // 4)
    summary = t.train()
    assert summary["step"] == t.max_steps and len(metrics(tmp_path / "run")) == t.max_steps
    assert (tmp_path / "run" / f"checkpoint-{t.max_steps}").is_dir()


# a training run that waits, mid-save of one checkpoint, to be killed: the model's weights written,
# the optimizer, RNG and trainer state not yet
_SLOW_SAVE = """
import os, sys, time
from pathlib import Path
import accelerate.checkpointing as ck

real_save = ck.save
def save(obj, f, *a, **kw):
    if Path(f).parent.name.startswith(os.environ["KILL_IN_SAVE"]) and Path(f).name.startswith("optimizer"):
        Path(os.environ["IN_SAVE"]).touch()  # the weights are written, the optimizer is being written
        time.sleep(300)
    return real_save(obj, f, *a, **kw)
ck.save = save
from flows.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_save_killed_midway_leaves_a_partial_checkpoint_that_resume_skips(real_build, tmp_path):
    import os
    import signal
    import time

    _, out, _ = real_build
    run = tmp_path / "run"
    args = ["train", "--shards", str(out), "--output", str(run), "--resolution", "32", "--train-batch-size", "2"]
    args += ["--checkpointing-steps", "2", "--shuffle-buffer", "0"]
    marker = tmp_path / "in-save"
    env = os.environ | {"KILL_IN_SAVE": "checkpoint-4", "IN_SAVE": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, *args, "--max-train-steps", "6"], env=env)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, "training ended before the save of checkpoint-4"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 in the middle of the save
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in run.glob("checkpoint-*"))
    assert names == ["checkpoint-2", "checkpoint-4.partial"]  # never a checkpoint-4 to trip over
    assert (run / "checkpoint-4.partial" / "model.safetensors").is_file()
    assert not (run / "checkpoint-4.partial" / "trainer_state.json").exists()
    from training.evaluate import EvalError, load_checkpoint

    with pytest.raises(EvalError, match="not a complete checkpoint: a save that never finished"):
        load_checkpoint(run / "checkpoint-4.partial")  # evaluate refuses it too
    # --resume latest goes on from checkpoint-2 and says what it skipped
    cmd = [sys.executable, "-m", "flows.cli", *args, "--max-train-steps", "4", "--resume-from-checkpoint", "latest"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from checkpoint-2; skipped checkpoint-4.partial (a save that never finished)" in r.stderr
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["step"] == 4
    assert [m["step"] for m in metrics(run)] == [1, 2, 3, 4]


def test_resume_latest_takes_the_newest_complete_checkpoint(tmp_path):
    """Folders a save left unfinished (the atomic .partial, or an old in-place checkpoint without its
    trainer state) are named and skipped; pointing --resume-from-checkpoint at one is a clear error."""
    from training.checkpoints import complete_checkpoints, incomplete

    def checkpoint(name: str, state: bool = True, weights: bool = True):
        p = tmp_path / name
        p.mkdir()
        if weights:
            (p / "model.safetensors").write_bytes(b"x")
        if state:
            (p / "trainer_state.json").write_text(json.dumps({"step": int(name.split("-")[1].split(".")[0])}))
        return p

    checkpoint("checkpoint-2")
    checkpoint("checkpoint-10")
    checkpoint("checkpoint-12", state=False)  # written in place, killed before its trainer state
    checkpoint("checkpoint-14.partial", state=False)
    checkpoint("checkpoint-16", weights=False)
    (tmp_path / "checkpoint-notes").mkdir()  # not a checkpoint at all: ignored
    done, skipped = complete_checkpoints(tmp_path)
    assert [p.name for p in done] == ["checkpoint-2", "checkpoint-10"]  # by step, not by name
    assert [(p.name, why.split(" (")[0]) for p, why in skipped] == [
        ("checkpoint-12", "no readable trainer_state.json"),
        ("checkpoint-14.partial", "a save that never finished"),
        ("checkpoint-16", "no model weights"),
    ]
    assert incomplete(tmp_path / "checkpoint-12").startswith("no readable trainer_state.json")
    assert incomplete(tmp_path / "checkpoint-10") is None
