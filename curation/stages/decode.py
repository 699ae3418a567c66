"""Decode sampled frames: videos with decord (frame-accurate), animated GIFs with Pillow and folders of
extracted frames with OpenCV, all behind decord's reader surface (stages/readers.py); batch by batch,
never the whole video in memory."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from schemas.records import Clip, Reject, RejectReason, Stage

from ..config import DecodeConfig
from .readers import (  # the readers' names stay importable from here
    FRAME_NAME,
    FrameFolderReader,
    GifReader,
    StreamHeader,
    frame_files,
    open_fitted,
    open_reader,
    read_header,
    sniff_container,
)

__all__ = [
    "FRAME_NAME",
    "DecodeFailure",
    "FrameBatch",
    "FrameFolderReader",
    "GifReader",
    "StreamHeader",
    "VideoInfo",
    "VideoSource",
    "frame_files",
    "open_fitted",
    "open_reader",
    "read_header",
    "sniff_container",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int  # decoded (stored) frame size
    height: int
    source_width: int
    source_height: int


@dataclass
class FrameBatch:
    indices: list[int]  # frame indices in the file
    times: list[float]  # presentation time of each frame, seconds from the file's start
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB


class DecodeFailure(Exception):
    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def reject(self, clip: Clip) -> Reject:
        stage = Stage.INGEST if self.reason in (RejectReason.MISSING_FILE, RejectReason.EMPTY_FILE) else Stage.DECODE
        return Reject(
            clip_id=clip.clip_id, source=clip.source, uri=clip.uri, stage=stage, reason=self.reason, detail=self.detail
        )


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[-1] if text else type(e).__name__
    return msg[:300]


class VideoSource:
    """An opened clip: sampling plan plus batched decoding. Use as a context manager."""

    def __init__(self, clip: Clip, cfg: DecodeConfig):
        self.clip = clip
        self.cfg = cfg
        self._vr = None
        self.info: VideoInfo | None = None
        self._pts_ok = False

    def open(self) -> VideoInfo:
        path = self.clip.uri
        if not os.path.exists(path):
            raise DecodeFailure(RejectReason.MISSING_FILE, f"no such file: {path}")
        if not os.path.isdir(path) and os.path.getsize(path) == 0:
            raise DecodeFailure(RejectReason.EMPTY_FILE, "zero-byte file")
        fps_hint = self._frames_fps()
        try:
            self._vr, header, (w, h) = open_fitted(path, self.cfg, fps_hint)
            n = len(self._vr)
        except Exception as e:  # decord raises DECORDError / RuntimeError for unknown containers and codecs
            self._vr = None
            container = sniff_container(path) if os.path.isfile(path) else None
            if container:
                raise DecodeFailure(
                    RejectReason.TRUNCATED,
                    f"{container} header found but the video cannot be opened (truncated or damaged): {_short(e)}",
                ) from e
            raise DecodeFailure(RejectReason.UNREADABLE, f"not a video decord can open: {_short(e)}") from e
        if n < 2:
            raise DecodeFailure(RejectReason.TOO_FEW_FRAMES, f"video has {n} frame(s)")
        fps = float(self._vr.get_avg_fps() or 0.0)
        w0, h0 = header.shown(header.width, header.height)
        self.info = VideoInfo(num_frames=n, fps=fps, width=w, height=h, source_width=w0, source_height=h0)
        # frame folders and GIFs carry exact times (frame numbers, GIF durations); decord's may be garbage
        self._pts_ok = isinstance(self._vr, (FrameFolderReader, GifReader)) or self._timestamps_sane()
        if not self._pts_ok and fps <= 0:
            raise DecodeFailure(RejectReason.UNREADABLE, "video has neither timestamps nor a frame rate")
        return self.info

    def _frames_fps(self) -> float | None:
        """A frame folder's rate from its source (EPIC: 50 or 60 by video), else decode.frames_fps."""
        value = self.clip.extra.get("frames_fps")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    def _timestamps_sane(self) -> bool:
        """Containers without per-frame timestamps (AVI) make decord report garbage: then time is
        index / fps, which is exact for the constant-rate streams such containers hold."""
        n, fps = self.info.num_frames, self.info.fps
        try:
            t0, t1 = (float(self._vr.get_frame_timestamp(i)[0]) for i in (0, n - 1))
        except Exception:
            return False
        if not (0 <= t0 < t1 < 1e7):
            return False
        return fps <= 0 or abs((t1 - t0) - (n - 1) / fps) <= max(1.0, 0.05 * n / fps)

    def retarget(self, clip: Clip) -> VideoSource:
        """Another segment of the same opened file (EPIC: many narrations per long video): plan() and
        batches() now serve `clip`, without opening the file again."""
        if clip.uri != self.clip.uri:
            raise ValueError(f"{clip.clip_id} is in {clip.uri}, not in the opened {self.clip.uri}")
        self.clip = clip
        return self

    def close(self) -> None:
        self._vr = None

    def __enter__(self) -> VideoSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frame_time(self, index: int) -> float:
        if self._pts_ok:
            return float(self._vr.get_frame_timestamp(index)[0])
        return index / self.info.fps

    def plan(self) -> list[int]:
        """Frame indices to sample inside the clip's segment, at cfg.sample_fps, capped at max_frames."""
        info = self.info
        assert info is not None, "open() first"
        n = info.num_frames
        last_time = self.frame_time(n - 1)
        start = self.clip.start_s if self.clip.start_s is not None else self.frame_time(0)  # frame dumps may start late
        end = self.clip.end_s if self.clip.end_s is not None else last_time + 1e-6
        if start > last_time:
            raise DecodeFailure(
                RejectReason.SEGMENT_OUT_OF_RANGE, f"segment starts at {start:.2f}s, video ends at {last_time:.2f}s"
            )
        frame_s = 1.0 / info.fps if info.fps > 0 else 0.1
        if self.clip.end_s is not None and end > last_time + 2 * frame_s:
            raise DecodeFailure(
                RejectReason.SEGMENT_OUT_OF_RANGE, f"segment ends at {end:.2f}s, video ends at {last_time:.2f}s"
            )
        end = min(end, last_time + 1e-6)
        # times of every frame are monotone: locate the segment's frames by binary search on timestamps
        first = self._first_index_at_or_after(start)
        last = self._first_index_at_or_after(end) if end <= last_time else n
        last = max(last, first + 1)
        span = (end - start) if end > start else 0.0
        wanted = max(2, int(np.floor(span * self.cfg.sample_fps)) + 1)
        wanted = min(wanted, self.cfg.max_frames, last - first)
        idx = np.unique(np.round(np.linspace(first, last - 1, wanted)).astype(int))
        if len(idx) < 2:
            raise DecodeFailure(RejectReason.TOO_FEW_FRAMES, f"segment holds {len(idx)} frame(s)")
        return idx.tolist()

    def _first_index_at_or_after(self, t: float) -> int:
        lo, hi = 0, self.info.num_frames
        while lo < hi:
            mid = (lo + hi) // 2
            if self.frame_time(mid) < t - 1e-6:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def batches(self, indices: list[int]) -> Iterator[FrameBatch]:
        """Decode the planned frames, cfg.batch_frames at a time. Frames that fail to decode are left
        out (a truncated file); the caller sees which indices came back."""
        step = self.cfg.batch_frames
        for i in range(0, len(indices), step):
            chunk = indices[i : i + step]
            try:
                frames = self._vr.get_batch(chunk).asnumpy()
                ok = chunk
            except Exception as e:  # a damaged stretch: fall back to frame by frame
                log.debug("batch decode failed for %s: %s", self.clip.clip_id, _short(e))
                ok, got = [], []
                for j in chunk:
                    try:
                        got.append(self._vr.get_batch([j]).asnumpy()[0])
                        ok.append(j)
                    except Exception:
                        continue
                if not ok:
                    continue
                frames = np.stack(got)
            yield FrameBatch(indices=list(ok), times=[self.frame_time(j) for j in ok], frames=frames)
