import pandas as pd

from curation.build import build
from curation.config import load_config
from curation.demo import UPPER_BODY_CONFIG, write_demo_clip


def test_self_made_demo_clip_gives_an_arm_raise_pair(tmp_path):
    path = write_demo_clip(tmp_path / "in")
    assert path.stat().st_size > 10_000
    cfg = load_config(UPPER_BODY_CONFIG, output=str(tmp_path / "out"), sources=[{"root": str(tmp_path / "in")}])
    stats = build(cfg)
    assert stats["clips_accepted"] == 1
    s = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    assert (s.caption.str.contains("right arm")).all()
