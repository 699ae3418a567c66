"""Sources: turn what the user points at into Clips, or ingest-stage Rejects (missing files, bad rows).

One function per source kind returns a Listing; `list_sources` combines them and checks that clip ids
are unique across sources. Splits never leak: all clips of one source video (NTU: one performer under
cross-subject) get the same split, decided deterministically.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

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


def ingest_reject(source: str, clip_id: str, uri: str, reason: RejectReason, detail: str) -> Reject:
    return Reject(clip_id=clip_id, source=source, uri=uri, stage=Stage.INGEST, reason=reason, detail=detail)


def check_root(root: str) -> Path:
    p = Path(root).expanduser()
    if not p.exists():
        raise SourceError(f"input folder does not exist: {p}")
    if not p.is_dir():
        raise SourceError(f"input is not a folder: {p}")
    return p


def index_videos(root: Path, extensions: list[str]) -> tuple[dict[str, list[Path]], list[str]]:
    """Every video under root by file stem (several when the same stem sits in several folders), and
    the other files (relative paths)."""
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    by_stem: dict[str, list[Path]] = {}
    other: list[str] = []
    for p in sorted(root.rglob("*")):
        if not (p.is_file() or p.is_symlink()):
            continue
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


def list_sources(sources: list[SourceConfig]) -> Listing:
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
    return out
