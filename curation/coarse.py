"""The coarse pass (decode.coarse_frames): a body-mode clip's few evenly spread frames are decoded and
detected first; the clips they already decide are rejected with the full pass's reason, the others get
the rest of their frames decoded and detected, joined with the coarse ones into exactly the full pass's.

`coarse_verdict` decides on a clip's coarse frames; `verdict_of` builds their track from a decoding;
`after_coarse` completes the streaming pass (ClipProcessor.run_all), `serial_coarse` the serial one.
"""

from __future__ import annotations

import collections
import itertools
import math
import time
from collections import deque
from collections.abc import Iterator

from schemas.records import Clip, RejectReason

from .config import BuildConfig, MotionConfig, QualityConfig
from .stages import body
from .stages.decode_pool import Decoded, DecodePool, decode_clip, merged
from .stages.figures import moves, pose_change, same_person
from .stages.motion import ClipTrack, FrameKind, FrameObs, Selection, body_rule
from .stages.pose import PoseDetector, detect_across


def coarse_verdict(track: ClipTrack, cfg: MotionConfig, q: QualityConfig, planned: int) -> Selection | None:
    """The reject a clip's coarse frames (a few of its `planned` sampled frames, spread evenly) already
    decide with the full pass's reason, or None (decode and detect the rest). Only unanimous evidence
    decides, so that the frames between cannot change the verdict: no coarse frame shows a person
    (no_person); every one with a person shows several and they are most (multiple_people); half or
    more show one person and none a whole body (partial_body); one whole body in every frame, too small
    for min_person_px in all by its box's longer side (a bound on the full pass's size, which reads a
    lying body's longer side and an upright one's height), away from the edges (too_small); or one
    still whole body in every frame, before a measured, still camera, moving under half of
    min_pose_change / min_limb_change between any two of them (low_motion)."""
    n = len(track.kinds)
    kinds = collections.Counter(track.kinds)
    person = n - kinds[FrameKind.NONE]
    single = kinds[FrameKind.BODY] + kinds[FrameKind.PARTIAL] + kinds[FrameKind.SWAPPED]
    whole = kinds[FrameKind.BODY] + kinds[FrameKind.SWAPPED]
    counts = {"frames": n, "frames_with_person": person, "frames_single_person": single, "frames_whole_body": whole}
    funnel = {f"coarse_{k}": v for k, v in counts.items()}  # the full pass's keys count its frames only
    said = f"coarse pass, {n} of {planned} sampled frames: " + ", ".join(f"{k}={v}" for k, v in counts.items())
    if person == 0:
        return Selection([], RejectReason.NO_PERSON, f"no confident person ({said})", funnel)
    if single == 0 and kinds[FrameKind.MULTI] >= max(2, math.ceil(n / 2)):
        return Selection([], RejectReason.MULTIPLE_PEOPLE, f"several people in every frame ({said})", funnel)
    if whole == 0 and single >= max(2, math.ceil(n / 2)):
        return Selection([], RejectReason.PARTIAL_BODY, f"no whole body ({body_rule(cfg)}) ({said})", funnel)
    if kinds[FrameKind.BODY] < n or track.others or any(h > 0 for h in track.hidden):
        return None
    people = [track.person(k, cfg) for k in range(n)]
    if not all(same_person(a, b, cfg) for a, b in itertools.pairwise(people)):
        return None
    content = track.content or (0, 0, people[0].frame_width, people[0].frame_height)
    if any(body.edge_margin(p, content) < 1.5 * q.min_edge_margin for p in people):
        return None
    px = max(max(p.box[2] - p.box[0], p.box[3] - p.box[1]) for p in people)  # >= body.person_px, any tilt
    if px * track.source_scale < 0.8 * q.min_person_px or px < 0.8 * q.min_person_px_output:
        return Selection([], RejectReason.TOO_SMALL, f"largest person {px:.0f} px ({said})", funnel)
    half = cfg.model_copy(
        update={"min_pose_change": cfg.min_pose_change / 2, "min_limb_change": cfg.min_limb_change / 2}
    )
    for a, b in itertools.combinations(people, 2):
        ch = pose_change(a, b, half)
        if not math.isfinite(ch.mean) or moves(ch.mean, ch.limb, half):
            return None
    sim, cam, m, _ = track.scene(0, n - 1)
    if m is None or not cam <= cfg.max_camera_motion / 2 or sim < cfg.min_scene_similarity:
        return None
    return Selection([], RejectReason.LOW_MOTION, f"no pose change, still camera {cam:.3f} ({said})", funnel)


