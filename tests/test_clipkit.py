"""The test clips of tests/clipkit.py: each is made, decodes with decord at its stated size, length and
rate, and shows its kind, measured on its pixels."""

from __future__ import annotations

import os
from pathlib import Path

import clipkit
import cv2
import numpy as np
import pytest
from clipkit import KINDS, make, read

KIND_NAMES = [
    "pan_follow", "slow_zoom_still", "plain_static", "handheld_shake", "overlay_popup", "overlay_text_change",
    "hidden_partner", "horizontal_cut", "legs_cut_bottom", "counter", "crossfade", "fade_black", "mirror",
    "card_dissolve", "blur_fill",
]  # fmt: skip


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    """CLIPKIT_DIR keeps the clips between runs (they are made once there); otherwise a session folder."""
    keep = os.environ.get("CLIPKIT_DIR")
    return Path(keep) if keep else tmp_path_factory.mktemp("clipkit")


def clip(kind: str, clip_dir: Path) -> tuple[clipkit.Spec, np.ndarray]:
    """The clip's frames (RGB, float32) after checking its size, length and rate against its Spec."""
    spec = KINDS[kind]
    frames, fps = read(make(kind, clip_dir))
    assert frames.shape == (spec.frames, spec.size[1], spec.size[0], 3)
    assert fps == pytest.approx(spec.fps, abs=0.01)
    assert max(spec.size) <= 640 and spec.duration_s <= 6.0
    return spec, frames.astype(np.float32)


