"""Sources: turn what the user points at into Clips, or ingest-stage Rejects (missing files, bad rows).

One function per source kind returns a Listing; `list_sources` combines them and checks that clip ids
are unique across sources. Splits never leak: all clips of one source video (NTU: one performer under
cross-subject) get the same split, decided deterministically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.manifest import clip_fields
from schemas.records import Clip, Reject, RejectReason, Stage, clip_key

from .config import FolderSource, SourceConfig

log = logging.getLogger(__name__)


class SourceError(ValueError):
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
    import csv

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
    from .stages.decode import frame_files

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


def folder_clip_id(path: Path, root: Path) -> str:
    """clip_id = path relative to root, extension removed, any other dots replaced."""
    rel = path.relative_to(root)
    return clip_key(str(rel.with_suffix("")))


def list_folder(cfg: FolderSource) -> Listing:
    root = check_root(cfg.root)
    by_stem, ignored = index_videos(root, cfg.extensions)
    clips: list[Clip] = []
    seen: set[str] = set()
    for path in sorted(p for paths in by_stem.values() for p in paths):
        cid = folder_clip_id(path, root)
        if cid in seen:  # a.mp4 beside a.avi, or a.b.mp4 beside a_b.mp4: keep both, disambiguate
            base = f"{cid}_{path.suffix.lower().lstrip('.')}"
            cid, n = base, 2
            while cid in seen:
                cid, n = f"{base}_{n}", n + 1
            log.warning("clip id collision: %s is stored as %s", path.relative_to(root), cid)
        seen.add(cid)
        clips.append(
            Clip(
                source="folder",
                clip_id=cid,
                uri=str(path.resolve() if path.exists() else path),
                video_id=cid,
                split=hashed_split(cid, cfg.val_fraction),
                licence=cfg.licence,
            )
        )
    return Listing(clips=clips, ignored=ignored)


def list_source(src: SourceConfig) -> Listing:
    if src.kind == "folder":
        return list_folder(src)
    if src.kind == "kinetics":
        from .sources.kinetics import list_kinetics

        return list_kinetics(src)
    if src.kind == "ntu":
        from .sources.ntu import list_ntu

        return list_ntu(src)
    if src.kind == "epic":
        from .sources.epic import list_epic

        return list_epic(src)
    raise SourceError(f"unknown source kind {src.kind!r}")  # pragma: no cover - the config validates kinds


IDENTITY_BLOCK = 1 << 20  # content identity: size + hash of the first and last MiB
FRAME_BLOCK = 1 << 16  # a frame of a folder of frames: size + hash of its first 64 KiB


def content_identity(path: str | os.PathLike) -> str:
    """What a video file is, wherever it lives: its size and a hash of its first and last MiB (a copy
    or a symlink of one video has the same identity; a replaced file under the same name does not).
    Reading 2 MiB costs about 2 ms from the page cache, 20 ms cold on a disk, whatever the video's length.
    A folder of frames: every frame it holds, by name, size and a hash of its first 64 KiB (a JPEG frame
    is most often smaller: its whole content), so a frame replaced inside the folder changes it."""
    if os.path.isdir(path):
        from .stages.decode import frame_files

        frames = frame_files(Path(path))
        if not frames:
            raise OSError(f"no frames in {path}")
        listing = hashlib.sha256()
        for p in frames:
            with open(p, "rb") as f:
                head = f.read(FRAME_BLOCK)
                size = os.fstat(f.fileno()).st_size
            listing.update(f"{p.name}:{size}:".encode() + hashlib.sha256(head).digest())
        return f"frames{len(frames)}:{listing.hexdigest()[:20]}"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha256(f.read(IDENTITY_BLOCK))
        if size > 2 * IDENTITY_BLOCK:
            f.seek(size - IDENTITY_BLOCK)
            h.update(f.read(IDENTITY_BLOCK))
        elif size > IDENTITY_BLOCK:
            h.update(f.read())
    return f"{size}:{h.hexdigest()[:20]}"


def _frames_stat(folder: str) -> str:
    from .stages.decode import frame_files

    h = hashlib.sha256()
    for p in frame_files(Path(folder)):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}\n".encode())
    return h.hexdigest()[:20]


class ContentIds:
    """content_identity with a cache keyed by (real path, size, mtime, inode), kept in a JSON file, so a
    re-run over a large input stats its files instead of reading them."""

    def __init__(self, cache_file: Path | None = None):
        self.cache_file = cache_file
        self.cache: dict[str, str] = {}
        self.changed = False
        if cache_file is not None:
            try:
                self.cache = json.loads(cache_file.read_text())
            except (OSError, ValueError):
                self.cache = {}

    def __call__(self, uri: str) -> str | None:
        try:
            real = os.path.realpath(uri)
            st = os.stat(real)
        except OSError:
            return None
        key = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
        if os.path.isdir(real):  # a folder's own stat misses a frame rewritten in place: its frames' stats
            key += "|" + _frames_stat(real)
        got = self.cache.get(key)
        if got is None:
            try:
                got = content_identity(real)
            except OSError:
                return None
            self.cache[key] = got
            self.changed = True
        return got

    def save(self) -> None:
        if self.cache_file is not None and self.changed:
            from .store import write_json

            try:
                write_json(self.cache_file, self.cache)
            except OSError as e:  # a cache: the next run reads the files again
                log.warning("content-id cache not saved: %s", e)
            self.changed = False


def drop_duplicates(listing: Listing, identity: ContentIds) -> None:
    """Copies of one video (same content identity, symlinks included) are one video: the first clip by
    id keeps it, the others become `duplicate` rejects naming it (so one video is in one split only)."""
    first: dict[tuple, str] = {}
    keep: list[Clip] = []
    for c in sorted(listing.clips, key=lambda c: c.clip_id):
        ident = identity(c.uri)
        if ident is None:
            keep.append(c)
            continue
        key = (ident, c.start_s, c.end_s)
        if key in first:
            listing.rejects.append(
                ingest_reject(
                    c.source, c.clip_id, c.uri, RejectReason.DUPLICATE, f"same video as {first[key]}", **clip_fields(c)
                )
            )
            continue
        first[key] = c.clip_id
        keep.append(c)
    order = {c.clip_id: i for i, c in enumerate(listing.clips)}
    listing.clips = sorted(keep, key=lambda c: order[c.clip_id])


def list_sources(sources: list[SourceConfig], identity: ContentIds | None = None) -> Listing:
    out = Listing(clips=[])
    ids: set[str] = set()
    for src in sources:
        part = list_source(src)
        for cid in [c.clip_id for c in part.clips] + [r.clip_id for r in part.rejects]:
            if cid in ids:
                raise SourceError(f"clip_id {cid!r} appears twice across sources; give each source its own root")
            ids.add(cid)
        if part.unlisted:
            log.warning("%s: %d videos under %s are in no annotation file", src.kind, len(part.unlisted), src.root)
        out.extend(part)
    drop_duplicates(out, identity or ContentIds())
    return out
