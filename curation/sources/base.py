"""What every source shares: the Source settings base, the Listing a source returns, and the helpers
dataset files use (root checks, hashed splits, annotation CSV lines, the video index, ingest rejects).

A dataset file (folder.py, kinetics.py, ...) imports this module and schemas only; `curation.sources`
holds the registry by kind. A source's settings class is the Source itself: `listing()` turns what the
user points at into Clips and ingest-stage Rejects (missing files, bad rows), never raising for a bad
row; SourceError is for a source that cannot be read as a whole.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.records import Clip, Reject, RejectReason, Stage

from ..errors import RunError

VIDEO_EXTENSIONS = [".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif"]

# A folder of extracted frames (EPIC-KITCHENS' rgb_frames layout: frame_0000000001.jpg, ...) is one video.
FRAME_NAME = re.compile(r"^frame_(\d+)\.(jpe?g|png)$", re.IGNORECASE)


class RealPaths:
    """os.path.realpath with each folder resolved once: a path whose last part is no symlink is its
    folder's real path joined with its name (one lstat instead of one per path component: listing 650k
    clips resolves their folders, not every component of every file, again and again)."""

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}

    def __call__(self, path: str | os.PathLike) -> str:
        # joined, not normalised: a ".." after a symlink is realpath's to resolve (in the folder's part)
        path = os.path.join(os.getcwd(), os.fspath(path))
        head, name = os.path.split(path)
        if name in ("", ".", "..") or os.path.islink(path):
            return os.path.realpath(path)
        real = self._dirs.get(head)
        if real is None:
            real = self._dirs[head] = os.path.realpath(head)
        return os.path.join(real, name)


def frame_files(folder: Path) -> list[Path]:
    """The frames of a folder of extracted frames (frame_0000000001.jpg, ...: EPIC-KITCHENS' rgb_frames
    layout), in frame-number order; [] for any other folder."""
    try:
        names = [p for p in folder.iterdir() if FRAME_NAME.match(p.name)]
    except OSError:
        return []
    return sorted(names, key=lambda p: int(FRAME_NAME.match(p.name).group(1)))


class SourceSettings(BaseModel):
    """Settings every source has; a dataset's class adds `kind` (its registry key), its own fields and
    `listing()`."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(..., description="where the dataset's videos are")
    licence: str | None = Field(None, description="licence note carried into every sample of this source")
    val_fraction: float = Field(
        0.0, ge=0, le=1, description="share of source videos hashed into split 'val' when the dataset has none"
    )

    def listing(self) -> Listing:  # pragma: no cover - every registered source defines it
        raise NotImplementedError


class SourceError(RunError, ValueError):
    """The source as a whole cannot be read (missing root, unreadable CSV): a clear one-line error."""


@dataclass
class Listing:
    clips: list[Clip]
    rejects: list[Reject] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files that are not inputs (wrong extension, ...)
    unlisted: list[str] = field(default_factory=list)  # videos on disk that no annotation row names

    def extend(self, other: Listing) -> None:
        self.clips += other.clips
        self.rejects += other.rejects
        self.ignored += other.ignored
        self.unlisted += other.unlisted


def hashed_split(group: str, val_fraction: float) -> str:
    """'val' for a stable val_fraction share of groups (source videos), else 'train'."""
    if val_fraction <= 0:
        return "train"
    h = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def ingest_reject(source: str, clip_id: str, uri: str, reason: RejectReason, detail: str, **clip: Any) -> Reject:
    """An ingest reject; `clip`: what is known of the clip (label, split, video_id, extra), so the reject
    counts against its class (yield per label)."""
    return Reject(clip_id=clip_id, source=source, uri=uri, stage=Stage.INGEST, reason=reason, detail=detail, **clip)


def read_csv_lines(path: Path, required: str, what: str) -> list[tuple[int, dict[str, str] | None, str]]:
    """An annotation CSV, one physical line per row: (line number, row or None, why the row is bad).
    A bad row (a byte that is not UTF-8, an unterminated quote, the wrong number of fields) is that
    row's problem only: a quote left open never swallows the rows after it. Raises SourceError only
    when the file as a whole cannot be read or is not this kind of CSV."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror}") from e
    lines = raw.splitlines()
    if not lines:
        raise SourceError(f"{path} is empty: not a {what}")
    try:
        header = next(csv.reader([lines[0].decode("utf-8-sig")], strict=True))
    except (UnicodeDecodeError, csv.Error) as e:
        raise SourceError(f"{path}: unreadable header line ({e}): not a {what}") from e
    header = [h.strip() for h in header]
    if required not in header:
        raise SourceError(f"{path} is not a {what} (no {required} column)")
    rows: list[tuple[int, dict[str, str] | None, str]] = []
    for n, line in enumerate(lines[1:], start=2):  # line numbers as a text editor shows them
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            rows.append((n, None, f"not UTF-8 at byte {e.start}: {line[:120]!r}"))
            continue
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as e:
            rows.append((n, None, f"malformed CSV ({e}): {text[:120]!r}"))
            continue
        if len(fields) != len(header):
            rows.append((n, None, f"{len(fields)} fields, the header has {len(header)}: {text[:120]!r}"))
            continue
        rows.append((n, dict(zip(header, fields, strict=True)), ""))
    return rows


def check_root(root: str) -> Path:
    p = Path(root).expanduser()
    if not p.exists():
        raise SourceError(f"input folder does not exist: {p}")
    if not p.is_dir():
        raise SourceError(f"input is not a folder: {p}")
    return p


def index_videos(root: Path, extensions: list[str]) -> tuple[dict[str, list[Path]], list[str]]:
    """Every video under root by file stem (several when the same stem sits in several folders; a
    folder of extracted frames counts as one video named after the folder), and the other files
    (relative paths)."""
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    by_stem: dict[str, list[Path]] = {}
    other: list[str] = []
    frame_dirs: set[Path] = set()
    for p in sorted(root.rglob("*")):
        if p.is_dir() and len(frame_files(p)) >= 2:  # extracted frames (EPIC's rgb_frames/<video_id>/)
            frame_dirs.add(p)
            by_stem.setdefault(p.name, []).append(p)
            continue
        if not (p.is_file() or p.is_symlink()):
            continue
        if p.parent in frame_dirs and p in set(frame_files(p.parent)):
            continue  # one frame of a frame folder: part of that clip
        if p.suffix.lower() in exts:
            by_stem.setdefault(p.stem, []).append(p)
        else:
            other.append(str(p.relative_to(root)))
    return by_stem, other
