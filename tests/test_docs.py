"""The README stays one screen and every relative link in it and in docs/ resolves: the file exists and,
for a link with #anchor, a heading of the target makes that anchor (GitHub's rule)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans hold no links
    return LINK.findall(text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped (but - and _), spaces to dashes."""
    out = set()
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_the_readme_is_one_screen():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_two_setup_commands_are_unchanged():
    """.ci/run calls `make test`; the README names both set-up commands exactly as the guide requires."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (
        "make demo    # installs into .venv (make setup), then builds from a built-in default input and inspects it\n"
        "make test    # installs into .venv (make setup), then runs every test: offline, CPU only\n"
    ) in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_pages_link_to_each_other():
    assert len(PAGES) >= 9
    readme = set(links(ROOT / "README.md"))
    for name in (
        "sources",
        "captions",
        "distributed",
        "training",
        "configuration",
        "output-format",
        "benchmarks",
        "design",
    ):
        assert f"docs/{name}.md" in {link.split("#")[0] for link in readme}, name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    bad = []
    for link in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:, file:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            bad.append(f"{link}: no {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            bad.append(f"{link}: no heading #{anchor} in {target.name}")
    assert bad == []
