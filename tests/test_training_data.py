import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from training.data import SkipCounter, dataset_size, open_shards, shard_urls


def test_reader_streams_validated_samples(real_build):
    _, out, stats = real_build
    urls = shard_urls(out)
    assert dataset_size(urls) == stats["pairs"]
    got = list(open_shards(out))
    assert len(got) == stats["pairs"]
    s = got[0]
    pose = s.pair.before_pose
    assert s.before.dtype == np.uint8 and s.before.shape == (pose.frame_height, pose.frame_width, 3)
    assert s.caption.text and s.key == s.pair.key
    shuffled = [x.key for x in open_shards(str(out / "shards" / "*.tar"), shuffle=10, seed=1)]
    assert sorted(shuffled) == sorted(x.key for x in got)


def test_bad_samples_are_counted_and_skipped(real_build, tmp_path):
    _, out, stats = real_build
    for p in (out / "shards").glob("*.tar"):
        shutil.copy(p, tmp_path / p.name)
    victim = sorted(tmp_path.glob("*.tar"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a truncated shard
    with pytest.raises(Exception):  # noqa: B017 - webdataset raises tarfile.ReadError or ValueError
        list(open_shards(tmp_path))
    counter = SkipCounter()
    got = list(open_shards(tmp_path, skip_bad=counter))
    assert counter.count >= 1 and 0 < len(got) < stats["pairs"]
    assert all(x.before.ndim == 3 for x in got)


def test_skips_in_dataloader_workers_count_in_the_training_process(real_build, tmp_path):
    """Bad samples met inside DataLoader worker processes count in the training process. Run in a fresh
    interpreter, as a training job is (forking this test process, with the threads earlier tests left
    behind, is not what a training job does)."""
    _, out, stats = real_build
    for p in (out / "shards").glob("*.tar"):
        data = p.read_bytes()
        (tmp_path / p.name).write_bytes(data[: len(data) // 2])  # every shard truncated
    script = f"""
import json, torch
from training.data import SkipCounter, open_shards
from training.transforms import PairTransform
counter = SkipCounter()
ds = open_shards({str(tmp_path)!r}, skip_bad=counter).map(PairTransform(32))
got = sum(b["before"].shape[0] for b in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2))
print(json.dumps({{"skipped": counter.count, "got": got}}))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    fig = json.loads(r.stdout.strip().splitlines()[-1])
    tars = len(list(tmp_path.glob("*.tar")))  # each truncated tar gives one skip at least, in some worker
    assert fig["skipped"] >= tars >= 1 and fig["got"] < stats["pairs"]
