"""The QA report's pictures: pair thumbnails (before | after with skeletons and boxes, read from the
tars), a frame of a rejected clip, and inline PNG histograms."""

from __future__ import annotations

import base64
import io
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.records import Pose17
from schemas.shard import decode_jpeg, encode_jpeg

from ..config import DecodeConfig
from ..stages.readers import open_fitted
from .data import Build, tar_samples
from .draw import side_by_side

log = logging.getLogger(__name__)

THUMB_HEIGHT = 160


def _pose(row: pd.Series, prefix: str) -> Pose17 | None:
    kps = row.get(f"{prefix}_keypoints")
    if kps is None or (isinstance(kps, float) and math.isnan(kps)):
        return None
    k = np.asarray(kps, float).reshape(17, 3).tolist()
    return Pose17(
        keypoints=k,
        frame_width=int(row["frame_width"]),
        frame_height=int(row["frame_height"]),
        box=list(row[f"{prefix}_box"]),
        score=float(row[f"{prefix}_score"]),
    )


def thumbnails(build: Build, rows: pd.DataFrame, dest: Path) -> dict[str, str]:
    """pair_id -> thumbnail file name: before | after with skeletons and boxes, read from the tars."""
    wanted: dict[str, dict[str, str]] = {}
    for pid, shard, key in zip(rows.pair_id, rows.shard, rows.clip_id + "/" + rows.pair_id, strict=True):
        wanted.setdefault(shard, {})[key] = pid
    by_id = rows.set_index("pair_id")
    out: dict[str, str] = {}
    for shard, keys in sorted(wanted.items()):
        url = build.shards.get(shard)
        if url is None:
            continue
        try:
            for raw in tar_samples(url):
                pid = keys.get(raw["__key__"])
                if pid is None:
                    continue
                row = by_id.loc[pid]
                img = side_by_side(
                    decode_jpeg(raw["before.jpg"]),
                    decode_jpeg(raw["after.jpg"]),
                    _pose(row, "before"),
                    _pose(row, "after"),
                    THUMB_HEIGHT,
                )
                name = f"thumbs/{pid}.jpg"
                (dest / name).write_bytes(encode_jpeg(img, 82))
                out[pid] = name
        except Exception as e:  # a tar that cannot be read: the page says which pairs have no picture
            log.warning("report: shard %s not readable: %s", shard, e)
    return out


def reject_example(uri: str, dest: Path, name: str) -> str | None:
    """A frame from the middle of a rejected clip's video, GIF or frame folder (None when it cannot be
    read now): the key frame nearest the middle, which decodes alone (no decoding up to it)."""
    try:
        vr = open_fitted(uri, DecodeConfig())[0]
        middle = len(vr) // 2
        keys = vr.get_key_indices() if hasattr(vr, "get_key_indices") else []
        frame = vr[min(keys, key=lambda k: abs(k - middle)) if keys else middle].asnumpy()
        h, w = frame.shape[:2]
        import cv2

        small = cv2.resize(frame, (max(1, round(w * THUMB_HEIGHT / h)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
        (dest / name).write_bytes(encode_jpeg(small, 80))
        return name
    except Exception:
        return None


def histogram(values: pd.Series, threshold: float | None, side: str, title: str) -> str:
    """An inline PNG (data URI) histogram with the threshold marked. Drawn on a bare `Figure` (no
    pyplot, whose import and figure managers cost more than the few histograms of a report), with
    fixed margins instead of a layout pass."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 2.6), dpi=90)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.89)
    ax = fig.add_subplot()
    v = values.dropna().astype(float)
    if len(v):
        ax.hist(v, bins=min(30, max(5, len(v))), color="#4a78b5")
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    if threshold is not None:
        ax.axvline(threshold, color="#c0392b", linestyle="--", label=f"{side} {threshold:g}")
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
