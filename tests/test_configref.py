"""The configuration reference (docs/configuration.md) is generated from the config's pydantic fields:
it is current, every key has a description, and the environment variables it names are the ones the
settings read."""

from __future__ import annotations

import json

import pytest

from curation import configref
from curation.config import ConfigError, load_config


def test_the_reference_is_current():
    assert configref.DOC.read_text(encoding="utf-8") == configref.render(), "run make docs"
    assert configref.main(["--check"]) == 0


def test_every_key_has_a_description():
    tables = configref.all_rows()
    missing = [r.key for table in tables.values() for r in table if not r.description.strip()]
    assert missing == []
    assert {"Top level", "decode", "pose", "motion", "quality", "pairing", "egocentric", "caption", "shards"} <= set(
        tables
    )
    kinds = {t.split()[-1] for t in tables if t.startswith("sources: kind ")}
    assert kinds == {"folder", "kinetics", "ntu", "epic"}
    assert any(r.key == "motion.min_pose_change" for r in tables["motion"])


def test_the_supplement_names_only_fields_that_still_lack_a_description():
    """A description added in the field's class makes its SUPPLEMENT entry stale: remove it."""
    models = {m.__name__: m for m in configref._models(configref.BuildConfig.model_fields["sources"].annotation)}
    for info in configref.BuildConfig.model_fields.values():
        models.update({m.__name__: m for m in configref._models(info.annotation)})
    for cls, field in configref.SUPPLEMENT:
        assert cls in models and field in models[cls].model_fields, (cls, field)
        assert not models[cls].model_fields[field].description, f"{cls}.{field} has its own description now"


def numeric_rows():
    return [
        r
        for table in configref.all_rows().values()
        for r in table
        if r.env and r.type in ("number", "integer", "integer | null", "number | null")
    ]


@pytest.mark.parametrize("row", numeric_rows(), ids=lambda r: r.key)
def test_the_named_environment_variable_is_read(row, monkeypatch):
    """Each numeric key's variable, set to something that is not a number, is refused naming the key:
    the settings read exactly that name."""
    monkeypatch.setenv(row.env, "not-a-number")
    with pytest.raises(ConfigError, match=row.key.split(".")[-1]):
        load_config(None, output="OUT")


def test_the_documented_list_values_parse(monkeypatch):
    monkeypatch.setenv("MOTIONPAIRS_MOTION__REQUIRED_KEYPOINTS", json.dumps(["left_shoulder", "right_shoulder"]))
    monkeypatch.setenv("MOTIONPAIRS_SOURCES", json.dumps([{"kind": "folder", "root": "videos/"}]))
    monkeypatch.setenv(configref.env_name(["motion", "min_pose_change"]), "0.3")
    cfg = load_config(None, output="OUT")
    assert cfg.motion.required_keypoints == ["left_shoulder", "right_shoulder"]
    assert cfg.sources[0].kind == "folder" and cfg.sources[0].root == "videos/"
    assert cfg.motion.min_pose_change == 0.3
