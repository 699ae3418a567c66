"""The build's decisions on every shared clip against the labelled list in tests/labels/videos.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main

LABELS = Path(__file__).parent / "labels" / "videos.csv"
PAIRS = Path(__file__).parent / "labels" / "pairs.csv"  # every accepted pair, looked at side by side
pytestmark = pytest.mark.slow


def test_every_label_holds(labelled_build, tmp_path, capsys):
    out, stats = labelled_build
    assert not stats["unaccounted_clips"] and not stats["double_counted_clips"]
    report = tmp_path / "labels.json"
    assert main(["eval", str(out), "--labels", str(LABELS), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(report.read_text())
    wrong = [r for r in result["rows"] if not r["ok"]]
    assert not wrong, wrong
    assert result["accuracy"] == 1.0 and "accuracy 1.000" in printed
    assert len(result["rows"]) == len(LABELS.read_text().strip().splitlines()) - 1


def test_eval_says_what_is_wrong(labelled_build, tmp_path, capsys):
    """A label the build does not meet is printed with the pairs it accepted; exit stays 0."""
    out, _ = labelled_build
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,expected,reasons,note\n"
        "mmhuman3d__demo_resources_single_person_demo.mp4,reject,multiple_people,deliberately wrong\n"
    )
    assert main(["eval", str(out), "--labels", str(labels)]) == 0
    printed = capsys.readouterr().out
    assert "WRONG mmhuman3d__demo_resources_single_person_demo.mp4" in printed and "accepted pair" in printed
    assert "accuracy 0.000" in printed


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing"), "--labels", str(LABELS)]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("file,expected\nx.mp4,maybe\n")
    assert main(["eval", str(tmp_path), "--labels", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("motionpairs: error:") for line in err)


def test_every_accepted_pair_is_labelled_and_kept(labelled_build, tmp_path, capsys):
    """Pair precision on the shared clips: each accepted pair was looked at (before | after) and
    labelled; every one is a pair a person would keep, and none is unlabelled."""
    out, _ = labelled_build
    report = tmp_path / "pairs.json"
    assert main(["eval", str(out), "--labels", str(LABELS), "--pair-labels", str(PAIRS), "--json", str(report)]) == 0
    pairs = json.loads(report.read_text())["pairs"]
    assert pairs["unlabelled"] == [] and pairs["labelled"] == pairs["accepted"] >= 4, pairs
    assert pairs["precision"] == 1.0 and "pair precision 1.000" in capsys.readouterr().out


REAL = Path(__file__).parent / "data" / "real"  # 60 further real clips (MANIFEST.csv: source, licence)
REAL_LABELS = Path(__file__).parent / "labels" / "real_clips.csv"
REAL_PAIRS = [Path(__file__).parent / "labels" / n for n in ("real_pairs.csv", "real_pairs_old.csv")]


def test_real_clips_decisions_and_pair_precision(tmp_path, capsys):
    """The 60 real clips (handheld, sports, homes, overlays, cut-off bodies; issue 22): every pair the
    build accepts was looked at and labelled (none unlabelled), and the decisions do not fall below
    what this code was measured at, less one: 57 of 60 clip labels, 45 of 47 accepted pairs kept
    (0.957), with OpenVINO pinned to fp32 on an AMD EPYC (2026-12-05, sharpness at the frame's scale and
    transition_mix; 56 and 43 of 45 before). OpenVINO infers in bf16 by default where the CPU has AMX or
    AVX512-BF16 (pinned to fp32 since RESULTS_VERSION 15); a machine of 2026-12-03 gave 53 of 60 then.
    These are floors that catch a regression, not the goal (every label holding: README). A second
    build of the same clips into another output decides every clip and pair alike, figures included."""
    import pandas as pd

    from curation.build import build
    from curation.config import load_config
    from schemas.records import MotionFigures, QualityFigures

    out, again = tmp_path / "real", tmp_path / "again"
    for o in (out, again):
        stats = build(load_config(None, output=str(o), sources=[{"root": str(REAL)}]))
        assert not stats["unaccounted_clips"] and not stats["double_counted_clips"]
    figures = ["pair_id", "clip_id", "before_time_s", "after_time_s", "caption"]
    figures += [c for c in (*MotionFigures.model_fields, *QualityFigures.model_fields)]
    first, second = (pd.read_parquet(o / "samples.parquet").sort_values("pair_id") for o in (out, again))
    pd.testing.assert_frame_equal(first[figures].reset_index(drop=True), second[figures].reset_index(drop=True))
    why = [pd.read_parquet(o / "rejects.parquet").query("level == 'clip'")[["uri", "reason"]] for o in (out, again)]
    assert sorted(map(tuple, why[0].to_numpy())) == sorted(map(tuple, why[1].to_numpy()))
    report = tmp_path / "real.json"
    argv = ["eval", str(out), "--labels", str(REAL_LABELS), "--json", str(report)]
    for f in REAL_PAIRS:
        argv += ["--pair-labels", str(f)]
    assert main(argv) == 0
    capsys.readouterr()
    doc = json.loads(report.read_text())
    pairs = doc["pairs"]
    assert pairs["unlabelled"] == [], pairs["unlabelled"]  # a new pair: look at it, then label it
    holds = sum(r["ok"] for r in doc["rows"])
    assert len(doc["rows"]) == 60 and holds >= 56, [r for r in doc["rows"] if not r["ok"]]
    assert pairs["keep"] >= 44 and pairs["precision"] >= 0.95, pairs["dropped"]


def test_avoid_labels_hold_for_kept_pairs_or_a_named_reject(tmp_path):
    """`avoid`: a clip with a hazard in part of it. Pairs that keep clear of it (every one labelled
    keep) or a reject for one of the reasons hold; a pair labelled drop, an unlabelled pair, another
    reject reason and no pair labels at all do not."""
    import pandas as pd

    from curation.report.labels import check_labels, read_labels, read_pair_labels

    labels = tmp_path / "clips.csv"
    labels.write_text("file,expected,reasons,note\nfade.mp4,avoid,shot_cut,cross-fade at 2 s\n")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("pair_id,clip,keep,why\np1,fade,yes,after the fade\np2,fade,no,inside the fade\n")
    lab, pl = read_labels(labels), read_pair_labels(pairs)
    none = pd.DataFrame({"level": [], "uri": [], "reason": []})

    def ok(ids: list[str], rejects=none, pair_labels=pl) -> bool:
        samples = pd.DataFrame({"uri": ["/v/fade.mp4"] * len(ids), "pair_id": ids, "clip_id": ["fade"] * len(ids)})
        return check_labels(samples, rejects, lab, pair_labels).rows[0]["ok"]

    assert ok(["p1"]) and not ok(["p1", "p2"]) and not ok(["p1", "p3"]) and not ok(["p1"], pair_labels=None)
    rejected = pd.DataFrame({"level": ["clip"], "uri": ["/v/fade.mp4"], "reason": ["shot_cut"]})
    assert ok([], rejected) and not ok([], rejected.assign(reason="low_motion"))
