import json

import pytest
import webdataset as wds
from test_schemas import pair

from curation.pipeline import EncodedPair
from curation.sink import ShardSet, atomic_write

JPEG = b"\xff\xd8" + bytes(10_000)


def test_shards_roll_over_by_bytes_and_count(tmp_path):
    shards = ShardSet(tmp_path, "u1", max_samples=100, max_bytes=60_000)
    names = [shards.write(EncodedPair(pair(i, i + 5), JPEG, JPEG)) for i in range(5)]
    sizes = shards.close()
    assert names == ["u1-0000.tar", "u1-0000.tar", "u1-0001.tar", "u1-0001.tar", "u1-0002.tar"]
    assert sizes == {"u1-0000.tar": 2, "u1-0001.tar": 2, "u1-0002.tar": 1}
    assert all((tmp_path / n).stat().st_size <= 60_000 + 10240 for n in sizes)  # + tar end-of-archive record
    assert not list(tmp_path.glob(".*"))  # no temp files left
    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "u1-0000.tar"), shardshuffle=False)]
    assert len(keys) == 2
    by_count = ShardSet(tmp_path / "c", "u2", max_samples=2, max_bytes=10**9)
    for i in range(5):
        by_count.write(EncodedPair(pair(i, i + 5), JPEG, JPEG))
    assert list(by_count.close().values()) == [2, 2, 1]


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
