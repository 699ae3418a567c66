"""Yield by class: for each source and each action label, the clips that went in, the clips and pairs
that came out and the reasons the rest were rejected, sorted so the classes that give nothing come first
(the most clips lost first). stats.json carries it (`yield`), the report and the dataset card show it.

A clip's class is its label (Kinetics' class, NTU's action name); an EPIC narration ("take plate") is too
fine to be a class, so EPIC's class is its verb. Clips without one (a plain folder) are "(no label)".
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import pandas as pd

NO_LABEL = "(no label)"
CLASS_FIELD = {"epic": "verb"}  # a source whose class is one of its own fields, not the label
TOP_REASONS = 3


def class_of(source: str, label: str | None, extra: dict[str, Any] | str | None) -> str:
    field = CLASS_FIELD.get(source)
    if field:
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except ValueError:
                extra = {}
        value = (extra or {}).get(field)
        if value:
            return str(value)
    return label if isinstance(label, str) and label else NO_LABEL


def _rows(
    clips: dict[tuple[str, str], dict[str, Any]], samples: pd.DataFrame, rejects: pd.DataFrame, key
) -> list[dict[str, Any]]:
    accepted: dict[Any, set[str]] = defaultdict(set)
    pairs: Counter = Counter()
    for source, cid in zip(samples.get("source", []), samples.get("clip_id", []), strict=True):
        k = key(clips.get((source, cid), {"source": source}))
        accepted[k].add(cid)
        pairs[k] += 1
    clips_in: dict[Any, set[str]] = defaultdict(set)
    for (_, cid), meta in clips.items():
        clips_in[key(meta)].add(cid)
    reasons: dict[Any, Counter] = defaultdict(Counter)
    rejected: dict[Any, set[str]] = defaultdict(set)
    if len(rejects):
        clip_level = rejects[rejects["level"] == "clip"]
        for source, cid, stage, reason in zip(
            clip_level.source, clip_level.clip_id, clip_level.stage, clip_level.reason, strict=True
        ):
            k = key(clips.get((source, cid), {"source": source}))
            reasons[k][f"{stage}/{reason}"] += 1
            rejected[k].add(cid)
    out = []
    for k in set(clips_in) | set(accepted) | set(rejected):
        n_in = len(clips_in[k] | accepted[k] | rejected[k])
        row = dict(zip(("source", "label"), k, strict=False)) if isinstance(k, tuple) else {"source": k}
        row |= {
            "clips_in": n_in,
            "clips_accepted": len(accepted[k]),
            "clips_rejected": len(rejected[k]),
            "pairs": pairs[k],
            "yield": round(pairs[k] / n_in, 3) if n_in else 0.0,
            "top_reasons": [{"reason": r, "clips": n} for r, n in reasons[k].most_common(TOP_REASONS)],
        }
        out.append(row)
    # nothing out first, the most clips lost first; then by pairs per clip
    out.sort(key=lambda r: (r["pairs"] > 0, -r["clips_in"] if r["pairs"] == 0 else r["yield"], str(r.get("label"))))
    return out


def yield_by_class(clips: list[dict[str, Any]], samples: pd.DataFrame, rejects: pd.DataFrame) -> dict[str, Any]:
    """clips: every clip that went in ({"source", "clip_id", "label", "extra"}: the listed clips and the
    ingest rejects); samples and rejects: the generation's manifests."""
    cols = ["source", "clip_id", "label", "extra"]
    samples = samples[[c for c in cols if c in samples]] if len(samples) else samples
    rejects = rejects[[c for c in [*cols, "stage", "reason", "level"] if c in rejects]] if len(rejects) else rejects
    meta = {(c["source"], c["clip_id"]): c for c in clips}
    for r in rejects.to_dict("records") if len(rejects) else []:  # a reject names its clip's class too
        meta.setdefault((r["source"], r["clip_id"]), r)
    for r in samples.to_dict("records") if len(samples) else []:
        meta.setdefault((r["source"], r["clip_id"]), r)
    by_class = {
        k: v | {"class": class_of(v["source"], v.get("label"), v.get("extra"))} for k, v in meta.items()
    }  # fmt: skip
    return {
        "by_source": _rows(by_class, samples, rejects, lambda m: m["source"]),
        "by_label": _rows(by_class, samples, rejects, lambda m: (m["source"], m.get("class", NO_LABEL))),
        "class_field": dict(CLASS_FIELD),
    }
