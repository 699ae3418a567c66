"""Short test clips, one per kind of footage the filters must handle, made from the real clips in
../shared/data/videos with OpenCV and numpy (crops, warps, compositing, blending), so that the people in
them are real and the pose model finds them.

    from clipkit import KINDS, make
    path = make("pan_follow", tmp_dir)       # <tmp_dir>/pan_follow.mp4, made once, then reused
    KINDS["pan_follow"].expected             # "reject", with KINDS[...].reasons ("camera_motion",)

Every clip is deterministic (fixed sources, fixed seeds), at most ~5 s long, at most 640 px on its longest
side, at its source's frame rate, written with OpenCV's 'mp4v' like tests/conftest.write_video. The facts a
test needs (time spans of a fade or an overlay, the shake's per-frame transforms) are on the Spec, in
seconds of the written clip (frame i is at i / fps).

Sources (MANIFEST.csv): the dribbler (man dribbling a basketball, whole body, 1080x1920 portrait, 40
frames at 12 fps; a handheld phone that follows him slowly: the background drifts ~18 % of the width
between 0.75 s and 2.75 s), the NTU woman raising a cup (near still, static camera, 1920x1080 at 30 fps).
The dribbler is cut out with GrabCut seeded by his yolo11n-pose skeleton (the median background does not
work: the camera drifts and the scene has depth); the NTU woman, in front of a plain wall, by the
difference to a background interpolated row by row from either side of her.

`python tests/clipkit.py OUT_DIR [SHEET_DIR]` writes every clip (and a contact sheet PNG per clip).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
DRIBBLER = "mmhuman3d__demo_resources_single_person_demo.mp4"
NTU = "mmaction2__tools_data_skeleton_S001C001P001R001A001_rgb.avi"

D_FPS = 12.0  # the dribbler's rate
N_FPS = 30.0  # the NTU clip's rate
WORK = (540, 960)  # the dribbler is decoded at half size (w, h)
OUT = (360, 640)  # portrait output of the dribbler kinds (w, h)
HALF = OUT[0] / WORK[0]  # working -> output scale

# the NTU clip is decoded at 1280x720 and this region (x0, y0, x1, y1 at 720p) kept: it holds the woman
# (box ~648-744 x 190-495) with room for the zoom and a portrait crop around her
N_REGION = (336, 20, 1056, 670)
N_CENTRE = (696 - N_REGION[0], 343 - N_REGION[1])  # her box centre in region coordinates
N_BOX = (640 - N_REGION[0], 180 - N_REGION[1], 752 - N_REGION[0], 505 - N_REGION[1])  # her box, padded

PLAIN = (236, 236, 234)  # the plain studio background (RGB)


@dataclass(frozen=True, eq=False)
class Spec:
    name: str
    description: str
    expected: str  # "accept" | "reject" (the default whole-body build)
    reasons: tuple[str, ...] = ()  # acceptable reject reasons
    size: tuple[int, int] = OUT  # (width, height) of the clip
    frames: int = 40
    fps: float = D_FPS
    facts: dict = field(default_factory=dict)  # whatever else a test needs, times in seconds

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


# ------------------------------------------------------------------------------------ shake transforms

SHAKE_FIRST = 6  # the shake clip starts at the dribbler's frame 6 (before it he touches the frame's edge)
SHAKE_ZOOM = 1.08
SHAKE_AMPLITUDE = {"dx": 0.025, "dy": 0.02, "angle": 0.8, "scale": 0.015}  # dx, dy: share of the width


def _shake_params(n: int = 40 - SHAKE_FIRST, seed: int = 7) -> tuple[tuple[float, float, float, float], ...]:
    """Per frame (dx, dy in output pixels, angle in degrees, scale factor): an AR(1) random walk per
    parameter (smooth, as a hand holding a phone), scaled so its peak is the amplitude."""
    rng = np.random.default_rng(seed)
    out = []
    for key in ("dx", "dy", "angle", "scale"):
        x = np.zeros(n)
        for t in range(1, n):
            x[t] = 0.75 * x[t - 1] + rng.normal()
        x = (x - x.mean()) / np.abs(x - x.mean()).max() * SHAKE_AMPLITUDE[key]
        out.append(x * OUT[0] if key in ("dx", "dy") else (1 + x if key == "scale" else x))
    return tuple(
        (round(float(a), 3), round(float(b), 3), round(float(c), 4), round(float(d), 5))
        for a, b, c, d in zip(*out, strict=True)
    )


def shake_matrix(dx: float, dy: float, angle: float, scale: float) -> np.ndarray:
    """The 2x3 affine from a working-size dribbler frame (540x960) to the shaken output frame (360x640):
    zoom SHAKE_ZOOM * scale and rotate by angle about the frame centre, then shift by (dx, dy)."""
    cx, cy = WORK[0] / 2, WORK[1] / 2
    m = cv2.getRotationMatrix2D((cx, cy), angle, SHAKE_ZOOM * scale)
    m[:, 2] += (dx / HALF, dy / HALF)
    return np.diag([HALF, HALF]) @ m


# ------------------------------------------------------------------------------------------- the kinds

_FADE_OUT, _BLACK, _FADE_IN, _FADE_END = 14, 20, 23, 29  # fade_black, frame indices
_XFADE0, _XFADE1 = 18, 30  # crossfade
_CHANGE = 20  # overlays
_STILL = 18  # slow_zoom_still: the NTU frames before she starts to lift the cup
XFADE_GRADE = (0.86, 0.98, 1.12)  # crossfade: the second shot's white balance
_CARD_FROM, _CARD_FULL = 21, 28
CARD_RGB = (255, 255, 255)  # card_dissolve: the card's background
_HIDE0, _HIDE1 = 10, 16  # hidden_partner: beside him until frame 10, behind him from frame 16

KINDS: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec(
            "pan_follow",
            "the dribbler filmed by a camera that pans and tilts steadily (a crop window from his frames "
            "moving 17 % of its width left and 12 % of its height down over the clip, plus the source's own "
            "drift); his whole body stays in frame",
            "reject",
            ("camera_motion",),
            facts={
                "window": (460.0, 817.8),
                "window_start": (80.0, 10.0),
                "window_end": (0.0, 110.0),
                "pan_px": (80 * OUT[0] / 460, 100 * OUT[0] / 460),
            },  # fmt: skip
        ),
        Spec(
            "slow_zoom_still",
            "the NTU woman near-still (her first 0.6 s, before she lifts the cup, played forward and back) "
            "with a slow zoom-in (the crop shrinks 12 % over 3.4 s, centred on her), whole body in frame "
            "throughout",
            "reject",
            ("camera_motion", "low_motion"),
            size=(640, 360),
            frames=103,
            fps=N_FPS,
            facts={"zoom": 1 / 0.88},
        ),
        Spec(
            "plain_static",
            "the dribbler cut out (with the ball) onto a flat light-grey studio background with a soft "
            "contact shadow; static camera",
            "accept",
            facts={"background_rgb": PLAIN},
        ),
        Spec(
            "handheld_shake",
            "the dribbler with handheld shake on top of the footage: per frame a small random-walk shift "
            "(peak 2.5 % / 2 % of the width), rotation (0.8 deg) and zoom (1.5 %) from a frame upscaled "
            f"{SHAKE_ZOOM}x; facts['transforms'][i] = (dx, dy, angle, scale) of frame i, see shake_matrix; "
            f"frame i is the dribbler's frame {SHAKE_FIRST} + i",
            "accept",
            frames=40 - SHAKE_FIRST,
            facts={"transforms": _shake_params(), "first_source_frame": SHAKE_FIRST},
        ),
        Spec(
            "overlay_popup",
            "the dribbler with a browser-like pop-up box (title bar, two lines of text, a button) that "
            "appears in the bottom-right corner, below his feet, at change_s and stays",
            "reject",
            ("overlay_changed",),
            facts={"change_s": _CHANGE / D_FPS, "box": (150, 520, 350, 630)},  # box: x0, y0, x1, y1
        ),
        Spec(
            "overlay_text_change",
            "the dribbler with a corner label 'SQUATS' (top left) that switches to 'LUNGES' at change_s",
            "reject",
            ("overlay_changed",),
            facts={"change_s": _CHANGE / D_FPS, "box": (10, 12, 150, 50), "texts": ("SQUATS", "LUNGES")},
        ),
        Spec(
            "hidden_partner",
            "a second real person (the NTU woman, cut out) composited behind the dribbler: beside him "
            "(fully visible) until visible_s[1], then she walks behind him and stays mostly hidden from "
            "hidden_s[0] on (her head or legs may peep out while he crouches)",
            "reject",
            ("multiple_people",),
            facts={"visible_s": (0.0, _HIDE0 / D_FPS), "hidden_s": (_HIDE1 / D_FPS, 40 / D_FPS)},
        ),
        Spec(
            "horizontal_cut",
            "the dribbler turned 90 degrees (lying, head to the right) in a landscape frame whose left edge "
            "cuts him below the knees: lower legs and feet outside the frame",
            "reject",
            ("partial_body",),
            size=(604, 540),
            facts={"cut_edge": "left"},
        ),
        Spec(
            "blur_fill",
            "the dribbler's portrait video shown in a landscape frame between blurred, enlarged copies of "
            "itself (as YouTube shows phone videos): the picture is the middle 202 columns; the bands "
            "change with it",
            "accept",
            size=(640, 360),
            facts={"picture": (219, 0, 421, 360)},
        ),
        Spec(
            "legs_cut_bottom",
            "the dribbler cropped so that the bottom edge cuts him at mid-thigh (landscape crop)",
            "reject",
            ("partial_body",),
            size=(540, 396),
            facts={"cut_edge": "bottom"},
        ),
        Spec(
            "counter",
            "the dribbler behind an opaque wooden counter that hides him from the waist down across the "
            "whole width (counter top at counter_top of the height)",
            "reject",
            ("partial_body",),
            facts={"counter_top": 300 / OUT[1]},
        ),
        Spec(
            "crossfade",
            "the dribbler cross-fading over 1 s (span_s) into a second shot of him (mirrored, 1.1x closer, "
            "a cooler white balance: RGB gains grade); inside the fade two ghosts of him overlap; no pair may "
            "take a frame inside the fade",
            "accept",
            frames=54,
            facts={"span_s": (_XFADE0 / D_FPS, _XFADE1 / D_FPS), "grade": XFADE_GRADE},
        ),
        Spec(
            "fade_black",
            "the dribbler fades to black, holds black (black_s), and fades in to a second shot (the "
            "dribbler 1.1x closer, half a second back in his footage); no pair may take a frame inside span_s",
            "accept",
            frames=46,
            facts={"span_s": (_FADE_OUT / D_FPS, _FADE_END / D_FPS), "black_s": (_BLACK / D_FPS, _FADE_IN / D_FPS)},
        ),
        Spec(
            "card_dissolve",
            "the studio dribbler (plain_static) dissolving into an end card over span_s: an orange disc "
            "and blue lettering on white, a little lighter than the studio's grey; its first frame holds an "
            "eighth of the card, a ghost the gray-level change threshold misses; no pair may take a frame "
            "inside span_s",
            "accept",
            frames=40,
            facts={"span_s": (_CARD_FROM / D_FPS, (_CARD_FULL - 1) / D_FPS)},
        ),
        Spec(
            "mirror",
            "the dribbler on the plain studio background beside a wall mirror on the right: his "
            "reflection (flipped, darker, lower contrast, a glass tint) moves exactly mirrored; a "
            "reflection is not a second person",
            "accept",
            size=(640, 568),
            facts={"mirror_x": 320},
        ),
    ]
}


def make(kind: str, out_dir: Path) -> Path:
    """<out_dir>/<kind>.mp4, written atomically (a temporary file, then a rename); an existing one is
    returned as it is."""
    if kind not in KINDS:
        raise KeyError(f"unknown kind {kind!r}; one of {sorted(KINDS)}")
    out_dir = Path(out_dir)
    path = out_dir / f"{kind}.mp4"
    if path.is_file():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = KINDS[kind]
    frames = _MAKERS[kind]()
    assert len(frames) == spec.frames, (kind, len(frames))
    assert frames[0].shape[1::-1] == spec.size, (kind, frames[0].shape)
    tmp = out_dir / f".{kind}.{os.getpid()}.tmp.mp4"
    try:
        _write(tmp, frames, spec.fps)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_all(out_dir: Path) -> dict[str, Path]:
    return {k: make(k, out_dir) for k in KINDS}


def read(path: Path) -> tuple[np.ndarray, float]:
    """All frames of a clip (RGB, as the pipeline's decord reads them) and its frame rate."""
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return vr.get_batch(list(range(len(vr)))).asnumpy(), float(vr.get_avg_fps())


def contact_sheet(path: Path, png: Path, n: int = 8, tile_w: int = 240) -> Path:
    """n frames spread over the clip, in a grid of 4 columns, each with its time stamp."""
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    fps = float(vr.get_avg_fps())
    idx = np.linspace(0, len(vr) - 1, n).round().astype(int)
    tiles = []
    for i, f in zip(idx, vr.get_batch(list(idx)).asnumpy(), strict=True):
        h = round(f.shape[0] * tile_w / f.shape[1])
        t = cv2.resize(np.ascontiguousarray(f[:, :, ::-1]), (tile_w, h), interpolation=cv2.INTER_AREA)
        label = f"{i / fps:.2f}s #{i}"
        cv2.putText(t, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(t, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(cv2.copyMakeBorder(t, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255)))
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png), np.vstack([np.hstack(tiles[k : k + 4]) for k in range(0, len(tiles), 4)]))
    return png