def verdict_of(decoded: Decoded, poses: list | None, cfg: BuildConfig) -> Selection | None:
    """The coarse pass's reject of a clip (coarse_verdict), or None: its other frames decide."""
    got = [x for b in decoded.batches for x in zip(b.indices, b.times, b.frames, strict=True)]
    k = cfg.decode.coarse_frames
    if poses is None or len(got) < min(k, len(decoded.plan)) or len(got) >= len(decoded.plan):
        return None  # a coarse frame failed (the full pass says how), or the coarse frames are all
    obs = [FrameObs(index=i, time=t, poses=p) for (i, t, _), p in zip(got, poses, strict=True)]
    info = decoded.info
    scale = max(info.source_width, info.source_height) / max(1, info.width, info.height) if info else 1.0
    m, q = cfg.motion, cfg.quality
    track = ClipTrack.build(obs, [f for _, _, f in got], m, q, source_scale=scale)
    return coarse_verdict(track, m, q, len(decoded.plan))


def after_coarse(stream: Iterator, cfg: BuildConfig, detector: PoseDetector, decoder: DecodePool) -> Iterator:
    """The coarse pass's detected clips, the ones it does not reject completed: their other frames
    decode in the workers (up to decode.prefetch_clips clips ahead, while the model detects the next
    clips' coarse frames) and are detected, then joined with the coarse frames into the full pass's
    decoding and poses."""
    ahead = max(1, cfg.decode.prefetch_clips)
    window: deque = deque()

    def settle(item):
        (clip, decoded), poses, seconds = item
        verdict = rest = None
        if decoded.part == "coarse" and decoded.failure is None and decoded.error is None:
            verdict = verdict_of(decoded, poses, cfg)
            n = sum(len(b.indices) for b in decoded.batches)
            if verdict is None and n < len(decoded.plan):
                rest = decoder.rest(clip)
        return clip, decoded, poses, seconds, verdict, rest

    def with_rest(entry):
        clip, decoded, poses, seconds, verdict, rest = entry
        more = rest() if rest is not None else None
        ok = more is not None and more.failure is None and more.error is None
        return (clip, decoded, poses, seconds, verdict, more), [f for b in more.batches for f in b.frames] if ok else []

    def entries():
        for item in stream:
            window.append(settle(item))
            while len(window) > ahead:
                yield with_rest(window.popleft())
        while window:
            yield with_rest(window.popleft())

    for (clip, decoded, poses, seconds, verdict, more), rest_poses, rest_seconds in detect_across(detector, entries()):
        if more is None:
            yield (clip, decoded, verdict), poses, seconds
            continue
        whole = merged(decoded, more, cfg.decode.batch_frames)
        found = None
        if poses is not None and rest_poses is not None:
            indices = (i for d in (decoded, more) for b in d.batches for i in b.indices)
            by_index = dict(zip(indices, poses + rest_poses, strict=True))
            found = [by_index[i] for b in whole.batches for i in b.indices]
        yield (clip, whole, None), found, seconds + rest_seconds


def serial_coarse(
    clip: Clip, cfg: BuildConfig, detector: PoseDetector
) -> tuple[Decoded, list | None, float, Selection | None]:
    """The coarse pass of a clip processed alone: (its decoding, the poses of those frames or None when
    they are yet to be detected, the seconds detecting took, the coarse reject or None). A clip the
    coarse frames do not decide has the rest of its frames decoded and merged in."""
    decoded = decode_clip(clip, cfg.decode, "coarse")
    poses, seconds, verdict = None, 0.0, None
    if decoded.failure is None and decoded.error is None:
        t1 = time.perf_counter()
        poses = detector([f for b in decoded.batches for f in b.frames])
        seconds = time.perf_counter() - t1
        verdict = verdict_of(decoded, poses, cfg)
        if verdict is None and sum(len(b.indices) for b in decoded.batches) < len(decoded.plan):
            rest = decode_clip(clip, cfg.decode, "rest")
            decoded, poses = merged(decoded, rest, cfg.decode.batch_frames), None
    return decoded, poses, seconds, verdict
