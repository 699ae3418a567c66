"""The QA report (in a real headless Chromium) and the Hugging Face dataset card (loaded by `datasets`)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import ACCEPTED, SHARED, video

from flows.cli import main

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.fail("headless Chromium is missing: `make setup` installs Debian's chromium package")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    """Messages of the page (console.*, uncaught errors), not of the browser process itself."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_report_in_a_browser(labelled_build, tmp_path):
    out, stats = labelled_build
    assert stats["report"]["path"].endswith("report/index.html")  # written at the end of the build
    index = out / "report" / "index.html"
    index.unlink()
    assert main(["report", str(out)]) == 0 and index.is_file()
    samples = pd.read_parquet(out / "samples.parquet")
    rejects = pd.read_parquet(out / "rejects.parquet")
    done = chromium("--dump-dom", index.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert not console_errors(done.stderr), console_errors(done.stderr)
    dom = done.stdout
    # the gallery: one picture per pair of the manifest (all pages), each a readable JPEG file
    pages = [dom] + [chromium("--dump-dom", p.as_uri()).stdout for p in sorted((out / "report").glob("gallery-*.html"))]
    shown = [src for page in pages for src in re.findall(r'<img class="pair-image" src="([^"]+)"', page)]
    assert len(shown) == len(samples) > 0
    for src in shown:
        assert (out / "report" / src).read_bytes()[:2] == b"\xff\xd8"
    assert f"Showing {len(samples)} of {len(samples)} pairs" in dom
    for pid in samples.pair_id:
        assert f'data-pair="{pid}"' in dom
    # funnel, every reject reason with an example frame, histograms, the versions
    clip_reasons = set(rejects[rejects.level == "clip"].reason)
    for reason in clip_reasons:
        assert f"<td>{reason}</td>" in dom
    assert dom.count('class="reject-example"') >= len(clip_reasons)
    from curation.report.page import HISTOGRAMS

    assert dom.count("data:image/png;base64") == len(HISTOGRAMS)  # one histogram per filter figure
    assert stats["versions"]["pose_model"] in dom and stats["fingerprint"] in dom
    # and it renders: the screenshot is not blank
    shot = tmp_path / "shot.png"
    assert chromium(f"--screenshot={shot}", "--window-size=1280,2000", index.as_uri()).returncode == 0
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.std() > 20


def test_report_of_an_empty_output_says_so_and_a_missing_one_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 0
    dom = chromium("--dump-dom", (empty / "report" / "index.html").as_uri()).stdout
    assert "holds no finished build" in dom
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("motionpairs: error:")


def test_dataset_card_loads_a_build_mixing_labelled_and_unlabelled_sources(tmp_path):
    """Kinetics clips carry a label, a plain folder's do not: the HF webdataset loader alone infers
    `label: null` from a first shard of folder clips and fails on the Kinetics one; with the card's
    declared features `load_dataset(OUT)` reads the output as it is."""
    datasets = pytest.importorskip("datasets")
    from curation.build import build
    from curation.config import load_config

    k400 = SHARED / "data" / "annotations" / "kinetics" / "activitynet_kinetics-400_val.csv"
    kin = tmp_path / "kinetics" / "val" / "tai chi"
    kin.mkdir(parents=True)
    (kin / "Kop0sDqOn-c_000253_000263.mp4").symlink_to(video(ACCEPTED["tai_chi_forest"]))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    out = tmp_path / "out"
    cfg = load_config(
        None,
        output=str(out),
        sources=[
            {"kind": "kinetics", "root": str(tmp_path / "kinetics"), "annotations": [str(k400)]},
            {"kind": "folder", "root": str(folder)},
        ],
        shards={"clips_per_unit": 1},
    )
    stats = build(cfg)
    samples = pd.read_parquet(out / "samples.parquet")
    assert set(samples.source) == {"kinetics", "folder"} and stats["pairs"] == len(samples)
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "task_categories" in card and "image-to-image" in card
    for section in ("## How it was built", "## Schema", "## Counts", "## Sources and licences", "## Known limitations"):
        assert section in card
    assert "| `quality` | struct(person_height" in card
    assert "kinetics:" in card and "Kinetics" in card  # licence per source
    # the loader alone, folder shard first: the failure this card fixes
    tars = sorted((out / "shards").glob("*.tar"), key=lambda p: "kinetics" in p.read_bytes().decode("latin-1"))
    with pytest.raises(datasets.exceptions.DatasetGenerationError):
        datasets.load_dataset("webdataset", data_files=[str(t) for t in tars], split="train")
    ds = datasets.load_dataset(str(out), split="train")
    assert len(ds) == len(samples)
    labels = {row["json"]["clip"]["source"]: row["json"]["clip"]["label"] for row in ds}
    assert labels == {"kinetics": "tai chi", "folder": None}
    row = ds[0]
    assert row["before.jpg"].size[0] > 0 and len(row["json"]["before_pose"]["keypoints"]) == 17
    assert row["json"]["quality"]["person_height"] > 0
