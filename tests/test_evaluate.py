"""`motionpairs evaluate` and the training path at scale: scores against floor and ceiling, the
regulariser's anchor on the model's device, one writer among several processes, the training crop at
edit time, and a loader that resumes without decoding what it skips."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ACCEPTED, video
from PIL import Image

from training.config import TrainConfig
from training.train import Trainer

MP = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parents[1]


def run(args, env=None, **kw):
    env = env or os.environ.copy()
    return subprocess.run(MP + args, capture_output=True, text=True, timeout=900, cwd=REPO, env=env, **kw)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """Two real clips built with every video in the val split."""
    from curation.build import build
    from curation.config import load_config

    root = tmp_path_factory.mktemp("heldout")
    folder = root / "in"
    folder.mkdir()
    for name in ("tai_chi_glass", "dribbler"):
        (folder / f"{name}.mp4").symlink_to(video(ACCEPTED[name]))
    out = root / "out"
    stats = build(load_config(None, output=str(out), sources=[{"root": str(folder), "val_fraction": 1.0}]))
    assert stats["pairs"] >= 2
    return out


@pytest.fixture(scope="module")
def checkpoint(real_build, tmp_path_factory) -> Path:
    _, out, _ = real_build
    run_dir = tmp_path_factory.mktemp("evalrun") / "run"
    cfg = TrainConfig(
        shards=[str(out)], output=str(run_dir), resolution=128, train_batch_size=2, max_train_steps=2,
        checkpointing_steps=2, shuffle_buffer=0, seed=1,
    )  # fmt: skip
    Trainer(cfg).train()
    return run_dir / "checkpoint-2"


# the scores an edit should raise from the no-edit floor to the oracle's ceiling, and those the no-edit
# baseline tops by construction (nothing changed, so nothing was lost): every score is one or the other
MOTION = ["pck@0.05", "pck@0.1", "pck@0.2", "pck@0.05_moved", "pck@0.1_moved", "pck@0.2_moved", "oks", "oks_moved",
          "direction_agreement", "direction_cosine", "mas", "flow_cosine", "judge_instruction"]  # fmt: skip
PRESERVATION = ["background_ssim", "background_psnr", "judge_identity", "judge_background", "person_found"]
FAMILIES = {"pose": "pck@0.1", "moved joints": "pck@0.1_moved", "keypoint similarity": "oks",
            "direction": "direction_agreement", "motion alignment": "mas", "judge": "judge_instruction"}  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(checkpoint, held_out, tmp_path_factory):
    """`motionpairs evaluate --judge openai --html` of the tiny checkpoint, the judge being the loopback
    fake server: (the finished process, the output folder)."""
    from test_judge import KEY, FakeJudge

    server = FakeJudge(api_key=KEY).start()
    ev = tmp_path_factory.mktemp("evaluated") / "eval"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--shards", str(held_out), "--output", str(ev)]
    args += ["--steps", "2", "--html", "--judge", "openai", "--model", "judge-1", "--base-url", server.base_url]
    args += ["--api-key-env", "JUDGE_TEST_KEY", "--usd-per-1m-input-tokens", "2.5", "--requests-per-minute", "6000"]
    try:
        r = run(args, env=os.environ | {"JUDGE_TEST_KEY": KEY})
    finally:
        server.stop()
    assert not server.invalid, server.invalid
    return r, ev


@pytest.mark.slow
def test_evaluate_scores_the_model_between_no_edit_and_oracle(evaluated):
    r, ev = evaluated
    assert r.returncode == 0, r.stderr[-3000:]
    printed = json.loads(r.stdout.strip().splitlines()[-1])  # the last line (ultralytics prints too)
    m = json.loads((ev / "metrics.json").read_text())
    for system in ("model", "no_edit", "oracle"):
        assert printed[system] == m[system]
        scores = {k for k in m[system] if k not in ("samples", "judged")}
        assert scores == set(MOTION + PRESERVATION), (system, scores ^ set(MOTION + PRESERVATION))
    assert m["oracle"]["samples"] == m["no_edit"]["samples"] >= 2
    assert m["oracle"]["judged"] == m["no_edit"]["judged"] == m["model"]["judged"] == m["oracle"]["samples"]
    # every family of scores, with both baselines: the real after-frame is the ceiling, the unedited
    # before-frame the floor
    for family, key in FAMILIES.items():
        assert m["oracle"][key] is not None and m["no_edit"][key] is not None, (family, m)
        assert m["oracle"][key] > m["no_edit"][key], (family, key, m["oracle"][key], m["no_edit"][key])
    assert m["oracle"]["mas"] == 1.0 and m["no_edit"]["mas"] == 0.0, m  # flow: the after-frame, and no motion
    assert m["no_edit"]["judge_instruction"] == 0.0  # the fake judge sees that nothing changed
    for key in PRESERVATION:  # nothing edited, nothing lost
        assert m["no_edit"][key] >= m["oracle"][key], (key, m)
    assert m["no_edit"]["background_ssim"] == 1.0 and m["no_edit"]["background_psnr"] == 100.0
    assert m["by_caption_version"] and "offline" in m["by_caption_version"]
    assert printed["judge"] == m["judge"] and m["judge"]["requests"] == len(pd.read_parquet(ev / "samples.parquet"))
    assert m["judge"]["cost_usd"] == pytest.approx(m["judge"]["requests"] * 300 * 2.5 / 1e6)
    rows = pd.read_parquet(ev / "samples.parquet")
    assert set(rows.system) == {"model", "no_edit", "oracle"} and len(rows) >= 3 * m["oracle"]["samples"]
    assert rows.judge_raw.notna().all() and (rows.judge_status == "ok").all()
    answers = [json.loads(x) for x in (ev / "judge.jsonl").read_text().splitlines()]
    assert len(answers) == len(rows) and all(a["raw"] for a in answers)
    for img in rows.image:
        assert (ev / img).read_bytes()[:2] == b"\xff\xd8"
    grid = Image.open(ev / "grid.png")
    assert grid.size[0] == 3 * 128 and grid.size[1] % 128 == 0


def _dom(page: Path, tmp_path: Path) -> str:
    from test_report import chromium, console_errors

    profile = tmp_path / "chromium-profile"
    quiet = ["--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    done = chromium(*quiet, f"--user-data-dir={profile}", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert not console_errors(done.stderr), console_errors(done.stderr)
    return done.stdout


@pytest.mark.slow
def test_the_page_of_edits_in_a_browser(evaluated, tmp_path):
    r, ev = evaluated
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["page"] == str(ev / "index.html")
    dom = _dom(ev / "index.html", tmp_path)
    rows = pd.read_parquet(ev / "samples.parquet")
    model = rows[rows.system == "model"]
    shown = re.findall(r'<tr class="edit-row" data-key="([^"]+)" data-version="([^"]*)"\s+data-sort="([^"]*)"', dom)
    assert len(shown) == len(model) > 0  # one row per edit (published caption and each caption version)
    sorts = [float(v) for _, _, v in shown if v]
    assert sorts == sorted(sorts) and all(v == "" for _, _, v in shown[len(sorts) :])  # worst first
    for key, version, _ in shown:
        row = model[(model.key == key) & (model.caption_version == version)].iloc[0]
        assert f'data-key="{key}" data-version="{version}"' in dom and html.escape(row.instruction) in dom
    srcs = re.findall(r'<img class="(input|edit|target)" src="([^"]+)"', dom)
    assert len(srcs) == 3 * len(model)
    for _, src in srcs:
        assert (ev / src).read_bytes()[:2] == b"\xff\xd8"
    summary = dom[dom.index('id="summary"') : dom.index("</table>", dom.index('id="summary"'))]
    for key in MOTION + PRESERVATION:
        assert f"<td>{key}</td>" in summary
    assert 'id="judge"' in dom and "judge, instruction:" in dom


def _evaluation(folder: Path, instruction: str, scores: dict[str, float | None], shade: int) -> Path:
    """An evaluation folder as `evaluate` writes it, made by hand: two pairs, three systems each."""
    folder.mkdir(parents=True)
    (folder / "images").mkdir()
    rows = []
    for key, score in scores.items():
        for system in ("model", "no_edit", "oracle"):
            name = f"images/{key}-{system}.jpg"
            Image.new("RGB", (32, 32), (shade, 40 * len(rows) % 256, 90)).save(folder / name)
            rows.append({"key": key, "system": system, "caption_version": "", "instruction": instruction,
                         "image": name, "pck@0.1": score if system == "model" else 1.0, "mas": 0.5})  # fmt: skip
    pd.DataFrame(rows).to_parquet(folder / "samples.parquet", index=False)
    summary = {"pck@0.1": 0.5, "mas": 0.5, "samples": len(scores)}
    metrics = {"model": summary, "no_edit": summary, "oracle": summary, "checkpoint": str(folder), "inference_steps": 2}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_markup_in_an_instruction_is_shown_as_text_and_two_checkpoints_side_by_side(tmp_path):
    from training.page import write_page

    attack = "raise <b>your</b> arm<script>document.title='pwned'</script>"
    attack += "<img src=x onerror=\"document.body.id='pwned'\">"
    a = _evaluation(tmp_path / "a", attack, {"k1": 0.9, "k2": 0.1}, 200)
    b = _evaluation(tmp_path / "b", attack, {"k1": 0.3, "k3": 0.2}, 20)
    page = write_page(a, compare=b)
    text = page.read_text()
    assert "<script" not in text and "<img src=x" not in text and "&lt;script&gt;" in text
    dom = _dom(page, tmp_path)
    assert "<script" not in dom and 'id="pwned"' not in dom and "<title>pwned" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom.replace("&#39;", "'")
    keys = re.findall(r'<tr class="edit-row" data-key="([^"]+)"', dom)
    assert keys == ["k2", "k1"]  # worst first
    srcs = re.findall(r'<img class="edit-b" src="([^"]+)"', dom)
    assert srcs == ["../b/images/k1-model.jpg"] and "not in B" in dom  # k2 was not evaluated in B
    assert (page.parent / srcs[0]).is_file()


def test_evaluate_bad_inputs_are_one_line_errors(checkpoint, held_out, real_build, tmp_path):
    _, out, _ = real_build
    cases = [
        (["--checkpoint", str(tmp_path), "--shards", str(held_out)], "not a training checkpoint"),
        (["--checkpoint", str(checkpoint), "--shards", str(out)], "no held-out pairs"),
        (["--checkpoint", str(checkpoint), "--shards", str(tmp_path / "none-*.tar")], "no shards match"),
    ]
    for args, msg in cases:
        r = run(["evaluate", *args, "--output", str(tmp_path / "e")])
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and msg in r.stderr, r.stderr[-2000:]


def test_the_regulariser_anchor_lives_where_the_prepared_model_does(real_build, tmp_path, monkeypatch):
    """accelerate's prepare moves the model (to the GPU, or here to float64, standing in for a move): the
    anchor must be taken after it, on the same device and in the same dtype."""
    from accelerate import Accelerator

    _, out, _ = real_build
    real_prepare = Accelerator.prepare

    def moving_prepare(self, *objs):
        objs = [o.to(torch.float64) if isinstance(o, torch.nn.Module) else o for o in objs]
        return real_prepare(self, *objs)

    monkeypatch.setattr(Accelerator, "prepare", moving_prepare)
    cfg = TrainConfig(
        shards=[str(out)], output=str(tmp_path / "run"), resolution=32, train_batch_size=2, max_train_steps=1,
        regularizer_weight=0.1, shuffle_buffer=0,
    )  # fmt: skip
    t = Trainer(cfg)
    assert t.anchor is not None and len(t.anchor) == len(t.params)
    for p, a in zip(t.params, t.anchor, strict=True):
        assert p.device == a.device and p.dtype == a.dtype == torch.float64
    t.parts.vae.to(torch.float64)
    t.parts.text_encoder.to(torch.float64)
    t.weight_dtype = torch.float64
    t.null_text = t.null_text.to(torch.float64)
    import random

    losses = t.loss(next(t.batches()), random.Random(0))
    reg = losses["loss_reg"].detach()
    assert torch.isfinite(reg) and float(reg) == 0.0  # nothing moved yet


def test_two_processes_write_one_metrics_line_per_step_and_an_intact_checkpoint(real_build, tmp_path):
    _, out, _ = real_build
    run_dir = tmp_path / "run"
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "flows.cli", "train", "--shards", str(out), "--output", str(run_dir), "--resolution", "32",
           "--train-batch-size", "1", "--max-train-steps", "4", "--checkpointing-steps", "2",
           "--checkpoints-total-limit", "1", "--validation-steps", "2", "--validation-samples", "1",
           "--shuffle-buffer", "0"]  # fmt: skip
    env = os.environ.copy() | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]  # one line per logged step, not one per process
    ckpts = sorted(p.name for p in run_dir.glob("checkpoint-*"))
    assert ckpts == ["checkpoint-4"]
    files = {p.name for p in (run_dir / "checkpoint-4").iterdir()}
    assert {"trainer_state.json", "model.safetensors"} <= files
    assert json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text())["step"] == 4
    assert sorted(p.name for p in (run_dir / "validation").iterdir()) == ["step-000002.png", "step-000004.png"]


def test_edit_uses_the_training_crop(tmp_path):
    from training.edit import edit_input
    from training.transforms import PairTransform, center_crop_geometry

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)  # wide: squashing it would distort
    got = np.asarray(edit_input(Image.fromarray(img), 64))
    want = center_crop_geometry(90, 160, 64).image(img)
    assert got.shape == (64, 64, 3) and np.array_equal(got, want)
    # the same crop training sees without augmentation
    from test_schemas import pair

    from schemas.shard import ShardSample

    s = ShardSample(key="k", pair=pair(), before=img, after=img)
    t = PairTransform(64, flip_p=0.0, random_crop=False)(s)["before"]
    assert np.array_equal(((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8), want)


def test_the_loader_keeps_workers_and_resumes_without_decoding_what_it_skips(real_build, tmp_path, monkeypatch):
    import training.data as data

    _, out, _ = real_build
    base = dict(shards=[str(out)], resolution=32, train_batch_size=2, shuffle_buffer=0, max_train_steps=3)
    loader = Trainer(TrainConfig(output=str(tmp_path / "w"), num_workers=2, **base)).make_loader(0)
    assert loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
    calls = []
    real = data.decode_image
    monkeypatch.setattr(data, "decode_image", lambda b, *a, **k: calls.append(1) or real(b, *a, **k))
    t = Trainer(TrainConfig(output=str(tmp_path / "r"), **base))
    t.batches_in_epoch = 2  # as after a resume from a checkpoint two batches into the epoch
    batch = next(t.batches())
    assert batch["before"].shape[0] == 2
    assert len(calls) == 2 * 2  # two samples, two images each: the four skipped samples were never decoded


def test_eval_steps_log_the_held_out_figures_and_never_train_on_them(real_build, held_out, tmp_path):
    _, out, stats = real_build
    cfg = TrainConfig(
        shards=[str(out), str(held_out)], output=str(tmp_path / "run"), resolution=128, train_batch_size=2,
        max_train_steps=2, eval_steps=2, eval_samples=2, eval_inference_steps=2, shuffle_buffer=0,
    )  # fmt: skip
    t = Trainer(cfg)
    assert len(t.eval_cases) == 2
    # one epoch is exactly the train split: the held-out shards' pairs never come up
    data, keys = t.batches(), []
    while t.epoch == 0:
        keys += list(next(data)["key"])
    keys = keys[:-2]  # the batch that started epoch 1
    assert len(keys) == stats["pairs"] and len(set(keys)) == len(keys)
    t = Trainer(cfg)
    t.train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["step"] == 2 and last["eval_oracle_pck@0.1"] >= last["eval_no_edit_pck@0.1"]
    assert last["eval_no_edit_background_ssim"] == 1.0 and "eval_model_direction_agreement" in last
    assert last["eval_oracle_mas"] == 1.0 and last["eval_no_edit_mas"] == 0.0


def test_a_joint_the_crop_cuts_away_is_not_visible_in_ground_truth_or_prediction():
    """The right wrist moves from inside the centre crop to past its left edge: it is neither a joint
    to find nor a joint that moved, and a prediction that puts it past the edge neither scores nor
    misses it. The torso length still comes from the whole body."""
    from test_schemas import pair

    from schemas.records import KP
    from schemas.shard import ShardSample
    from training.evaluate import Scorer, crop_case
    from training.metrics import moved_joints, torso_length, visible
    from training.transforms import center_crop_geometry

    p = pair()  # a 64 x 48 frame: the 32 px centre crop keeps source x from 7.5 to 55.5
    wrist = KP["right_wrist"]
    p.before_pose.keypoints[wrist] = [20.0, 30.0, 0.9]
    p.after_pose.keypoints[wrist] = [2.0, 30.0, 0.9]  # past the crop's left edge
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    case = crop_case(ShardSample(key="k", pair=p, before=img, after=img), 32)
    g = center_crop_geometry(48, 64, 32)
    whole = g.keypoints(np.asarray(p.after_pose.keypoints), mask=False)
    assert whole[wrist, 0] < 0  # the wrist is really outside
    assert not visible(case.kp_after)[wrist] and visible(case.kp_before)[wrist]
    assert case.kp_after[wrist, 2] == pytest.approx(0.9)  # the raw confidence is kept
    assert visible(case.kp_after).sum() == 16
    assert case.torso == pytest.approx(torso_length(whole))
    assert not moved_joints(case.kp_before, case.kp_after, case.torso)[wrist]
    # a detector that places the wrist past the edge (as YOLO extrapolates): masked the same way
    pred = whole.copy()
    pred[wrist, 0] = -20.0
    from training.transforms import mask_to_view

    row = Scorer.score(case, case.after, mask_to_view(pred, 32, 32))
    assert row["pck@0.05"] == 1.0 and row["oks"] == pytest.approx(1.0)
    # and a wrist predicted inside the crop, where the ground truth has none, costs nothing either
    pred[wrist, :2] = [16.0, 16.0]
    assert Scorer.score(case, case.after, pred)["pck@0.05"] == 1.0


def test_judge_and_page_option_mistakes_are_one_line_errors_before_any_work(tmp_path, capsys, monkeypatch):
    from flows.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    base = ["evaluate", "--checkpoint", str(tmp_path / "none"), "--shards", str(tmp_path), "--output", str(tmp_path)]
    for extra, message in [
        (["--judge", "openai"], "--judge openai needs --model"),
        (["--judge", "openai", "--model", "m"], "no API key: set $OPENAI_API_KEY"),
        (["--judge", "openai", "--model", "m", "--max-requests", "-1"], "judge options: max_requests"),
        (["--html", "--sort-by", "nope"], "--sort-by 'nope': not a score"),
        (["--compare", str(tmp_path)], "not an evaluation folder"),
    ]:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
