import pytest

from curation.config import ConfigError, load_config
from curation.plan import fingerprint


def test_defaults_and_overrides():
    cfg = load_config(None, output="/o", sources=[{"root": "/in"}], motion={"min_pose_change": 0.4})
    assert cfg.motion.min_pose_change == 0.4 and cfg.motion.person_conf == 0.6
    assert cfg.sources[0].kind == "folder"


def test_unknown_key_is_a_one_line_error_with_a_suggestion(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("motion:\n  min_pose_chnage: 0.3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, output="/o")
    msg = str(e.value)
    assert "\n" not in msg and "motion.min_pose_chnage" in msg and "motion.min_pose_change" in msg


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match="decode.sample_fps"):
        load_config(None, output="/o", decode={"sample_fps": -1})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", output="/o")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad, output="/o")
    with pytest.raises(ConfigError, match="keypoint"):
        load_config(None, output="/o", motion={"required_keypoints": ["left_shoulderr"]})


def test_environment_beats_file_and_overrides_beat_environment(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("motion:\n  min_pose_change: 0.3\ndecode:\n  sample_fps: 2\n")
    monkeypatch.setenv("MOTIONPAIRS_MOTION__MIN_POSE_CHANGE", "0.5")
    cfg = load_config(f, output="/o")
    assert cfg.motion.min_pose_change == 0.5 and cfg.decode.sample_fps == 2
    cfg = load_config(f, output="/o", motion={"min_pose_change": 0.7})
    assert cfg.motion.min_pose_change == 0.7


def test_fingerprint_tracks_what_changes_results():
    a = load_config(None, output="/o1")
    assert fingerprint(a) == fingerprint(load_config(None, output="/o2", pose={"device": "cpu"}))
    assert fingerprint(a) != fingerprint(load_config(None, output="/o1", motion={"min_pose_change": 0.9}))
