"""Sources: the registry by kind. Each dataset is one file whose settings class is its Source
(`listing()` -> Listing); adding a dataset is one new file and one line in SOURCES.

`list_sources` lists every configured source, checks that clip ids are unique across them and makes
copies of one video one clip. Splits never leak: all clips of one source video (NTU: one performer
under cross-subject) get the same split, decided deterministically.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from .base import VIDEO_EXTENSIONS, Listing, SourceError, SourceSettings, check_root, frame_files
from .epic import EpicSource
from .folder import FolderSource
from .identity import ContentIds, content_identity, drop_duplicates
from .kinetics import KineticsSource
from .ntu import NTUSource

log = logging.getLogger(__name__)

SOURCES: dict[str, type[SourceSettings]] = {
    "folder": FolderSource,
    "kinetics": KineticsSource,
    "ntu": NTUSource,
    "epic": EpicSource,
}


def _source_kind(v: Any) -> str:
    return v.get("kind", "folder") if isinstance(v, dict) else getattr(v, "kind", "folder")


# The sources a config lists: one of the registered kinds, told apart by `kind` (default: folder).
SourceConfig = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in SOURCES.items())],  # noqa: UP007 - built from the registry
    Discriminator(_source_kind),
]


def source_flags(
    input: str | None, kind: str = "folder", root: str | None = None, annotations: list[str] | None = None
) -> list[dict[str, Any]] | None:
    """The one source that command-line flags name (`--input DIR`, or `--source KIND --root DIR
    [--annotations FILE ...]`), as config data; None when they name none (the config lists them)."""
    if input is not None and root is not None:
        raise SourceError("give --input DIR (a folder of videos) or --source KIND --root DIR, not both")
    if input is None and root is None:
        if annotations:
            raise SourceError("--annotations needs --source KIND --root DIR")
        return None
    src: dict[str, Any] = {"kind": kind, "root": input or root}
    if annotations:
        src["annotations"] = annotations
    return [src]


def list_sources(sources: list[SourceSettings], identity: ContentIds | None = None) -> Listing:
    out = Listing(clips=[])
    ids: set[str] = set()
    for src in sources:
        part = src.listing()
        for cid in [c.clip_id for c in part.clips] + [r.clip_id for r in part.rejects]:
            if cid in ids:
                raise SourceError(f"clip_id {cid!r} appears twice across sources; give each source its own root")
            ids.add(cid)
        if part.unlisted:
            log.warning("%s: %d videos under %s are in no annotation file", src.kind, len(part.unlisted), src.root)
        out.extend(part)
    drop_duplicates(out, identity or ContentIds())
    return out


__all__ = [
    "SOURCES",
    "VIDEO_EXTENSIONS",
    "ContentIds",
    "EpicSource",
    "FolderSource",
    "KineticsSource",
    "Listing",
    "NTUSource",
    "SourceConfig",
    "SourceError",
    "SourceSettings",
    "check_root",
    "content_identity",
    "frame_files",
    "list_sources",
    "source_flags",
]
