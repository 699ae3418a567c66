"""Text that changes between a pair's frames, found by the packaged text detector (curation/stages/
text_boxes.py, RapidOCR's PP-OCRv4 detection through onnxruntime): a subtitle that changes sentence, one
that appears, over a pale background next to the head, where the pixel checks leave it to the body's
reach. The same subtitle in both frames, a caption laid over a picture whose camera is stabilised, text
on the person's shirt and the person's own motion are not. Real frames (the clipkit dribbler), the real
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
    matrix = al.matrix if m is None else m
    return text_boxes.changed_text(
        a, b, text_boxes.text_boxes(a), text_boxes.text_boxes(b), matrix, al.scale, [pa], [pb]
    )[0]


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


def test_a_steady_caption_over_a_stabilised_camera_and_text_on_the_shirt_do_not_count(detector, clips):  # noqa: F811
    a, b, pa, pb = two_frames(detector, clips)
    limit = QualityConfig().max_text_box_change
    y = int(min(pa.keypoints[0][1], pb.keypoints[0][1]))
    # the camera moved 6 px between the frames and was taken out; the caption stays put on the screen
    shift = np.float32([[1, 0, 6], [0, 1, 0]])
    moved = cv2.warpAffine(b, shift, (b.shape[1], b.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    small = camera.small_gray(a)[1]
    m = np.array([[1.0, 0.0, 6 * small], [0.0, 1.0, 0.0]])
    caption = (subtitled(a, "HOW LOW SHOULD YOU GO", y), subtitled(moved, "HOW LOW SHOULD YOU GO", y))
    assert changed(*caption, pa, pb, m=m) <= limit

    # a number printed on the shirt moves with the body: inside the drawn figure, not judged
    def shirt(frame, pose, text):
        out = frame.copy()
        x, yy = (np.asarray(pose.keypoints[5][:2]) + np.asarray(pose.keypoints[12][:2])) / 2
        cv2.putText(out, text, (int(x) - 12, int(yy)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        return out

    assert changed(shirt(a, pa, "23"), shirt(b, pb, "23"), pa, pb) <= limit
