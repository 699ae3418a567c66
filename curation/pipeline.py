"""One clip through every stage: decode -> pose -> motion -> pairs -> caption -> encoded images.

`ClipProcessor` loads its models once (`setup()`), then turns each Clip into a ClipResult. It never
raises for a bad clip: every failure becomes a Reject naming the stage and the reason.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas.records import Clip, FramePair, Level, Pose17, Reject, RejectReason, Stage, make_pair_id
from schemas.shard import encode_jpeg

from .captions import OfflineCaptioner
from .coarse import after_coarse, serial_coarse
from .config import BuildConfig
from .plan import build_versions
from .sources.ntu import read_skeleton, reference_pose
from .stages import camera, crop, second_look, text_boxes
from .stages.decode import DecodeFailure
from .stages.decode_pool import Decoded, DecodePool, decode_clip
from .stages.motion import ClipTrack, FrameObs, Selection, select_egocentric, select_pairs
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


def _shifted(pose: Pose17 | None, box) -> Pose17 | None:
    return pose if pose is None or box is None else crop.shift_pose(pose, box)


def _reject(clip: Clip, stage: Stage, reason: RejectReason, detail: str, **kw) -> Reject:
    return Reject(
        clip_id=clip.clip_id, source=clip.source, uri=clip.uri, stage=stage, reason=reason, detail=detail[:2000], **kw
    )


class ClipProcessor:
    """Model-backed stage for a whole clip. Build one per worker; call setup() once."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        self.detector = PoseDetector(cfg.pose)
        self.captioner = OfflineCaptioner(cfg.motion.keypoint_conf)
        self._decoder: DecodePool | None = None

    def setup(self) -> ClipProcessor:
        # the decode workers start (seconds of imports in their processes) while the pose model loads here
        self._decoder = DecodePool(self.cfg.decode).start(wait=False)
        try:
            # egocentric-only builds (EPIC) never run the pose model: don't load it for them
            if not self.cfg.sources or any(self.cfg.mode_for(s.kind) == "body" for s in self.cfg.sources):
                self.detector.setup()
                if self.cfg.quality.max_text_box_change < 1:
                    text_boxes.load()  # the text detector too: one that cannot load stops the run, not a clip
                if self.cfg.quality.max_second_look_person < 1:
                    second_look.load(self.cfg.pose)  # and the second look's model
            self.captioner.setup()
        except BaseException:
            self._decoder.close()
            raise
        self._decoder.start()
        return self

    @property
    def versions(self) -> dict[str, str]:
        return build_versions(self.cfg) | {
            "captioner": self.captioner.name,
            "code": code_version(),
        }

    @property
    def machine(self) -> dict:
        """This worker's CPU, device and pose precision (`pose_precision` None when the pose model was not
        loaded: an egocentric-only build), recorded with each unit it commits."""
        return self.detector.machine

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
        if coarse:
            stream = after_coarse(stream, self.cfg, self.detector, self._decoder)
        else:
            stream = (((c, d, None), p, s) for (c, d), p, s in stream)
        with ThreadPoolExecutor(1, thread_name_prefix="clip-post") as post:
            pending: deque[Future[ClipResult]] = deque()
            for (clip, decoded, verdict), poses, seconds in stream:
                pending.append(post.submit(self, clip, decoded, poses, seconds, verdict))
                while pending and (pending[0].done() or len(pending) > 2):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

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
            decoded, poses, seconds, verdict = serial_coarse(clip, cfg, self.detector)
            pose_seconds += seconds
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
        track.pose_cfg = cfg.pose
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
