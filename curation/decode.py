"""Decode sampled frames with decord: frame-accurate, batch by batch, never the whole video in memory."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from schemas.records import Clip, Reject, RejectReason, Stage

from .config import DecodeConfig

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


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    # even sizes keep every scaler happy
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def sniff_container(path: str) -> str | None:
    """The container a file claims to be, from its first bytes (None: no known video signature)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[4:8] == b"ftyp":
        return "MP4/MOV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    return None


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
        import decord

        path = self.clip.uri
        if not os.path.exists(path):
            raise DecodeFailure(RejectReason.MISSING_FILE, f"no such file: {path}")
        if os.path.getsize(path) == 0:
            raise DecodeFailure(RejectReason.EMPTY_FILE, "zero-byte file")
        try:
            probe = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            n = len(probe)
            h0, w0 = probe[0].shape[:2] if n > 0 else (0, 0)
        except Exception as e:  # decord raises DECORDError / RuntimeError for unknown containers and codecs
            container = sniff_container(path)
            if container:
                raise DecodeFailure(
                    RejectReason.TRUNCATED,
                    f"{container} header found but the video cannot be opened (truncated or damaged): {_short(e)}",
                ) from e
            raise DecodeFailure(RejectReason.UNREADABLE, f"not a video decord can open: {_short(e)}") from e
        if n < 2:
            raise DecodeFailure(RejectReason.TOO_FEW_FRAMES, f"video has {n} frame(s)")
        fps = float(probe.get_avg_fps() or 0.0)
        w, h = _fit(w0, h0, self.cfg.max_side)
        if (w, h) != (w0, h0):
            del probe
            try:
                self._vr = decord.VideoReader(path, ctx=decord.cpu(0), width=w, height=h, num_threads=1)
            except Exception as e:
                raise DecodeFailure(RejectReason.UNREADABLE, f"cannot open video: {_short(e)}") from e
        else:
            self._vr = probe
        self.info = VideoInfo(num_frames=n, fps=fps, width=w, height=h, source_width=w0, source_height=h0)
        self._pts_ok = self._timestamps_sane()
        if not self._pts_ok and fps <= 0:
            raise DecodeFailure(RejectReason.UNREADABLE, "video has neither timestamps nor a frame rate")
        return self.info

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
        start = self.clip.start_s or 0.0
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
