"""Records that travel through the pipeline: the one definition the writer and the reader share.

Coordinates are pixels of the stored frame (the decoded, possibly downscaled image that lands in the
shard), origin top-left. Keypoint confidences are the detector's raw values; a keypoint whose
confidence is below a threshold keeps its predicted location, it is only *less trusted*. Locations
that the detector did not report are NaN, never (0, 0).
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

# COCO-17 keypoint order (as emitted by YOLO-pose and used by the COCO keypoint challenge).
COCO17 = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
KP = {name: i for i, name in enumerate(COCO17)}
# Index permutation that maps a pose onto its horizontal mirror image (left <-> right).
COCO17_FLIP = tuple(KP[n.replace("left_", "#").replace("right_", "left_").replace("#", "right_")] for n in COCO17)


class Stage(StrEnum):
    """Pipeline stage that decided a reject."""

    INGEST = "ingest"
    DECODE = "decode"
    POSE = "pose"
    MOTION = "motion"
    PAIRING = "pairing"
    CAPTION = "caption"
    SINK = "sink"


class RejectReason(StrEnum):
    """The one reject vocabulary. Every reject row names exactly one of these."""

    # ingest
    MISSING_FILE = "missing_file"
    EMPTY_FILE = "empty_file"
    BAD_ANNOTATION = "bad_annotation"  # an annotation row that cannot be read (bad times, empty timestamps)
    EXCLUDED = "excluded"  # left out by a source rule (NTU mutual actions by default); detail says which
    # decode
    UNREADABLE = "unreadable"  # not a video decord can open (random bytes, unknown container/codec)
    TRUNCATED = "truncated"  # opens, but frames inside the segment cannot be decoded
    TOO_FEW_FRAMES = "too_few_frames"  # fewer than two distinct frames in the segment
    SEGMENT_OUT_OF_RANGE = "segment_out_of_range"
    # pose / motion funnel (clip level: the first filter that left no usable candidate)
    NO_PERSON = "no_person"
    MULTIPLE_PEOPLE = "multiple_people"
    PARTIAL_BODY = "partial_body"  # a person, but not the body the config asks for (legs only, cut, hidden)
    NO_VALID_WINDOW = "no_valid_window"  # single-person frames exist but no two within the gap bounds
    IDENTITY_SWITCH = "identity_switch"  # the single person is not the same one in both frames
    TOO_SMALL = "too_small"  # the person is too small in the frame to learn an edit from
    BLURRY = "blurry"  # the before or after frame is blurred against the clip's sharpest frames
    SHOT_CUT = "shot_cut"  # a cut, or the background is a different place
    CAMERA_MOTION = "camera_motion"  # a pan, follow-cam or zoom too large to stabilise
    OVERLAY_CHANGED = "overlay_changed"  # something outside the person appears, disappears or changes
    LOW_MOTION = "low_motion"  # the pose does not change enough (normalised by body size)
    # captioning
    CAPTION_FAILED = "caption_failed"
    # the same video content as another clip (a copy or a symlink), or a near-identical pair (perceptual
    # hashes of both frames) of another clip: kept once
    DUPLICATE = "duplicate"
    # anything unexpected inside one clip: recorded, never crashes the build, retried by the next run
    INTERNAL_ERROR = "internal_error"
    IO_ERROR = "io_error"  # the file could not be read this time (I/O error, out of memory): retried


# Failures that say nothing about the clip's content: recorded, and the clip is tried again next run.
TRANSIENT_REASONS = frozenset({RejectReason.INTERNAL_ERROR, RejectReason.IO_ERROR})


class Level(StrEnum):
    """`clip`: the clip produced no sample and this row is why. `candidate`: one rejected candidate
    pair inside a clip (accepted or not), kept for audit; never counted as the clip's outcome."""

    CLIP = "clip"
    CANDIDATE = "candidate"


def clip_key(text: str) -> str:
    """A webdataset-safe key: no dots (webdataset splits keys at the first dot), no path separators
    other than '/', no spaces."""
    out = text.replace("\\", "/").replace(".", "_").replace(" ", "_")
    return out.strip("/")


