"""Kinetics-400/600/700: the official CSVs and the CVDF file layout.

CSV columns: label,youtube_id,time_start,time_end,split[,is_cc] (test CSVs have no label; K400 quotes
labels). Files: <youtube_id>_<start:06d>_<end:06d>.mp4, flat or under split/label folders. The file
is already cut to the clip, so the whole file is the segment. youtube_ids may start with '-'.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.records import Clip, RejectReason

from .base import (
    VIDEO_EXTENSIONS,
    Listing,
    RealPaths,
    SourceSettings,
    check_root,
    index_videos,
    ingest_reject,
    read_csv_lines,
)

log = logging.getLogger(__name__)

YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SPLITS = {"val": "val", "validate": "val", "validation": "val", "train": "train", "test": "test"}


class KineticsSource(SourceSettings):
    kind: Literal["kinetics"]
    annotations: list[str] = Field(..., min_length=1, description="official CSVs (train/val/test)")
    licence: str | None = "Kinetics: annotations CC BY 4.0 (DeepMind); videos are YouTube content of their owners"

    def listing(self) -> Listing:
        return list_kinetics(self)


def cvdf_name(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def read_rows(path: Path) -> list[tuple[int, dict[str, str] | None, str]]:
    return read_csv_lines(path, "youtube_id", "Kinetics CSV")


def list_kinetics(cfg: KineticsSource) -> Listing:
    root = check_root(cfg.root)
    by_stem, _ = index_videos(root, VIDEO_EXTENSIONS)
    real = RealPaths()
    out = Listing(clips=[])
    seen: set[str] = set()
    split_of_video: dict[str, str | None] = {}
    for ann in cfg.annotations:
        path = Path(ann).expanduser()
        for line, row, problem in read_rows(path):
            bad_id = f"{path.stem.replace('.', '_')}_line{line}"
            if row is None:
                detail = f"{path.name} line {line}: {problem}"
                out.rejects.append(ingest_reject("kinetics", bad_id, str(path), RejectReason.BAD_ANNOTATION, detail))
                continue
            yt = (row.get("youtube_id") or "").strip()
            try:
                start, end = int(row["time_start"]), int(row["time_end"])
                if not yt or end <= start:
                    raise ValueError("empty youtube_id or end <= start")
                if not YOUTUBE_ID.match(yt):
                    raise ValueError(f"youtube_id {yt!r} has characters a YouTube id never has")
            except (KeyError, TypeError, ValueError) as e:
                detail = f"{path.name} line {line}: {e} ({dict(row)})"
                out.rejects.append(ingest_reject("kinetics", bad_id, str(path), RejectReason.BAD_ANNOTATION, detail))
                continue
            cid = cvdf_name(yt, start, end)
            if cid in seen:  # the same clip in two CSVs (K400 val and K600 val): the first names it
                continue
            seen.add(cid)
            files = by_stem.get(cid, [])
            label = (row.get("label") or "").strip() or None
            split = SPLITS.get((row.get("split") or "").strip(), (row.get("split") or "").strip() or None)
            if not files:
                detail = f"{cid}.mp4 not found under {root} ({path.name} line {line})"
                uri = str(root / f"{cid}.mp4")
                known = {"label": label, "split": split, "video_id": yt}
                known["extra"] = {"youtube_id": yt, "time_start": start, "time_end": end}
                out.rejects.append(ingest_reject("kinetics", cid, uri, RejectReason.MISSING_FILE, detail, **known))
                continue
            first_split = split_of_video.setdefault(yt, split)
            if first_split != split:  # one YouTube video in two splits would leak: its first split holds
                log.warning("%s: youtube_id %s is in %s and %s; kept in %s", cid, yt, first_split, split, first_split)
                split = first_split
            if len(files) > 1:
                log.warning("%s found %d times; using %s", cid, len(files), files[0])
            extra = {"youtube_id": yt, "time_start": start, "time_end": end}
            if row.get("is_cc") not in (None, ""):
                extra["is_cc"] = row["is_cc"] == "1"
            out.clips.append(
                Clip(
                    source="kinetics",
                    clip_id=cid,
                    uri=real(files[0]),
                    label=label,
                    split=split,
                    licence=cfg.licence,
                    video_id=yt,
                    extra=extra,
                )
            )
    listed = seen
    out.unlisted = sorted(str(p.relative_to(root)) for stem, ps in by_stem.items() if stem not in listed for p in ps)
    return out
