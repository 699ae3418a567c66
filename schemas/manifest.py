"""Parquet manifests, derived from the records in schemas.records.

samples.parquet: one row per pair (FramePair flattened: clip fields, motion figures, both poses, the
                 chosen caption, the shard that holds it).
rejects.parquet: one row per Reject.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import datetime
from enum import Enum
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from .records import SCHEMA_VERSION, Caption, Clip, FramePair, MotionFigures, Pose17, QualityFigures, Reject

SAMPLES_FILE = "samples.parquet"
REJECTS_FILE = "rejects.parquet"
STATS_FILE = "stats.json"


def _arrow_type(annotation: Any) -> pa.DataType:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _arrow_type(args[0])
    if origin is typing.Annotated:
        return _arrow_type(args[0])
    if origin is typing.Literal:
        return pa.string()
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return pa.bool_()
        if issubclass(annotation, int) and not issubclass(annotation, Enum):
            return pa.int64()
        if issubclass(annotation, float):
            return pa.float64()
        if issubclass(annotation, (str, Enum)):
            return pa.string()
        if issubclass(annotation, datetime):
            return pa.timestamp("us", tz="UTC")
    if origin is dict:
        return pa.string()  # stored as JSON text
    raise TypeError(f"no arrow type for {annotation!r}")


def _fields(model: type[BaseModel], prefix: str = "", skip: tuple[str, ...] = ()) -> list[pa.Field]:
    return [
        pa.field(prefix + name, _arrow_type(f.annotation)) for name, f in model.model_fields.items() if name not in skip
    ]


def _pose_fields(prefix: str) -> list[pa.Field]:
    return [
        pa.field(f"{prefix}_keypoints", pa.list_(pa.float32())),  # 51: 17 x (x, y, conf), row-major
        pa.field(f"{prefix}_box", pa.list_(pa.float32())),  # 4: x1, y1, x2, y2
        pa.field(f"{prefix}_score", pa.float32()),
    ]


# The datasets' own ids, lifted out of Clip.extra into columns of their own (null where not applicable).
DATASET_ID_FIELDS = [
    pa.field("youtube_id", pa.string()),  # Kinetics
    pa.field("setup", pa.int32()),  # NTU RGB+D SsssCcccPpppRrrrAaaa
    pa.field("camera", pa.int32()),
    pa.field("performer", pa.int32()),
    pa.field("replication", pa.int32()),
    pa.field("action", pa.int32()),
    pa.field("narration_id", pa.string()),  # EPIC-Kitchens
    pa.field("participant_id", pa.string()),
    pa.field("verb", pa.string()),
    pa.field("verb_class", pa.int32()),
    pa.field("noun", pa.string()),
    pa.field("noun_class", pa.int32()),
]

SAMPLES_SCHEMA = pa.schema(
    [pa.field("schema_version", pa.int32()), pa.field("pair_id", pa.string())]
    + _fields(Clip)
    + DATASET_ID_FIELDS
    + _fields(
        FramePair,
        skip=(
            "schema_version",
            "pair_id",
            "clip",
            "before_pose",
            "after_pose",
            "before_reference_pose",
            "after_reference_pose",
            "motion",
            "quality",
            "caption",
            "captions",  # the versions live in OUT/captions/ rows; the manifest has the published one
            "crop_box",
            "stabilise_matrix",
        ),
    )
    # 4 and 6 values. Every list column is a plain list, not a fixed-size one: pyarrow 25 and older cannot
    # read a null fixed-size list back from parquet ("Expected all lists to be of size=6 but index 3 had
    # size=0"), which broke finalize there and would break any reader of the manifest there
    + [pa.field("crop_box", pa.list_(pa.int32())), pa.field("stabilise_matrix", pa.list_(pa.float64()))]
    + _pose_fields("before")
    + _pose_fields("after")
    + [pa.field("before_reference_keypoints", pa.list_(pa.float32()))]
    + [pa.field("after_reference_keypoints", pa.list_(pa.float32()))]
    + _fields(MotionFigures)
    + _fields(QualityFigures)
    + [pa.field("caption", pa.string())]
    + _fields(Caption, prefix="caption_", skip=("text",))
    + [pa.field("shard", pa.string()), pa.field("unit_id", pa.string())]  # the unit record says what built it
)

REJECTS_SCHEMA = pa.schema(_fields(Reject) + DATASET_ID_FIELDS)  # extra as JSON, its ids as columns


def _flat(pose: Pose17 | None) -> list[float] | None:
    return [float(v) for kp in pose.keypoints for v in kp] if pose is not None else None


def _pose_cols(prefix: str, pose: Pose17 | None) -> dict[str, Any]:
    return {
        f"{prefix}_keypoints": _flat(pose),
        f"{prefix}_box": pose.box if pose is not None else None,
        f"{prefix}_score": pose.score if pose is not None else None,
    }


def sample_row(pair: FramePair, shard: str, unit_id: str | None = None) -> dict[str, Any]:
    clip = pair.clip.model_dump()
    ids = {f.name: clip["extra"].get(f.name) for f in DATASET_ID_FIELDS}
    clip["extra"] = json.dumps(clip["extra"], sort_keys=True)
    cap = pair.caption
    return {
        "schema_version": SCHEMA_VERSION,
        "pair_id": pair.pair_id,
        **clip,
        **ids,
        "strategy": pair.strategy,
        "before_time_s": pair.before_time_s,
        "after_time_s": pair.after_time_s,
        "before_index": pair.before_index,
        "after_index": pair.after_index,
        "frame_width": pair.frame_width,
        "frame_height": pair.frame_height,
        "decoded_width": pair.decoded_width,
        "decoded_height": pair.decoded_height,
        "source_width": pair.source_width,
        "source_height": pair.source_height,
        "crop_box": pair.crop_box,
        "stabilise_matrix": pair.stabilise_matrix,
        **_pose_cols("before", pair.before_pose),
        **_pose_cols("after", pair.after_pose),
        "before_reference_keypoints": _flat(pair.before_reference_pose),
        "after_reference_keypoints": _flat(pair.after_reference_pose),
        **pair.motion.model_dump(),
        **(pair.quality.model_dump() if pair.quality else dict.fromkeys(QualityFigures.model_fields)),
        "caption": cap.text if cap else None,
        "caption_captioner": cap.captioner if cap else None,
        "caption_model": cap.model if cap else None,
        "caption_prompt_version": cap.prompt_version if cap else None,
        "caption_created_at": cap.created_at if cap else None,
        "shard": shard,
        "unit_id": unit_id,
    }


def reject_row(reject: Reject) -> dict[str, Any]:
    row = reject.model_dump(mode="json")
    row["extra"] = json.dumps(reject.extra, sort_keys=True) if reject.extra else None
    return row | {f.name: reject.extra.get(f.name) for f in DATASET_ID_FIELDS}


def with_clip_metadata(rejects: pa.Table, clips: list[Clip]) -> pa.Table:
    """Reject rows that lack their clip's metadata (rows made by a stage from the clip id alone, or by an
    older version) get it from the clips as their source listed them."""
    import numpy as np
    import pyarrow.compute as pc

    by_id = {c.clip_id: c for c in clips}
    if not rejects.num_rows or not by_id:
        return rejects
    extra = rejects.column("extra")
    bare = pc.and_kleene(
        pc.and_kleene(pc.is_null(rejects.column("label")), pc.is_null(rejects.column("split"))),
        pc.or_kleene(pc.is_null(extra), pc.equal(extra, "")),
    )
    bare = pc.and_kleene(bare, pc.is_in(rejects.column("clip_id"), value_set=pa.array(list(by_id), pa.string())))
    bare = pc.fill_null(bare, False).to_numpy(zero_copy_only=False)
    if not bare.any():  # only the rows that lack it become Python objects
        return rejects
    rows = rejects.filter(pa.array(bare)).to_pylist()
    for r in rows:
        clip = by_id[r["clip_id"]]
        filled = reject_row(Reject.model_validate({**{k: r[k] for k in _REJECT_OWN if k in r}, **clip_fields(clip)}))
        r.update({k: v for k, v in filled.items() if k not in _REJECT_OWN})
    fixed = rejects_table(rows)
    rest = rejects.filter(pa.array(~bare)).select(fixed.column_names).cast(fixed.schema)
    where = np.concatenate([np.flatnonzero(~bare), np.flatnonzero(bare)])
    return pa.concat_tables([rest, fixed]).take(pa.array(np.argsort(where, kind="stable"))).combine_chunks()


def clip_fields(clip: Clip) -> dict[str, Any]:
    """What a Reject carries of its clip."""
    return {"label": clip.label, "split": clip.split, "video_id": clip.video_id, "extra": dict(clip.extra)}


_REJECT_OWN = tuple(f for f in Reject.model_fields if f not in ("label", "split", "video_id", "extra"))


def samples_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA)


def rejects_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)
