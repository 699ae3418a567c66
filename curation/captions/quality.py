"""Captions measured as a set, per caption version (the offline one and each LLM version), and for the
published captions: what cosmos-curate's caption_quality_stats.json counts, and what the keypoints say.

    pairs             captions of this version among the generation's pairs (missing: pairs without one)
    empty             blank, or a sentinel that says nothing ("n/a", "no change", "change your pose")
    exact_duplicates  captions that repeat another pair's caption word for word (a text said 5 times: 4)
    near_duplicates   further repeats once case, punctuation, word order and small words are ignored
    top               the most frequent texts; top_share: the share of the most frequent one
    too_short/long    fewer than MIN_WORDS / more than MAX_WORDS words
    vocabulary        distinct words over all captions of the version
    agreement         the keypoint check of each caption (offline: its words; LLM: its structured
                      changes): agree / contradict / not_checkable, contradictions by kind (side,
                      direction, limb), contradicted_share of all captions
    abstained         (offline) pairs the captioner would not describe (caption_failed rejects)
    failed            (LLM) attempts without a usable answer, by reason
A version whose figures cross a warning line gets a sentence in `warnings` (a model that answers one
sentence for most pairs, many empty or contradicted captions): the build logs them, the report and the
card show them.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.captions import Agreement, CaptionStatus, MotionChange
from schemas.records import OFFLINE_VERSION, Pose17

from .agreement import KINDS, Verdict, check_caption, check_text
from .offline import ABSTAINED, CAPTIONER
from .rows import read_caption_rows

MIN_WORDS = 2
MAX_WORDS = 40
TOP = 5
SENTINELS = {
    *("", "n/a", "na", "none", "null", "nothing", "no change", "no visible change", "unknown", "same", "the same"),
    *("no", "-", "...", "change your pose"),  # the last: the offline captioner's own "nothing to name"
}
SMALL_WORDS = {"a", "an", "the", "your", "you", "to", "of", "and", "his", "her", "their", "its", "slightly", "then"}
# warning lines
WARN_TOP_SHARE = 0.5  # one text for half the pairs or more (with at least WARN_MIN_PAIRS pairs)
WARN_EMPTY_SHARE = 0.1
WARN_CONTRADICTED_SHARE = 0.1
WARN_MIN_PAIRS = 4


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _strip_label(text: str, label: str | None) -> str:
    return text[len(label) + 2 :] if label and text.startswith(f"{label}: ") else text


_SENTINEL_WORDS = {" ".join(_words(t)) for t in SENTINELS}  # "n/a" -> "n a"


def is_empty(text: str | None, label: str | None = None) -> bool:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return True
    core = " ".join(_words(_strip_label(str(text), label)))
    return core in _SENTINEL_WORDS or not core


def text_figures(texts: list[str | None], labels: list[str | None] | None = None) -> dict[str, Any]:
    """The figures of a set of captions (one per pair) that need only the words."""
    labels = labels or [None] * len(texts)
    n = len(texts)
    empty = sum(is_empty(t, lb) for t, lb in zip(texts, labels, strict=True))
    said = [str(t) for t in texts if t is not None and not (isinstance(t, float) and math.isnan(t))]
    counts = Counter(said)
    exact = sum(c - 1 for c in counts.values() if c > 1)
    keys = Counter(" ".join(sorted(set(_words(t)) - SMALL_WORDS)) for t in said)
    near = sum(c - 1 for c in keys.values() if c > 1) - exact
    lengths = [len(_words(t)) for t in said]
    vocab = {w for t in said for w in _words(t)}
    top = counts.most_common(TOP)
    return {
        "pairs": n,
        "empty": empty,
        "exact_duplicates": exact,
        "near_duplicates": max(near, 0),
        "distinct": len(counts),
        "top": [{"text": t, "pairs": c} for t, c in top],
        "top_share": round(top[0][1] / n, 4) if top and n else 0.0,
        "too_short": sum(x < MIN_WORDS for x in lengths),
        "too_long": sum(x > MAX_WORDS for x in lengths),
        "mean_words": round(float(np.mean(lengths)), 2) if lengths else 0.0,
        "vocabulary": len(vocab),
    }


def _pose(row: dict[str, Any], prefix: str) -> Pose17 | None:
    kps = row.get(f"{prefix}_keypoints")
    if kps is None or (isinstance(kps, float) and math.isnan(kps)):
        return None
    box = row.get(f"{prefix}_box")
    return Pose17(
        keypoints=np.asarray(kps, float).reshape(17, 3).tolist(),
        frame_width=int(row["frame_width"]),
        frame_height=int(row["frame_height"]),
        box=[float(v) for v in box] if box is not None else [0.0, 0.0, 1.0, 1.0],
        score=float(row.get(f"{prefix}_score") or 0.0),
    )


def _agreement(verdicts: list) -> dict[str, Any]:
    got = Counter(v.agreement for v in verdicts)
    kinds = Counter(k for v in verdicts if v.agreement == Agreement.CONTRADICT for k in v.kinds)
    n = len(verdicts)
    return {
        "agree": got.get(Agreement.AGREE, 0),
        "contradict": got.get(Agreement.CONTRADICT, 0),
        "not_checkable": got.get(Agreement.NOT_CHECKABLE, 0),
        "contradicted_by": {k: kinds.get(k, 0) for k in KINDS},
        "contradicted_share": round(got.get(Agreement.CONTRADICT, 0) / n, 4) if n else 0.0,
    }


def _changes(text: str | None) -> list[MotionChange]:
    try:
        return [MotionChange.model_validate(c) for c in json.loads(text or "[]")]
    except (ValueError, TypeError):
        return []


def caption_quality(
    offline: pd.DataFrame,
    published: pd.DataFrame | None,
    rows: pd.DataFrame | None,
    rejects: pd.DataFrame | None = None,
    min_conf: float = 0.5,
    verdicts: dict[tuple, Any] | None = None,
) -> dict[str, Any]:
    """Figures per caption version and for the published captions.

    offline: the generation's pairs with their offline captions (the units' parts: pair_id, label,
    caption, caption_captioner and the pose columns); published: the generation's samples as published
    (None: the same); rows: every LLM caption attempt (OUT/captions/rows-*.parquet); rejects: the
    generation's rejects (offline abstentions). `verdicts`: the keypoint checks already made
    (`keypoint_verdicts`, while the poses streamed by), keyed ("text", pair_id) and ("changes", pair_id,
    changes JSON); then `offline` needs no pose columns."""
    n_pairs = len(offline)
    pair_ids = offline["pair_id"].tolist() if n_pairs else []
    known = set(pair_ids)
    poses: dict[str, dict[str, Any]] = {}
    if verdicts is None and n_pairs:
        poses = {r["pair_id"]: r for r in offline.to_dict("records")}

    def text_verdict(pid: str, text: str, label: str | None):
        if verdicts is not None:
            return verdicts[("text", pid)]
        r = poses[pid]
        return check_text(_pose(r, "before"), _pose(r, "after"), text, label, min_conf)

    def changes_verdict(pid: str, ch: str | None):
        if verdicts is not None:
            return verdicts[("changes", pid, _key(ch))]
        r = poses[pid]
        return check_caption(_pose(r, "before"), _pose(r, "after"), _changes(ch), min_conf)

    versions: dict[str, dict[str, Any]] = {}
    # the offline captioner's captions (a pair listed twice counts once, its last row)
    last = offline.drop_duplicates("pair_id", keep="last") if n_pairs else offline
    if n_pairs and len(last) == n_pairs:
        last = offline
    mine = last[last["caption_captioner"] == CAPTIONER] if n_pairs else last
    texts = _values(mine, "caption")
    labels = _values(mine, "label")
    fig = text_figures(texts, labels)
    verdict_list = [
        text_verdict(pid, t or "", lb) for pid, t, lb in zip(_values(mine, "pair_id"), texts, labels, strict=True)
    ]
    abstained = 0
    if rejects is not None and len(rejects):
        abstained = int(
            (
                (rejects["reason"] == "caption_failed")
                & (rejects["level"] == "candidate")
                & rejects["detail"].fillna("").str.startswith(ABSTAINED)
            ).sum()
        )
    versions[OFFLINE_VERSION] = {"captioner": CAPTIONER, "missing": len(known) - len(mine), **fig}
    versions[OFFLINE_VERSION] |= {"agreement": _agreement(verdict_list), "abstained": abstained}
    # each LLM version: its newest attempt per pair of this generation
    if rows is not None and len(rows):
        here = rows[rows.pair_id.isin(known)].sort_values("created_at")
        for version, g in here.groupby("caption_version", sort=True):
            newest = g.drop_duplicates("pair_id", keep="last")
            ok = newest[newest.status == CaptionStatus.OK]
            failed = newest[newest.status != CaptionStatus.OK]
            fig = text_figures(ok.text.tolist())
            verdict_list = [changes_verdict(p, ch) for p, ch in zip(ok.pair_id, ok.changes, strict=True)]
            reasons = Counter(
                str(r if isinstance(r, str) and r else s) for r, s in zip(failed.reason, failed.status, strict=True)
            )
            versions[str(version)] = {
                "captioner": str(g.captioner.dropna().iloc[0]) if g.captioner.notna().any() else "openai",
                "missing": len(known) - len(ok),
                **fig,
                "agreement": _agreement(verdict_list),
                "failed": dict(sorted(reasons.items())),
            }
    pub = published if published is not None else offline
    pub_texts = _values(pub, "caption")
    pub_fig = text_figures(pub_texts, _values(pub, "label"))
    pub_fig["by_captioner"] = dict(Counter(str(c) for c in _values(pub, "caption_captioner")))
    return {
        "versions": versions,
        "published": pub_fig,
        "thresholds": {
            "min_words": MIN_WORDS,
            "max_words": MAX_WORDS,
            "near_duplicate": "the same set of words once case, punctuation, order and small words are ignored",
            "agreement_threshold": 0.25,
        },
        "warnings": warnings(versions, pub_fig),
    }


def _values(df: pd.DataFrame, column: str) -> list[Any]:
    """A column as Python values the way `to_dict("records")` gives them (None where it is absent)."""
    if not len(df):
        return []
    if column not in df:
        return [None] * len(df)
    return df[column].astype(object).tolist()


def warnings(versions: dict[str, dict[str, Any]], published: dict[str, Any]) -> list[str]:
    out = []
    for name, f in [*versions.items(), ("published", published)]:
        n = f["pairs"]
        if n < WARN_MIN_PAIRS:
            continue
        if f["top_share"] >= WARN_TOP_SHARE and f["top"]:
            out.append(f"{name}: one caption for {f['top_share']:.0%} of its {n} pairs ({f['top'][0]['text'][:80]!r})")
        if f["empty"] / n >= WARN_EMPTY_SHARE:
            out.append(f"{name}: {f['empty']} of {n} captions are empty or say nothing")
        agreement = f.get("agreement")
        if agreement and agreement["contradicted_share"] >= WARN_CONTRADICTED_SHARE:
            out.append(f"{name}: {agreement['contradict']} of {n} captions contradicted by the keypoints")
    return out


SAMPLE_COLUMNS = [
    *("pair_id", "label", "caption", "caption_captioner", "frame_width", "frame_height"),
    *("before_keypoints", "before_box", "before_score", "after_keypoints", "after_box", "after_score"),
]
POSE_COLUMNS = SAMPLE_COLUMNS[4:]


def keypoint_verdicts(part: pa.Table, checks: dict[str, list[str | None]], verdicts: dict, min_conf: float) -> None:
    """The keypoint checks of the pairs of one part of a generation (its rows with SAMPLE_COLUMNS),
    added to `verdicts` for `caption_quality`: each offline caption's ("text", pair_id) and, for the
    pairs in `checks` (pair_id -> changes JSON of its LLM captions), ("changes", pair_id, changes). So
    the poses of a whole dataset never are in memory at once."""
    offline = pc.equal(part.column("caption_captioner"), CAPTIONER).to_numpy(zero_copy_only=False)
    wanted = pc.is_in(part.column("pair_id"), value_set=pa.array(list(checks), pa.string())) if checks else None
    if wanted is not None:
        offline = offline | pc.fill_null(wanted, False).to_numpy(zero_copy_only=False)
    offline = pa.array(offline, pa.bool_())
    shared: dict[tuple, Verdict] = {}  # kept as what the figures count (agreement, kinds), one object each

    def slim(v: Verdict) -> Verdict:
        key = (v.agreement, tuple(v.kinds))
        return shared.setdefault(key, Verdict(v.agreement, "", key[1]))

    for r in part.filter(offline).select([c for c in SAMPLE_COLUMNS if c in part.column_names]).to_pylist():
        pid = r["pair_id"]
        before, after = _pose(r, "before"), _pose(r, "after")
        if r.get("caption_captioner") == CAPTIONER:
            verdicts[("text", pid)] = slim(check_text(before, after, r.get("caption") or "", r.get("label"), min_conf))
        for ch in checks.get(pid, ()):
            verdicts[("changes", pid, _key(ch))] = slim(check_caption(before, after, _changes(ch), min_conf))


def llm_checks(rows: pd.DataFrame | None) -> dict[str, list[str | None]]:
    """pair_id -> the changes JSON of its usable LLM captions (what `keypoint_verdicts` checks)."""
    out: dict[str, list[str | None]] = {}
    if rows is None or not len(rows):
        return out
    ok = rows[rows.status == CaptionStatus.OK]
    for pid, ch in zip(ok.pair_id, ok.changes, strict=True):
        got = out.setdefault(pid, [])
        if _key(ch) not in got:
            got.append(_key(ch))
    return out


def _key(changes: Any) -> str | None:
    return changes if isinstance(changes, str) else None


def generation_caption_quality(
    root, offline, published, rejects, min_conf: float = 0.5, verdicts: dict | None = None, rows=None
) -> dict[str, Any]:
    """The figures of a generation being made (pyarrow tables): `offline` the units' samples as they were
    committed (their captions the offline ones), `published` the same after the published caption choice,
    the LLM caption rows read from the output at `root` (or given: `rows`). `verdicts`: the keypoint
    checks made already (`keypoint_verdicts`; then `offline` needs no pose columns). Warnings are logged."""

    def pick(table, columns):
        return table.select([c for c in columns if c in table.column_names]).to_pandas()

    columns = SAMPLE_COLUMNS if verdicts is None else SAMPLE_COLUMNS[:4]
    q = caption_quality(
        pick(offline, columns),
        pick(published, ["pair_id", "label", "caption", "caption_captioner"]),
        read_caption_rows(root) if rows is None else rows,
        pick(rejects, ["reason", "level", "detail"]),
        min_conf,
        verdicts,
    )
    for w in q["warnings"]:
        logging.getLogger(__name__).warning("captions: %s", w)
    return q
