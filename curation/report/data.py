"""What the QA report shows, read through the store's pointer (one generation, local or fsspec URL):
the build's files, the clip funnel, the caption tables, the figures of a pair. No pictures, no HTML
(report/pictures.py, report/page.py)."""

from __future__ import annotations

import json
import math
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE

from ..captions.rows import read_caption_rows
from ..config import MotionConfig, QualityConfig
from ..errors import RunError
from ..store import StoreError, committed, is_remote

# the clip-level funnel, in the order decisions are taken (stage, reason)
FUNNEL = [
    ("listed", ("missing_file", "empty_file", "bad_annotation", "excluded", "duplicate@ingest")),
    ("decoded", ("unreadable", "truncated", "too_few_frames", "segment_out_of_range")),
    ("a person seen", ("no_person",)),
    ("one person", ("multiple_people", "identity_switch")),
    ("a whole body in frame", ("partial_body", "no_valid_window")),
    ("large enough", ("too_small",)),
    ("one shot, still camera", ("shot_cut", "camera_motion")),
    ("sharp", ("blurry",)),
    ("moves enough", ("low_motion",)),
    ("captioned, not a duplicate", ("caption_failed", "duplicate", "internal_error", "io_error")),
]


class ReportError(RunError, ValueError):
    """No report can be made (one line for the user)."""


@dataclass
class Build:
    url: str
    generation: str | None
    stats: dict[str, Any]
    samples: pd.DataFrame
    rejects: pd.DataFrame
    shards: dict[str, str]  # tar name -> readable URL
    captions: pd.DataFrame | None
    samples_url: str | None = None  # the manifest (samples holds its columns but the pose lists)


def load_build(url: str) -> Build:
    """The current generation of an output; a folder without one (an empty or failed build) gives an
    empty Build, a path that does not exist is a ReportError."""
    base = str(url).rstrip("/")
    if not is_remote(base) and not Path(base).is_dir():
        raise ReportError(f"{base} does not exist or is not a folder")
    try:
        gen = committed(base)
    except StoreError:
        if is_remote(base):
            fs, path = fsspec.core.url_to_fs(base)
            if not fs.exists(path):
                raise ReportError(f"{base} does not exist") from None
        return Build(base, None, {}, pd.DataFrame(), pd.DataFrame(), {}, None)
    with fsspec.open(gen.file_url(STATS_FILE), "rb") as f:
        stats = json.loads(f.read())
    samples = pd.read_parquet(gen.file_url(SAMPLES_FILE), columns=light_columns(gen.file_url(SAMPLES_FILE)))
    rejects = pd.read_parquet(gen.file_url(REJECTS_FILE))
    captions = None
    if not is_remote(base):
        captions = read_caption_rows(Path(base))
    shards = {s.name: s.url for s in gen.shards}
    return Build(base, gen.generation, stats, samples, rejects, shards, captions, gen.file_url(SAMPLES_FILE))


POSE_COLUMNS = ["before_keypoints", "before_box", "after_keypoints", "after_box"]


def light_columns(url: str) -> list[str]:
    """The manifest's columns but its lists (poses, boxes, matrices: most of its bytes, as Python objects
    in a DataFrame many times more): the report reads those only for the pairs it draws (`pose_rows`)."""
    with fsspec.open(url, "rb") as f:
        schema = pq.read_schema(f)
    return [f.name for f in schema if not pa.types.is_list(f.type) and not pa.types.is_fixed_size_list(f.type)]


def pose_rows(url: str, pair_ids: list[str]) -> pd.DataFrame:
    """pair_id and the pose lists of these pairs (pyarrow filters the manifest a batch at a time)."""
    with fsspec.open(url, "rb") as f:
        names = pq.read_schema(f).names
    columns = ["pair_id", *(c for c in POSE_COLUMNS if c in names)]
    with fsspec.open(url, "rb") as f:
        wanted = pc.field("pair_id").isin(pa.array(sorted(set(pair_ids)), pa.string()))
        return pq.read_table(f, columns=columns, filters=wanted).to_pandas()


