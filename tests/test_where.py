"""`--where` is parsed, not pasted: one boolean expression over samples.parquet's columns selects rows, and
anything else (statements, set operations, subqueries, table functions, unknown columns, comments, broken
quoting) is refused with a one-line reason, by the library and by the CLI (exit 2, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from curation.captions.recaption import RecaptionError, load_samples, select
from curation.captions.where import FilterError, select_rows
from curation.store import Output
from schemas.manifest import rejects_table, samples_table


@pytest.fixture()
def samples() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pair_id": ["a", "b", "c", "d"],
            "split": ["train", "val", "train", "val"],
            "source": ["kinetics", "ntu", "folder", "kinetics"],
            "pose_change": [0.1, 0.6, 0.9, None],
            "caption": ["it's up", "down", "left", None],
            "crop_box": [np.array([0, 0, 10, 10]), np.array([5, 5, 20, 20]), np.array([1, 1, 2, 2]), None],
        }
    )


def ids(df: pd.DataFrame) -> list[str]:
    return df.pair_id.tolist()


@pytest.mark.parametrize(
    "where, expected",
    [
        ("split = 'train'", ["a", "c"]),
        ("source = 'kinetics' and split = 'val'", ["d"]),
        ("pose_change > 0.5 AND split == 'train'", ["c"]),
        ("pose_change IS NULL OR pose_change < 0.2", ["a", "d"]),
        ("pose_change IS NOT NULL", ["a", "b", "c"]),
        ("pose_change BETWEEN 0.5 AND 1", ["b", "c"]),
        ("pair_id IN ('a', 'd')", ["a", "d"]),
        ("pair_id in ['a', 'b']", ["a", "b"]),  # a Python list's repr, as tests and users write it
        ("NOT (split = 'val') AND source <> 'folder'", ["a"]),
        ("caption LIKE '%it''s%'", ["a"]),  # a quote inside a string, escaped the SQL way
        ("caption ILIKE 'DO%'", ["b"]),
        ("abs(pose_change - 1) < 0.2 ", ["c"]),
        ("lower(upper(split)) = 'val' and length(pair_id) = 1", ["b", "d"]),
        ("coalesce(pose_change, 0) * 2 + 1 > 1.5", ["b", "c"]),
        ("crop_box[3] >= 10", ["a", "b"]),
        ("\"split\" = 'val'", ["b", "d"]),  # a quoted column name
        ("true", ["a", "b", "c", "d"]),
        ("  ", ["a", "b", "c", "d"]),
    ],
)
def test_a_legit_filter_selects_the_right_rows(samples, where, expected):
    assert ids(select_rows(samples, where)) == expected


@pytest.mark.parametrize(
    "where, reason",
    [
        ("1=1) UNION ALL SELECT pair_id, true FROM samples WHERE (1=1", "closes a parenthesis"),
        ("1=1) UNION ALL SELECT 1", "closes a parenthesis"),
        ("split = 'a' UNION ALL SELECT 1", "syntax error"),
        ("1=1; DROP TABLE x", "not statements"),
        ("1=1); COPY samples TO '/tmp/x.csv'; SELECT (1", "closes a parenthesis"),
        ("pair_id IN (SELECT pair_id FROM samples)", "subqueries"),
        ("pair_id = (SELECT 1 FROM glob('/etc/*'))", "subqueries"),
        ("EXISTS (SELECT 1)", "subqueries"),
        ("read_csv('/etc/passwd') IS NOT NULL", "function 'read_csv'"),
        ("length(read_text('/etc/passwd')) > 0", "function 'read_text'"),
        ("getenv('HOME') = 'x'", "function 'getenv'"),
        ("count(*) > 1", "not allowed"),
        ("no_such_column = 1", "unknown column 'no_such_column'"),
        ("samples.split = 'val'", "qualified names"),
        ('split = "train"', "unknown column 'train'"),  # double quotes name a column, not a string
        ("split = 'train' -- and source = 'ntu'", "comments"),
        ("split = 'train' /* */ OR true", "comments"),
        ("split = 'x' \n-- \n OR true", "comments"),
        ("split = 'train", "unterminated string"),
        ("split = 'train'' OR 1=1", "unterminated string"),
        ("split = $1", "parameters"),
        ("COLUMNS(*) = 1", "star"),
        ("pose_change", "must be a boolean expression"),
        ("@samples.to_csv('/tmp/x') == 0", "not allowed"),
    ],
)
def test_an_injection_or_a_bad_filter_is_refused_with_one_line(samples, where, reason):
    with pytest.raises(FilterError, match="bad --where filter") as e:
        select_rows(samples, where)
    msg = str(e.value)
    assert reason in msg and "\n" not in msg
    with pytest.raises(RecaptionError, match="bad --where filter"):
        select(samples, where)


def test_nothing_is_written_or_read_through_a_filter(samples, tmp_path):
    target = tmp_path / "x.csv"
    for where in (f"1=1); COPY samples TO '{target}'; SELECT (1", f"pair_id IN (SELECT * FROM read_csv('{target}'))"):
        with pytest.raises(FilterError):
            select_rows(samples, where)
    assert not target.exists()


def tiny_output(root: Path) -> Path:
    """A finished output with a samples.parquet of three rows and no shards: enough for a filter."""
    rows = [
        {"pair_id": f"p{i}", "clip_id": clip, "split": "train", "pose_change": 0.2 * i, "shard": "s"}
        for i, clip in enumerate(("dribbler", "tai_chi", "dribbler"))
    ]
    out = Output.open(root)
    with out.lock("test"):
        out.write_generation(samples_table(rows), rejects_table([]), {}, {}, {})
    assert len(load_samples(root)) == 3
    return root


def test_the_cli_exits_2_with_one_line_for_a_bad_filter(tmp_path):
    out = tiny_output(tmp_path / "out")
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-test-WHERE-0123456789",
        "OPENAI_BASE_URL": "http://127.0.0.1:9",  # nothing may be asked: the filter is refused first
    }
    cli = Path(sys.executable).with_name("motionpairs")
    for where, reason in [
        ("clip_id = 'x') UNION ALL SELECT 1", "closes a parenthesis"),
        ("pair_id IN (SELECT pair_id FROM samples)", "subqueries"),
        ("read_csv('/etc/passwd') IS NULL", "function 'read_csv'"),
        ("no_such_column == 1", "unknown column 'no_such_column'"),
    ]:
        r = subprocess.run(
            [str(cli), "recaption", str(out), "--where", where, "--model", "m"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert r.returncode == 2, r.stderr[-2000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("motionpairs: error: bad --where filter"), r.stderr
        assert reason in lines[0] and "Traceback" not in r.stderr and r.stdout == ""
