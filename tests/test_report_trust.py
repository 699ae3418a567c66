"""A report and a card a user can trust: a build whose file names, Kinetics labels and LLM captions carry
HTML and script renders in headless Chromium as text (no injected element, no script run, a strict
Content-Security-Policy), and shows yield per action label and per source."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from conftest import ACCEPTED, video, write_video
from fake_openai import FakeOpenAI
from test_report import chromium, console_errors

pytestmark = pytest.mark.slow
KEY = "sk-test-TRUST-0123456789"

# each payload, if it ever became markup, would leave a mark on the page (a changed title, an attribute)
PWN = "document['body']['dataset']['pwned']=1"  # no dots: a clip id has none
HOSTILE_NAME = f'"><img src=x onerror="{PWN}"><svg onload="{PWN}">'  # a file name: no dot, no slash
HOSTILE_LABEL = f"tai chi</td><script>document.title='pwned'</script><svg onload=\"{PWN}\">"  # a Kinetics label
HOSTILE_CAPTION = f"raise your right arm<img src=x onerror=\"{PWN}\"><script>document.title='pwned'</script>"
EMPTY_LABEL = "push up <b>hard</b>"  # a second class: its clips give no pair

ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "table", "tbody", "thead",
                "tr", "th", "td", "code", "img", "div", "span", "nav", "a", "b", "ul", "li", "details", "summary",
                "small", "br"}  # fmt: skip


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def elements(dom: str) -> Elements:
    p = Elements()
    p.feed(dom)
    return p


@pytest.fixture(scope="module")
def hostile_build(tmp_path_factory):
    """A Kinetics-layout build with two labels (one hostile, whose clip gives pairs; one whose clips give
    none: a file missing and a clip with nobody in it) beside a folder whose file name is hostile, LLM
    captions from a loopback server answering markup."""
    from curation.build import build
    from curation.config import load_config

    tmp = tmp_path_factory.mktemp("trust")
    root = tmp / "kinetics"
    (root / "val").mkdir(parents=True)
    (root / "val" / "dribbleAAAA_000000_000004.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    gray = [np.full((240, 320, 3), 120, np.uint8) for _ in range(30)]
    write_video(root / "val" / "nobodyBBBBB_000010_000013.mp4", gray)
    ann = tmp / "validate.csv"
    with ann.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerow([HOSTILE_LABEL, "dribbleAAAA", 0, 4, "validate"])
        w.writerow([EMPTY_LABEL, "nobodyBBBBB", 10, 13, "validate"])
        w.writerow([EMPTY_LABEL, "missingCCCC", 20, 30, "validate"])
    folder = tmp / "folder"
    folder.mkdir()
    other = [np.full((240, 320, 3), 60, np.uint8) for _ in range(30)]  # not a copy of the gray one
    write_video(folder / "plain.mp4", other).rename(folder / f"{HOSTILE_NAME}.mp4")
    server = FakeOpenAI(api_key=KEY).start()
    server.instruction = HOSTILE_CAPTION
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", KEY)
    try:
        out = tmp / "out"
        cfg = load_config(
            None,
            output=str(out),
            sources=[
                {"kind": "kinetics", "root": str(root), "annotations": [str(ann)]},
                {"kind": "folder", "root": str(folder)},
            ],
            caption={"captioner": "openai", "model": "fake-vlm", "base_url": server.base_url, "max_retries": 0,
                     "requests_per_minute": 6000},
        )  # fmt: skip
        stats = build(cfg)
    finally:
        mp.undo()
        server.stop()
    return out, stats


def check_page(dom: str) -> Elements:
    """No element the data made, no handler, no script, nothing loaded from elsewhere; the title as written."""
    page = elements(dom)
    tags = {t for t, _ in page.tags}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert "data-pwned" not in attrs, (tag, attrs)
        if tag == "img":
            src = attrs.get("src") or ""
            assert src.startswith("data:image/png;base64,") or re.fullmatch(r"thumbs/[\w-]+\.jpg", src), src
        if tag == "a":
            assert re.fullmatch(r"(index|gallery-\d{4})\.html", attrs.get("href") or ""), attrs
    assert page.title.startswith("motionpairs report: ") and "pwned" not in page.title
    return page


def test_hostile_names_labels_and_captions_are_text_in_the_browser(hostile_build, tmp_path):
    out, stats = hostile_build
    samples = pd.read_parquet(out / "samples.parquet")
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert HOSTILE_LABEL in set(samples.label) and len(samples) > 0  # the build really carries the payloads
    assert (samples.caption == HOSTILE_CAPTION).any()
    hostile_id = next(c for c in rejects.clip_id if "onerror=" in c)  # the file name (spaces became _)
    assert '"><img' in hostile_id and "<svg" in hostile_id
    index = out / "report" / "index.html"
    html_text = index.read_text()
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html_text)
    csp = html.unescape(policy.group(1)) if policy else ""
    assert "default-src 'none'" in csp and "script-src 'none'" in csp and "unsafe-inline" not in csp, csp
    done = chromium("--dump-dom", index.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert not console_errors(done.stderr), console_errors(done.stderr)  # nothing blocked: nothing tried
    page = check_page(done.stdout)
    # the payloads are on the page, as text: in the rejects table (an alt attribute), the gallery, captions
    alts = [a.get("alt") or "" for t, a in page.tags if t == "img"]
    assert hostile_id in alts, alts
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in done.stdout
    assert done.stdout.count("&lt;img src=x onerror=") >= 2  # the caption and the file name
    # escaping alone holds: the same page without its policy injects nothing either
    bare = tmp_path / "report"
    shutil.copytree(out / "report", bare)
    for p in bare.glob("*.html"):
        p.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", p.read_text()))
    for p in sorted(bare.glob("*.html")):
        run = chromium("--dump-dom", p.as_uri())
        assert run.returncode == 0 and not console_errors(run.stderr), console_errors(run.stderr)
        check_page(run.stdout)
    # and the policy holds on its own: markup that slipped through would not run in this browser
    slipped = tmp_path / "slipped.html"
    slipped.write_text(html_text.replace("<body>", f"<body><script>document.title='pwned';{PWN}</script>", 1))
    (tmp_path / "thumbs").mkdir(exist_ok=True)
    run = chromium("--dump-dom", slipped.as_uri())
    assert "Content Security Policy" in run.stderr and "data-pwned" not in run.stdout
    assert "<title>motionpairs report: " in run.stdout


def test_yield_per_label_and_source_and_labelled_rejects(hostile_build):
    """A Kinetics-layout build with two labels: the rejects carry the label (a missing file as well as a
    clip with nobody in it), and stats.json, the report and the card show yield per label, the label that
    gives nothing first."""
    out, stats = hostile_build
    rejects = pd.read_parquet(out / "rejects.parquet")
    kin = rejects[(rejects.source == "kinetics") & (rejects.level == "clip")].set_index("clip_id")
    assert kin.loc["missingCCCC_000020_000030", ["reason", "label", "split"]].tolist() == [
        "missing_file",
        EMPTY_LABEL,
        "val",
    ]
    assert kin.loc["nobodyBBBBB_000010_000013", ["label", "split", "youtube_id"]].tolist() == [
        EMPTY_LABEL,
        "val",
        "nobodyBBBBB",
    ]
    assert json.loads(kin.loc["nobodyBBBBB_000010_000013", "extra"])["time_start"] == 10
    folder = rejects[rejects.source == "folder"]
    assert folder.label.isna().all() and (folder.split == "train").all()
    # stats.json: per label, the one that gives nothing first, with its reasons
    labels = stats["yield"]["by_label"]
    first = labels[0]
    assert (first["source"], first["label"], first["pairs"], first["clips_in"]) == ("kinetics", EMPTY_LABEL, 0, 2)
    assert {r["reason"] for r in first["top_reasons"]} == {"ingest/missing_file", "pose/no_person"}
    good = next(r for r in labels if r["label"] == HOSTILE_LABEL)
    assert good["pairs"] > 0 and good["clips_in"] == good["clips_accepted"] == 1
    assert {(r["source"], r["label"]) for r in labels} == {
        ("kinetics", EMPTY_LABEL),
        ("kinetics", HOSTILE_LABEL),
        ("folder", "(no label)"),
    }
    sources = {r["source"]: r for r in stats["yield"]["by_source"]}
    assert sources["kinetics"]["clips_in"] == 3 and sources["folder"]["pairs"] == 0
    assert sources["kinetics"]["pairs"] == good["pairs"] == stats["pairs"]
    # the report: both tables, the empty class marked, every label as text
    dom = chromium("--dump-dom", (out / "report" / "index.html").as_uri()).stdout
    table = dom.split('id="yield-labels"', 1)[1].split("</table>", 1)[0]
    assert html.escape(EMPTY_LABEL, quote=False) in table and html.escape(HOSTILE_LABEL, quote=False) in table
    assert table.index(html.escape(EMPTY_LABEL, quote=False)) < table.index(html.escape(HOSTILE_LABEL, quote=False))
    assert '<tr class="none"><td>kinetics</td>' in table and 'id="yield-sources"' in dom
    # the card: the same, escaped for markdown (no markup from the data)
    card = (out / "README.md").read_text()
    assert "## Yield per source and per action label" in card
    assert "| kinetics | push up &lt;b&gt;hard&lt;/b&gt; | 2 | 0 | 0 | 0.0 |" in card
    assert "<script>" not in card and "<svg" not in card and "<b>" not in card