class Clip(BaseModel):
    """One unit of input: a whole video file or a segment inside one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str  # "folder", "kinetics", "ntu", "epic"
    clip_id: str  # unique within the build, dot-free (webdataset key-safe)
    uri: str  # path or URL of the video file
    start_s: float | None = None  # segment start in seconds (None: start of file)
    end_s: float | None = None  # segment end in seconds (None: end of file)
    label: str | None = None  # action label / narration when known
    split: str | None = None
    licence: str | None = None
    video_id: str | None = None  # the source video (several clips may share one); defaults to clip_id
    extra: dict[str, str | int | float | bool | None] = Field(default_factory=dict)  # dataset's own ids

    @field_validator("clip_id")
    @classmethod
    def _dot_free(cls, v: str) -> str:
        if not v or "." in v or v != v.strip():
            raise ValueError(f"clip_id must be non-empty and contain no dots: {v!r}")
        if v.startswith("/") or "\\" in v or "//" in v or any(part in ("", "..") for part in v.split("/")):
            raise ValueError(f"clip_id must be a relative name without empty or '..' parts: {v!r}")
        if any(ord(ch) < 32 for ch in v):
            raise ValueError(f"clip_id contains control characters: {v!r}")
        return v

    @model_validator(mode="after")
    def _segment_ok(self) -> Clip:
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"segment end {self.end_s} <= start {self.start_s}")
        return self


Triple = Annotated[list[float], Field(min_length=3, max_length=3)]


class Pose17(BaseModel):
    """One detected person: 17 COCO keypoints as [x, y, confidence] in pixels of the stored frame."""

    model_config = ConfigDict(extra="forbid")

    keypoints: Annotated[list[Triple], Field(min_length=17, max_length=17)]
    frame_width: int
    frame_height: int
    box: Annotated[list[float], Field(min_length=4, max_length=4)]  # x1, y1, x2, y2
    score: float  # person detection confidence

    @field_validator("keypoints", mode="before")
    @classmethod
    def _null_is_nan(cls, v):
        # JSON has no NaN: an unreported location is written as null and read back as NaN
        if isinstance(v, list):
            return [[math.nan if c is None else c for c in kp] if isinstance(kp, list) else kp for kp in v]
        return v

    def visible(self, name: str, min_conf: float) -> bool:
        x, y, c = self.keypoints[KP[name]]
        return c >= min_conf and math.isfinite(x) and math.isfinite(y)


class MotionFigures(BaseModel):
    """What the motion filter measured for a pair (pose figures normalised by body size = torso length;
    None where not measured: egocentric pairs have no body)."""

    model_config = ConfigDict(extra="forbid")

    pose_change: float | None  # mean root-relative displacement of limb joints (elbows, wrists, knees, ankles)
    max_joint_change: float | None  # largest root-relative displacement of any keypoint visible in both
    limb_change: float | None = None  # largest root-relative displacement of a limb joint
    translation: float | None  # displacement of the hip centre
    body_size_px: float | None  # torso length in the before frame
    camera_motion: float  # net camera motion (RANSAC similarity of background points) / frame diagonal
    scene_similarity: float  # lowest colour-histogram correlation between consecutive sampled frames
    keypoints_compared: int


class QualityFigures(BaseModel):
    """What the quality filters measured for a pair (curation/stages/quality.py); None where not
    measured (egocentric pairs have no person; a side-on body has no left/right check)."""

    model_config = ConfigDict(extra="forbid")

    person_height: float | None  # person's box height / frame height, larger of the two frames
    edge_margin: float | None  # smallest box distance to the frame border / shorter side, both frames
    other_person_score: float | None  # best score of another detection overlapping the person in the window
    sharpness: float | None  # lower of the two frames' sharpness / the clip's 3 sharpest
    lr_margin: float | None  # smallest signed left/right separation along the facing (torso lengths)
    background_match: float | None  # share of textured background blocks matching after alignment
    background_inliers: float | None  # lowest share of tracked background points the camera motion explains
    overlay_points: int = 0  # static background points set aside as an overlay (most in one step)
    person_px_source: float | None = None  # box height (lying: longer side) in source pixels (larger frame)
    person_px_output: float | None = None  # ... in the stored image's pixels
    leg_extent: float | None = None  # shorter shown leg (hip-knee-ankle) / torso, the frame nearer its limit
    body_tilt: float | None = None  # that frame's torso and legs' larger angle from horizontal, degrees (lying: <= 45)
    box_past_border: float | None = None  # box past the outermost joint to a border it touches / torso (larger)
    extremity_margin: float | None = None  # ankles' and nose's distance to the picture's border / torso (lower)
    foot_room: float | None = None  # how far the box runs past the ankles (along the shins or below) / torso (lower)
    hidden_limb: float | None = None  # largest share of a limb over what the other frame shows unchanged there
    camera_status: str | None = None  # "static" | "stabilised" (curation/stages/camera.py)
    background_residual: float | None = None  # median background difference after alignment (gray levels)
    brightness_change: float | None = None  # median signed background difference (a fade)
    background_change: float | None = None  # share of the background that changed after alignment
    overlay_change: float | None = None  # largest changed region outside the people / frame area
    person_change: float | None = None  # share of the person's box whose pixels changed after alignment
    graphic_stroke: float | None = None  # longest drawn stroke (saturated, thin, straight) in one frame only / torso
    drawn_skeleton: float | None = None  # share of the person's limbs with a drawn line along them (larger frame)
    text_change: float | None = None  # largest bright-text word in one frame only: stroke pixels / torso^2
    text_box_change: float | None = None  # largest detected text box whose text changed / frame area
    second_look_person: float | None = None  # best other person in the crop at 1280 px
    other_track_score: float | None = None  # best score of another person tracked elsewhere in the clip
    transition_mix: float | None = None  # share of another shot blended into either frame (a dissolve's ghost)
    borderline: bool = False  # a figure within quality.borderline_margin of its threshold
    borderline_checks: str | None = None  # which ones, comma-separated
    min_margin: float | None = None  # the smallest relative margin of any figure to its threshold
    before_phash: str | None = None  # 64-bit perceptual hashes (hex) of the stored frames
    after_phash: str | None = None


class Caption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    captioner: str  # "offline", "openai", ...
    model: str | None = None
    prompt_version: str | None = None
    # when a model answered (an LLM caption); none for the offline captioner, a pure function of the
    # poses: a rebuild, on any engine, writes the same bytes
    created_at: datetime | None = None

    @field_validator("text")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("caption text is empty")
        return v

    @property
    def version(self) -> str:
        """'offline', or MODEL@PROMPT_VERSION for an LLM caption (what `publish` and `train` choose by)."""
        if self.captioner == OFFLINE_VERSION:
            return OFFLINE_VERSION
        return caption_version(self.model, self.prompt_version)


OFFLINE_VERSION = "offline"


def caption_version(model: str | None, prompt_version: str | None) -> str:
    return f"{model or '?'}@{prompt_version}"


def version_matches(version: str, requested: str) -> bool:
    """'m@v1' names every 'm@v1-<prompt hash>' (any text of prompt v1); a full version names itself."""
    return version == requested or version.startswith(f"{requested}-")


PairStrategy = Literal["segment_endpoints", "max_motion"]
PairingMode = Literal["body", "egocentric"]


def make_pair_id(clip_id: str, before_index: int, after_index: int) -> str:
    """Deterministic, dot-free, short: the same clip and frames always give the same id."""
    digest = hashlib.sha1(f"{clip_id}|{before_index}|{after_index}".encode()).hexdigest()[:16]
    return digest


class FramePair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    pair_id: str
    clip: Clip
    strategy: PairStrategy
    before_time_s: float
    after_time_s: float
    before_index: int  # frame index in the video file
    after_index: int
    frame_width: int  # stored JPEG size
    frame_height: int
    decoded_width: int | None = None  # the decoded frame the stored image was cut from
    decoded_height: int | None = None
    source_width: int | None = None  # the video's own size (as shown)
    source_height: int | None = None
    crop_box: list[int] | None = None  # x1, y1, x2, y2 of the stored image in the decoded frame (None: whole)
    stabilise_matrix: list[float] | None = None  # 2x3 row-major, decoded after frame -> before (None: not warped)
    before_pose: Pose17 | None  # the detector's pose of the one person (None in egocentric mode)
    after_pose: Pose17 | None
    before_reference_pose: Pose17 | None = None  # a dataset's own pose (NTU Kinect skeleton), COCO-17 subset
    after_reference_pose: Pose17 | None = None
    motion: MotionFigures
    quality: QualityFigures | None = None  # None in shards written before the quality filters
    caption: Caption | None = None  # the published caption
    captions: list[Caption] = Field(default_factory=list)  # every version known for the pair, newest last

    def caption_for(self, version: str | None = None) -> Caption | None:
        """The caption of `version` (newest of it); without one, or when the pair has none of that
        version, the published caption, else the offline one."""
        if version:
            for c in reversed(self.captions):
                if version_matches(c.version, version):
                    return c
        if self.caption is not None:
            return self.caption
        return next((c for c in self.captions if c.version == OFFLINE_VERSION), None)

    def add_caption(self, caption: Caption, publish: bool = False) -> None:
        """Record a caption version (replacing an older one of the same version); optionally publish it."""
        self.captions = [c for c in self.captions if c.version != caption.version] + [caption]
        if publish:
            self.caption = caption

    @model_validator(mode="after")
    def _ordered(self) -> FramePair:
        if self.after_index <= self.before_index:
            raise ValueError("after frame must come after before frame")
        if self.pair_id != make_pair_id(self.clip.clip_id, self.before_index, self.after_index):
            raise ValueError("pair_id does not match clip and frame indices")
        return self

    @property
    def key(self) -> str:
        """webdataset __key__: dot-free and unique."""
        return f"{self.clip.clip_id}/{self.pair_id}"


class Reject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip_id: str
    source: str
    uri: str
    stage: Stage
    reason: RejectReason
    level: Level = Level.CLIP
    detail: str = ""
    pair_id: str | None = None  # for candidate-level rejects
    # the clip as its source listed it, so a reject says which class and split it cost (yield per class)
    label: str | None = None
    split: str | None = None
    video_id: str | None = None
    extra: dict[str, str | int | float | bool | None] = Field(default_factory=dict)  # the dataset's own ids
