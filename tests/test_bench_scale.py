"""The bookkeeping benchmark (bench/scale.py) runs end to end in its small mode, locally and on the
loopback S3 server, and prints every figure: no timing is asserted, only that each figure is there and
sane. Also: the store's near-duplicate search, which that benchmark showed growing with the square of
the dataset, gives the reference's answer."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from conftest import REPO

from curation.stages.quality import near_duplicates as reference
from curation.store.dedupe import near_duplicates

STEPS = ["commit", "finalize", "plan", "noop", "verify", "report", "publish", "gc", "train_open"]


def test_small_scale_benchmark_prints_every_figure(tmp_path):
    """About 1 min on 2 idle cores: 20 and 200 clips, a size and backend's steps forked from one process."""
    cmd = [sys.executable, str(REPO / "bench" / "scale.py"), "--small", "--json", "--work", str(tmp_path / "w")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=850, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    fig = json.loads(r.stdout.strip().splitlines()[-1])
    assert fig["mode"] == "small"
    for key in ("video_hours_per_core_hour", "pairs_per_core_hour"):  # no real build in --small
        assert key in fig and fig[key] is None
    assert fig["note"]
    book = fig["bookkeeping"]
    sizes = [str(n) for n in book["sizes"]]
    assert len(sizes) == 2 and int(sizes[1]) == 10 * int(sizes[0])
    for backend in ("local", "s3"):
        steps = STEPS + (["noop_new_machine"] if backend == "s3" else [])
        for n in sizes:
            per = book[backend][n]
            assert per["units"] == -(-int(n) // book["clips_per_unit"])  # every clip in a committed unit
            for step in steps:
                f = per[step]
                assert f["seconds"] > 0 and f["cpu_seconds"] >= 0, (backend, n, step, f)
                assert f["peak_rss_mb"] > 0 and f["step_rss_mb"] >= 0, (backend, n, step, f)
                assert f["forked_from_rss_mb"] > 0, (backend, n, step, f)  # --small forks the steps
            assert per["noop"]["nothing_to_do"] is True
            assert per["verify"]["faults"] == 0, per["verify"]["first_faults"]
            assert per["publish"]["samples"] > 0 and per["train_open"]["first_sample"]
            assert per["gc"]["generations_removed"] >= 1
        if backend == "s3":
            assert book["s3"][sizes[0]]["noop_new_machine"]["nothing_to_do"] is True
        growth = book["growth"][backend]
        for step in steps:
            g = growth[step][f"{sizes[0]}->{sizes[1]}"]
            assert g["seconds"] is not None and g["seconds"] > 0, (backend, step, g)
            assert g["peak_rss_mb"] is not None and g["peak_rss_mb"] > 0, (backend, step, g)
            assert "step_rss_mb" in g and "cpu_seconds" in g
    planning = book["planning"]
    for run in ("first", "again"):
        p = planning[run]
        assert p["rows"] > 0 and p["clips"] == p["rows"] and p["seconds"] > 0 and p["peak_rss_mb"] > 0
    assert planning["first"]["identity_cache"] == "cold" and planning["again"]["identity_cache"] == "warm"


def _flip(rng: random.Random, h: str, bits: int) -> str:
    v = int(h, 16)
    for b in rng.sample(range(64), bits):
        v ^= 1 << b
    return f"{v:016x}"


def test_near_duplicate_search_gives_the_reference_answer():
    """Same dropped pairs, each with the same kept pair, on clusters of alike hashes at several
    distances (the store's search sorts by band pairs; the reference compares within before bands)."""
    rng = random.Random(7)
    for d in (0, 1, 4, 7):
        for _ in range(3):
            keys: list[tuple[str, str, str]] = []
            for i in range(2000):
                if keys and rng.random() < 0.4:
                    _, b, a = rng.choice(keys)
                    keys.append((f"p{i}", _flip(rng, b, rng.randint(0, d + 2)), _flip(rng, a, rng.randint(0, d + 2))))
                else:
                    keys.append((f"p{i}", f"{rng.getrandbits(64):016x}", f"{rng.getrandbits(64):016x}"))
            want = reference(keys, d)
            assert want and near_duplicates(keys, d) == want
    same = [(f"p{i}", "0" * 16, "f" * 16) for i in range(3000)]  # one large cluster: the reference's way
    assert near_duplicates(same, 4) == reference(same, 4) == {f"p{i}": "p0" for i in range(1, 3000)}
