"""`motionpairs evaluate --html`: the edits to look at, EVAL/index.html.

One row per edit the model made (each held-out pair, once per caption version it was edited with):
input | edit | target (the real after-frame) | instruction, and every score of that row beside the
no-edit and oracle baselines of the same pair, sorted worst first by one score (`--sort-by`). With
`--compare OTHER_EVAL` (an earlier `evaluate` of another checkpoint on the same held-out pairs) each row
shows that checkpoint's edit and scores beside this one's. A summary table of every metric heads the page.

Read from EVAL/metrics.json and EVAL/samples.parquet (each row names the image it scored); the images
are files beside the page (relative links: the page opens from file:// with no network). The QA report's
look; jinja2 with autoescape on for every value (an instruction is data: markup in it shows as text).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

PAGE = "index.html"
SORT_BY = "pck@0.1"
# the order scores are listed in (any other numeric column follows, by name)
ORDER = [
    "pck@0.05", "pck@0.1", "pck@0.2", "pck@0.05_moved", "pck@0.1_moved", "pck@0.2_moved", "oks", "oks_moved",
    "direction_agreement", "direction_cosine", "mas", "flow_cosine", "judge_instruction", "judge_identity",
    "judge_background", "background_ssim", "background_psnr", "person_found",
]  # fmt: skip
NOT_SCORES = {"samples", "judged"}


class PageError(ValueError):
    """No page can be made (one line for the user)."""


def _load(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import pandas as pd

    metrics, samples = folder / "metrics.json", folder / "samples.parquet"
    if not metrics.is_file() or not samples.is_file():
        raise PageError(f"{folder} is not an evaluation (no metrics.json and samples.parquet: run evaluate first)")
    rows = pd.read_parquet(samples).to_dict("records")
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[k] = None
    return json.loads(metrics.read_text()), rows


def score_names(rows: list[dict[str, Any]]) -> list[str]:
    numeric = {
        k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    } - NOT_SCORES
    return [k for k in ORDER if k in numeric] + sorted(numeric - set(ORDER))


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _link(image: str | None, folder: Path, page_dir: Path) -> str | None:
    return None if not image else os.path.relpath(folder / image, page_dir)


def _index(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["key"], r["system"], r.get("caption_version") or ""): r for r in rows}


def page_rows(
    folder: Path, rows: list[dict[str, Any]], sort_by: str, other: tuple[Path, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """The page's rows, worst first: one per model edit, with its images, instruction and scores."""
    page_dir = folder
    mine = _index(rows)
    theirs = _index(other[1]) if other else {}
    names = score_names(rows + (other[1] if other else []))
    out = []
    for r in rows:
        if r["system"] != "model":
            continue
        key, version = r["key"], r.get("caption_version") or ""
        no_edit, oracle = mine.get((key, "no_edit", "")), mine.get((key, "oracle", ""))
        b = theirs.get((key, "model", version))
        columns = [("edit", r)] + ([("edit B", b)] if other else []) + [("no edit", no_edit), ("oracle", oracle)]
        reasons = [(label, r.get(f"judge_{label}_reason")) for label in ("instruction", "identity", "background")]
        out.append(
            {
                "key": key,
                "version": version,
                "instruction": r.get("instruction") or "",
                "input": _link((no_edit or {}).get("image"), folder, page_dir),
                "edit": _link(r.get("image"), folder, page_dir),
                "edit_b": _link((b or {}).get("image"), other[0], page_dir) if other else None,
                "target": _link((oracle or {}).get("image"), folder, page_dir),
                "sort": r.get(sort_by),
                "columns": [label for label, _ in columns],
                "scores": [(n, [_fmt((row or {}).get(n)) for _, row in columns]) for n in names],
                "reasons": [(label, why) for label, why in reasons if why],
                "judge_failure": r.get("judge_failure") if r.get("judge_status") not in (None, "ok") else None,
            }
        )
    out.sort(key=lambda p: (p["sort"] is None, p["sort"] if p["sort"] is not None else 0.0, p["key"], p["version"]))
    return out


