"""Open a video file, an animated GIF or a folder of extracted frames as one kind of frame reader:
decord's VideoReader surface (len, [i], get_batch, get_frame_timestamp, get_avg_fps), decoded at a
fitted size with the frames upright, sized from the file's header without decoding a frame. Sampling
and batching the frames of a clip is stages/decode.py's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DecodeConfig
from ..sources.base import FRAME_NAME, frame_files  # a frame folder is a source layout: its names live there


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