def tar_samples(url: str):
    """The samples of one tar (a path or an fsspec URL) as {"__key__", member suffix: bytes}, streamed."""
    with fsspec.open(url, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        current: dict[str, Any] = {}
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, _, suffix = base.partition(".")
            key = f"{folder}/{stem}" if folder else stem
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[suffix] = tar.extractfile(member).read()
        if current:
            yield current


def threshold(config: dict[str, Any], key: str) -> float | None:
    """A figure's threshold from the build's config (the default where the config leaves it out)."""
    section, name = key.split(".")
    value = (config.get(section) or {}).get(name)
    if value is None:
        default = {"motion": MotionConfig(), "quality": QualityConfig()}.get(section)
        value = getattr(default, name, None)
    return float(value) if value is not None else None


def funnel(stats: dict[str, Any], rejects: pd.DataFrame) -> list[dict[str, Any]]:
    """Clips left after each decision step, with the clips each step removed by reason."""
    clips = rejects[rejects["level"] == "clip"] if len(rejects) else rejects
    removed: Counter[str] = Counter()
    for stage, reason in zip(clips.get("stage", []), clips.get("reason", []), strict=True):
        removed[f"{reason}@ingest" if stage == "ingest" and reason == "duplicate" else reason] += 1
    left = int(stats.get("clips_in", 0))
    steps = [{"step": "clips in", "left": left, "removed": {}}]
    for name, reasons in FUNNEL:
        gone = {r.split("@")[0]: removed[r] for r in reasons if removed[r]}
        left -= sum(gone.values())
        steps.append({"step": name, "left": left, "removed": gone})
    steps.append({"step": "pairs", "left": int(stats.get("pairs", 0)), "removed": {}})
    return steps


def captions_by_pair(build: Build) -> dict[str, list[tuple[str, str, str | None]]]:
    """Per pair: (version, text, why the keypoints contradict it or None), the published caption first."""
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for pid, text in zip(build.samples.get("pair_id", []), build.samples.get("caption", []), strict=True):
        if text:
            out.setdefault(pid, []).append(("published", text, None))
    if build.captions is not None and len(build.captions):
        ok = build.captions[build.captions.status == "ok"].sort_values("created_at")
        ok = ok.drop_duplicates(["pair_id", "caption_version"], keep="last")
        for pid, version, text, agreement, detail in zip(
            ok.pair_id, ok.caption_version, ok.text, ok.pose_agreement, ok.agreement_detail, strict=True
        ):
            flag = (detail or "contradicted") if agreement == "contradict" else None
            out.setdefault(pid, []).append((version, text, flag))
    return out


def caption_table(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per caption version (and the published captions) of stats.json's caption_quality."""
    q = stats.get("caption_quality") or {}
    rows = []
    for version, f in [*(q.get("versions") or {}).items(), ("published", q.get("published"))]:
        if not f:
            continue
        a = f.get("agreement") or {}
        by = a.get("contradicted_by") or {}
        top = (f.get("top") or [{}])[0]
        mix = ", ".join(f"{k} {v}" for k, v in (f.get("by_captioner") or {}).items())
        rows.append(
            {
                "version": version,
                "captioner": f.get("captioner") or mix,
                "pairs": f.get("pairs", 0),
                "missing": f.get("missing", ""),
                "empty": f.get("empty", 0),
                "exact": f.get("exact_duplicates", 0),
                "near": f.get("near_duplicates", 0),
                "distinct": f.get("distinct", 0),
                "top": top.get("text", ""),
                "top_share": f"{f.get('top_share', 0):.0%}",
                "short": f.get("too_short", 0),
                "long": f.get("too_long", 0),
                "vocabulary": f.get("vocabulary", 0),
                "contradicted": a.get("contradict", "") if a else "",
                "contradicted_by": " / ".join(str(by.get(k, 0)) for k in ("side", "direction", "limb")) if a else "",
                "agree": a.get("agree", "") if a else "",
                "abstained": f.get("abstained", ""),
                "failed": sum((f.get("failed") or {}).values()) if "failed" in f else "",
            }
        )
    return rows


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    if n <= k:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


FIGURES = [
    ("pose_change", "pose change", "{:.2f}"),
    ("camera_motion", "camera", "{:.3f}"),
    ("person_height", "person height", "{:.2f}"),
    ("sharpness", "sharpness", "{:.2f}"),
    ("background_match", "background match", "{:.2f}"),
    ("other_person_score", "other person", "{:.2f}"),
    ("lr_margin", "left/right margin", "{:.2f}"),
]


def figures(row: pd.Series) -> list[tuple[str, str]]:
    out = []
    for col, label, fmt in FIGURES:
        v = row.get(col)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.append((label, fmt.format(v)))
    return out
