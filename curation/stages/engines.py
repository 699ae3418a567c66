"""Pose engines: which runtime runs the YOLO-pose weights (PyTorch, OpenVINO, ONNX Runtime, TensorRT),
their versions as recorded with a build, and the exports made once from the same weights and cached.
OpenVINO is pinned to fp32 inference here (`openvino_f32`): no bf16 default on AMX CPUs. (fp32 kernels of
different instruction sets can still differ in the last bits.)"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


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
    """The engine can run here: its runtime (and for ONNX the exporter's `onnx` package too: onnxruntime
    alone arrives with the text detector, rapidocr-onnxruntime)."""
    if engine == "torch":
        return True
    needs = (_ENGINE_PACKAGES[engine][0],) + (("onnx",) if engine == "onnx" else ())
    return all(importlib.util.find_spec(n) is not None for n in needs)


def resolve_engine(engine: str, device: str) -> str:
    """`auto`: OpenVINO on CPU when installed (about 3x PyTorch's speed on this model), PyTorch on a GPU."""
    if engine != "auto":
        return engine
    if device.startswith("cuda"):
        return "torch"
    return "openvino" if engine_installed("openvino") else "torch"


@functools.lru_cache(maxsize=8)
def engine_version(engine: str) -> str:
    """ultralytics' minor version and the engine with its version: recorded as the pose engine. Read
    once a process (the packages' metadata files: about 1 ms, and every unit record asks)."""
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


def resolve_path(path: str, device: str) -> str:
    """`auto`: the device path on CUDA (ultralytics' predictor letterboxes on the host), predictor elsewhere."""
    if path != "auto":
        return path
    return "device" if device.startswith("cuda") else "predictor"


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
        extra = " onnx" if engine == "onnx" else ""  # the exporter's package
        raise RuntimeError(
            f"pose engine {engine!r} is not installed (pip install {_ENGINE_PACKAGES[engine][1]}{extra})"
        )
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


@functools.lru_cache(maxsize=1)
def cpu_description() -> dict:
    """The CPU a unit ran on, as recorded with it: model name, logical cores and whether it has bf16 units
    (AMX or AVX512-BF16: where engines left to their defaults infer in bf16). None where not known."""
    import platform

    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor() or platform.machine() or None,
        "cores": os.cpu_count(),
        "cpu_bf16": bool(flags & {"amx_bf16", "avx512_bf16"}) if flags is not None else None,
    }


def no_openvino_telemetry() -> None:
    """Send no usage events from this process. `import openvino` sends one to Google Analytics
    (openvino.tools.ovc through openvino_telemetry) unless the user's consent file declines or CI=true,
    forking the importing process (a build's: gigabytes) to send it; without internet the child waits
    on DNS, and the process's exit waits on the child. A data pipeline sends nothing anywhere: this
    process is treated as openvino's tools treat a CI job (they ask `disable_in_ci`), before openvino is
    first imported. The user's consent file is left as it is."""
    try:
        from openvino_telemetry.utils.opt_in_checker import OptInChecker
    except ImportError:  # no telemetry package: nothing sends
        return
    if not hasattr(OptInChecker, "_run_in_ci"):  # pragma: no cover - another version of the package
        log.warning("openvino_telemetry of an unknown shape: its usage events are not switched off")
        return
    OptInChecker._run_in_ci = staticmethod(lambda: True)


def openvino_f32(autobackend, model_file: Path) -> str:
    """Pin OpenVINO's CPU inference to fp32. Its CPU plugin infers in bf16 by default on CPUs with AMX or
    AVX512-BF16 (recent Xeons) and in fp32 elsewhere, so the same clips can give different keypoints, and
    near a threshold different decisions, on different machines: the precision is asked for, not left to
    the CPU. Recompiles ultralytics' compiled model (the backend's `compile_model` partial) with
    INFERENCE_PRECISION_HINT f32 where it lacks it; a backend of another shape is left alone, and logged."""
    import openvino as ov

    backend = getattr(autobackend, "backend", None)
    compile_model = getattr(backend, "compile_model", None)
    if not isinstance(compile_model, functools.partial) or not hasattr(backend, "ov_compiled_model"):
        log.warning("OpenVINO backend of an unknown shape: its inference precision is the plugin's default")
        return "plugin default"
    config = dict(compile_model.keywords.get("config") or {})
    if config.get("INFERENCE_PRECISION_HINT") != ov.Type.f32:
        config["INFERENCE_PRECISION_HINT"] = ov.Type.f32
        backend.compile_model = functools.partial(compile_model.func, *compile_model.args,
                                                  **{**compile_model.keywords, "config": config})  # fmt: skip
        xml = model_file if model_file.is_file() else next(Path(model_file).glob("*.xml"))
        core = compile_model.func.__self__
        backend.ov_compiled_model = backend.compile_model(core.read_model(model=str(xml)))
    try:
        hint = backend.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT")
        precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    except RuntimeError:  # AUTO over several devices may not report it
        precision = "unreported"
    log.info("OpenVINO inference precision: %s", precision)
    return precision