def gray(f: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(f.astype(np.float32), cv2.COLOR_RGB2GRAY)


def frames_in(spec: clipkit.Spec, span: tuple[float, float]) -> list[int]:
    return [i for i in range(spec.frames) if span[0] <= i / spec.fps < span[1]]


def test_kinds_are_complete_and_well_formed(clip_dir):
    assert sorted(KINDS) == sorted(KIND_NAMES)
    for name, s in KINDS.items():
        assert s.name == name and s.description
        assert s.expected in ("accept", "reject")
        assert bool(s.reasons) == (s.expected == "reject"), name
    with pytest.raises(KeyError):
        make("no_such_kind", clip_dir)


def test_make_is_cached_and_atomic(clip_dir):
    p = make("legs_cut_bottom", clip_dir)
    stamp = p.stat().st_mtime_ns
    assert make("legs_cut_bottom", clip_dir) == p and p.stat().st_mtime_ns == stamp
    assert not [q for q in clip_dir.iterdir() if ".tmp" in q.name]


def test_pan_follow_background_slides(clip_dir):
    spec, f = clip("pan_follow", clip_dir)
    win = cv2.createHanningWindow(spec.size, cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(gray(f[0]), gray(f[-1]), win)
    # the crop window's pan and tilt (63 and 78 px) plus the phone's own drift, the same way round
    pan_x, pan_y = spec.facts["pan_px"]
    assert dx >= pan_x and -dy >= 0.9 * pan_y
    assert np.hypot(dx, dy) / np.hypot(*spec.size) > 0.15
    (hx, hy), _ = cv2.phaseCorrelate(gray(f[0]), gray(f[20]), win)  # steady: about half way at the middle
    assert 0.3 < np.hypot(hx, hy) / np.hypot(dx, dy) < 0.7


def test_slow_zoom_still_zooms_in(clip_dir):
    spec, f = clip("slow_zoom_still", clip_dir)
    w, h = spec.size
    zoomed = cv2.warpAffine(f[0], cv2.getRotationMatrix2D((w / 2, h / 2), 0, spec.facts["zoom"]), spec.size)
    # the last frame is the first one zoomed 1/0.88 about the centre (she barely moves)
    assert np.abs(f[-1] - zoomed).mean() < 0.5 * np.abs(f[-1] - f[0]).mean()


@pytest.mark.slow
def test_plain_static_background_is_flat(clip_dir):
    spec, f = clip("plain_static", clip_dir)
    top = f[:, : spec.size[1] // 6]  # above his head in every frame
    assert top.std(axis=(1, 2, 3)).max() < 4
    assert np.abs(top.mean(axis=(0, 1, 2)) - spec.facts["background_rgb"]).max() < 10
    plain = np.abs(f - np.float32(spec.facts["background_rgb"])).max(3) < 12
    assert plain.mean() > 0.75  # most of every frame is the flat background ...
    assert (1 - plain.mean(axis=(1, 2))).min() > 0.05  # ... and each frame shows him


def test_handheld_shake_is_the_recorded_transforms(clip_dir):
    spec, f = clip("handheld_shake", clip_dir)
    src = clipkit.dribbler()
    first = spec.facts["first_source_frame"]
    tr = spec.facts["transforms"]
    for i in (0, 11, 22, spec.frames - 1):
        right = cv2.warpAffine(src[first + i], clipkit.shake_matrix(*tr[i]), spec.size).astype(np.float32)
        wrong = cv2.warpAffine(src[first + i], clipkit.shake_matrix(*tr[i - 5]), spec.size).astype(np.float32)
        assert np.abs(f[i] - right).mean() < 6  # the codec's error
        assert np.abs(f[i] - wrong).mean() > 12
    dx, dy, angle, scale = np.array(tr).T
    w = spec.size[0]
    assert 0.01 * w < dx.std() and np.abs(dx).max() <= 0.04 * w and np.abs(dy).max() <= 0.04 * w
    assert np.abs(angle).max() <= 1.0 and np.abs(scale - 1).max() <= 0.02
    assert np.abs(np.diff(dx)).mean() < dx.std() * 1.5  # a smooth-ish walk, not white noise


def test_overlay_popup_appears_at_change(clip_dir):
    spec, f = clip("overlay_popup", clip_dir)
    x0, y0, x1, y1 = spec.facts["box"]
    white = (f[:, y0:y1, x0:x1] > 235).all(3).mean(axis=(1, 2))
    after = frames_in(spec, (spec.facts["change_s"], 99))
    before = frames_in(spec, (0, spec.facts["change_s"]))
    assert white[before].max() < 0.1 and white[after].min() > 0.5


def test_overlay_text_changes_once(clip_dir):
    spec, f = clip("overlay_text_change", clip_dir)
    x0, y0, x1, y1 = spec.facts["box"]
    text = f[:, y0:y1, x0:x1].min(3) > 180  # the label's white letters

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    change = round(spec.facts["change_s"] * spec.fps)
    assert min(iou(text[0], text[i]) for i in range(change)) > 0.9
    assert min(iou(text[change], text[i]) for i in range(change, spec.frames)) > 0.9
    assert iou(text[0], text[change]) < 0.7


@pytest.mark.slow
def test_hidden_partner_visible_then_hidden(clip_dir):
    spec, f = clip("hidden_partner", clip_dir)
    src = np.array([cv2.resize(x, spec.size, interpolation=cv2.INTER_AREA) for x in clipkit.dribbler()])
    changed = (np.abs(f - src).max(3) > 40).mean(axis=(1, 2))  # her pixels: what differs from the source
    visible = changed[frames_in(spec, spec.facts["visible_s"])]
    hidden = changed[frames_in(spec, spec.facts["hidden_s"])]
    assert visible.min() > 0.025  # a whole person beside him
    assert hidden.max() < 0.3 * visible.mean()  # at most a head or a leg peeping out behind him


def _ankles_knees(frame_xy) -> tuple[np.ndarray, np.ndarray]:
    kp = clipkit.dribbler_poses()
    return frame_xy(kp[:, [15, 16], :2]), frame_xy(kp[:, [13, 14, 11, 12], :2])


@pytest.mark.slow
def test_horizontal_cut_is_lying_and_cut_at_the_shins(clip_dir):
    spec, f = clip("horizontal_cut", clip_dir)
    src = clipkit.dribbler()
    for i in (0, 20, 39):
        rotated = cv2.rotate(src[i], cv2.ROTATE_90_CLOCKWISE)[:, 355:959].astype(np.float32)
        assert np.abs(f[i] - rotated).mean() < 6
    assert spec.size[0] > spec.size[1]

    def to_clip(p):  # upright (x, y) -> turned clockwise, cropped at x' = 355
        return np.stack([clipkit.WORK[1] - 1 - p[..., 1] - 355, p[..., 0]], -1)

    ankles, body = _ankles_knees(to_clip)
    assert (ankles[..., 0] < 0).all()  # the feet are beyond the left edge in every frame ...
    assert (body[:, :2, 0] > -10).all()  # ... the knees at it ...
    hips = body[:, 2:]
    assert (
        (hips[..., 0] > 0.15 * spec.size[0]).all() and (hips[..., 1] > 0).all() and (hips[..., 1] < spec.size[1]).all()
    )


@pytest.mark.slow
def test_legs_cut_bottom_cuts_at_mid_thigh(clip_dir):
    spec, f = clip("legs_cut_bottom", clip_dir)
    src = clipkit.dribbler()
    assert np.abs(f[10] - src[10, 120:516]).mean() < 6

    def to_clip(p):
        return p - np.float32([0, 120])

    _, body = _ankles_knees(to_clip)
    knees, hips = body[:, :2], body[:, 2:]
    assert (knees[..., 1] > spec.size[1]).all() and (hips[..., 1] < spec.size[1]).all()


def test_counter_hides_the_lower_half(clip_dir):
    spec, f = clip("counter", clip_dir)
    top = round(spec.facts["counter_top"] * spec.size[1])
    below, above = f[:, top + 2 :], f[:, : top - 2]
    assert below.std(axis=0).mean() < 3 < 30 < above.std(axis=0).mean()  # a fixed board in front of him
    r, g, b = below.reshape(-1, 3).mean(0)
    assert r > g + 20 > b + 40  # wood brown


def test_crossfade_blends_over_its_span(clip_dir):
    spec, f = clip("crossfade", clip_dir)
    cool = (f[..., 2] - f[..., 0]).mean(axis=(1, 2))  # the second shot's cooler white balance, blue - red
    inside = frames_in(spec, spec.facts["span_s"])
    a, b = cool[: inside[0]].mean(), cool[inside[-1] + 1 :].mean()
    assert b - a > 15
    assert cool[: inside[0]].std() < 2 and cool[inside[-1] + 1 :].std() < 2  # no change outside the fade
    ramp = cool[inside]
    assert (np.diff(ramp) > 0).all()  # one steady blend, no cut
    assert abs(ramp[len(ramp) // 2] - (a + b) / 2) < 0.15 * (b - a)


def test_card_dissolve_blends_in_the_card_over_its_span(clip_dir):
    spec, f = clip("card_dissolve", clip_dir)
    warm = (f[..., 0] - f[..., 2]).mean(axis=(1, 2))  # the card's orange disc: red - blue
    inside = frames_in(spec, spec.facts["span_s"])
    before, card = warm[: inside[0]], warm[inside[-1] + 1 :]
    assert card.mean() - before.mean() > 15 and card.std() < 1
    ramp = warm[inside]
    assert (np.diff(ramp) > 0).all()  # one steady blend, no cut
    first = (ramp[0] - before.mean()) / (card.mean() - before.mean())
    assert 0.08 < first < 0.17  # the first frame inside holds about an eighth of the card


def test_fade_black_dips_to_black(clip_dir):
    spec, f = clip("fade_black", clip_dir)
    mean = f.mean(axis=(1, 2, 3))
    black = frames_in(spec, spec.facts["black_s"])
    inside = frames_in(spec, spec.facts["span_s"])
    outside = [i for i in range(spec.frames) if i not in inside]
    assert len(black) >= 2 and mean[black].max() < 3
    assert mean[outside].min() > 60
    assert all(0 < mean[i] < mean[outside].min() for i in inside if i not in black)


@pytest.mark.slow
def test_mirror_is_a_darker_reflection(clip_dir):
    spec, f = clip("mirror", clip_dir)
    half = spec.facts["mirror_x"] - 6
    for i in (0, 13, 26, 39):
        g = gray(f[i])
        left, right = g[:, :half], g[:, ::-1][:, :half]  # the reflection, flipped back
        assert np.corrcoef(left.ravel(), right.ravel())[0, 1] > 0.98
        assert right.mean() < left.mean() - 30 and right.std() < left.std()
