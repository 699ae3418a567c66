import json
import os

import pytest
import webdataset as wds
from test_schemas import pair

from curation.pipeline import EncodedPair
from curation.store import ShardSet, atomic_write

JPEG = b"\xff\xd8" + bytes(10_000)


def test_shards_roll_over_by_bytes_and_count(tmp_path):
    shards = ShardSet(tmp_path, "u1", max_samples=100, max_bytes=60_000)
    names = [shards.write(EncodedPair(pair(i, i + 5), JPEG, JPEG)) for i in range(5)]
    files = shards.close()
    sizes = {n: f["samples"] for n, f in files.items()}
    assert all(f["bytes"] == (tmp_path / n).stat().st_size and len(f["sha256"]) == 64 for n, f in files.items())
    assert names == ["u1-0000.tar", "u1-0000.tar", "u1-0001.tar", "u1-0001.tar", "u1-0002.tar"]
    assert sizes == {"u1-0000.tar": 2, "u1-0001.tar": 2, "u1-0002.tar": 1}
    assert all((tmp_path / n).stat().st_size <= 60_000 + 10240 for n in sizes)  # + tar end-of-archive record
    assert not list(tmp_path.glob(".*"))  # no temp files left
    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "u1-0000.tar"), shardshuffle=False)]
    assert len(keys) == 2
    by_count = ShardSet(tmp_path / "c", "u2", max_samples=2, max_bytes=10**9)
    for i in range(5):
        by_count.write(EncodedPair(pair(i, i + 5), JPEG, JPEG))
    assert [f["samples"] for f in by_count.close().values()] == [2, 2, 1]


def test_abort_leaves_no_partial_tar(tmp_path):
    shards = ShardSet(tmp_path, "u1", max_samples=100, max_bytes=10**9)
    shards.write(EncodedPair(pair(), JPEG, JPEG))
    shards.abort()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "stats.json"
    target.write_text(json.dumps({"v": 1}))

    def boom(f):
        f.write(b"{partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert json.loads(target.read_text()) == {"v": 1} and len(list(tmp_path.iterdir())) == 1


def test_names_from_records_and_clip_ids_are_plain(tmp_path):
    from pydantic import ValidationError

    from curation.store import Output, StoreError
    from curation.store.files import TAR_NAME, UNIT_ID, check_name
    from schemas.records import Clip

    for bad in ("../x.tar", "/etc/x.tar", "a/b.tar", "x.tar/..", ""):
        with pytest.raises(StoreError):
            check_name("tar", bad, TAR_NAME)
    with pytest.raises(StoreError):
        check_name("unit", "u../../etc", UNIT_ID)
    for cid in ("/abs", "a//b", "a/../b", "a\\b", "x\ny"):
        with pytest.raises(ValidationError):
            Clip(source="folder", clip_id=cid, uri="/v.mp4")
    assert Clip(source="folder", clip_id="P01/P01_101", uri="/v.mp4").clip_id == "P01/P01_101"
    # a record naming a path outside the pool is ignored, never used to touch files
    out = Output(tmp_path)
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "u0123456789ab.json").write_text(
        json.dumps({"unit_id": "u0123456789ab", "files": {"../../victim.tar": {}}})
    )
    assert out.records() == []


def test_the_lock_nests_in_one_process_and_names_its_holder(tmp_path):
    from curation.store import Output

    out = Output(tmp_path / "o")
    with out.lock("outer") as a:
        with out.lock("inner") as b:  # the CLI holds it around the flow, which takes it again
            assert b.owner == a.owner
        owner = json.loads((tmp_path / "o" / ".lock.owner").read_text())
        assert owner["command"] == "outer" and owner["pid"] == os.getpid()
    assert not (tmp_path / "o" / ".lock.owner").exists()


def test_clean_removes_what_a_dead_writer_left(tmp_path):
    from curation.store import Output

    out = Output(tmp_path).prepare()
    (tmp_path / "tars").mkdir()
    (tmp_path / "parts").mkdir()
    (tmp_path / "tars" / "u0123456789ab-0000.tar").write_bytes(b"orphan")
    (tmp_path / "tars" / ".u0123456789ab-0001.tar.tmp").write_bytes(b"partial")
    (tmp_path / "parts" / "u0123456789ab.samples.parquet").write_bytes(b"never committed")
    (tmp_path / ".stats.json.abc.tmp").write_bytes(b"{")
    (tmp_path / "generations" / "g000001" / "shards").mkdir(parents=True)  # no listing.json: never happened
    removed = out.clean()
    assert sorted(removed) == sorted(
        [
            "generations/g000001",
            "tars/u0123456789ab-0000.tar",
            "tars/.u0123456789ab-0001.tar.tmp",
            "parts/u0123456789ab.samples.parquet",
            ".stats.json.abc.tmp",
        ]
    )
