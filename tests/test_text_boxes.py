"""Text that changes between a pair's frames, found by the packaged text detector (curation/stages/
text_boxes.py, RapidOCR's PP-OCRv4 detection through onnxruntime): a subtitle that changes sentence, one
that appears, over a pale background next to the head, where the pixel checks leave it to the body's
reach. The same subtitle in both frames, a caption laid over a picture whose camera is stabilised, text
and the person's own motion are not. Real frames (the clipkit dribbler), the real
pose model and the real detector."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_handheld import clips, two_frames  # noqa: F401  (the module's clip folder fixture)
from test_quality import detector  # noqa: F401  (the module's pose model fixture)

from curation.config import QualityConfig
from curation.stages import camera, text_boxes

pytestmark = pytest.mark.slow

ARGS = (np.eye(2, 3), False, 0.006, 0.03, 6.0)  # align_pair: chained, textureless, static, max motion, residual


def subtitled(frame: np.ndarray, text: str, y: int, dx: int = 0) -> np.ndarray:
    """A subtitle as short videos burn it in: white letters outlined in black, on a pale band."""
    out = frame.copy()
    h, w = out.shape[:2]
    out[max(0, y - h // 12) : y + h // 40] = (236, 234, 230)  # a pale curtain behind it in both frames
    glyphs = np.zeros((h, w), np.uint8)
    cv2.putText(glyphs, text, (w // 8 + dx, y), cv2.FONT_HERSHEY_SIMPLEX, h / 700, 255, 2, cv2.LINE_AA)
    out[cv2.dilate(glyphs, np.ones((5, 5), np.uint8)) > 0] = 0  # the black outline
    out[glyphs > 127] = 255
    return out


def changed(a, b, pa, pb, m=None):
    al = camera.align_pair(a, b, [pa], [pb], *ARGS)
    full = al.full_matrix() if m is None else m
    return text_boxes.changed_text(a, b, text_boxes.text_boxes(a), text_boxes.text_boxes(b), full, [pa], [pb])[0]


def test_a_changing_subtitle_is_found_and_a_steady_one_is_not(detector, clips):  # noqa: F811
    a, b, pa, pb = two_frames(detector, clips)
    limit = QualityConfig().max_text_box_change
    y = int(min(pa.keypoints[0][1], pb.keypoints[0][1]))  # at the height of the head, beside it
    assert changed(a, b, pa, pb) == 0.0  # the person's own motion, no text
    before = subtitled(a, "HOW LOW SHOULD YOU GO", y)
    assert text_boxes.text_boxes(before), "the detector finds the subtitle"
    assert changed(before, subtitled(b, "KEEP YOUR HEELS DOWN", y), pa, pb) > limit
    assert changed(subtitled(a, "", y), subtitled(b, "KEEP YOUR HEELS DOWN", y), pa, pb) > limit  # it appears
    assert changed(before, subtitled(b, "HOW LOW SHOULD YOU GO", y, dx=1), pa, pb) <= limit  # the same one


def cue_lines(frame: np.ndarray, lines: list[str], y: int) -> np.ndarray:
    """A list of cues as tutorials type them in: thin gray letters, one line under the other, on white."""
    out = frame.copy()
    h, w = out.shape[:2]
    step = h // 22
    out[y - step : y + step * 4, : w // 2 + w // 8] = 255
    for n, text in enumerate(lines):
        cv2.putText(out, text, (6, y + n * step), cv2.FONT_HERSHEY_SIMPLEX, h / 1400, (110, 110, 110), 1, cv2.LINE_AA)
    return out


def test_a_thin_cue_line_typed_in_is_found(detector, clips):  # noqa: F811
    """A new line of thin gray cue text in the after frame (the tenth batch's walking-lunge tutorial): its
    glyphs fill too little of their box for the quarter of its pixels the subtitles reach, but most of its
    ink is new. The same lines in both frames are not."""
    a, b, pa, pb = two_frames(detector, clips)
    limit = QualityConfig().max_text_box_change
    y = int(min(pa.keypoints[0][1], pb.keypoints[0][1]))
    cues = ["One leg steps forward", "Keep the heel down"]
    before, after = cue_lines(a, cues, y), cue_lines(b, cues + ["Shin stays vertical"], y)
    assert len(text_boxes.text_boxes(after)) > len(text_boxes.text_boxes(before)), "the new line is boxed"
    assert changed(before, after, pa, pb) > limit
    assert changed(before, cue_lines(b, cues, y), pa, pb) <= limit


def shifted(frame: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The frame as a camera moved by (dx, dy) pixels would show it."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(frame, m, (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def test_on_the_screen_and_in_the_scene_after_the_camera_is_taken_out(detector, clips):  # noqa: F811
    """A caption laid over the picture stays put on the screen while a stabilised camera moves the scene;
    a poster in the scene moves with it: neither counts. A caption in the before frame only still counts
    when the camera moved 16 px between the frames (a's box is followed into b's frame)."""
    a, b, pa, pb = two_frames(detector, clips)
    limit = QualityConfig().max_text_box_change
    y = int(min(pa.keypoints[0][1], pb.keypoints[0][1]))

    def m(dx, dy):  # the camera a -> b in the frames' pixels
        return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])

    text = "HOW LOW SHOULD YOU GO"
    caption = (subtitled(a, text, y), subtitled(shifted(b, 6, 0), text, y))
    assert changed(*caption, pa, pb, m=m(6, 0)) <= limit
    poster = (subtitled(a, text, y), shifted(subtitled(b, text, y), 6, 0))
    assert changed(*poster, pa, pb, m=m(6, 0)) <= limit
    ending = (subtitled(a, text, y), shifted(b, 0, 16))
    assert changed(*ending, pa, pb, m=m(0, 16)) > limit


def test_the_detector_is_recorded_with_the_results(tmp_path, monkeypatch):
    """The detector's package and runtime versions are in the results' versions and the fingerprint
    while the check is on (an onnxruntime upgrade that moves the boxes redoes the clips); with the check
    off (max_text_box_change 1) they are not, and a detector upgrade changes nothing."""
    import importlib.metadata as md

    from curation.config import load_config
    from curation.plan import build_versions, fingerprint

    on = load_config(None, output=str(tmp_path))
    off = load_config(None, output=str(tmp_path), quality={"max_text_box_change": 1.0})
    recorded = build_versions(on)["text_detector"]
    ocr, runtime = md.version("rapidocr-onnxruntime"), md.version("onnxruntime")
    assert recorded == f"rapidocr-onnxruntime-{ocr}/onnxruntime-{runtime}"
    assert "text_detector" not in build_versions(off)
    before = fingerprint(on), fingerprint(off)
    real = md.version
    monkeypatch.setattr(md, "version", lambda name: "99.0" if name == "onnxruntime" else real(name))
    text_boxes.version.cache_clear()  # read once a process: the upgraded runtime is a new process's
    try:
        assert build_versions(on)["text_detector"].endswith("/onnxruntime-99.0")
        assert fingerprint(on) != before[0] and fingerprint(off) == before[1]
    finally:
        monkeypatch.undo()
        text_boxes.version.cache_clear()  # the other tests of this process read the real versions
