"""Sources: turn what the user points at into Clips (or ingest-stage Rejects)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from schemas.records import Clip, Reject, clip_key

from .config import SourceConfig

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source as a whole cannot be read (missing root, ...): a clear one-line error."""


@dataclass
class Listing:
    clips: list[Clip]
    rejects: list[Reject] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files that are not inputs (wrong extension, ...)


def folder_clip_id(path: Path, root: Path) -> str:
    """clip_id = path relative to root, extension removed, any other dots replaced."""
    rel = path.relative_to(root)
    return clip_key(str(rel.with_suffix("")))


def list_folder(cfg: SourceConfig) -> Listing:
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise SourceError(f"input folder does not exist: {root}")
    if not root.is_dir():
        raise SourceError(f"input is not a folder: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in cfg.extensions}
    clips: list[Clip] = []
    ignored: list[str] = []
    seen: dict[str, Path] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = str(path.relative_to(root))
        if path.suffix.lower() not in exts:
            ignored.append(rel)
            continue
        cid = folder_clip_id(path, root)
        if cid in seen:  # a.mp4 beside a.avi, or a.b.mp4 beside a_b.mp4: keep both, disambiguate
            cid = f"{cid}_{path.suffix.lower().lstrip('.')}"
            n = 2
            base = cid
            while cid in seen:
                cid = f"{base}_{n}"
                n += 1
            log.warning("clip id collision: %s is stored as %s", rel, cid)
        seen[cid] = path
        clips.append(Clip(source="folder", clip_id=cid, uri=str(path.resolve() if path.exists() else path)))
    return Listing(clips=clips, ignored=ignored)


def list_sources(sources: list[SourceConfig]) -> Listing:
    out = Listing(clips=[])
    ids: set[str] = set()
    for src in sources:
        if src.kind != "folder":  # pragma: no cover - guarded by the config's Literal
            raise SourceError(f"unknown source kind {src.kind!r}")
        part = list_folder(src)
        for c in part.clips:
            if c.clip_id in ids:
                raise SourceError(f"clip_id {c.clip_id!r} appears in two sources; give them distinct roots")
            ids.add(c.clip_id)
        out.clips += part.clips
        out.rejects += part.rejects
        out.ignored += part.ignored
    return out
