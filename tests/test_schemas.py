import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.manifest import REJECTS_SCHEMA, SAMPLES_SCHEMA, reject_row, rejects_table, sample_row, samples_table
from schemas.records import (
    COCO17,
    COCO17_FLIP,
    SCHEMA_VERSION,
    Caption,
    Clip,
    FramePair,
    MotionFigures,
    Pose17,
    Reject,
    RejectReason,
    Stage,
    clip_key,
    make_pair_id,
)
from schemas.shard import ShardFormatError, decode_sample, encode_sample


def pose(nan_at: int | None = None) -> Pose17:
    kps = [[10.0 + i, 20.0 + i, 0.9] for i in range(17)]
    if nan_at is not None:
        kps[nan_at] = [math.nan, math.nan, 0.1]
    return Pose17(keypoints=kps, frame_width=64, frame_height=48, box=[1, 2, 30, 40], score=0.9)


def pair(before_index: int = 3, after_index: int = 9) -> FramePair:
    clip = Clip(source="folder", clip_id="a/b_c", uri="/x/a/b.c.mp4", label="tai chi")
    return FramePair(
        pair_id=make_pair_id(clip.clip_id, before_index, after_index),
        clip=clip,
        strategy="max_motion",
        before_time_s=0.1,
        after_time_s=0.3,
        before_index=before_index,
        after_index=after_index,
        frame_width=64,
        frame_height=48,
        before_pose=pose(nan_at=4),
        after_pose=pose(),
        motion=MotionFigures(
            pose_change=0.5,
            max_joint_change=1.0,
            translation=0.1,
            body_size_px=20,
            camera_motion=0.0,
            scene_similarity=0.99,
            keypoints_compared=16,
        ),
        caption=Caption(text="raise your right arm", captioner="offline"),
    )


JPEG = b"\xff\xd8\xff\xe0fakejpeg"


def test_pair_id_is_deterministic_and_checked():
    assert make_pair_id("x", 1, 2) == make_pair_id("x", 1, 2) != make_pair_id("x", 1, 3)
    with pytest.raises(ValueError, match="pair_id"):
        pair().model_copy(update={}).model_validate({**pair().model_dump(), "pair_id": "wrong"})


def test_clip_id_must_be_dot_free():
    assert clip_key("sub/a.b.c") == "sub/a_b_c"
    with pytest.raises(ValueError, match="no dots"):
        Clip(source="folder", clip_id="a.b", uri="x")


def test_flip_permutation_swaps_sides():
    for i, name in enumerate(COCO17):
        other = COCO17[COCO17_FLIP[i]]
        assert other == name.replace("left", "#").replace("right", "left").replace("#", "right")


def test_shard_sample_round_trip_keeps_nan_as_missing():
    p = pair()
    sample = encode_sample(p, JPEG, JPEG)
    assert sample["__key__"] == "a/b_c/" + p.pair_id and "." not in sample["__key__"]
    meta = json.loads(sample["json"])
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["before_pose"]["keypoints"][4][:2] == [None, None]  # JSON null, never (0, 0)
    back = decode_sample(sample)
    assert back.pair.before_pose.keypoints[4][2] == pytest.approx(0.1)
    assert math.isnan(back.pair.before_pose.keypoints[4][0])
    assert back.pair.caption.text == "raise your right arm"


def test_decode_rejects_other_schema_versions_and_missing_members():
    sample = encode_sample(pair(), JPEG, JPEG)
    meta = json.loads(sample["json"])
    meta["schema_version"] = 999
    with pytest.raises(ShardFormatError, match="schema_version"):
        decode_sample({**sample, "json": json.dumps(meta).encode()})
    with pytest.raises(ShardFormatError, match="lacks"):
        decode_sample({k: v for k, v in sample.items() if k != "after.jpg"})
    with pytest.raises(ShardFormatError, match="JPEG"):
        encode_sample(pair(), b"PNG", JPEG)


def test_parquet_rows_follow_the_derived_schemas():
    table = samples_table([sample_row(pair(), "s-0000.tar")])
    assert table.schema == SAMPLES_SCHEMA
    for col in ("pair_id", "clip_id", "source", "caption", "label", "split", "caption_model", "shard"):
        assert col in table.column_names
    assert table.schema.field("before_keypoints").type == pa.list_(pa.float32())
    assert len(table.column("before_keypoints")[0]) == 51
    row = table.to_pylist()[0]
    assert math.isnan(row["before_keypoints"][4 * 3]) and row["before_keypoints"][4 * 3 + 2] == pytest.approx(0.1)
    r = Reject(clip_id="x", source="folder", uri="/x", stage=Stage.DECODE, reason=RejectReason.UNREADABLE)
    rt = rejects_table([reject_row(r)])
    assert rt.schema == REJECTS_SCHEMA and rt.to_pylist()[0]["reason"] == "unreadable"
    assert rt.to_pylist()[0]["level"] == "clip"