def write_page(folder: Path, compare: Path | None = None, sort_by: str = SORT_BY) -> Path:
    """EVAL/index.html for the evaluation in `folder` (and `compare`'s edits beside it)."""
    import jinja2

    folder = Path(folder)
    metrics, rows = _load(folder)
    other = None
    if compare is not None:
        other_metrics, other_rows = _load(Path(compare))
        other = (Path(compare), other_rows)
    names = score_names(rows + (other[1] if other else []))
    if sort_by not in names:
        raise PageError(f"--sort-by {sort_by!r} is not a score of this evaluation; scores: {', '.join(names)}")
    systems = [("edit", metrics.get("model", {}))]
    if other:
        systems.append(("edit B", other_metrics.get("model", {})))
    systems += [("no edit", metrics.get("no_edit", {})), ("oracle", metrics.get("oracle", {}))]
    summary = [(n, [_fmt(m.get(n)) for _, m in systems]) for n in names]
    # autoescape on for every template, whatever its name (select_autoescape goes by the file name)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        title=f"Edits of {metrics.get('checkpoint', folder)}",
        checkpoint=metrics.get("checkpoint"),
        other=str(other_metrics.get("checkpoint", compare)) if other else None,
        steps=metrics.get("inference_steps"),
        pairs=(metrics.get("oracle") or {}).get("samples"),
        judge=metrics.get("judge"),
        sort_by=sort_by,
        systems=[label for label, _ in systems],
        summary=summary,
        samples=[m.get("samples") for _, m in systems],
        rows=page_rows(folder, rows, sort_by, other),
    )
    path = folder / PAGE
    tmp = path.with_name(f".{PAGE}.tmp")
    tmp.write_text(html)
    tmp.replace(path)
    return path


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
 table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
 th { background: #f2f2f2; text-align: left; } td.n { text-align: right; }
 .notice { padding: .8em; background: #fff4e5; border: 1px solid #f0b36b; }
 #edits > tbody > tr > td { vertical-align: top; }
 #edits img { width: 192px; height: auto; display: block; image-rendering: pixelated; }
 .instruction { max-width: 18em; white-space: pre-wrap; overflow-wrap: anywhere; }
 .ver, .why, .fig { color: #666; font-size: .85em; }
 table.scores { font-size: .85em; margin: 0; } table.scores td, table.scores th { padding: 1px 6px; }
 code { background: #f5f5f5; padding: 0 3px; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p id="status">Checkpoint <code>{{ checkpoint }}</code>
 {%- if other %}; beside it (edit B) <code>{{ other }}</code>{% endif %}.
 {{ pairs }} held-out pairs, {{ steps }} inference steps per edit. Rows sorted by <b>{{ sort_by }}</b> of the edit,
 worst first (rows without it last). No edit: the input itself; oracle: the real after-frame.</p>
{% if not rows %}<p class="notice">This evaluation holds no edits.</p>{% endif %}
<h2>Every score, mean over the held-out pairs</h2>
<table id="summary"><tr><th>score</th>{% for s in systems %}<th>{{ s }}</th>{% endfor %}</tr>
{% for name, values in summary %}<tr><td>{{ name }}</td>
 {%- for v in values %}<td class="n">{{ v }}</td>{% endfor %}</tr>
{% endfor %}<tr><td>samples</td>
 {%- for v in samples %}<td class="n">{{ v if v is not none else "–" }}</td>{% endfor %}</tr>
</table>
{% if judge %}<p class="fig" id="judge">Judge <code>{{ judge.judge }}</code>: {{ judge.requests }} requests,
 {{ judge.cached }} answers from the cache, {{ judge.ok }} judged, {{ judge.failed }} failed,
 {{ judge.skipped_budget }} left unjudged by the budget; estimated cost {{ "%.4f"|format(judge.cost_usd) }} $.
 Scores 0-5.</p>{% endif %}
<h2>Edits, worst first</h2>
<table id="edits">
<tr><th>input</th><th>edit</th>{% if other %}<th>edit B</th>{% endif %}<th>target</th><th>instruction</th>
 <th>scores</th></tr>
{% for r in rows %}
<tr class="edit-row" data-key="{{ r.key }}" data-version="{{ r.version }}"
 data-sort="{{ r.sort if r.sort is not none else '' }}">
<td>{% if r.input %}<img class="input" src="{{ r.input }}" alt="input">{% endif %}</td>
<td>{% if r.edit %}<img class="edit" src="{{ r.edit }}" alt="edit">{% endif %}</td>
{% if other %}<td>{% if r.edit_b %}<img class="edit-b" src="{{ r.edit_b }}" alt="edit B">
 {%- else %}<span class="why">not in B</span>{% endif %}</td>{% endif %}
<td>{% if r.target %}<img class="target" src="{{ r.target }}" alt="target">{% endif %}</td>
<td class="instruction">{{ r.instruction }}
 <div class="ver">{{ r.key }}{% if r.version %} · {{ r.version }}{% endif %}</div></td>
<td><table class="scores"><tr><th></th>{% for c in r.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, values in r.scores %}<tr><td>{{ name }}</td>
 {%- for v in values %}<td class="n">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% for label, why in r.reasons %}<div class="why">judge, {{ label }}: {{ why }}</div>{% endfor %}
{% if r.judge_failure %}<div class="why">judge: no score ({{ r.judge_failure }})</div>{% endif %}
</td></tr>
{% endfor %}</table>
</body>
</html>
"""
