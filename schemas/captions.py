"""Caption versions: what a multimodal LLM is asked to return, and the rows that record every attempt.

Every captioning run appends rows to OUT/captions/<run>.parquet (older versions are kept); `publish`
chooses one caption per sample from them and rewrites the shards.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

CAPTIONS_DIR = "captions"


Side = Literal["left", "right", "both", "none"]
BodyPart = Literal["arm", "hand", "leg", "knee", "foot", "torso", "head", "whole_body"]
Direction = Literal["up", "down", "out", "in", "bend", "straighten", "forward", "backward", "turn", "other"]


class MotionChange(BaseModel):
    """One thing the model says moved, in words a keypoint check can test (the person's own side)."""

    model_config = ConfigDict(extra="forbid")

    side: Side = Field(description="the person's own side (not the viewer's): left, right, both, or none")
    part: BodyPart
    direction: Direction = Field(
        description="up/down along the body (up: towards the head, however the person lies), out/in away from "
        "or towards the body's midline, bend/straighten a joint, ..."
    )


class CaptionAnswer(BaseModel):
    """The JSON object the model must answer with (sent as a strict JSON schema)."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(description="an imperative edit instruction turning the before image into the after image")
    before: str = Field(description="one short sentence: the person's pose in the before image")
    after: str = Field(description="one short sentence: the person's pose in the after image")
    visible_change: bool = Field(description="false when no change between the images can be seen")
    changes: list[MotionChange] = Field(description="each body part that moves, with side and direction")

    @field_validator("instruction", "before", "after")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("empty text")
        return v


def answer_json_schema() -> dict:
    """Strict JSON schema for response_format (every property required, no extra keys, no $refs)."""
    schema = CaptionAnswer.model_json_schema()
    defs = schema.pop("$defs", {})
    change = defs["MotionChange"]
    change["additionalProperties"] = False
    change["required"] = list(MotionChange.model_fields)
    schema["properties"]["changes"]["items"] = change
    schema["additionalProperties"] = False
    schema["required"] = list(CaptionAnswer.model_fields)
    return schema


class Agreement:
    """What the keypoints say of an LLM caption's structured changes."""

    AGREE = "agree"  # every checkable change matches the keypoints
    CONTRADICT = "contradict"  # a change the keypoints refute (the wrong side, the opposite direction)
    NOT_CHECKABLE = "not_checkable"  # nothing the keypoints can test (no poses, hidden joints, no sides)


class CaptionStatus:
    OK = "ok"  # a valid answer: usable as a caption
    NOT_VISIBLE = "not_visible"  # valid, but the model sees no change: recorded, never published
    FAILED = "failed"  # no valid answer; `reason` says why


CAPTION_ROWS_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string()),
        pa.field("clip_id", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("caption_version", pa.string()),  # "<model>@<prompt_version>-<prompt sha256[:8]>"
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),  # for failures: http_429, timeout, invalid_json, refusal, empty, ...
        pa.field("text", pa.string()),
        pa.field("before_text", pa.string()),
        pa.field("after_text", pa.string()),
        pa.field("raw", pa.string()),  # the model's raw answer, as received
        pa.field("captioner", pa.string()),
        pa.field("model", pa.string()),
        pa.field("prompt_version", pa.string()),
        pa.field("tokens_in", pa.int64()),
        pa.field("tokens_out", pa.int64()),
        pa.field("cost_usd", pa.float64()),
        pa.field("seconds", pa.float64()),
        pa.field("cached", pa.bool_()),
        pa.field("cache_key", pa.string()),
        pa.field("prompt_sha256", pa.string()),  # the prompt file's text: a new text is a new caption version
        pa.field("changes", pa.string()),  # the answer's structured changes, JSON
        pa.field("pose_agreement", pa.string()),  # Agreement: agree / contradict / not_checkable
        pa.field("agreement_detail", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
