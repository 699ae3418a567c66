"""A plain folder of videos (or of frame folders): one clip per file, named by its path under the root."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.records import Clip, clip_key

from .base import VIDEO_EXTENSIONS, Listing, SourceSettings, check_root, hashed_split, index_videos

log = logging.getLogger(__name__)


class FolderSource(SourceSettings):
    kind: Literal["folder"] = "folder"
    extensions: list[str] = Field(
        default_factory=lambda: list(VIDEO_EXTENSIONS), description="file endings that are videos"
    )

    def listing(self) -> Listing:
        return list_folder(self)


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
