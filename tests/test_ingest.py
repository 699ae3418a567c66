import pytest

from curation.sources import FolderSource, SourceError
from curation.sources.folder import list_folder


def test_folder_listing_ids_and_ignored(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for rel in ["a.mp4", "sub/b.v2.MP4", "sub/deeper/c.webm", "x.avi", "x.mp4", "notes.txt", "clip.gif"]:
        (tmp_path / rel).write_bytes(b"")
    listing = list_folder(FolderSource(root=str(tmp_path)))
    ids = [c.clip_id for c in listing.clips]
    assert ids == ["a", "clip", "sub/b_v2", "sub/deeper/c", "x", "x_mp4"]  # sorted, dot-free, collisions apart
    assert sorted(listing.ignored) == ["notes.txt"]  # a GIF is an input (Pillow decodes it)
    assert all(c.source == "folder" and c.uri.startswith("/") for c in listing.clips)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list_folder(FolderSource(root=str(tmp_path / "nope")))
