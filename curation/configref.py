"""The configuration reference (docs/configuration.md), generated from the pydantic fields of
BuildConfig: every key with its type, default, description and environment variable.

    python -m curation.configref            # print the reference
    python -m curation.configref --write    # write docs/configuration.md (make docs)
    python -m curation.configref --check    # exit 1 when docs/configuration.md is not current

The descriptions are the fields' own (`Field(description=...)`). The few fields that have none in
their class are described here, in SUPPLEMENT; tests/test_configref.py requires every key to have a
description and every SUPPLEMENT entry to still be needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import BuildConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# (class name, field) -> description, for fields whose class gives none (bare defaults and source
# fields). A `kind` field is described from its value; an override without a description (a source's
# licence) takes its base class's.
SUPPLEMENT: dict[tuple[str, str], str] = {
    ("CaptionConfig", "captioner"): "offline (instructions from the two poses) or openai (any OpenAI-compatible "
    "server; then model is required)",
    ("CaptionConfig", "image_detail"): "the `detail` sent with each image (OpenAI's low/high/auto image tiling)",
    ("NTUSource", "protocol"): "how clips are split: cross_subject (by performer), cross_setup or cross_view",
    ("EpicSource", "mode"): "pairing mode: egocentric (the segment's first and last frames, no pose model) or body",
}


@dataclass(frozen=True)
class Row:
    key: str  # dotted path: motion.min_pose_change, sources[].root
    type: str
    default: str
    description: str
    env: str  # the environment variable, or "" when the key is set only through its list


# ---------------------------------------------------------------------------------------------- walking


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (a section, or the union of source kinds)."""
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models(a)]


def _is_section(info: FieldInfo) -> bool:
    a = _strip(info.annotation)
    return isinstance(a, type) and issubclass(a, BaseModel)


def _kind(model: type[BaseModel]) -> str | None:
    info = model.model_fields.get("kind")
    return get_args(_strip(info.annotation))[0] if info is not None else None


def described(model: type[BaseModel], name: str) -> str:
    """The field's description: its own, SUPPLEMENT's, a kind's value, or the nearest base class's."""
    info = model.model_fields[name]
    if info.description:
        return info.description
    if (model.__name__, name) in SUPPLEMENT:
        return SUPPLEMENT[(model.__name__, name)]
    if name == "kind" and _kind(model):
        return f"the source kind: `{_kind(model)}`"
    for base in model.__mro__[1:]:
        fields = getattr(base, "model_fields", None) or {}
        if name in fields and fields[name].description:
            return fields[name].description
    return ""


def type_name(annotation: Any) -> str:
    annotation = _strip(annotation)
    if annotation is type(None):
        return "null"
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(annotation))
    if origin in (list, tuple, set, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in get_args(annotation))}]"
    if isinstance(annotation, type):
        return {"str": "string", "bool": "boolean", "int": "integer", "float": "number"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def env_name(path: list[str]) -> str:
    cfg = BuildConfig.model_config
    prefix, delimiter = cfg.get("env_prefix", ""), cfg.get("env_nested_delimiter") or "__"
    return (prefix + delimiter.join(path)).upper()


def rows(model: type[BaseModel], path: list[str], env: bool = True) -> list[Row]:
    """One row per leaf field of `model` (sections become rows of their own tables, not here)."""
    out = []
    names = sorted(model.model_fields, key=lambda n: n != "kind")  # a source's kind first
    for name in names:
        info = model.model_fields[name]
        if _is_section(info):
            continue
        out.append(
            Row(
                key=".".join([*path, name]),
                type=type_name(info.annotation),
                default=default_text(info),
                description=described(model, name),
                env=env_name([*path, name]) if env else "",
            )
        )
    return out


def all_rows() -> dict[str, list[Row]]:
    """Table title -> rows: the top-level keys, one table per section, one per source kind."""
    tables: dict[str, list[Row]] = {"Top level": rows(BuildConfig, [])}
    for name, info in BuildConfig.model_fields.items():
        if _is_section(info):
            tables[name] = rows(_models(info.annotation)[0], [name])
    for model in _models(BuildConfig.model_fields["sources"].annotation):
        tables[f"sources: kind {_kind(model)}"] = rows(model, ["sources[]"], env=False)
    return tables


# ---------------------------------------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(table: list[Row]) -> list[str]:
    lines = ["| key | type | default | description | environment |", "|---|---|---|---|---|"]
    for r in table:
        env = f"`{r.env}`" if r.env else "in `MOTIONPAIRS_SOURCES`"
        lines.append(f"| `{r.key}` | `{_cell(r.type)}` | {_cell(r.default)} | {_cell(r.description)} | {env} |")
    return lines


HEADER = """\
# Configuration reference

<!-- Generated by `make docs` (python -m curation.configref --write) from the pydantic fields of
curation/config.py and curation/sources/; edit the descriptions there, not this file.
tests/test_configref.py fails when this file is not current. -->

One typed `BuildConfig` is shared by the CLI, the Prefect flows and the tests. Values come from, later
winning: the defaults below < a YAML file (`--config FILE`) < environment variables < command-line flags.
Unknown keys are rejected with a near-match suggestion (one line, exit 2), never ignored.

- **YAML**: the key paths below, nested (`motion: {{min_pose_change: 0.3}}`).
- **Environment**: `{prefix}<SECTION>{delimiter}<KEY>`, e.g. `{example}=0.3` (any case). Lists and
  `sources` are JSON: `MOTIONPAIRS_MOTION{delimiter}REQUIRED_KEYPOINTS='["left_shoulder", "right_shoulder"]'`,
  `MOTIONPAIRS_SOURCES='[{{"kind": "folder", "root": "videos/"}}]'`. A value that does not parse is a
  one-line error.
- **Sources** are a list: each item has a `kind` (default `folder`) and that kind's keys (tables at the
  end); see [sources.md](sources.md). `--input DIR` is one folder source, `--source KIND --root DIR
  [--annotations FILE ...]` one of the others.
- `curation/configs/upper_body.yaml` is a preset for footage without hips in frame (the astronaut demo):
  shoulders are then the body, and shoulder width its size; the frame-edge filter is off.
- What changes results is in the build's fingerprint (units are redone when it changes); tuning keys
  (`decode.batch_frames`, `decode.workers`, `decode.prefetch_clips`, `pose.batch_size`, `pose.device`,
  `shards.*` except `jpeg_quality`, caption limits) are not: [distributed.md](distributed.md).
  How the motion and quality thresholds decide a clip, and why the defaults: [design.md](design.md).
"""


def render() -> str:
    cfg = BuildConfig.model_config
    delimiter = cfg.get("env_nested_delimiter") or "__"
    parts = [
        HEADER.format(
            prefix=cfg.get("env_prefix", ""), delimiter=delimiter, example=env_name(["motion", "min_pose_change"])
        )
    ]
    for title, table in all_rows().items():
        parts.append(f"\n## {title}\n")
        if title in BuildConfig.model_fields:
            intro = described(BuildConfig, title).rstrip(".")
            parts.append(f"\n{intro[:1].upper()}{intro[1:]}.\n")
        parts.append("\n" + "\n".join(_table(table)) + "\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m curation.configref", description=__doc__.splitlines()[0])
    ap.add_argument("--write", nargs="?", const=str(DOC), metavar="PATH", help=f"write it (default: {DOC})")
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is not current")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is not current: run make docs", file=sys.stderr)
            return 1
        return 0
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
