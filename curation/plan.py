"""Planning a build: what the sources list, what is already committed with the same settings, and the
work units still to do.

A clip's key is everything that decides its result (the settings fingerprint, the code's and the pose
model's versions, the clip as listed and its content identity); a committed unit stands when every
clip in it still has the key it was committed with. Planning reads the store's records and the
sources only; it decodes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from schemas.records import Clip

from .config import BuildConfig
from .sources import ContentIds, Listing, list_sources
from .stages import text_boxes
from .stages.pose import default_weights, engine_version, resolve_device, resolve_engine, resolve_path, weights_version
from .store import Output, write_json

CONTENT_IDS = ".content-ids.json"  # cache of the inputs' content identities, in the (staging) output

# Bump when a code change alters what the build decides or writes for the same input and settings:
# every unit is redone on the next run (a code change that does not alter results leaves data be).
# 34: a pairless clip whose moving candidates stopped 90 % at one check is named by it (motion.CLIP_REASON_SHARE);
# 33: where the second look finds no one, the pair's crop alone at 960 px: a figure under half the
# subject's height there is another person (teammates far behind; second_look.people_in); a candidate a
# margin drops skips the text checks and the second look (checks.early_borderline: funnel reasons move);
# 32: the picture inside bands that are not dark (blur fill, white bars, bars with a caption) is the frame:
# nobody detected in the bands, no background compared there (body.framed_picture);
# 31: a limb over what the other frame shows unchanged there is hidden behind it (hidden_limb, partial_body);
# 30: a text box whose ink changed (a thin line typed in) is text_box_change too;
# 29: offline-v8 captions: the hips' leg phrase needs the feet off the floor (a side-on squat);
# 28: another person found by a second look at the pair's frames at 1280 px (second_look_person);
# 27: a detected text box whose text changes between the frames is an overlay change (text_box_change);
# 26: offline-v7 captions: both feet up off the floor with the hips still is "raise both legs" (a boat pose);
# 25: a row of letters in one frame only is not what the hands hold (camera._glyphs): a growing cue list;
# 24: offline-v6 captions: standing to lying (hips down half a torso) is "get down on the floor", and back up;
# 23: a pose skeleton drawn over the person (lines along most of its limbs) is an overlay (drawn_skeleton);
# 22: the caption-keypoint check reads a leg's, foot's or knee's up and down in the picture, off the floor and
# relative to the hips (along the torso axis a squat and a hinge raised the feet): pose_agreement changes;
# offline-v5 captions: a side-on body facing the same way in both frames steps forward or back;
# 21: offline-v4 captions: "lift your foot" only where the torso axis keeps its direction; out/in, a lean or
# a step to the person's side only with the shoulders 0.3 torso apart in both frames; an arm's reach signed;
# 20: the offline captioner says "turn around" only where the face turns away in one frame (offline-v3);
# the funnel's after_<reason> counts are of the candidates checked (candidates_checked);
# 19: a second box beside a subject seen only weakly is not a person apart (its track is not stretched);
# 18: a box that stops at an ankle saw no foot there (foot_room, partial_body);
# 17: sharpness measured at the frame's scale, not the box's; a frame inside a dissolve (transition_mix);
# 16: a thin straight change that runs into a hand is what it holds (a landmine bar), not an overlay;
# 15: OpenVINO pose pinned to fp32 (bf16 by default on AMX/AVX512-BF16 CPUs), manifest lists plain;
# 14: bright text in one frame only is an overlay change (text_change); 13: box_past_border stored with its
# margin; 12: a drawn graphic stroke in one frame only is an overlay change; 11: a box running on to the
# border past the joints is a cut body; 10: a head seen in one frame only;
# 9: a left/right flip with the face seen in both frames is not a turn (issue 22);
# 8: overlays judged off the drawn body, limb-change motion (issue 22); 7: body-relative offline captions,
# abstentions (issue 25); 6: background alignment, overlays, tracked people, shown legs, person crops (issue 22)
# 35: a body lying in the picture (torso and legs within 45 degrees of level) may show legs down to
# motion.min_leg_extent_lying (0.6) torso long: a push-up seen three-quarters from the front (body_tilt);
# 36: a lying body's size in pixels (person_px_*, too_small) is its box's longer side;
# 37: the coarse pass bounds the size by the box's longer side, whatever the tilt (never stricter);
# 38: the identity check sizes a body by the larger of torso length and shoulder width (a torso bent
# toward the camera: head-on push-ups and burpees were identity_switch);
# 39: a candidate repeating a pair already taken from the clip (near-duplicate pHashes) is passed over
# unchecked and the search goes on (the generation's near-duplicate step used to drop it after the build);
RESULTS_VERSION = 39


@functools.lru_cache(maxsize=8)
def _weights_version(weights: str | None) -> str:
    try:
        return weights_version(Path(weights).expanduser().resolve() if weights else default_weights())
    except OSError:
        return "unavailable"


def result_versions(
    weights: str | None = None,
    engine: str = "auto",
    device: str = "auto",
    path: str = "auto",
    text_detector: bool = False,
) -> dict[str, str]:
    """What produced the results besides the settings: pose model (name and content hash), engine (the
    one `auto` resolves to here, with its version), code results version, and with `text_detector` (the
    text-box check on) the text detector's packages. Recorded on every unit and in stats.json; part of
    the fingerprint, so a build that changes engine or detector redoes its clips."""
    device = resolve_device(device)
    on_device = resolve_path(path, device) == "device"  # its letterbox differs a little: other results
    versions = {
        "pose_model": _weights_version(weights),
        "pose_engine": engine_version(resolve_engine(engine, device)) + ("+device-path" if on_device else ""),
        "results": str(RESULTS_VERSION),
    }
    if text_detector:
        versions["text_detector"] = text_boxes.version()
    return versions


def build_versions(cfg: BuildConfig) -> dict[str, str]:
    """result_versions for a build's settings."""
    pose = cfg.pose
    on = cfg.quality.max_text_box_change < 1
    return result_versions(pose.weights, pose.engine, pose.device, pose.path, text_detector=on)


