"""`motionpairs report OUT`: a QA report a person looks at, OUT/report/index.html.

Self-contained (opens from file:// with no network): plots are inline PNGs (matplotlib), the gallery's
thumbnails are JPEG files beside the page, loaded lazily, a page of pairs at a time (gallery-NNNN.html),
so a build of 100,000 pairs opens at once. Everything is read through the store's pointer (one
generation, local or fsspec URL); the report is written by the store (atomic swap locally, an upload
to <url>/report/ remotely)."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE
from schemas.records import Pose17

log = logging.getLogger(__name__)

REPORT_DIR = "report"
PAGE_SIZE = 60  # pairs per gallery page
MAX_PAIRS = 3000  # pairs drawn at most (a deterministic spread over the build); the page says so
EXAMPLES_PER_REASON = 3
MAX_YIELD_ROWS = 300  # action labels listed (those that give nothing first); stats.json has them all
THUMB_HEIGHT = 160

# the clip-level funnel, in the order decisions are taken (stage, reason)
FUNNEL = [
    ("listed", ("missing_file", "empty_file", "bad_annotation", "excluded", "duplicate@ingest")),
    ("decoded", ("unreadable", "truncated", "too_few_frames", "segment_out_of_range")),
    ("a person seen", ("no_person",)),
    ("one person", ("multiple_people", "identity_switch")),
    ("a whole body in frame", ("partial_body", "no_valid_window")),
    ("large enough", ("too_small",)),
    ("one shot, still camera", ("shot_cut", "camera_motion")),
    ("sharp", ("blurry",)),
    ("moves enough", ("low_motion",)),
    ("captioned, not a duplicate", ("caption_failed", "duplicate", "internal_error", "io_error")),
]

# figures plotted, with the config key of their threshold and its side ("min" keeps values above)
HISTOGRAMS = [
    ("pose_change", "motion.min_pose_change", "min", "pose change (limb motion / torso length)"),
    ("person_px_source", "quality.min_person_px", "min", "person height in source pixels"),
    ("camera_motion", "motion.max_camera_motion", "max", "camera motion / frame diagonal"),
    ("overlay_change", "quality.max_overlay_change", "max", "changed region apart from the person / frame"),
    ("person_change", "quality.min_person_change", "min", "share of the person's box that changes"),
    ("sharpness", "quality.min_sharpness", "min", "sharpness / clip's sharpest"),
]


class ReportError(ValueError):
    """No report can be made (one line for the user)."""


@dataclass
class Build:
    url: str
    generation: str | None
    stats: dict[str, Any]
    samples: pd.DataFrame
    rejects: pd.DataFrame
    shards: dict[str, str]  # tar name -> readable URL
    captions: pd.DataFrame | None


def load_build(url: str) -> Build:
    """The current generation of an output; a folder without one (an empty or failed build) gives an
    empty Build, a path that does not exist is a ReportError."""
    import fsspec

    from ..store import StoreError, committed, is_remote

    base = str(url).rstrip("/")
    if not is_remote(base) and not Path(base).is_dir():
        raise ReportError(f"{base} does not exist or is not a folder")
    try:
        gen = committed(base)
    except StoreError:
        if is_remote(base):
            fs, path = fsspec.core.url_to_fs(base)
            if not fs.exists(path):
                raise ReportError(f"{base} does not exist") from None
        return Build(base, None, {}, pd.DataFrame(), pd.DataFrame(), {}, None)
    with fsspec.open(gen.file_url(STATS_FILE), "rb") as f:
        stats = json.loads(f.read())
    samples = pd.read_parquet(gen.file_url(SAMPLES_FILE))
    rejects = pd.read_parquet(gen.file_url(REJECTS_FILE))
    captions = None
    if not is_remote(base):
        from ..captions.rows import read_caption_rows

        captions = read_caption_rows(Path(base))
    return Build(base, gen.generation, stats, samples, rejects, {s.name: s.url for s in gen.shards}, captions)


# ---------------------------------------------------------------- pictures


def _pose(row: pd.Series, prefix: str) -> Pose17 | None:
    kps = row.get(f"{prefix}_keypoints")
    if kps is None or (isinstance(kps, float) and math.isnan(kps)):
        return None
    k = np.asarray(kps, float).reshape(17, 3).tolist()
    return Pose17(
        keypoints=k,
        frame_width=int(row["frame_width"]),
        frame_height=int(row["frame_height"]),
        box=list(row[f"{prefix}_box"]),
        score=float(row[f"{prefix}_score"]),
    )


def _thumbnails(build: Build, rows: pd.DataFrame, dest: Path) -> dict[str, str]:
    """pair_id -> thumbnail file name: before | after with skeletons and boxes, read from the tars."""

    from .draw import decode_jpeg, encode_jpeg, side_by_side

    wanted: dict[str, dict[str, str]] = {}
    for pid, shard, key in zip(rows.pair_id, rows.shard, rows.clip_id + "/" + rows.pair_id, strict=True):
        wanted.setdefault(shard, {})[key] = pid
    by_id = rows.set_index("pair_id")
    out: dict[str, str] = {}
    for shard, keys in sorted(wanted.items()):
        url = build.shards.get(shard)
        if url is None:
            continue
        try:
            for raw in _samples(url):
                pid = keys.get(raw["__key__"])
                if pid is None:
                    continue
                row = by_id.loc[pid]
                img = side_by_side(
                    decode_jpeg(raw["before.jpg"]),
                    decode_jpeg(raw["after.jpg"]),
                    _pose(row, "before"),
                    _pose(row, "after"),
                    THUMB_HEIGHT,
                )
                name = f"thumbs/{pid}.jpg"
                (dest / name).write_bytes(encode_jpeg(img, 82))
                out[pid] = name
        except Exception as e:  # a tar that cannot be read: the page says which pairs have no picture
            log.warning("report: shard %s not readable: %s", shard, e)
    return out


def _samples(url: str):
    """The samples of one tar (a path or an fsspec URL) as {"__key__", member suffix: bytes}, streamed."""
    import tarfile

    import fsspec

    with fsspec.open(url, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        current: dict[str, Any] = {}
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, _, suffix = base.partition(".")
            key = f"{folder}/{stem}" if folder else stem
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[suffix] = tar.extractfile(member).read()
        if current:
            yield current


def _reject_example(uri: str, dest: Path, name: str) -> str | None:
    """A frame from the middle of a rejected clip's video, GIF or frame folder (None when it cannot be
    read now): the key frame nearest the middle, which decodes alone (no decoding up to it)."""
    try:
        from ..config import DecodeConfig
        from ..stages.decode import open_fitted
        from .draw import encode_jpeg

        vr = open_fitted(uri, DecodeConfig())[0]
        middle = len(vr) // 2
        keys = vr.get_key_indices() if hasattr(vr, "get_key_indices") else []
        frame = vr[min(keys, key=lambda k: abs(k - middle)) if keys else middle].asnumpy()
        h, w = frame.shape[:2]
        import cv2

        small = cv2.resize(frame, (max(1, round(w * THUMB_HEIGHT / h)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
        (dest / name).write_bytes(encode_jpeg(small, 80))
        return name
    except Exception:
        return None


def _histogram(values: pd.Series, threshold: float | None, side: str, title: str) -> str:
    """An inline PNG (data URI) histogram with the threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=90)
    v = values.dropna().astype(float)
    if len(v):
        ax.hist(v, bins=min(30, max(5, len(v))), color="#4a78b5")
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    if threshold is not None:
        ax.axvline(threshold, color="#c0392b", linestyle="--", label=f"{side} {threshold:g}")
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------- page data


