"""`motionpairs report OUT`: a QA report a person looks at, OUT/report/index.html.

Self-contained (opens from file:// with no network): plots are inline PNGs (matplotlib), the gallery's
thumbnails are JPEG files beside the page, loaded lazily, a page of pairs at a time (gallery-NNNN.html),
so a build of 100,000 pairs opens at once. Everything is read through the store's pointer (one
generation, local or fsspec URL); the report is written by the store (atomic swap locally, an upload
to <url>/report/ remotely)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ..store import is_remote
from ..store.output import replace_folder
from .data import (  # the names callers import from here stay importable
    FUNNEL,
    Build,
    ReportError,
    caption_table,
    captions_by_pair,
    figures,
    funnel,
    load_build,
    pose_rows,
    spread,
    threshold,
)
from .pictures import THUMB_HEIGHT, histogram, reject_example, thumbnails

__all__ = [
    "FUNNEL",
    "HISTOGRAMS",
    "MAX_PAIRS",
    "REPORT_DIR",
    "THUMB_HEIGHT",
    "Build",
    "ReportError",
    "caption_table",
    "content_security_policy",
    "funnel",
    "load_build",
    "render",
    "template_env",
    "write_report",
]

REPORT_DIR = "report"
PAGE_SIZE = 60  # pairs per gallery page
MAX_PAIRS = 3000  # pairs drawn at most (a deterministic spread over the build); the page says so
EXAMPLES_PER_REASON = 3
MAX_YIELD_ROWS = 300  # action labels listed (those that give nothing first); stats.json has them all

# figures plotted, with the config key of their threshold and its side ("min" keeps values above)
HISTOGRAMS = [
    ("pose_change", "motion.min_pose_change", "min", "pose change (limb motion / torso length)"),
    ("person_px_source", "quality.min_person_px", "min", "person height in source pixels (lying: length)"),
    ("camera_motion", "motion.max_camera_motion", "max", "camera motion / frame diagonal"),
    ("overlay_change", "quality.max_overlay_change", "max", "changed region apart from the person / frame"),
    ("person_change", "quality.min_person_change", "min", "share of the person's box that changes"),
    ("sharpness", "quality.min_sharpness", "min", "sharpness / clip's sharpest"),
]


# ---------------------------------------------------------------- writing

TEMPLATE = "report.html.j2"


def template_env():
    """The report's jinja2 environment: every template autoescaped, whatever its file name
    (`select_autoescape()` matches `.html`, not `.html.j2`, and so escaped nothing). Nothing from the
    data (clip ids, file names, labels, captions, details) is ever marked safe."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("curation.report", "templates"), autoescape=True)