def fingerprint(cfg: BuildConfig) -> str:
    """Hash of what changes what any clip produces: the result settings and the versions of the pose
    model, its engine and the code's results (RESULTS_VERSION). Not where it is written, not the
    device, not tuning (decode.batch_frames, shards.*), not the sources (see clip_keys)."""
    relevant = cfg.model_dump(mode="json", exclude={"output", "staging_dir", "sources"})
    for tuning in ("device", "batch_size", "path"):  # path and device are in versions, resolved
        relevant["pose"].pop(tuning, None)
    for tuning in ("batch_frames", "workers", "prefetch_clips"):
        relevant["decode"].pop(tuning, None)
    relevant["shards"] = {"jpeg_quality": cfg.shards.jpeg_quality}
    relevant["caption"] = cfg.caption.result_settings()
    relevant["versions"] = build_versions(cfg)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def clip_keys(
    cfg: BuildConfig, clips: Iterable[Clip], identity: Callable[[str], str | None] | None = None
) -> dict[str, str]:
    """clip_id -> a hash of everything that decides the clip's result: the settings fingerprint, the
    clip as its source listed it (segment, label, split, ids; not where the file is mounted) and the
    video's content identity, and its pairing mode. A committed clip whose key is unchanged is not
    redone: moving the input root changes nothing, a video replaced under the same name is redone."""
    identity = identity or ContentIds()
    fp = fingerprint(cfg)
    modes: dict[str, str] = {}
    keys = {}
    for c in clips:
        mode = modes.setdefault(c.source, cfg.mode_for(c.source))
        listed = c.model_dump_json(exclude={"uri"})
        ident = identity(c.uri) or "missing"
        keys[c.clip_id] = hashlib.sha1(f"{fp}\n{mode}\n{listed}\n{ident}".encode()).hexdigest()[:16]
    return keys


@dataclass(frozen=True)
class WorkUnit:
    unit_id: str
    clips: tuple[Clip, ...]


@dataclass
class BuildPlan:
    listing: Listing
    units: list[WorkUnit]  # pending work
    done: set[str]  # clip_ids already committed with these settings
    fingerprint: str  # the settings fingerprint
    stale_units: list[str] = field(default_factory=list)  # other settings, or a clip no longer listed
    kept_units: list[str] = field(default_factory=list)  # committed units that stand
    listing_digest: str = ""
    pulled_under: str | None = None  # the writer lock this process held when the plan pulled the remote

    @property
    def pending_clips(self) -> int:
        return sum(len(u.clips) for u in self.units)


def plan_build(cfg: BuildConfig, out: Output | None = None) -> BuildPlan:
    out = out or Output.open(cfg.output, cfg.staging_dir)
    out.pull()  # a remote output: what other machines committed
    pulled_under = out.held_token()
    identity = ContentIds(out.root / CONTENT_IDS if out.root.is_dir() else None, once=True)
    listing = list_sources(cfg.sources, identity)
    fp = fingerprint(cfg)
    keys = clip_keys(cfg, listing.clips, identity)
    identity.save(write_json)
    done: set[str] = set()
    stale: list[str] = []
    kept: list[str] = []
    for rec in out.records():
        rec_keys = rec.get("clip_keys")  # records of older versions have none (or no tar checksums): redone
        standing = (
            rec.get("fingerprint") == fp
            and rec_keys
            and "files" in rec
            and not rec.get("retry")
            and all(keys.get(c) == k for c, k in rec_keys.items())
        )
        if standing:
            done.update(rec_keys)
            kept.append(rec["unit_id"])
        else:
            stale.append(rec["unit_id"])
    pending = [c for c in listing.clips if c.clip_id not in done]
    n = cfg.shards.clips_per_unit
    units = []
    for i in range(0, len(pending), n):
        chunk = tuple(pending[i : i + n])
        digest = hashlib.sha1("\n".join(f"{c.clip_id} {keys[c.clip_id]}" for c in chunk).encode()).hexdigest()[:12]
        units.append(WorkUnit(unit_id=f"u{digest}", clips=chunk))
    return BuildPlan(
        listing=listing,
        units=units,
        done=done,
        fingerprint=fp,
        stale_units=stale,
        kept_units=kept,
        listing_digest=listing_digest(listing),
        pulled_under=pulled_under,
    )


def listing_digest(listing: Listing) -> str:
    """What the sources list (clips and ingest-level rejects): a manifest made from another listing is
    out of date even when no unit changed. Where the files are mounted does not count."""
    h = hashlib.sha1()
    for c in sorted(listing.clips, key=lambda c: c.clip_id):
        h.update(c.model_dump_json(exclude={"uri"}).encode())
    for r in sorted(listing.rejects, key=lambda r: r.clip_id):
        h.update(r.model_dump_json(exclude={"uri"}).encode())
    return h.hexdigest()[:16]
