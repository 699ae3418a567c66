"""OUT/README.md: a dataset card in the Hugging Face convention, regenerated with the manifests.

The YAML header declares licences per source, task categories, size category, a config pointing at
the shards and the features of a sample, so `datasets.load_dataset(OUT)` reads the output as it is:
without declared features the loader infers them from the first shard and fails on a build that mixes
a labelled source (Kinetics: `label` is a string) with an unlabelled one (a folder: `label` is null).
The features come from schemas.records (the one definition of a sample), plus the dataset-specific ids
the build's clips carry in `clip.extra`."""

from __future__ import annotations

import json
import types
import typing
from datetime import datetime
from enum import Enum
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel

from schemas.records import FramePair
from schemas.shard import AFTER, BEFORE, META

from .page import caption_table

TASKS = ["image-to-image"]


def _dtype(annotation: Any, extra_keys: dict[str, str]) -> dict[str, Any]:
    """An HF YAML feature body ({"dtype": ...} / {"struct": [...]} / {"list": ...}) for a type."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _dtype(args[0], extra_keys)
    if origin is typing.Annotated:
        return _dtype(args[0], extra_keys)
    if origin is typing.Literal:
        return {"dtype": "string"}
    if origin is list:
        inner = _dtype(args[0], extra_keys)
        return {"list": inner.get("dtype", inner.get("struct", inner))} if "name" not in inner else {"list": inner}
    if origin is dict:  # Clip.extra: the dataset ids this build's clips carry
        return {"struct": [{"name": k, "dtype": t} for k, t in sorted(extra_keys.items())]}
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return {"struct": _fields(annotation, extra_keys)}
        if issubclass(annotation, bool):
            return {"dtype": "bool"}
        if issubclass(annotation, int) and not issubclass(annotation, Enum):
            return {"dtype": "int64"}
        if issubclass(annotation, float):
            return {"dtype": "float64"}
        if issubclass(annotation, (str, Enum, datetime)):
            return {"dtype": "string"}
    raise TypeError(f"no feature type for {annotation!r}")


def _fields(model: type[BaseModel], extra_keys: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for name, f in model.model_fields.items():
        body = _dtype(f.annotation, extra_keys)
        out.append({"name": name, **body})
    return out


def extra_key_types(samples: pd.DataFrame) -> dict[str, str]:
    """The keys of clip.extra across the build's samples and one dtype each (float64 when ints and
    floats mix, string when anything else does)."""
    kinds: dict[str, set[str]] = {}
    for text in samples.get("extra", pd.Series(dtype=str)).dropna():
        for k, v in json.loads(text).items():
            if v is None:
                kinds.setdefault(k, set())
                continue
            t = (
                "bool"
                if isinstance(v, bool)
                else "int64"
                if isinstance(v, int)
                else "float64"
                if isinstance(v, float)
                else "string"
            )
            kinds.setdefault(k, set()).add(t)
    out = {}
    for k, ts in kinds.items():
        if ts <= {"int64"} and ts:
            out[k] = "int64"
        elif ts <= {"int64", "float64"} and ts:
            out[k] = "float64"
        elif ts == {"bool"}:
            out[k] = "bool"
        else:
            out[k] = "string"
    return out


def features(samples: pd.DataFrame) -> list[dict[str, Any]]:
    """The features of one webdataset sample as the HF loader yields it."""
    return [
        {"name": META, "struct": _fields(FramePair, extra_key_types(samples))},
        {"name": BEFORE, "dtype": "image"},
        {"name": AFTER, "dtype": "image"},
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
    ]


def _describe(feature: dict[str, Any]) -> str:
    if "dtype" in feature:
        return feature["dtype"]
    if "struct" in feature:
        return "struct(" + ", ".join(f["name"] for f in feature["struct"]) + ")"
    inner = feature.get("list")
    if isinstance(inner, str):
        return f"list of {inner}"
    if isinstance(inner, dict):
        return f"list of ({_describe(inner)})"
    return "list of struct(" + ", ".join(f["name"] for f in inner) + ")"


def md(value: Any) -> str:
    """Text from the data for a markdown table cell: no markup (HTML escaped), no cell break, one line."""
    import html

    text = " ".join(str(value).split())
    return html.escape(text, quote=False).replace("|", "\\|").replace("`", "\\`")


def caption_lines(stats: dict[str, Any]) -> list[str]:
    """The caption quality figures (stats.json's caption_quality) as a section of the card."""
    q = stats.get("caption_quality") or {}
    if not q:
        return []
    lines = [
        "## Captions",
        "",
        "Each caption version measured as a set: empty (blank, or a sentence that says nothing), exact and",
        "near duplicates across the dataset, too short or long, vocabulary, and the captions the keypoints",
        "contradict (a side, a direction or a limb they refute).",
        "",
        "| caption version | pairs | empty | exact dup. | near dup. | distinct | most frequent (share) "
        "| too short / long | vocabulary | contradicted (side/direction/limb) | abstained / failed |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in caption_table(stats):
        contradicted = f"{r['contradicted']} ({r['contradicted_by']})" if r["contradicted"] != "" else "-"
        gone = r["abstained"] if r["abstained"] != "" else (r["failed"] if r["failed"] != "" else "-")
        lines.append(
            f"| `{md(r['version'])}` | {r['pairs']} | {r['empty']} | {r['exact']} | {r['near']} | {r['distinct']} "
            f"| {md(str(r['top'])[:80])} ({r['top_share']}) | {r['short']} / {r['long']} | {r['vocabulary']} "
            f"| {contradicted} | {gone} |"
        )
    lines.append("")
    for w in q.get("warnings") or []:
        lines.append(f"- **warning**: {md(w)}")
    if q.get("warnings"):
        lines.append("")
    return lines


CARD_YIELD_ROWS = 100  # action labels listed in the card (those that give nothing first)


def yield_lines(stats: dict[str, Any]) -> list[str]:
    """Clips in, pairs out and top reject reasons per source and per action label (stats.json's yield)."""
    y = stats.get("yield") or {}
    if not y:
        return []

    def reasons(r: dict[str, Any]) -> str:
        return ", ".join(f"{md(t['reason'])} {t['clips']}" for t in r.get("top_reasons", [])) or "-"

    lines = ["## Yield per source and per action label", "",
             "Clips in, clips and pairs out, and why the rest were rejected; classes that give nothing first.", "",
             "| source | clips in | clips accepted | pairs | pairs per clip in | top reject reasons |",
             "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in y.get("by_source", []):
        lines.append(
            f"| {md(r['source'])} | {r['clips_in']} | {r['clips_accepted']} | {r['pairs']} | {r['yield']} "
            f"| {reasons(r)} |"
        )
    labels = y.get("by_label", [])
    lines += ["", "| source | label | clips in | clips accepted | pairs | pairs per clip in | top reject reasons |",
              "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in labels[:CARD_YIELD_ROWS]:
        lines.append(
            f"| {md(r['source'])} | {md(r['label'])} | {r['clips_in']} | {r['clips_accepted']} | {r['pairs']} "
            f"| {r['yield']} | {reasons(r)} |"
        )
    if len(labels) > CARD_YIELD_ROWS:
        lines.append(f"\n{CARD_YIELD_ROWS} of {len(labels)} labels listed; `stats.json` (`yield`) has them all.")
    return [*lines, ""]


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def card(stats: dict[str, Any], samples: pd.DataFrame, rejects: pd.DataFrame, shard_names: list[str]) -> str:
    """The README.md text: YAML header, then provenance, method, schema, counts and limitations."""
    licences = (
        samples.groupby("source")["licence"].agg(lambda s: sorted({str(x) for x in s.dropna() if x}))
        if len(samples)
        else pd.Series(dtype=object)
    )
    header = {
        "license": "other",
        "license_name": "per-source",
        "license_details": "; ".join(f"{src}: {', '.join(v) or 'not stated'}" for src, v in licences.items())
        or "no samples",
        "task_categories": TASKS,
        "tags": ["pose", "human-motion", "instruction-based-image-editing", "webdataset"],
        "size_categories": [size_category(len(samples))],
        "pretty_name": "motionpairs before/after motion pairs",
        # the current generation's tars by name (an object store's pool also holds older ones)
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": [f"shards/{n}" for n in shard_names] or "shards/*.tar"}],
            }
        ],
        "dataset_info": {"features": features(samples)},
    }
    versions = stats.get("versions", {})
    by_source = (
        samples.groupby(["source", samples["split"].fillna("-")]).agg(
            clips=("clip_id", "nunique"), pairs=("pair_id", "size")
        )
        if len(samples)
        else None
    )
    clip_rejects = rejects[rejects["level"] == "clip"] if len(rejects) else rejects
    reasons = clip_rejects.groupby(["stage", "reason"]).size() if len(clip_rejects) else pd.Series(dtype=int)
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        "# motionpairs: before/after motion pairs",
        "",
        "Before/after frame pairs of one person moving, for training instruction-based image editors",
        "(InstructPix2Pix-style: *raise your left arm*). Each sample is a webdataset record in `shards/*.tar`:",
        f"`<key>.{BEFORE}`, `<key>.{AFTER}` and `<key>.{META}` (the pair's record: both COCO-17 poses with raw",
        "keypoint confidences, motion and quality figures, every caption version, the clip and its source ids).",
        "`samples.parquet` and `rejects.parquet` beside the shards list every pair and every input that gave",
        "none, with the reason.",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("path/to/this/folder", split="train")  # features declared above',
        "```",
        "",
        "## How it was built",
        "",
        "Videos were decoded at sampled times (decord), people and 17 keypoints detected (ultralytics",
        "YOLO-pose), and clips kept where one whole person moves while the camera stays put and the scene",
        "does not change; quality filters then dropped pairs with a small or cut-off person, a half-hidden",
        "second person, blur, swapped left/right labels and near-duplicates. Captions describe the",
        "difference (offline from the keypoints, or a multimodal LLM). See the project README.",
        "",
        f"- config fingerprint: `{stats.get('fingerprint', '?')}`",
        f"- code: `{versions.get('code', '?')}`; pose model: `{versions.get('pose_model', '?')}`; "
        f"engine: `{versions.get('pose_engine', '?')}`; results version {versions.get('results', '?')}",
        f"- finalized: {stats.get('finalized_at', '?')}",
        "",
        "## Counts",
        "",
        f"- clips in: {stats.get('clips_in', 0)}; accepted: {stats.get('clips_accepted', 0)}; "
        f"rejected: {stats.get('clips_rejected', 0)}; pairs: {len(samples)}; "
        f"near-duplicate pairs dropped: {stats.get('near_duplicates', 0)}",
        "",
    ]
    if by_source is not None:
        lines += ["| source | split | clips | pairs |", "|---|---|---:|---:|"]
        lines += [f"| {s} | {sp} | {r.clips} | {r.pairs} |" for (s, sp), r in by_source.iterrows()]
        lines.append("")
    if len(reasons):
        lines += ["| stage | reject reason | clips |", "|---|---|---:|"]
        lines += [f"| {st} | {rs} | {n} |" for (st, rs), n in reasons.items()]
        lines.append("")
    lines += yield_lines(stats)
    lines += caption_lines(stats)
    lines += [
        "## Schema",
        "",
        f"`<key>.{META}` holds the pair's record (`schemas/records.py`, schema_version "
        f"{samples['schema_version'].iloc[0] if len(samples) else 1}); its top-level fields:",
        "",
        "| field | type |",
        "|---|---|",
        *[f"| `{f['name']}` | {_describe(f)} |" for f in features(samples)[0]["struct"]],
        "",
        "Keypoints are 17 COCO `[x, y, confidence]` in pixels of the stored JPEG with the detector's raw",
        "confidences; a location the detector did not give is null. `samples.parquet` has the same facts",
        "flattened, one row per pair, plus the tar that holds it.",
        "",
        "## Sources and licences",
        "",
        *([f"- **{src}**: {', '.join(v) or 'not stated'}" for src, v in licences.items()] or ["- (no samples)"]),
        "",
        "Frames remain the content of their owners under the licence of each source; check it before use.",
        "",
        "## Known limitations",
        "",
        "- Captions from the offline captioner are templates from keypoint differences: they name the",
        "  largest changes, not everything that changed; LLM captions can be wrong (see the pose agreement",
        "  figures in the caption rows).",
        "- Keypoints are a detector's estimates; left/right can still be wrong on side views (frames whose",
        "  labels contradict the body's facing are dropped, side-on ones cannot be checked).",
        "- One person per pair: scenes with interacting people are left out by design.",
        "- The quality thresholds are defaults chosen on a small labelled set; the figures are stored per",
        "  sample so they can be re-filtered.",
        "",
    ]
    return "\n".join(lines)