def content_security_policy(env) -> str:
    """The page's policy: no script of any kind, no network, no frames, no forms; images only from the
    report's own folder and inline PNGs; the one inline stylesheet allowed by its hash. A markup bug
    that let data through would still run nothing."""
    import hashlib
    import re

    source = env.loader.get_source(env, TEMPLATE)[0]
    styles = re.findall(r"<style>(.*?)</style>", source, flags=re.S)
    if any("{{" in css or "{%" in css for css in styles):
        raise ValueError("the report's stylesheet must be constant text (it is allowed by its hash)")
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()}'" for css in styles]
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'none'",
            "object-src 'none'",
            "frame-src 'none'",
            "connect-src 'none'",
            "img-src 'self' data:",
            "style-src " + (" ".join(hashes) or "'none'"),
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def render(build: Build, dest: Path, max_pairs: int = MAX_PAIRS) -> dict[str, Any]:
    """Write the report's files into `dest` (a fresh folder). Returns a summary."""
    (dest / "thumbs").mkdir(parents=True, exist_ok=True)
    env = template_env()
    stats, samples, rejects = build.stats, build.samples, build.rejects
    empty = build.generation is None
    config = stats.get("config", {})
    order = (
        samples.sort_values(["clip_id", "before_index", "after_index"]).reset_index(drop=True)
        if len(samples)
        else samples
    )
    shown = order.iloc[spread(len(order), max_pairs)] if len(order) else order
    if len(shown) and build.samples_url and "before_keypoints" not in shown:  # the poses of the pairs drawn
        poses = pose_rows(build.samples_url, shown.pair_id.tolist())
        shown = shown.merge(poses.drop_duplicates("pair_id"), on="pair_id", how="left")
    thumbs = thumbnails(build, shown, dest) if len(shown) else {}
    captions = captions_by_pair(build)
    cards = [
        {
            "pair_id": r.pair_id,
            "clip_id": r.clip_id,
            "source": r.source,
            "label": r.label if isinstance(r.label, str) else None,
            "times": f"{r.before_time_s:.2f} s → {r.after_time_s:.2f} s",
            "thumb": thumbs.get(r.pair_id),
            "captions": captions.get(r.pair_id, []),
            "figures": figures(pd.Series(r._asdict())),
        }
        for r in shown.itertuples(index=False)
    ]
    pages = [cards[i : i + PAGE_SIZE] for i in range(0, len(cards), PAGE_SIZE)] or [[]]
    page_names = ["index.html"] + [f"gallery-{n:04d}.html" for n in range(2, len(pages) + 1)]

    clip_rejects = rejects[rejects["level"] == "clip"] if len(rejects) else rejects
    reasons = []
    if len(clip_rejects):
        for (stage, reason), g in clip_rejects.groupby(["stage", "reason"], sort=True):
            examples = []
            for i, r in enumerate(g.drop_duplicates("clip_id").head(EXAMPLES_PER_REASON).itertuples()):
                img = reject_example(r.uri, dest, f"thumbs/reject-{reason}-{i}.jpg")
                examples.append({"clip_id": r.clip_id, "img": img, "detail": r.detail[:300]})
            reasons.append({"stage": stage, "reason": reason, "clips": g.clip_id.nunique(), "examples": examples})
    hists = []
    for col, key, side, title in HISTOGRAMS:
        if col in samples:
            hists.append(
                {"title": title, "src": histogram(samples[col], threshold(config, key), side, title), "key": key}
            )
    table = []
    if len(samples):
        g = samples.assign(split=samples["split"].fillna("-")).groupby(["source", "split"])
        for (src, split), part in g:
            table.append({"source": src, "split": split, "clips": part.clip_id.nunique(), "pairs": len(part)})
    versions = stats.get("versions", {})
    context = {
        "title": f"motionpairs report: {build.url}",
        "url": build.url,
        "empty": empty,
        "generation": build.generation,
        "stats": stats,
        "versions": versions,
        "funnel": funnel(stats, rejects) if not empty else [],
        "frame_funnel": stats.get("funnel", {}),
        "reasons": reasons,
        "hists": hists,
        "table": table,
        "pairs_total": len(samples),
        "pairs_shown": len(cards),
        "pages": page_names,
        "no_pairs": not empty and len(samples) == 0,
        "yield_sources": (stats.get("yield") or {}).get("by_source", []),
        "yield_labels": (stats.get("yield") or {}).get("by_label", [])[:MAX_YIELD_ROWS],
        "yield_labels_total": len((stats.get("yield") or {}).get("by_label", [])),
        "caption_rows": caption_table(stats),
        "caption_warnings": (stats.get("caption_quality") or {}).get("warnings", []),
    }
    template = env.get_template(TEMPLATE)
    context["csp"] = content_security_policy(env)
    for n, (name, cards_page) in enumerate(zip(page_names, pages, strict=True)):
        html_text = template.render(**context, cards=cards_page, page=n, page_name=name, first=n == 0)
        (dest / name).write_text(html_text, encoding="utf-8")
    return {
        "pages": len(page_names),
        "pairs": len(samples),
        "pairs_shown": len(cards),
        "thumbnails": len(thumbs),
        "empty": empty,
    }


def write_report(url: str, max_pairs: int = MAX_PAIRS) -> dict[str, Any]:
    """Render the report of the output at `url` and put it at <url>/report/ (index.html)."""
    build = load_build(url)
    with tempfile.TemporaryDirectory(prefix="motionpairs-report-") as tmp:
        dest = Path(tmp) / REPORT_DIR
        summary = render(build, dest, max_pairs)
        base = build.url
        if is_remote(base):
            import fsspec

            fs, path = fsspec.core.url_to_fs(base)
            target = f"{path}/{REPORT_DIR}"
            if fs.exists(target):
                fs.rm(target, recursive=True)
            fs.put(str(dest), target, recursive=True)
            where = f"{base}/{REPORT_DIR}/index.html"
        else:
            replace_folder(dest, Path(base) / REPORT_DIR)
            where = str((Path(base) / REPORT_DIR / "index.html").resolve())
    return summary | {"path": where}