# ------------------------------------------------------------------------------------------- sources


def _write(path: Path, frames: list[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not wr.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for f in frames:
        wr.write(np.ascontiguousarray(f[:, :, ::-1]))  # RGB -> BGR
    wr.release()


def _source(name: str) -> Path:
    p = VIDEOS / name
    if not p.is_file():
        raise FileNotFoundError(f"test data missing: {p} (clipkit needs ../shared/data/videos beside the repo)")
    return p


@functools.lru_cache(maxsize=1)
def dribbler() -> np.ndarray:
    """The dribbler's 40 frames, RGB, decoded at 540x960."""
    import decord

    vr = decord.VideoReader(str(_source(DRIBBLER)), ctx=decord.cpu(0), num_threads=1, width=WORK[0], height=WORK[1])
    return vr.get_batch(list(range(len(vr)))).asnumpy()


@functools.lru_cache(maxsize=1)
def _ntu() -> np.ndarray:
    """The NTU clip's 103 frames at 720p, RGB, cropped to N_REGION (about 140 MB)."""
    import decord

    vr = decord.VideoReader(str(_source(NTU)), ctx=decord.cpu(0), num_threads=1, width=1280, height=720)
    x0, y0, x1, y1 = N_REGION
    out = np.empty((len(vr), y1 - y0, x1 - x0, 3), np.uint8)
    for i in range(len(vr)):
        out[i] = vr.next().asnumpy()[y0:y1, x0:x1]
    return out


def _ntu_at(k: int) -> np.ndarray:
    """The NTU frame shown at the dribbler-rate frame k (k / 12 s)."""
    frames = _ntu()
    return frames[min(len(frames) - 1, int(k * N_FPS / D_FPS + 0.5))]


@functools.lru_cache(maxsize=1)
def dribbler_poses() -> np.ndarray:
    """(40, 17, 3) COCO keypoints (x, y, confidence) of the dribbler at 540x960, from yolo11n-pose on one
    CPU thread, rounded (only the masks use them)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    import torch
    from ultralytics import YOLO

    from curation.stages.pose import default_weights

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = YOLO(str(default_weights()))
        out = []
        for f in dribbler():
            r = model.predict(np.ascontiguousarray(f[:, :, ::-1]), imgsz=640, device="cpu", verbose=False)[0]
            if r.keypoints is None or len(r.boxes) == 0:
                out.append(np.zeros((17, 3), np.float32))
                continue
            best = int(r.boxes.conf.argmax())
            out.append(r.keypoints.data[best].cpu().numpy())
    finally:
        torch.set_num_threads(threads)
    kp = np.array(out, np.float32)
    kp[..., :2] = np.round(kp[..., :2] * 2) / 2
    kp[..., 2] = np.round(kp[..., 2], 2)
    return kp


_LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (5, 6), (11, 12), (5, 11), (6, 12)]


def _disk(r: float) -> np.ndarray:
    r = max(1, int(r))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _torso(kp: np.ndarray) -> float:
    ok = kp[:, 2] > 0.3
    if ok[[5, 6, 11, 12]].all():
        return float(np.linalg.norm((kp[5, :2] + kp[6, :2]) / 2 - (kp[11, :2] + kp[12, :2]) / 2))
    return 80.0


def _grabcut_person(img: np.ndarray, kp: np.ndarray, s: float = 0.5, ball: bool = True) -> np.ndarray:
    """uint8 alpha (0..255) of the person whose keypoints are kp: GrabCut at scale s on a box around
    the skeleton, sure foreground along the limbs, torso and head, probable foreground as wide as each
    part can be (0.17-0.4 torso lengths; and around orange ball pixels), background beyond; feathered."""
    H, W = img.shape[:2]
    k = kp.copy()
    k[:, :2] *= s
    ok = k[:, 2] > 0.3
    torso = _torso(k)
    pad = torso * 0.7
    pts = k[ok, :2]
    x0, y0 = (max(0, int(v)) for v in pts.min(0) - pad)
    x1, y1 = int(min(W * s, pts[:, 0].max() + pad)), int(min(H * s, pts[:, 1].max() + pad))
    X0, Y0, X1, Y1 = (int(v / s) for v in (x0, y0, x1, y1))
    roi = cv2.resize(img[Y0:Y1, X0:X1], (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    h, w = roi.shape[:2]
    k[:, 0] -= x0
    k[:, 1] -= y0
    th = max(2, int(torso * 0.09))
    fg = np.zeros((h, w), np.uint8)
    for a, b in _LIMBS:
        if ok[a] and ok[b]:
            cv2.line(fg, tuple(int(v) for v in k[a, :2]), tuple(int(v) for v in k[b, :2]), 1, th)
    if ok[[5, 6, 12, 11]].all():
        cv2.fillConvexPoly(fg, k[[5, 6, 12, 11], :2].astype(np.int32), 1)
    # probable foreground: each part drawn as wide as that part of a body can be, in torso lengths
    pr = np.zeros_like(fg)
    widths = {(5, 7): 0.2, (7, 9): 0.2, (6, 8): 0.2, (8, 10): 0.2, (11, 13): 0.2, (13, 15): 0.17, (12, 14): 0.2,
              (14, 16): 0.17, (5, 6): 0.2, (11, 12): 0.2, (5, 11): 0.2, (6, 12): 0.2}  # fmt: skip
    for (a, b), wd in widths.items():
        if ok[a] and ok[b]:
            cv2.line(pr, tuple(int(v) for v in k[a, :2]), tuple(int(v) for v in k[b, :2]), 1, int(2 * wd * torso))
    if ok[[5, 6, 12, 11]].all():
        cv2.fillConvexPoly(pr, k[[5, 6, 12, 11], :2].astype(np.int32), 1)
    for j, r in ((9, 0.22), (10, 0.22), (15, 0.3), (16, 0.3)):  # hands, feet
        if ok[j]:
            cv2.circle(pr, (int(k[j, 0]), int(k[j, 1])), int(r * torso), 1, -1)
    face = [i for i in range(5) if ok[i]]
    if face:
        c = k[face, :2].mean(0)
        cv2.circle(fg, (int(c[0]), int(c[1])), max(2, int(torso * 0.12)), 1, -1)
        cv2.circle(pr, (int(c[0]), int(c[1] - torso * 0.04)), int(torso * 0.4), 1, -1)
    gm = np.full((h, w), cv2.GC_BGD, np.uint8)
    gm[pr > 0] = cv2.GC_PR_FGD
    if ball:
        hsv = cv2.cvtColor(roi, cv2.COLOR_RGB2HSV)
        orange = ((hsv[..., 0] >= 3) & (hsv[..., 0] <= 20) & (hsv[..., 1] > 110) & (hsv[..., 2] > 50)).astype(np.uint8)
        orange = cv2.morphologyEx(orange, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        gm[cv2.dilate(orange, _disk(torso * 0.12)) > 0] = cv2.GC_PR_FGD
        gm[orange > 0] = cv2.GC_FGD
    gm[fg > 0] = cv2.GC_FGD
    cv2.setRNGSeed(0)
    cv2.grabCut(roi, gm, None, np.zeros((1, 65)), np.zeros((1, 65)), 3, cv2.GC_INIT_WITH_MASK)
    m = ((gm == cv2.GC_FGD) | (gm == cv2.GC_PR_FGD)).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(1))
    n, lab, st, _ = cv2.connectedComponentsWithStats(m)
    if n > 2:
        area = st[1:, 4]
        m = np.isin(lab, [i + 1 for i in range(n - 1) if area[i] >= 0.03 * area.max()]).astype(np.uint8)
    a = np.zeros((H, W), np.float32)
    a[Y0:Y1, X0:X1] = cv2.resize(m.astype(np.float32), (X1 - X0, Y1 - Y0), interpolation=cv2.INTER_LINEAR)
    a = cv2.GaussianBlur(a, (0, 0), 0.6 / s)
    return (np.clip((a - 0.5) * 2.0 + 0.5, 0, 1) * 255 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def dribbler_alpha() -> np.ndarray:
    """(40, 960, 540) uint8 alpha of the dribbler and his ball."""
    return np.array([_grabcut_person(f, k) for f, k in zip(dribbler(), dribbler_poses(), strict=True)])


def _woman(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The NTU woman at dribbler-rate frame k: her region crop (RGB) and alpha (float 0..1), from the
    difference to a background interpolated, row by row, between strips either side of her box."""
    f = _ntu_at(k)
    x0, y0, x1, y1 = N_BOX
    crop = f[y0:y1].astype(np.float32)
    left = crop[:, x0 - 16 : x0 - 3].mean(1)
    right = crop[:, x1 + 3 : x1 + 16].mean(1)
    xs = (np.arange(f.shape[1])[None, :, None] - x0) / (x1 - x0)
    t = np.clip(xs, 0, 1)
    bg = cv2.GaussianBlur(left[:, None, :] * (1 - t) + right[:, None, :] * t, (1, 7), 0)
    d = np.abs(crop - bg).max(2)
    m = (d > 26).astype(np.uint8)
    m[:, :x0] = 0
    m[:, x1:] = 0
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disk(4))
    n, lab, st, _ = cv2.connectedComponentsWithStats(m)
    if n > 1:
        m = (lab == 1 + int(np.argmax(st[1:, 4]))).astype(np.uint8)
    ff = m.copy()
    cv2.floodFill(ff, np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8), (0, 0), 1)
    m |= 1 - ff
    a = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 0.8)
    return f[y0:y1, x0:x1], a[:, x0:x1]