def test_a_pair_carries_its_caption_versions_and_training_picks_one():
    p = pair().model_copy(update={"caption": None})
    offline = Caption(text="raise your right arm", captioner="offline")
    llm_old = Caption(text="lift the right arm", captioner="openai", model="m", prompt_version="v1")
    llm_new = Caption(text="raise the right arm high", captioner="openai", model="m", prompt_version="v1")
    other = Caption(text="arm up", captioner="openai", model="n", prompt_version="v2")
    p.add_caption(offline, publish=True)
    p.add_caption(llm_old)
    p.add_caption(other)
    p.add_caption(llm_new)  # the same version again: replaces the older answer
    assert [c.version for c in p.captions] == ["offline", "n@v2", "m@v1"]
    assert p.caption_for() == offline and p.caption_for("m@v1") == llm_new
    assert p.caption_for("offline") == offline and p.caption_for("x@v9") == offline  # falls back
    back = decode_sample(encode_sample(p, JPEG, JPEG)).pair
    assert back.captions == p.captions and back.caption == offline


def test_manifests_hold_no_fixed_size_lists():
    """pyarrow 25 and older cannot read a null fixed-size list back from parquet ("Expected all lists to be of
    size=6 but index 3 had size=0"; seen on a GPU machine's pyarrow 25.0.1 at finalize): a manifest's list
    columns, nullable all of them (a pair without stabilisation, an egocentric pair without poses), are plain."""
    from schemas import manifest

    schemas = [v for v in vars(manifest).values() if isinstance(v, pa.Schema)]
    assert SAMPLES_SCHEMA in schemas and REJECTS_SCHEMA in schemas
    fixed = [(f.name, str(f.type)) for s in schemas for f in s if pa.types.is_fixed_size_list(f.type)]
    assert fixed == []
    # and a row without the optional lists writes and reads back through parquet with its nulls
    row = sample_row(pair(), "s-0000.tar")
    assert row["stabilise_matrix"] is None and row["before_reference_keypoints"] is None
    buf = pa.BufferOutputStream()
    pq.write_table(samples_table([row, row]), buf)
    back = pq.read_table(pa.BufferReader(buf.getvalue()), schema=SAMPLES_SCHEMA)
    assert back.column("stabilise_matrix").null_count == 2 and len(back.column("before_keypoints")[1]) == 51


def test_parts_written_with_fixed_size_lists_read_under_the_plain_schema():
    """Parts an older version wrote (fixed-size lists, nulls among them) are read back under today's schema,
    as finalize and publish read an output's existing parts (pq.read_table(part, schema=SAMPLES_SCHEMA))."""
    sizes = {"before_keypoints": 51, "after_keypoints": 51, "before_box": 4, "after_box": 4, "crop_box": 4,
             "stabilise_matrix": 6, "before_reference_keypoints": 51, "after_reference_keypoints": 51}  # fmt: skip
    old = pa.schema(
        [pa.field(f.name, pa.list_(f.type.value_type, sizes[f.name])) if f.name in sizes else f for f in SAMPLES_SCHEMA]
    )
    row = sample_row(pair(), "s-0000.tar")
    table = samples_table([row, {**row, "crop_box": [1, 2, 3, 4], "stabilise_matrix": [1.0, 0, 0, 0, 1, 0]}])
    buf = pa.BufferOutputStream()
    pq.write_table(table.cast(old), buf)
    back = pq.read_table(pa.BufferReader(buf.getvalue()), schema=SAMPLES_SCHEMA)
    assert back.schema == SAMPLES_SCHEMA
    assert back.column("stabilise_matrix").to_pylist() == [None, [1.0, 0, 0, 0, 1, 0]]
    assert back.column("crop_box").to_pylist()[1] == [1, 2, 3, 4] and back.column("crop_box")[0].as_py() is None
    np.testing.assert_array_equal(  # NaN (an unreported keypoint) included
        np.array(back.column("before_keypoints").to_pylist()), np.array(table.column("before_keypoints").to_pylist())
    )
