"""EPIC-KITCHENS-100: one Clip per narration segment inside a long head-camera video.

Videos: <root>/<participant>/videos/<video_id>.MP4 (also <root>/<video_id>.MP4), or the released RGB
frames <root>/<participant>/rgb_frames/<video_id>/frame_%010d.jpg (frame N at N / 50 or 60 s: see
frame_rate). Segment bounds come
from start_timestamp / stop_timestamp (HH:MM:SS.ff), never from the frame columns: those count at 60
fps for EPIC-55 videos and 50 fps for the extension, not at the native rate. Only the segment is
decoded. Rows with empty or unreadable timestamps are rejects (bad_annotation); segments past the
video's end are rejected when decoded (segment_out_of_range).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.records import Clip, PairingMode, RejectReason

from .base import (
    Listing,
    RealPaths,
    SourceSettings,
    check_root,
    hashed_split,
    index_videos,
    ingest_reject,
    read_csv_lines,
)

TIMESTAMP = re.compile(r"^(\d+):([0-5]\d):(\d+(?:\.\d+)?)$")
SPLIT_BY_FILE = {"validation": "val", "train": "train", "test": "test"}
# words after the verb that already determine the noun phrase
_DETERMINED = {
    "the", "a", "an", "some", "any", "all", "your", "my", "his", "her", "their", "its", "this", "that", "these",
    "those", "in", "into", "on", "onto", "from", "to", "with", "off", "out", "up", "down", "away", "back",
    "around", "over", "under", "through", "for", "of", "and", "it", "them", "each", "every", "both", "more",
}  # fmt: skip


class EpicSource(SourceSettings):
    kind: Literal["epic"]
    annotations: list[str] = Field(..., min_length=1, description="EPIC_100_{train,validation}.csv narration files")
    mode: PairingMode = "egocentric"
    licence: str | None = "EPIC-KITCHENS-100: CC BY-NC 4.0"

    def listing(self) -> Listing:
        return list_epic(self)


def parse_timestamp(text: str) -> float:
    m = TIMESTAMP.match((text or "").strip())
    if not m:
        raise ValueError(f"not a HH:MM:SS.ff timestamp: {text!r}")
    h, mnt, s = m.groups()
    return int(h) * 3600 + int(mnt) * 60 + float(s)


def narration_instruction(narration: str, verb: str | None = None) -> str:
    """'take plate' -> 'take the plate'; 'put down plate' -> 'put down the plate'; 'turn on tap' -> 'turn
    on the tap'. The verb column ('put-down') tells where the verb ends; an object that already starts
    with an article, a pronoun or a preposition is left as it is."""
    words = narration.strip().split()
    if not words:
        return narration.strip()
    verb_words = (verb or "").replace("-", " ").split()
    n = len(verb_words) if verb_words and [w.lower() for w in words[: len(verb_words)]] == verb_words else 1
    head, rest = words[:n], words[n:]
    if rest and rest[0].lower() not in _DETERMINED:
        rest = ["the", *rest]
    return " ".join(head + rest)


def _split_for(path: Path) -> str | None:
    stem = path.stem.lower()
    return next((v for k, v in SPLIT_BY_FILE.items() if k in stem), None)


def frame_rate(video_id: str) -> float:
    """The rate EPIC's released RGB frames (and the annotation frame columns) count at: 60 for the
    EPIC-55 videos (P01_01 ... two-digit), 50 for the extension (P01_101 ...); see FORMATS.md."""
    tail = video_id.rsplit("_", 1)[-1]
    return 50.0 if tail.isdigit() and len(tail) >= 3 else 60.0


def list_epic(cfg: EpicSource) -> Listing:
    root = check_root(cfg.root)
    by_stem, _ = index_videos(root, [".mp4"])
    real = RealPaths()
    out = Listing(clips=[])
    used: set[str] = set()
    for ann in cfg.annotations:
        path = Path(ann).expanduser()
        file_split = _split_for(path)
        for line, row, problem in read_csv_lines(path, "narration_id", "EPIC-KITCHENS narration CSV"):
            if row is None:
                bad_id = f"{path.stem.replace('.', '_')}_line{line}"
                detail = f"{path.name} line {line}: {problem}"
                out.rejects.append(ingest_reject("epic", bad_id, str(path), RejectReason.BAD_ANNOTATION, detail))
                continue
            nid = (row.get("narration_id") or "").strip() or f"{path.stem}_line{line}"
            if not re.match(r"^[A-Za-z0-9_-]{1,128}$", nid):
                bad_id = f"{path.stem.replace('.', '_')}_line{line}"
                detail = f"{path.name} line {line}: narration_id {nid!r} is not a plain id"
                out.rejects.append(ingest_reject("epic", bad_id, str(path), RejectReason.BAD_ANNOTATION, detail))
                continue
            vid = (row.get("video_id") or "").strip()
            part = (row.get("participant_id") or vid.split("_")[0]).strip()
            candidates = by_stem.get(vid, [])
            preferred = [p for p in candidates if p.parent.name == "videos" and p.parent.parent.name == part]
            video = (preferred or candidates or [None])[0]
            uri = real(video) if video else str(root / part / "videos" / f"{vid}.MP4")
            frames_fps = None
            if video is not None and video.is_dir():  # <participant>/rgb_frames/<video_id>/frame_%010d.jpg
                frames_fps = frame_rate(vid)
            try:
                start = parse_timestamp(row.get("start_timestamp", ""))
                end = parse_timestamp(row.get("stop_timestamp", ""))
                if end <= start:
                    raise ValueError(f"stop {end:.2f}s is not after start {start:.2f}s")
            except ValueError as e:
                detail = f"{path.name} line {line}: {e}"
                out.rejects.append(ingest_reject("epic", nid, uri, RejectReason.BAD_ANNOTATION, detail))
                continue
            if video is None:
                detail = (
                    f"{vid}.MP4 not found under {root} (expected {part}/videos/{vid}.MP4 "
                    f"or frames in {part}/rgb_frames/{vid}/)"
                )
                known = {"label": row.get("narration") or None, "split": file_split, "video_id": vid}
                known["extra"] = {"narration_id": nid, "participant_id": part, "verb": row.get("verb") or None}
                out.rejects.append(ingest_reject("epic", nid, uri, RejectReason.MISSING_FILE, detail, **known))
                continue
            used.add(vid)
            extra: dict[str, str | int | None] = {
                "narration_id": nid,
                "participant_id": part,
                "narration": row.get("narration"),
                "instruction": narration_instruction(row.get("narration", ""), row.get("verb")),
                "verb": row.get("verb") or None,
                "noun": row.get("noun") or None,
            }
            if frames_fps:
                extra["frames_fps"] = frames_fps
            for k in ("verb_class", "noun_class"):
                extra[k] = int(row[k]) if (row.get(k) or "").strip().lstrip("-").isdigit() else None
            if row.get("all_nouns"):
                try:
                    extra["all_nouns"] = ";".join(ast.literal_eval(row["all_nouns"]))
                except (ValueError, SyntaxError):
                    extra["all_nouns"] = row["all_nouns"]
            out.clips.append(
                Clip(
                    source="epic",
                    clip_id=nid,
                    uri=uri,
                    start_s=start,
                    end_s=end,
                    label=row.get("narration") or None,
                    split=file_split or hashed_split(vid, cfg.val_fraction),
                    licence=cfg.licence,
                    video_id=vid,
                    extra=extra,
                )
            )
    out.unlisted = sorted(str(p.relative_to(root)) for s, ps in by_stem.items() if s not in used for p in ps)
    return out