# --------------------------------------------------------------------------------------- helpers


def _out(f: np.ndarray) -> np.ndarray:
    """A working-size dribbler frame at output size."""
    return cv2.resize(f, OUT, interpolation=cv2.INTER_AREA)


def _over(bg: np.ndarray, fg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """fg over bg with alpha (float 0..1 or uint8 0..255), as uint8."""
    a = alpha.astype(np.float32)
    if alpha.dtype == np.uint8:
        a /= 255.0
    a = a[..., None]
    return np.clip(bg.astype(np.float32) * (1 - a) + fg.astype(np.float32) * a + 0.5, 0, 255).astype(np.uint8)


def _contact_shadow(shape: tuple[int, int], kp: np.ndarray) -> np.ndarray:
    """A soft elliptical shadow under the feet (float 0..1 darkening)."""
    torso = _torso(kp)
    ank = kp[[15, 16]]
    ank = ank[ank[:, 2] > 0.3] if (ank[:, 2] > 0.3).any() else ank
    cx = float(ank[:, 0].mean())
    cy = float(ank[:, 1].max() + torso * 0.22)
    half_w = float(np.ptp(ank[:, 0]) / 2 + torso * 0.45)
    sh = np.zeros(shape, np.float32)
    cv2.ellipse(sh, (int(cx), int(cy)), (int(half_w), int(torso * 0.09)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(sh, (0, 0), torso * 0.07) * 0.35


@functools.lru_cache(maxsize=1)
def _studio() -> tuple[np.ndarray, ...]:
    """The dribbler on the plain background (working size), each frame."""
    frames = []
    for f, a, kp in zip(dribbler(), dribbler_alpha(), dribbler_poses(), strict=True):
        bg = np.empty_like(f)
        bg[:] = PLAIN
        bg = (bg * (1 - _contact_shadow(f.shape[:2], kp))[..., None]).astype(np.uint8)
        frames.append(_over(bg, f, a))
    return tuple(frames)


def _wood(w: int, h: int, seed: int = 3) -> np.ndarray:
    """A wooden counter front, RGB: horizontal boards with grain, a lighter top lip and its shadow."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = cv2.GaussianBlur(rng.normal(size=(h, w)).astype(np.float32), (0, 0), 25) * 60
    grain = np.sin((yy + warp) * 0.9 + np.sin(xx / 97.0) * 3) * 0.5 + 0.5
    fine = cv2.GaussianBlur(rng.normal(size=(h, w)).astype(np.float32), (0, 0), sigmaX=9, sigmaY=0.7)
    shade = 0.78 + 0.14 * grain + 0.5 * fine
    board = 58
    for y in range(0, h, board):  # boards: each a little lighter or darker, dark seams between
        shade[y : y + board] *= 0.9 + 0.2 * rng.random()
        shade[y : y + 2] *= 0.55
    base = np.array([150, 98, 56], np.float32)
    wood = np.clip(shade[..., None] * base, 0, 255)
    lip = 12
    wood[:lip] = np.clip(np.array([186, 134, 86], np.float32) * (0.95 + 0.1 * grain[:lip, :, None]), 0, 255)
    wood[1:3] = np.minimum(255, wood[1:3] * 1.18)
    wood[lip : lip + 6] *= np.linspace(0.55, 1, 6)[:, None, None]
    return wood.astype(np.uint8)


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float, color, thick: int = 1, font=None) -> None:
    cv2.putText(img, s, org, font or cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _popup(img: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """A browser-like notification box drawn into img (RGB, in place)."""
    x0, y0, x1, y1 = box
    sh = img[y0 + 4 : y1 + 4, x0 + 4 : x1 + 4].astype(np.float32)
    img[y0 + 4 : y1 + 4, x0 + 4 : x1 + 4] = (sh * 0.55).astype(np.uint8)  # drop shadow
    img[y0:y1, x0:x1] = (250, 250, 250)
    img[y0 : y0 + 22, x0:x1] = (42, 108, 214)
    cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (120, 120, 120), 1)
    _text(img, "Special offer", (x0 + 7, y0 + 16), 0.45, (255, 255, 255), 1)
    _text(img, "x", (x1 - 16, y0 + 16), 0.5, (255, 255, 255), 1)
    _text(img, "Get 50% off your", (x0 + 8, y0 + 44), 0.45, (40, 40, 40), 1)
    _text(img, "first month today!", (x0 + 8, y0 + 64), 0.45, (40, 40, 40), 1)
    cv2.rectangle(img, (x1 - 70, y1 - 30), (x1 - 10, y1 - 9), (46, 160, 67), -1)
    _text(img, "Join", (x1 - 56, y1 - 15), 0.45, (255, 255, 255), 1)


def _label(img: np.ndarray, box: tuple[int, int, int, int], s: str) -> None:
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = (img[y0:y1, x0:x1] * 0.35).astype(np.uint8)
    _text(img, s, (x0 + 10, y1 - 10), 0.85, (255, 255, 255), 2, cv2.FONT_HERSHEY_DUPLEX)


# ------------------------------------------------------------------------------------------ makers


def _pan_follow() -> list[np.ndarray]:
    facts = KINDS["pan_follow"].facts
    w, _ = facts["window"]
    (ax, ay), (bx, by) = facts["window_start"], facts["window_end"]
    s = OUT[0] / w
    out = []
    for i, f in enumerate(dribbler()):
        t = i / 39
        cx, cy = ax + (bx - ax) * t, ay + (by - ay) * t
        m = np.float32([[s, 0, -cx * s], [0, s, -cy * s]])
        out.append(cv2.warpAffine(f, m, OUT, flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR))
    return out


def _slow_zoom_still() -> list[np.ndarray]:
    # her first 0.6 s (the cup still at her waist; she lifts it to drink from about 0.7 s), played
    # forward and back: a subject that stays near-still for the whole clip, with the footage's own noise
    src = _ntu()
    k = np.arange(len(src)) % (2 * _STILL - 2)
    frames = src[np.where(k < _STILL, k, 2 * _STILL - 2 - k)]
    w0, h0 = 711.3, 400.0  # the first crop (720p pixels), centred on her
    z_end = 1 / KINDS["slow_zoom_still"].facts["zoom"]
    out = []
    n = len(frames)
    for i, f in enumerate(frames):
        cw = w0 * (1 + (z_end - 1) * i / (n - 1))
        s = 640 / cw
        cx, cy = N_CENTRE
        m = np.float32([[s, 0, 320 - s * cx], [0, s, 180 - s * cy]])
        out.append(cv2.warpAffine(f, m, (640, 360), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT))
    assert h0 * 640 / 711.3 <= 360.5
    return out


def _plain_static() -> list[np.ndarray]:
    return [_out(f) for f in _studio()]


def _handheld_shake() -> list[np.ndarray]:
    src = dribbler()
    out = []
    for i, p in enumerate(KINDS["handheld_shake"].facts["transforms"]):
        m = shake_matrix(*p)
        out.append(cv2.warpAffine(src[SHAKE_FIRST + i], m, OUT, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
    return out


def _overlay_popup() -> list[np.ndarray]:
    box = KINDS["overlay_popup"].facts["box"]
    out = []
    for i, f in enumerate(dribbler()):
        o = _out(f)
        if i >= _CHANGE:
            _popup(o, box)
        out.append(o)
    return out


def _overlay_text_change() -> list[np.ndarray]:
    facts = KINDS["overlay_text_change"].facts
    out = []
    for i, f in enumerate(dribbler()):
        o = _out(f)
        _label(o, facts["box"], facts["texts"][int(i >= _CHANGE)])
        out.append(o)
    return out


def _hidden_partner() -> list[np.ndarray]:
    kps = dribbler_poses() * np.float32([HALF, HALF, 1])
    body_x = kps[:, [5, 6, 11, 12], 0].mean(1)
    body_x = np.convolve(np.pad(body_x, 1, mode="edge"), np.ones(3) / 3, mode="valid")  # smoothed a little
    beside = 92.0  # her centre x (output pixels) while she stands beside him
    feet_y, height = 455.0, 262.0  # where her feet are, how tall her box is (output pixels)
    out = []
    for i, (f, a) in enumerate(zip(dribbler(), dribbler_alpha(), strict=True)):
        o, ad = _out(f), cv2.resize(a, OUT, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        crop, aw = _woman(i)
        ys, xs = np.nonzero(aw > 0.5)
        s = height / (ys.max() - ys.min())
        crop = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        aw = cv2.resize(aw, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        t = np.clip((i - _HIDE0) / (_HIDE1 - _HIDE0), 0, 1)
        t = t * t * (3 - 2 * t)
        cx = beside + (body_x[i] - beside) * t
        # her box bottom on feet_y, her box centre on cx
        ox = int(round(cx - (xs.min() + xs.max()) / 2 * s))
        oy = int(round(feet_y - ys.max() * s))
        layer = np.zeros_like(o)
        al = np.zeros(o.shape[:2], np.float32)
        h, w = crop.shape[:2]
        X0, Y0, X1, Y1 = max(0, ox), max(0, oy), min(OUT[0], ox + w), min(OUT[1], oy + h)
        layer[Y0:Y1, X0:X1] = crop[Y0 - oy : Y1 - oy, X0 - ox : X1 - ox]
        al[Y0:Y1, X0:X1] = aw[Y0 - oy : Y1 - oy, X0 - ox : X1 - ox]
        # a touch of the courtyard's warmer light on the lab footage
        layer = np.clip(layer.astype(np.float32) * np.float32([1.0, 0.97, 0.92]), 0, 255).astype(np.uint8)
        out.append(_over(o, layer, al * (1 - ad)))
    return out


def _horizontal_cut() -> list[np.ndarray]:
    # clockwise: the head goes right, the feet left; keep x from 355 (his shins, y = 604 upright)
    return [np.ascontiguousarray(cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE)[:, 355:959]) for f in dribbler()]


def _blur_fill() -> list[np.ndarray]:
    x1, _, x2, _ = KINDS["blur_fill"].facts["picture"]
    w, h = KINDS["blur_fill"].size
    out = []
    for f in dribbler():
        big = cv2.resize(f, (w, round(f.shape[0] * w / f.shape[1])), interpolation=cv2.INTER_AREA)
        top = (big.shape[0] - h) // 2
        canvas = (cv2.GaussianBlur(big[top : top + h], (0, 0), 18) * 0.8).astype(np.uint8)
        canvas[:, x1:x2] = cv2.resize(f, (x2 - x1, h), interpolation=cv2.INTER_AREA)
        out.append(canvas)
    return out


def _legs_cut_bottom() -> list[np.ndarray]:
    return [np.ascontiguousarray(f[120:516]) for f in dribbler()]  # hips ~450, knees ~570: cut at mid-thigh


def _counter() -> list[np.ndarray]:
    top = round(KINDS["counter"].facts["counter_top"] * OUT[1])
    wood = _wood(OUT[0], OUT[1] - top)
    out = []
    for f in dribbler():
        o = _out(f)
        o[top:] = wood
        out.append(o)
    return out


def _closer(f: np.ndarray, centre: tuple[float, float], zoom: float = 1.1, mirror: bool = False) -> np.ndarray:
    """A working-size dribbler frame as a second camera would show it: zoomed about centre (that point
    lands in the middle of the output), optionally mirrored, at output size."""
    if mirror:
        f = np.ascontiguousarray(f[:, ::-1])
    m = cv2.getRotationMatrix2D(centre, 0, zoom)
    m[:, 2] += (WORK[0] / 2 - centre[0], WORK[1] / 2 - centre[1])
    return cv2.warpAffine(f, np.diag([HALF, HALF]) @ m, OUT, flags=cv2.INTER_AREA)


def _crossfade() -> list[np.ndarray]:
    src = dribbler()
    out = []
    for i in range(KINDS["crossfade"].frames):
        a = _out(src[i]).astype(np.float32) if i < _XFADE1 else None
        b = None
        if i >= _XFADE0:  # the second shot: mirrored, 1.1x closer, a cooler white balance, 14 frames earlier
            b = _closer(src[i - 14], (262, 470), mirror=True) * np.float32(XFADE_GRADE)
        w = 0.0 if b is None else 1.0 if a is None else (i - _XFADE0 + 0.5) / (_XFADE1 - _XFADE0)
        f = (a if a is not None else 0) * (1 - w) + (b if b is not None else 0) * w
        out.append(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    return out


def _fade_black() -> list[np.ndarray]:
    src = dribbler()
    out = []
    for i in range(KINDS["fade_black"].frames):
        if i < _BLACK:
            f = _out(src[i])
            g = 1.0 if i < _FADE_OUT else 1 - (i - _FADE_OUT + 1) / (_BLACK - _FADE_OUT + 1)
        elif i < _FADE_IN:
            f, g = np.zeros((OUT[1], OUT[0], 3), np.uint8), 0.0
        else:  # the second shot: 1.1x closer, 6 frames earlier
            f = _closer(src[i - 6], (250, 480))
            g = 1.0 if i >= _FADE_END else (i - _FADE_IN + 1) / (_FADE_END - _FADE_IN + 1)
        out.append(np.clip(f * g + 0.5, 0, 255).astype(np.uint8))
    return out


def _card() -> np.ndarray:
    """A title card as fitness channels show one: a logo and lettering on white, a little lighter than
    the studio's grey (a dissolve into it barely changes the background's brightness)."""
    card = np.zeros((OUT[1], OUT[0], 3), np.uint8)
    card[:] = CARD_RGB
    cv2.circle(card, (180, 230), 110, (240, 150, 40), -1)  # RGB: orange
    for text, y, scale, thick in (("MOTION", 400, 1.6, 4), ("PAIRS", 460, 1.6, 4), ("jumping jacks", 530, 0.8, 2)):
        (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.putText(card, text, ((OUT[0] - w) // 2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (60, 100, 200), thick)
    return card


def _card_dissolve() -> list[np.ndarray]:
    card = _card().astype(np.float32)
    out = []
    for i, src in enumerate(_plain_static()):
        w = min(1.0, max(0.0, (i - _CARD_FROM + 1) / (_CARD_FULL - _CARD_FROM + 1)))
        f = card * w + src.astype(np.float32) * (1 - w)
        out.append(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    return out


def _mirror() -> list[np.ndarray]:
    bar = 10
    out = []
    for f in _studio():
        refl = f[:, ::-1].astype(np.float32)
        refl = (refl - 128) * 0.82 + 128  # a little less contrast ...
        refl = refl * 0.78 * np.float32([0.95, 1.0, 1.02])  # ... darker, a cool glass tint
        refl = cv2.GaussianBlur(refl, (0, 0), 0.7)
        canvas = np.concatenate(
            [f, np.zeros((f.shape[0], bar, 3), np.uint8), np.clip(refl, 0, 255).astype(np.uint8)], 1
        )
        x = f.shape[1]
        canvas[:, x : x + bar] = (70, 70, 74)  # the mirror's frame
        canvas[:, x + 2 : x + 4] = (150, 150, 155)
        out.append(cv2.resize(canvas, KINDS["mirror"].size, interpolation=cv2.INTER_AREA))
    return out


_MAKERS = {
    "pan_follow": _pan_follow,
    "slow_zoom_still": _slow_zoom_still,
    "plain_static": _plain_static,
    "handheld_shake": _handheld_shake,
    "overlay_popup": _overlay_popup,
    "overlay_text_change": _overlay_text_change,
    "hidden_partner": _hidden_partner,
    "horizontal_cut": _horizontal_cut,
    "blur_fill": _blur_fill,
    "legs_cut_bottom": _legs_cut_bottom,
    "counter": _counter,
    "crossfade": _crossfade,
    "fade_black": _fade_black,
    "card_dissolve": _card_dissolve,
    "mirror": _mirror,
}
assert set(_MAKERS) == set(KINDS)


if __name__ == "__main__":
    import time

    sys.path.insert(0, str(REPO))
    out_dir = Path(sys.argv[1])
    sheets = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    for kind in KINDS:
        t = time.perf_counter()
        p = make(kind, out_dir)
        print(f"{kind:20s} {time.perf_counter() - t:6.2f} s  {p}")
        if sheets:
            contact_sheet(p, sheets / f"{kind}.png")
