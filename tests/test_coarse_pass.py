"""The coarse pass (decode.coarse_frames): a few frames detected first reject the clips they decide; the
build's decisions and pairs are those of the full pass, with fewer frames decoded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ACCEPTED, REJECTED, video

pytestmark = pytest.mark.slow

CLIPS = {
    "dribbler": ACCEPTED["dribbler"],
    **{k: REJECTED[k][0] for k in ("big_buck_bunny", "ntu_hug", "carphone_closeup", "tai_chi_far", "street_dancer")},
}
# not compared: when, the shard and unit names (they hash the config, coarse_frames included) and the detail
# (a coarse reject names the frames it decided on; its reason is the full pass's)
TIMING = {"caption_created_at", "shard", "unit_id", "detail"}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from curation.build import build
    from curation.config import load_config

    root = tmp_path_factory.mktemp("coarse")
    folder = root / "input"
    folder.mkdir()
    for short, name in CLIPS.items():
        (folder / f"{short}{Path(name).suffix}").symlink_to(video(name))
    got = {}
    for k in (0, 8):
        out = root / f"out{k}"
        cfg = load_config(None, output=str(out), sources=[{"root": str(folder)}], decode={"coarse_frames": k})
        build(cfg)
        got[k] = (
            cfg,
            pd.read_parquet(out / "samples.parquet"),
            pd.read_parquet(out / "rejects.parquet"),
            json.loads((out / "stats.json").read_text()),
        )
    return got


def _same(a: pd.DataFrame, b: pd.DataFrame, key: str) -> None:
    cols = [c for c in a.columns if c not in TIMING]
    assert list(a.columns) == list(b.columns)
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_same_pairs_and_rejects(both):
    _, samples_off, rejects_off, _ = both[0]
    _, samples_on, rejects_on, _ = both[8]
    assert len(samples_on) >= 2
    _same(samples_off, samples_on, "pair_id")
    _same(rejects_off, rejects_on, "clip_id")
    expected = {k: REJECTED[k][1] for k in CLIPS if k in REJECTED}
    assert dict(zip(rejects_on.clip_id, rejects_on.reason, strict=True)) == expected


def test_fewer_frames_for_rejected_clips(both):
    _, _, rejects_off, stats_off = both[0]
    _, _, rejects_on, stats_on = both[8]
    early = rejects_on[rejects_on.detail.str.contains("coarse pass, 8 of")]
    assert len(early) >= 4, rejects_on[["clip_id", "reason", "detail"]]
    assert stats_on["funnel"]["coarse_frames"] == 8 * len(early)
    assert "coarse_frames" not in stats_off["funnel"]
    # each early reject decoded 8 frames instead of all it samples (the full pass's funnel counts them)
    assert stats_on["frames_decoded"] < stats_off["frames_decoded"] - 8
    assert stats_on["funnel"]["frames"] == stats_off["funnel"]["frames"] - (
        stats_off["frames_decoded"] - stats_on["frames_decoded"] + 8 * len(early)
    )


def test_serial_reference_decides_alike(both):
    """A clip processed alone (no decode pool, no batches across clips) gets the streaming reject, detail
    included."""
    from curation.pipeline import ClipProcessor

    cfg, _, rejects_on, _ = both[8]
    clip = next(c for src in cfg.sources for c in src.listing().clips if c.clip_id == "ntu_hug")
    res = ClipProcessor(cfg).setup()(clip)
    row = rejects_on.set_index("clip_id").loc["ntu_hug"]
    assert [(r.reason.value, r.detail) for r in res.rejects] == [(row.reason, row.detail)]
    assert res.frames_decoded == 8