def _threshold(config: dict[str, Any], key: str) -> float | None:
    from ..config import MotionConfig, QualityConfig

    section, name = key.split(".")
    value = (config.get(section) or {}).get(name)
    if value is None:
        default = {"motion": MotionConfig(), "quality": QualityConfig()}.get(section)
        value = getattr(default, name, None)
    return float(value) if value is not None else None


def funnel(stats: dict[str, Any], rejects: pd.DataFrame) -> list[dict[str, Any]]:
    """Clips left after each decision step, with the clips each step removed by reason."""
    clips = rejects[rejects["level"] == "clip"] if len(rejects) else rejects
    removed: Counter[str] = Counter()
    for stage, reason in zip(clips.get("stage", []), clips.get("reason", []), strict=True):
        removed[f"{reason}@ingest" if stage == "ingest" and reason == "duplicate" else reason] += 1
    left = int(stats.get("clips_in", 0))
    steps = [{"step": "clips in", "left": left, "removed": {}}]
    for name, reasons in FUNNEL:
        gone = {r.split("@")[0]: removed[r] for r in reasons if removed[r]}
        left -= sum(gone.values())
        steps.append({"step": name, "left": left, "removed": gone})
    steps.append({"step": "pairs", "left": int(stats.get("pairs", 0)), "removed": {}})
    return steps


