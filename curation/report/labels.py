"""A labelled check of the build's decisions: expected accept / reject (with the acceptable reasons) /
ignored / avoid per input file, against what a finished build decided (read through the store's pointer).

`avoid` is a clip with a hazard in part of it (a caption that vanishes at 0.7 s, a cross-fade at 2.1 s,
a pan between still stretches): the rule is per pair, so the right outcome is either pairs that keep
clear of it, every one of them labelled keep in the pair labels, or a reject for one of the reasons.
Without pair labels an accepted `avoid` clip cannot be checked and does not count as holding."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from ..errors import RunError

EXPECTED = ("accept", "reject", "ignored", "avoid")


class LabelError(RunError, ValueError):
    """A labels file that cannot be used (one line for the user)."""


@dataclass
class Label:
    file: str
    expected: str
    reasons: tuple[str, ...]
    note: str = ""


@dataclass
class LabelResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # file, expected, got, reason, ok, pairs
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)  # (expected, got) -> count

    @property
    def accuracy(self) -> float:
        return sum(r["ok"] for r in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def wrong(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if not r["ok"]]


@dataclass
class PairLabel:
    pair_id: str
    keep: bool
    why: str = ""


def _rows(path: Path | str, what: str, columns: str) -> tuple[Path, csv.DictReader]:
    """A labels CSV opened for reading, with the required columns (the first ones in `columns`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise LabelError(f"{what} file {p} cannot be read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise LabelError(f"{what} file {p} is not UTF-8 text") from e
    reader = csv.DictReader(text.splitlines())
    need = {c.strip() for c in columns.split("[")[0].split(",") if c.strip()}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise LabelError(f"{what} file {p} needs the columns {columns}")
    return p, reader


def read_labels(path: Path | str) -> list[Label]:
    p, reader = _rows(path, "labels", "file, expected[, reasons, note]")
    labels = []
    for n, row in enumerate(reader, start=2):
        expected = (row.get("expected") or "").strip()
        if expected not in EXPECTED:
            raise LabelError(f"{p}:{n}: expected must be one of {', '.join(EXPECTED)}, not {expected!r}")
        reasons = tuple(r.strip() for r in (row.get("reasons") or "").split("|") if r.strip())
        labels.append(Label(row["file"].strip(), expected, reasons, (row.get("note") or "").strip()))
    return labels


def _name(uri: str) -> str:
    return PurePosixPath(str(uri).rstrip("/")).name


def check_labels(
    samples: pd.DataFrame,
    rejects: pd.DataFrame,
    labels: list[Label],
    pair_labels: dict[str, PairLabel] | None = None,
) -> LabelResult:
    """Each labelled file against the build: accepted (it has pairs), rejected (its clip-level reject
    reason) or not an input at all (ignored). A file the build saw as several clips (segments) is
    accepted when any of them is. An `avoid` label holds for a reject with one of its reasons, or for
    pairs that are all labelled keep in `pair_labels`."""
    names = [_name(u) for u in samples.get("uri", pd.Series(dtype=str))]
    pairs = Counter(names)
    kept: dict[str, bool] = {}
    for name, pid in zip(names, samples.get("pair_id", pd.Series([None] * len(names))), strict=True):
        lab = (pair_labels or {}).get(pid)
        kept[name] = kept.get(name, True) and lab is not None and lab.keep
    clip_rows = rejects[rejects["level"] == "clip"] if len(rejects) else rejects
    reasons: dict[str, list[str]] = {}
    for uri, reason in zip(clip_rows.get("uri", []), clip_rows.get("reason", []), strict=True):
        reasons.setdefault(_name(uri), []).append(reason)
    out = LabelResult()
    confusion: Counter[tuple[str, str]] = Counter()
    for lab in labels:
        n = pairs.get(lab.file, 0)
        if n:
            got, why = "accept", ""
        elif lab.file in reasons:
            got, why = "reject", reasons[lab.file][0]
        else:
            got, why = "ignored", ""
        if lab.expected == "avoid":
            ok = (got == "accept" and kept.get(lab.file, False)) or (
                got == "reject" and (not lab.reasons or why in lab.reasons)
            )
        else:
            ok = got == lab.expected and (got != "reject" or not lab.reasons or why in lab.reasons)
        out.rows.append(
            {
                "file": lab.file,
                "expected": lab.expected + (f" ({'|'.join(lab.reasons)})" if lab.reasons else ""),
                "got": got + (f" ({why})" if why else ""),
                "ok": ok,
                "pairs": n,
                "note": lab.note,
            }
        )
        confusion[(_cell(lab.expected, lab.reasons[:1]), _cell(got, (why,) if why else ()))] += 1
    out.confusion = dict(confusion)
    return out


def _cell(decision: str, reasons: tuple[str, ...]) -> str:
    return f"{decision}/{reasons[0]}" if decision == "reject" and reasons else decision


def read_pair_labels(path: Path | str) -> dict[str, PairLabel]:
    """Per-pair labels: CSV with pair_id, keep (yes | no: would a person keep this pair), why."""
    p, reader = _rows(path, "pair labels", "pair_id, keep[, why]")
    out = {}
    for n, row in enumerate(reader, start=2):
        keep = (row.get("keep") or "").strip().lower()
        if keep not in ("yes", "no"):
            raise LabelError(f"{p}:{n}: keep must be yes or no, not {keep!r}")
        pid = (row.get("pair_id") or "").strip()
        out[pid] = PairLabel(pid, keep == "yes", (row.get("why") or "").strip())
    return out


def pair_precision(samples: pd.DataFrame, labels: dict[str, PairLabel]) -> dict[str, Any]:
    """How many of the accepted pairs a person would keep: labelled, kept, dropped (with why), and the
    accepted pairs nobody has labelled yet (precision is over the labelled ones)."""
    ids = list(samples.get("pair_id", pd.Series(dtype=str)))
    clips = dict(zip(ids, samples.get("clip_id", pd.Series(dtype=str)), strict=False))
    labelled = [labels[i] for i in ids if i in labels]
    keep = sum(lab.keep for lab in labelled)
    return {
        "accepted": len(ids),
        "labelled": len(labelled),
        "keep": keep,
        "precision": keep / len(labelled) if labelled else None,
        "dropped": [
            {"pair_id": lab.pair_id, "clip_id": clips.get(lab.pair_id), "why": lab.why}
            for lab in labelled
            if not lab.keep
        ],
        "unlabelled": [{"pair_id": i, "clip_id": clips.get(i)} for i in ids if i not in labels],
    }
