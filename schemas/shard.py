"""The shard format: what one webdataset sample holds. Used by the writer (curation.sink) and by the
training reader (training.data); nothing else encodes or decodes samples.

A sample is three tar members sharing one dot-free key:
  <key>.before.jpg   the before frame (JPEG)
  <key>.after.jpg    the after frame (JPEG)
  <key>.json         the FramePair record (schemas.records.FramePair) as JSON: "caption" is the
                     published caption, "captions" every caption version known for the pair
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .records import SCHEMA_VERSION, Caption, FramePair

BEFORE = "before.jpg"
AFTER = "after.jpg"
META = "json"
MEMBERS = (BEFORE, AFTER, META)
SIZES_FILE = "sizes.json"  # {shard name: sample count}, beside the shards (open_clip convention)


class ShardFormatError(ValueError):
    """A sample that does not follow this format."""


def encode_jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    """H x W x 3 uint8 RGB -> JPEG bytes: the one JPEG encoder (shard frames, report pictures, the
    images sent to a captioning or judging model)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image_rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> H x W x 3 uint8 RGB (ValueError when they are not an image)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a JPEG image")
    return img[..., ::-1]


def encode_sample(pair: FramePair, before_jpg: bytes, after_jpg: bytes) -> dict[str, Any]:
    """The dict that webdataset's TarWriter writes."""
    if "." in pair.key:
        raise ShardFormatError(f"sample key contains a dot: {pair.key!r}")
    if not (before_jpg[:2] == b"\xff\xd8" and after_jpg[:2] == b"\xff\xd8"):
        raise ShardFormatError("images must be JPEG bytes")
    meta = json.loads(pair.model_dump_json())
    return {"__key__": pair.key, BEFORE: before_jpg, AFTER: after_jpg, META: json.dumps(meta).encode()}


@dataclass
class ShardSample:
    key: str
    pair: FramePair
    before: Any  # bytes, or whatever the reader's decoder produced
    after: Any

    @property
    def caption(self) -> Caption | None:
        return self.pair.caption


def decode_meta(raw: bytes | str | dict) -> FramePair:
    """Validate a sample's JSON against schemas; raises ShardFormatError with the reason."""
    try:
        data = raw if isinstance(raw, dict) else json.loads(raw)
    except (TypeError, json.JSONDecodeError) as e:
        raise ShardFormatError(f"sample json is not JSON: {e}") from e
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ShardFormatError(f"schema_version {version!r} is not supported (reader knows {SCHEMA_VERSION})")
    try:
        return FramePair.model_validate(data)
    except ValueError as e:
        raise ShardFormatError(f"sample json does not validate: {e}") from e


def decode_sample(sample: dict[str, Any]) -> ShardSample:
    """From a raw webdataset sample dict (member name -> bytes) to a validated ShardSample."""
    missing = [m for m in MEMBERS if m not in sample]
    if missing:
        raise ShardFormatError(f"sample {sample.get('__key__')!r} lacks {missing}")
    pair = decode_meta(sample[META])
    key = sample.get("__key__", pair.key)
    if key != pair.key:
        raise ShardFormatError(f"sample key {key!r} does not match its record {pair.key!r}")
    return ShardSample(key=key, pair=pair, before=sample[BEFORE], after=sample[AFTER])


def keypoints_array(pair: FramePair) -> tuple[np.ndarray, np.ndarray]:
    """Both poses as float32 arrays of shape (17, 3): x, y, confidence (all NaN where there is no pose)."""

    def arr(pose) -> np.ndarray:
        if pose is None:
            return np.full((17, 3), np.nan, np.float32)
        return np.asarray(pose.keypoints, dtype=np.float32)

    return arr(pair.before_pose), arr(pair.after_pose)
