"""One clip through every stage: decode -> pose -> motion -> pairs -> caption -> encoded images.

`ClipProcessor` loads its models once (`setup()`), then turns each Clip into a ClipResult. It never
raises for a bad clip: every failure becomes a Reject naming the stage and the reason.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import math
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from schemas.records import Clip, FramePair, Level, Pose17, Reject, RejectReason, Stage, make_pair_id

from .captions import OfflineCaptioner
from .config import BuildConfig, MotionConfig, QualityConfig
from .plan import result_versions
from .sources.ntu import read_skeleton, reference_pose
from .stages import body, camera, crop
from .stages.decode import DecodeFailure
from .stages.decode_pool import Decoded, DecodePool, decode_clip, merged
from .stages.figures import moves, pose_change, same_person
from .stages.motion import ClipTrack, FrameKind, FrameObs, Selection, select_egocentric, select_pairs
from .stages.pose import PoseDetector, detect_across
from .stages.quality import phash

log = logging.getLogger(__name__)


@dataclass
class EncodedPair:
    pair: FramePair
    before_jpg: bytes
    after_jpg: bytes


@dataclass
class ClipResult:
    clip: Clip
    pairs: list[EncodedPair] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    frames_decoded: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    funnel: dict[str, int] = field(default_factory=dict)
    stage: Stage = Stage.DECODE  # the stage being worked on (named by an internal_error reject)

    @property
    def accepted(self) -> bool:
        return bool(self.pairs)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("motionpairs")
    except PackageNotFoundError:
        v = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{v}+g{commit}" if commit else v


def encode_jpeg(frame_rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame_rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _shifted(pose: Pose17 | None, box) -> Pose17 | None:
    return pose if pose is None or box is None else crop.shift_pose(pose, box)


def _reject(clip: Clip, stage: Stage, reason: RejectReason, detail: str, **kw) -> Reject:
    return Reject(
        clip_id=clip.clip_id, source=clip.source, uri=clip.uri, stage=stage, reason=reason, detail=detail[:2000], **kw
    )


def coarse_verdict(track: ClipTrack, cfg: MotionConfig, q: QualityConfig, planned: int) -> Selection | None:
    """The reject a clip's coarse frames (a few of its `planned` sampled frames, spread evenly) already
    decide with the full pass's reason, or None (decode and detect the rest). Only unanimous evidence
    decides, so that the frames between cannot change the verdict: no coarse frame shows a person
    (no_person); every one with a person shows several and they are most (multiple_people); half or
    more show one person and none a whole body (partial_body); one whole body in every frame, too small
    for min_person_px in all, away from the edges (too_small); or one still whole body in every frame,
    before a measured, still camera, moving under half of min_pose_change / min_limb_change between
    any two of them (low_motion)."""
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
        return Selection([], RejectReason.PARTIAL_BODY, f"no whole body (shoulders and hips) ({said})", funnel)
    if kinds[FrameKind.BODY] < n or track.others or any(h > 0 for h in track.hidden):
        return None
    people = [track.person(k, cfg) for k in range(n)]
    if not all(same_person(a, b, cfg) for a, b in itertools.pairwise(people)):
        return None
    content = track.content or (0, 0, people[0].frame_width, people[0].frame_height)
    if any(body.edge_margin(p, content) < 1.5 * q.min_edge_margin for p in people):
        return None
    px = max(p.box[3] - p.box[1] for p in people)
    if px * track.source_scale < 0.8 * q.min_person_px or px < 0.8 * q.min_person_px_output:
        return Selection([], RejectReason.TOO_SMALL, f"largest person {px:.0f} px ({said})", funnel)
    half = cfg.model_copy(
        update={"min_pose_change": cfg.min_pose_change / 2, "min_limb_change": cfg.min_limb_change / 2}
    )
    for a, b in itertools.combinations(people, 2):
        mean, *_, limb = pose_change(a, b, half)
        if not math.isfinite(mean) or moves(mean, limb, half):
            return None
    sim, cam, m, _ = track.scene(0, n - 1)
    if m is None or not cam <= cfg.max_camera_motion / 2 or sim < cfg.min_scene_similarity:
        return None
    return Selection([], RejectReason.LOW_MOTION, f"no pose change, still camera {cam:.3f} ({said})", funnel)


class ClipProcessor:
    """Model-backed stage for a whole clip. Build one per worker; call setup() once."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        self.detector = PoseDetector(cfg.pose)
        self.captioner = OfflineCaptioner(cfg.motion.keypoint_conf)
        self._decoder: DecodePool | None = None

    def setup(self) -> ClipProcessor:
        # egocentric-only builds (EPIC) never run the pose model: don't load it for them
        if not self.cfg.sources or any(self.cfg.mode_for(s.kind) == "body" for s in self.cfg.sources):
            self.detector.setup()
        self.captioner.setup()
        self._decoder = DecodePool(self.cfg.decode).start()
        return self

    @property
    def versions(self) -> dict[str, str]:
        pose = self.cfg.pose
        return result_versions(pose.weights, pose.engine, pose.device, pose.path) | {
            "captioner": self.captioner.name,
            "code": code_version(),
        }

    def run_all(self, clips: list[Clip], upcoming: list[Clip] | None = None) -> Iterator[ClipResult]:
        """Each clip's result, in order, streamed: frames decoded ahead in worker processes (DecodePool),
        detected in batches gathered across clips (detect_across), then each clip's motion, quality,
        captions and encoding. The same output as calling the processor on each clip alone. `upcoming`:
        the clips of the next call (the next work unit), whose decoding starts as this call's runs out."""
        if self._decoder is None:
            self._decoder = DecodePool(self.cfg.decode)
        coarse = self.cfg.decode.coarse_frames > 0

        def part(clip: Clip) -> str | None:
            return "coarse" if coarse and self.cfg.mode_for(clip.source) == "body" else None

        def frames_of(stream):
            for clip, decoded in stream:
                body = decoded.failure is None and decoded.error is None and self.cfg.mode_for(clip.source) == "body"
                yield (clip, decoded), [f for b in decoded.batches for f in b.frames] if body else []

        # motion, quality, captions and encoding of one clip run in a thread beside the pose model's next
        # batches (OpenCV and the engines release the GIL); results leave in input order
        stream = detect_across(self.detector, frames_of(self._decoder.map(clips, upcoming or (), part=part)))
        stream = self._after_coarse(stream) if coarse else (((c, d, None), p, s) for (c, d), p, s in stream)
        with ThreadPoolExecutor(1, thread_name_prefix="clip-post") as post:
            pending: deque[Future[ClipResult]] = deque()
            for (clip, decoded, verdict), poses, seconds in stream:
                pending.append(post.submit(self, clip, decoded, poses, seconds, verdict))
                while pending and (pending[0].done() or len(pending) > 2):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _verdict(self, decoded: Decoded, poses: list | None) -> Selection | None:
        """The coarse pass's reject of a clip (coarse_verdict), or None: its other frames decide."""
        got = [x for b in decoded.batches for x in zip(b.indices, b.times, b.frames, strict=True)]
        k = self.cfg.decode.coarse_frames
        if poses is None or len(got) < min(k, len(decoded.plan)) or len(got) >= len(decoded.plan):
            return None  # a coarse frame failed (the full pass says how), or the coarse frames are all
        obs = [FrameObs(index=i, time=t, poses=p) for (i, t, _), p in zip(got, poses, strict=True)]
        info = decoded.info
        scale = max(info.source_width, info.source_height) / max(1, info.width, info.height) if info else 1.0
        m, q = self.cfg.motion, self.cfg.quality
        track = ClipTrack.build(obs, [f for _, _, f in got], m, q, source_scale=scale)
        return coarse_verdict(track, m, q, len(decoded.plan))

    def _after_coarse(self, stream: Iterator) -> Iterator:
        """The coarse pass's detected clips, the ones it does not reject completed: their other frames
        decode in the workers (up to decode.prefetch_clips clips ahead, while the model detects the next
        clips' coarse frames) and are detected, then joined with the coarse frames into the full pass's
        decoding and poses."""
        ahead = max(1, self.cfg.decode.prefetch_clips)
        window: deque = deque()

        def settle(item):
            (clip, decoded), poses, seconds = item
            verdict = rest = None
            if decoded.part == "coarse" and decoded.failure is None and decoded.error is None:
                verdict = self._verdict(decoded, poses)
                n = sum(len(b.indices) for b in decoded.batches)
                if verdict is None and n < len(decoded.plan):
                    rest = self._decoder.rest(clip)
            return clip, decoded, poses, seconds, verdict, rest

        def with_rest(entry):
            clip, decoded, poses, seconds, verdict, rest = entry
            more = rest() if rest is not None else None
            ok = more is not None and more.failure is None and more.error is None
            return (clip, decoded, poses, seconds, verdict, more), [
                f for b in more.batches for f in b.frames
            ] if ok else []

        def entries():
            for item in stream:
                window.append(settle(item))
                while len(window) > ahead:
                    yield with_rest(window.popleft())
            while window:
                yield with_rest(window.popleft())

        for (clip, decoded, poses, seconds, verdict, more), rest_poses, rest_seconds in detect_across(
            self.detector, entries()
        ):
            if more is None:
                yield (clip, decoded, verdict), poses, seconds
                continue
            whole = merged(decoded, more, self.cfg.decode.batch_frames)
            found = None
            if poses is not None and rest_poses is not None:
                by_index = dict(
                    zip(
                        (i for d in (decoded, more) for b in d.batches for i in b.indices),
                        poses + rest_poses,
                        strict=True,
                    )
                )
                found = [by_index[i] for b in whole.batches for i in b.indices]
            yield (clip, whole, None), found, seconds + rest_seconds

    def __call__(
        self,
        clip: Clip,
        decoded: Decoded | None = None,
        poses: list | None = None,
        pose_seconds: float = 0.0,
        verdict: Selection | None = None,
    ) -> ClipResult:
        """One clip. `decoded` and `poses` (one list per decoded frame) come from the streaming stages,
        with the coarse pass's `verdict` when it rejected the clip; left out, the clip is decoded and
        detected here (the serial reference, coarse pass included)."""
        res = ClipResult(clip=clip)
        try:
            self._run(clip, res, decoded, poses, pose_seconds, verdict)
        except DecodeFailure as e:
            res.rejects.append(e.reject(clip))
        except (OSError, MemoryError) as e:  # the file could not be read this time: retried next run
            log.warning("clip %s: %s in stage %s (retried next run)", clip.clip_id, type(e).__name__, res.stage.value)
            res.pairs.clear()
            res.rejects = [r for r in res.rejects if r.level is Level.CANDIDATE]
            res.rejects.append(_reject(clip, res.stage, RejectReason.IO_ERROR, f"{type(e).__name__}: {e}"))
        except Exception as e:  # one clip must never stop the build
            log.exception("clip %s failed in stage %s", clip.clip_id, res.stage.value)
            res.pairs.clear()
            res.rejects = [r for r in res.rejects if r.level is Level.CANDIDATE]
            res.rejects.append(_reject(clip, res.stage, RejectReason.INTERNAL_ERROR, f"{type(e).__name__}: {e}"))
        return res

    def _run(
        self,
        clip: Clip,
        res: ClipResult,
        decoded: Decoded | None,
        poses: list | None,
        pose_seconds: float,
        verdict: Selection | None = None,
    ) -> None:
        cfg = self.cfg
        egocentric = cfg.mode_for(clip.source) == "egocentric"
        if decoded is None and cfg.decode.coarse_frames and not egocentric:  # the serial coarse pass
            decoded = decode_clip(clip, cfg.decode, "coarse")
            if decoded.failure is None and decoded.error is None:
                t1 = time.perf_counter()
                poses = self.detector([f for b in decoded.batches for f in b.frames])
                pose_seconds += time.perf_counter() - t1
                verdict = self._verdict(decoded, poses)
                if verdict is None and sum(len(b.indices) for b in decoded.batches) < len(decoded.plan):
                    rest = decode_clip(clip, cfg.decode, "rest")
                    decoded, poses = merged(decoded, rest, cfg.decode.batch_frames), None
        decoded = decoded if decoded is not None else decode_clip(clip, cfg.decode)
        decoded.raise_for_problem()
        plan = decoded.plan
        obs: list[FrameObs] = []
        frames: list[np.ndarray] = []
        t_pose = pose_seconds
        res.stage = Stage.POSE
        detected = iter(poses) if poses is not None and not egocentric else None
        for batch in decoded.batches:
            if egocentric:
                found = [[] for _ in batch.indices]
            elif detected is not None:  # detected in the pose stage's batches
                found = [next(detected) for _ in batch.indices]
            else:
                t1 = time.perf_counter()
                found = self.detector(batch.frames)
                t_pose += time.perf_counter() - t1
            for idx, t, frame, p in zip(batch.indices, batch.times, batch.frames, found, strict=True):
                obs.append(FrameObs(index=idx, time=t, poses=p))
                frames.append(frame)
        res.stage = Stage.DECODE
        res.frames_decoded = len(obs)
        res.seconds = {"decode": decoded.seconds, "pose": t_pose}
        if verdict is not None:  # rejected by the coarse pass, on the frames it decoded
            res.funnel = verdict.funnel
            stage = Stage.POSE if verdict.reason is RejectReason.NO_PERSON else Stage.MOTION
            res.rejects.append(_reject(clip, stage, verdict.reason, verdict.detail))
            return
        lost = len(plan) - len(obs)
        if lost > cfg.decode.max_failed_fraction * len(plan) or len(obs) < 2:
            first_bad = min(set(plan) - {o.index for o in obs}, default=None)
            raise DecodeFailure(
                RejectReason.TRUNCATED,
                f"{lost} of {len(plan)} sampled frames could not be decoded (first at frame {first_bad})",
            )

        t2 = time.perf_counter()
        res.stage = Stage.MOTION
        q = cfg.quality
        if egocentric:
            q = q.model_copy(update={"min_background_inliers": cfg.egocentric.min_background_inliers})
        info = decoded.info
        source_scale = max(info.source_width, info.source_height) / max(1, info.width, info.height) if info else 1.0
        track = ClipTrack.build(obs, frames, cfg.motion, q, source_scale=source_scale)
        sel = select_egocentric(track, cfg.egocentric) if egocentric else select_pairs(track, cfg.motion, cfg.pairing)
        res.funnel = sel.funnel
        res.seconds["motion"] = time.perf_counter() - t2
        if not sel.pairs:
            stage = Stage.POSE if sel.reason is RejectReason.NO_PERSON else Stage.MOTION
            res.rejects.append(_reject(clip, stage, sel.reason, sel.detail))
            return

        t3 = time.perf_counter()
        res.stage = Stage.CAPTION
        reference = self._reference_poses(clip, decoded.info, frames[0].shape)
        for c in sel.pairs:
            a, b = track.obs[c.i], track.obs[c.j]
            img_a, img_b = frames[c.i], frames[c.j]
            h, w = img_a.shape[:2]
            pose_a = None if egocentric else track.person(c.i, cfg.motion)
            pose_b = None if egocentric else track.person(c.j, cfg.motion)
            bounds = track.content or (0, 0, w, h)
            stab = None
            if c.align is not None and c.align.status == "stabilised":
                m_full = c.align.full_matrix()
                img_b, pose_b = camera.stabilise(img_b, pose_b, m_full)
                cx1, cy1, cx2, cy2 = camera.common_area(m_full, w, h)
                bounds = (max(bounds[0], cx1), max(bounds[1], cy1), min(bounds[2], cx2), min(bounds[3], cy2))
                stab = [float(v) for v in camera.invert(m_full).ravel()]
            box = None
            if not egocentric and cfg.pairing.crop == "person":
                box = crop.person_box([pose_a.box, pose_b.box], bounds, cfg.pairing.crop_pad, cfg.pairing.crop_aspect)
            elif stab is not None or bounds != (0, 0, w, h):
                box = tuple(int(v) for v in bounds)  # the whole picture, without bars or warped borders
            if box is not None:
                img_a, img_b = crop.cut(img_a, box), crop.cut(img_b, box)
                if not egocentric:
                    pose_a, pose_b = crop.shift_pose(pose_a, box), crop.shift_pose(pose_b, box)
            pair = FramePair(
                pair_id=make_pair_id(clip.clip_id, a.index, b.index),
                clip=clip,
                strategy=c.strategy,
                before_time_s=a.time,
                after_time_s=b.time,
                before_index=a.index,
                after_index=b.index,
                frame_width=img_a.shape[1],
                frame_height=img_a.shape[0],
                decoded_width=w,
                decoded_height=h,
                source_width=info.source_width if info else None,
                source_height=info.source_height if info else None,
                crop_box=list(box) if box is not None else None,
                stabilise_matrix=stab,
                before_pose=pose_a,
                after_pose=pose_b,
                before_reference_pose=_shifted(reference(a.index), box),
                after_reference_pose=_shifted(reference(b.index), box),
                motion=c.motion,
                # hashed on the whole decoded frames: two copies of a video crop a few pixels apart
                quality=c.quality.model_copy(
                    update={"before_phash": phash(frames[c.i]), "after_phash": phash(frames[c.j])}
                ),
            )
            try:
                pair.add_caption(self.captioner(pair), publish=True)
            except Exception as e:
                log.warning("caption failed for %s: %s", pair.pair_id, e)
                failed = _reject(clip, Stage.CAPTION, RejectReason.CAPTION_FAILED, str(e), level=Level.CANDIDATE)
                res.rejects.append(failed.model_copy(update={"pair_id": pair.pair_id}))
                continue
            q = cfg.shards.jpeg_quality
            res.pairs.append(EncodedPair(pair, encode_jpeg(img_a, q), encode_jpeg(img_b, q)))
        res.seconds["caption_encode"] = time.perf_counter() - t3
        if not res.pairs:
            res.rejects.append(_reject(clip, Stage.CAPTION, RejectReason.CAPTION_FAILED, "no pair got a caption"))

    @staticmethod
    def _reference_poses(clip: Clip, info, shape) -> Callable[[int], Pose17 | None]:
        """A dataset's own pose for a frame index (NTU Kinect skeletons), or None."""
        path = clip.extra.get("skeleton")
        if not path:
            return lambda index: None
        try:
            frames = read_skeleton(path)
        except (OSError, ValueError) as e:
            log.warning("%s: skeleton not used: %s", clip.clip_id, e)
            return lambda index: None
        h, w = shape[:2]
        sx, sy = w / info.source_width, h / info.source_height
        return lambda index: reference_pose(frames, index, w, h, sx, sy)
