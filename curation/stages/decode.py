"""Decode sampled frames: videos with decord (frame-accurate), animated GIFs with Pillow and folders of
extracted frames with OpenCV, all behind decord's reader surface; batch by batch, never the whole video
in memory."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.records import Clip, Reject, RejectReason, Stage

from ..config import DecodeConfig

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


FRAME_NAME = re.compile(r"^frame_(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def frame_files(folder: Path) -> list[Path]:
    """The frames of a folder of extracted frames (frame_0000000001.jpg, ...: EPIC-KITCHENS' rgb_frames
    layout), in frame-number order; [] for any other folder."""
    try:
        names = [p for p in folder.iterdir() if FRAME_NAME.match(p.name)]
    except OSError:
        return []
    return sorted(names, key=lambda p: int(FRAME_NAME.match(p.name).group(1)))


class _Frames:
    """What decord's batch getters return: .asnumpy() and .shape."""

    def __init__(self, array: np.ndarray):
        self._a = array
        self.shape = array.shape

    def asnumpy(self) -> np.ndarray:
        return self._a


def _resized(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    import cv2

    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


class FrameFolderReader:
    """decord.VideoReader's surface over a folder of extracted frames: frame k is the k-th file by
    number, at (its number) / fps seconds (frames may be sparse: EPIC's dumps are often every n-th)."""

    def __init__(self, folder: str, fps: float, width: int | None = None, height: int | None = None):
        self.files = frame_files(Path(folder))
        self.numbers = [int(FRAME_NAME.match(p.name).group(1)) for p in self.files]
        self.fps = fps
        self.size = (width, height) if width and height else None

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, i: int) -> np.ndarray:
        import cv2

        img = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f"{self.files[i].name} is not an image that can be decoded")
        return _resized(np.ascontiguousarray(img[..., ::-1]), self.size)

    def __getitem__(self, i: int) -> _Frames:
        return _Frames(self._read(i))

    def get_batch(self, indices: list[int]) -> _Frames:
        return _Frames(np.stack([self._read(i) for i in indices]))

    def get_frame_timestamp(self, i: int) -> np.ndarray:
        t = self.numbers[i] / self.fps
        return np.array([t, t + 1 / self.fps])

    def get_avg_fps(self) -> float:
        return self.fps


class GifReader:
    """decord.VideoReader's surface over an animated GIF (Pillow): frames at their own durations."""

    def __init__(self, path: str, width: int | None = None, height: int | None = None):
        from PIL import Image

        self.image = Image.open(path)
        self.size = (width, height) if width and height else None
        self.starts: list[float] = []
        t = 0.0
        for k in range(getattr(self.image, "n_frames", 1)):
            self.image.seek(k)
            self.starts.append(t)
            t += max(float(self.image.info.get("duration") or 100), 10.0) / 1000.0  # browsers' 10 ms floor
        self.end = t

    def __len__(self) -> int:
        return len(self.starts)

    def _read(self, i: int) -> np.ndarray:
        self.image.seek(i)
        return _resized(np.asarray(self.image.convert("RGB")), self.size)

    def __getitem__(self, i: int) -> _Frames:
        return _Frames(self._read(i))

    def get_batch(self, indices: list[int]) -> _Frames:
        return _Frames(np.stack([self._read(i) for i in indices]))

    def get_frame_timestamp(self, i: int) -> np.ndarray:
        return np.array([self.starts[i], self.starts[i + 1] if i + 1 < len(self.starts) else self.end])

    def get_avg_fps(self) -> float:
        return len(self.starts) / self.end if self.end > 0 else 0.0


@dataclass(frozen=True)
class StreamHeader:
    """What a file's header says of its picture: the stored size, and how a player turns it."""

    width: int  # as stored (coded): what decord decodes
    height: int
    rotation: int = 0  # degrees clockwise a player turns the picture (phone videos): 0, 90, 180, 270

    def shown(self, width: int, height: int) -> tuple[int, int]:
        """A stored size as shown, after the rotation."""
        return (height, width) if self.rotation in (90, 270) else (width, height)


def read_header(path: str) -> StreamHeader | None:
    """The size (and rotation) of a video, GIF or frame folder from its header, without decoding a
    frame or indexing the file: OpenCV's demuxer reads a video's stream parameters, Pillow an image's
    header (with its EXIF orientation, which OpenCV applies when it reads the frames). None: no
    header that can be read here (the reader's own errors then say why)."""
    try:
        if os.path.isdir(path) or path.lower().endswith(".gif"):
            files = frame_files(Path(path)) if os.path.isdir(path) else [Path(path)]
            if not files:
                return None
            from PIL import Image

            with Image.open(files[0]) as im:
                w, h = im.size
                if im.format == "JPEG" and im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF: a quarter turn
                    w, h = h, w
            return StreamHeader(w, h)
        import cv2

        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        try:
            if not cap.isOpened():
                return None
            rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
            cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # the stored size, as decord decodes it
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            cap.release()
        if w <= 0 or h <= 0:
            return None
        return StreamHeader(w, h, rotation if rotation in (90, 180, 270) else 0)
    except Exception:  # noqa: BLE001 - unreadable here: the reader's own errors say why
        return None


def open_reader(
    path: str,
    cfg: DecodeConfig,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
):
    """A frame reader for a video file (decord), an animated GIF (Pillow) or a frame folder (OpenCV),
    all with decord's VideoReader surface, so sampling, timestamps and rejects are the same. `width`
    and `height`: the size to decode at, as shown (decord turns a rotated video's frames upright when
    it is given the shown size; without a size it gets rotated videos wrong)."""
    if os.path.isdir(path):
        return FrameFolderReader(path, fps or cfg.frames_fps, width, height)
    if path.lower().endswith(".gif"):
        return GifReader(path, width, height)
    import decord

    if width and height:
        return decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height, num_threads=1)
    return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)


def open_fitted(path: str, cfg: DecodeConfig, fps: float | None = None):
    """(reader, header, (width, height) decoded, as shown): a reader that decodes at most
    `cfg.max_side` pixels on the long side, frames upright, opening the file once (the size comes from
    the header; only a file whose header cannot be read here is opened at full size first, to learn
    it). Raises what the readers raise for a file they cannot open."""
    header = read_header(path)
    probe = None
    if header is None:
        probe = open_reader(path, cfg, fps=fps)
        header = StreamHeader(*((probe[0].shape[1], probe[0].shape[0]) if len(probe) > 0 else (0, 0)))
    stored = (header.width, header.height)
    fitted = _fit(*stored, cfg.max_side) if stored != (0, 0) else stored
    shown = header.shown(*fitted)
    if probe is not None and fitted == stored:
        return probe, header, shown
    sized = fitted != stored or header.rotation != 0
    return open_reader(path, cfg, *(shown if sized else (None, None)), fps=fps), header, shown


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
    if head[:4] == b"GIF8":
        return "GIF"
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
