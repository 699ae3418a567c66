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