def _captions_by_pair(build: Build) -> dict[str, list[tuple[str, str, str | None]]]:
    """Per pair: (version, text, why the keypoints contradict it or None), the published caption first."""
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for pid, text in zip(build.samples.get("pair_id", []), build.samples.get("caption", []), strict=True):
        if text:
            out.setdefault(pid, []).append(("published", text, None))
    if build.captions is not None and len(build.captions):
        ok = build.captions[build.captions.status == "ok"].sort_values("created_at")
        ok = ok.drop_duplicates(["pair_id", "caption_version"], keep="last")
        for pid, version, text, agreement, detail in zip(
            ok.pair_id, ok.caption_version, ok.text, ok.pose_agreement, ok.agreement_detail, strict=True
        ):
            flag = (detail or "contradicted") if agreement == "contradict" else None
            out.setdefault(pid, []).append((version, text, flag))
    return out


def caption_table(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per caption version (and the published captions) of stats.json's caption_quality."""
    q = stats.get("caption_quality") or {}
    rows = []
    for version, f in [*(q.get("versions") or {}).items(), ("published", q.get("published"))]:
        if not f:
            continue
        a = f.get("agreement") or {}
        by = a.get("contradicted_by") or {}
        top = (f.get("top") or [{}])[0]
        mix = ", ".join(f"{k} {v}" for k, v in (f.get("by_captioner") or {}).items())
        rows.append(
            {
                "version": version,
                "captioner": f.get("captioner") or mix,
                "pairs": f.get("pairs", 0),
                "missing": f.get("missing", ""),
                "empty": f.get("empty", 0),
                "exact": f.get("exact_duplicates", 0),
                "near": f.get("near_duplicates", 0),
                "distinct": f.get("distinct", 0),
                "top": top.get("text", ""),
                "top_share": f"{f.get('top_share', 0):.0%}",
                "short": f.get("too_short", 0),
                "long": f.get("too_long", 0),
                "vocabulary": f.get("vocabulary", 0),
                "contradicted": a.get("contradict", "") if a else "",
                "contradicted_by": " / ".join(str(by.get(k, 0)) for k in ("side", "direction", "limb")) if a else "",
                "agree": a.get("agree", "") if a else "",
                "abstained": f.get("abstained", ""),
                "failed": sum((f.get("failed") or {}).values()) if "failed" in f else "",
            }
        )
    return rows


def _spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    if n <= k:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


FIGURES = [
    ("pose_change", "pose change", "{:.2f}"),
    ("camera_motion", "camera", "{:.3f}"),
    ("person_height", "person height", "{:.2f}"),
    ("sharpness", "sharpness", "{:.2f}"),
    ("background_match", "background match", "{:.2f}"),
    ("other_person_score", "other person", "{:.2f}"),
    ("lr_margin", "left/right margin", "{:.2f}"),
]


def _figures(row: pd.Series) -> list[tuple[str, str]]:
    out = []
    for col, label, fmt in FIGURES:
        v = row.get(col)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.append((label, fmt.format(v)))
    return out


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
    shown = order.iloc[_spread(len(order), max_pairs)] if len(order) else order
    thumbs = _thumbnails(build, shown, dest) if len(shown) else {}
    captions = _captions_by_pair(build)
    cards = [
        {
            "pair_id": r.pair_id,
            "clip_id": r.clip_id,
            "source": r.source,
            "label": r.label if isinstance(r.label, str) else None,
            "times": f"{r.before_time_s:.2f} s → {r.after_time_s:.2f} s",
            "thumb": thumbs.get(r.pair_id),
            "captions": captions.get(r.pair_id, []),
            "figures": _figures(pd.Series(r._asdict())),
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
                img = _reject_example(r.uri, dest, f"thumbs/reject-{reason}-{i}.jpg")
                examples.append({"clip_id": r.clip_id, "img": img, "detail": r.detail[:300]})
            reasons.append({"stage": stage, "reason": reason, "clips": g.clip_id.nunique(), "examples": examples})
    hists = []
    for col, key, side, title in HISTOGRAMS:
        if col in samples:
            hists.append(
                {"title": title, "src": _histogram(samples[col], _threshold(config, key), side, title), "key": key}
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
    from ..store import is_remote
    from ..store.output import replace_folder

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
