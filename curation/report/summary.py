"""What `inspect` and `eval` show of a finished build, as plain data read through the store's pointer
(one generation, whatever a writer does meanwhile); the CLI only prints it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd

from schemas.captions import CaptionStatus
from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE
from schemas.records import OFFLINE_VERSION, caption_version

from ..captions.rows import read_caption_rows
from ..store import Committed, StoreError, committed, is_remote
from .labels import check_labels, pair_precision, read_labels, read_pair_labels

COUNTS = ("clips_in", "clips_accepted", "clips_rejected", "pairs", "shards", "candidate_rejects", "ignored_files")


@dataclass
class BuildSummary:
    generation: str
    tars: int
    stats: dict[str, Any]
    rejected: list[tuple[str, str, int, list[str]]]  # stage, reason, clips, the first clip ids
    by_source: list[tuple[str, int, int, str]]  # source, clips, pairs, first caption
    caption_versions: list[tuple[str, ...]] = field(default_factory=list)  # see caption_tables
    caption_runs: list[tuple[str, ...]] = field(default_factory=list)


def finished_build(out: str | Path) -> Committed:
    """The output's current generation, read through its pointer; StoreError naming the output when it
    holds no finished build."""
    try:
        return committed(str(out).rstrip("/"))
    except StoreError as e:
        raise StoreError(f"{out} holds no finished build ({e})") from e


def build_summary(out: str | Path) -> BuildSummary:
    """Counts, rejected clips by stage and reason, pairs by source, and (a local output) the caption
    versions and caption runs of a finished build; StoreError when there is none."""
    base = str(out).rstrip("/")
    gen = finished_build(base)
    with fsspec.open(gen.file_url(STATS_FILE), "rb") as f:
        stats = json.loads(f.read())
    rejects = pd.read_parquet(gen.file_url(REJECTS_FILE))
    clip_level = rejects[rejects["level"] == "clip"]
    rejected = [
        (stage, reason, len(g), list(g["clip_id"].head(3)))
        for (stage, reason), g in clip_level.groupby(["stage", "reason"], sort=True)
    ]
    samples = pd.read_parquet(gen.file_url(SAMPLES_FILE), columns=["source", "clip_id", "caption"])
    by_source = [
        (source, g["clip_id"].nunique(), len(g), str(g["caption"].iloc[0]))
        for source, g in samples.groupby("source", sort=True)
    ]
    summary = BuildSummary(gen.generation, len(gen.shards), stats, rejected, by_source)
    if not is_remote(base):  # caption rows are read from a local output
        summary.caption_versions, summary.caption_runs = caption_tables(Path(base))
    return summary


def caption_tables(out: Path) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The caption versions a build holds (what `publish --caption-version` and `train --caption-version`
    choose from): (version, pairs with a usable caption, pairs whose attempts failed, pairs publishing
    it, agree, contradict, unchecked); and its caption runs: (run, version, paid requests, cached,
    tokens in, tokens out, cost USD, failures)."""
    cols = ["caption_captioner", "caption_model", "caption_prompt_version"]
    samples = pd.read_parquet(out / SAMPLES_FILE, columns=cols)
    published = [
        OFFLINE_VERSION if c == OFFLINE_VERSION else caption_version(m, p)
        for c, m, p in samples.itertuples(index=False)
    ]
    rows = read_caption_rows(out)
    versions = [(OFFLINE_VERSION, str(len(samples)), "0", str(published.count(OFFLINE_VERSION)), "", "", "")]
    for version, g in rows.groupby("caption_version", sort=True):
        ok_rows = g[g.status == CaptionStatus.OK].drop_duplicates("pair_id", keep="last")
        ok = set(ok_rows.pair_id)
        bad = set(g[g.status != CaptionStatus.OK].pair_id) - ok
        agreement = ok_rows.pose_agreement.fillna("not_checkable").value_counts()
        versions.append(
            (
                version,
                str(len(ok)),
                str(len(bad)),
                str(published.count(version)),
                *(str(int(agreement.get(k, 0))) for k in ("agree", "contradict", "not_checkable")),
            )
        )
    runs = []
    for (run, version), g in rows.groupby(["run_id", "caption_version"], sort=True):
        paid = g[~g.cached.fillna(False).astype(bool)]
        fails = g[g.status == CaptionStatus.FAILED].reason.value_counts()
        runs.append(
            (
                run,
                version,
                str(len(paid)),
                str(len(g) - len(paid)),
                str(int(paid.tokens_in.fillna(0).sum())),
                str(int(paid.tokens_out.fillna(0).sum())),
                f"{paid.cost_usd.fillna(0).sum():.4f}",
                ", ".join(f"{k} {n}" for k, n in fails.items()) or "-",
            )
        )
    return versions, runs


@dataclass
class Evaluation:
    result: Any  # labels.LabelResult
    accepted: dict[str, list[tuple[str, str, str]]]  # file -> (clip_id, pair_id, caption) of its accepted pairs
    pairs: dict[str, Any] | None  # pair_precision's figures, with pair labels

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"accuracy": self.result.accuracy, "rows": self.result.rows}
        if self.pairs is not None:
            doc["pairs"] = self.pairs
        return doc


def evaluate_labels(out: str | Path, labels_file: str, pair_label_files: list[str] | None = None) -> Evaluation:
    """A finished build's decisions against a labelled list of its inputs (and its accepted pairs
    against pair labels: the first file named wins where two label a pair). LabelError for a labels
    file that cannot be used, StoreError when the output holds no finished build."""
    labels = read_labels(labels_file)
    pair_labels = None
    for f in reversed(pair_label_files or []):
        pair_labels = (pair_labels or {}) | read_pair_labels(f)
    gen = finished_build(out)
    samples = pd.read_parquet(gen.file_url(SAMPLES_FILE), columns=["uri", "clip_id", "pair_id", "caption"])
    rejects = pd.read_parquet(gen.file_url(REJECTS_FILE))
    result = check_labels(samples, rejects, labels, pair_labels)
    names = samples.uri.map(lambda u: u.rstrip("/").rsplit("/", 1)[-1])
    accepted: dict[str, list[tuple[str, str, str]]] = {}
    for file, row in zip(names, samples.itertuples(), strict=True):
        accepted.setdefault(file, []).append((row.clip_id, row.pair_id, row.caption))
    pairs = pair_precision(samples, pair_labels) if pair_labels is not None else None
    return Evaluation(result, accepted, pairs)
