"""Caption rows (OUT/captions/rows-<run>.parquet): every attempt of every caption run, kept; and the
choice of one caption per pair from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.captions import CAPTION_ROWS_SCHEMA, CAPTIONS_DIR, Agreement, CaptionStatus
from schemas.records import Caption, version_matches

from ..store import write_parquet
from .client import DETERMINISTIC_FAILURES

AGREEMENT_POLICIES = ("any", "prefer", "require")


def write_caption_rows(out: Path, run_id: str, rows: list[dict[str, Any]]) -> Path | None:
    if not rows:
        return None
    clean = [
        {f.name: r.get(f.name) for f in CAPTION_ROWS_SCHEMA}
        | {"created_at": pd.Timestamp(r["created_at"]).to_pydatetime()}
        for r in rows
    ]
    path = Path(out) / CAPTIONS_DIR / f"rows-{run_id}.parquet"
    write_parquet(path, pa.Table.from_pylist(clean, schema=CAPTION_ROWS_SCHEMA))
    return path


def read_caption_rows(out: Path) -> pd.DataFrame:
    files = sorted((Path(out) / CAPTIONS_DIR).glob("rows-*.parquet"))
    if not files:
        return CAPTION_ROWS_SCHEMA.empty_table().to_pandas()
    tables = []
    for f in files:  # rows written by earlier versions lack the newer columns: read them as nulls
        t = pq.read_table(f)
        for field in CAPTION_ROWS_SCHEMA:
            if field.name not in t.column_names:
                t = t.append_column(field, pa.nulls(t.num_rows, field.type))
        tables.append(t.select(CAPTION_ROWS_SCHEMA.names).cast(CAPTION_ROWS_SCHEMA))
    return pa.concat_tables(tables).to_pandas()


def resolve_version(rows: pd.DataFrame, requested: str | None) -> str | None:
    """A full caption version for `requested`: itself, or for 'model@v1' the newest 'model@v1-<hash>'."""
    if not requested:
        return None
    versions = rows[rows.caption_version.map(lambda v: version_matches(v, requested))]
    if versions.empty:
        return None
    if requested in set(versions.caption_version):
        return requested
    return versions.sort_values("created_at").caption_version.iloc[-1]


def _caption(r) -> Caption:
    return Caption(
        text=r.text, captioner=r.captioner, model=r.model, prompt_version=r.prompt_version, created_at=r.created_at
    )


_RANK = {Agreement.AGREE: 0, Agreement.NOT_CHECKABLE: 1, None: 1, Agreement.CONTRADICT: 2}


def choose_captions(rows: pd.DataFrame, caption_version: str | None, agreement: str = "any") -> dict[str, Caption]:
    """Per pair: the newest usable caption (of `caption_version` when given). `agreement`: any; prefer
    (captions that agree with the keypoints first, contradicting ones last); require (agreeing only)."""
    ok = rows[rows.status == CaptionStatus.OK]
    version = resolve_version(rows, caption_version)
    if caption_version:
        ok = ok[ok.caption_version == version]
    if agreement == "require":
        ok = ok[ok.pose_agreement == Agreement.AGREE]
    ok = ok.sort_values("created_at")
    if agreement == "prefer":
        rank = ok.pose_agreement.map(lambda a: _RANK.get(a if isinstance(a, str) else None, 1))
        ok = ok.assign(_rank=-rank).sort_values(["_rank", "created_at"], kind="stable")
    ok = ok.drop_duplicates("pair_id", keep="last")
    return {r.pair_id: _caption(r) for r in ok.itertuples()}


def known_versions(rows: pd.DataFrame) -> dict[str, list[Caption]]:
    """Per pair: the newest usable caption of every version, oldest first (what the shards carry)."""
    ok = rows[rows.status == CaptionStatus.OK].sort_values("created_at")
    ok = ok.drop_duplicates(["pair_id", "caption_version"], keep="last")
    out: dict[str, list[Caption]] = {}
    for r in ok.itertuples():
        out.setdefault(r.pair_id, []).append(_caption(r))
    return out


def settled(rows: pd.DataFrame, version: str) -> set[str]:
    """Pairs that need no new request for `version`: a usable answer, or a failure that asking again
    would repeat (refusal, invalid answer, ...). Transient failures are not settled."""
    mine = rows[rows.caption_version == version]
    done = mine.status.isin([CaptionStatus.OK, CaptionStatus.NOT_VISIBLE]) | mine.reason.isin(DETERMINISTIC_FAILURES)
    return set(mine[done].pair_id)
