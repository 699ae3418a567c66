"""The body drawn from its keypoints, and what is drawn over it: the figure a change beside the body is
judged against (camera.compare_background), and the strokes of a graphic drawn over the body. Pure
functions over keypoints and frames."""

from __future__ import annotations

import cv2
import numpy as np

from schemas.records import KP, Pose17

from .. import geometry

# the body figure: capsules around the limbs (radius in torso lengths) ...
_LIMBS = tuple(
    (KP[f"{side}_{a}"], KP[f"{side}_{b}"], r)
    for side in ("left", "right")
    for a, b, r in (
        ("shoulder", "elbow", 0.22),
        ("elbow", "wrist", 0.22),
        ("hip", "knee", 0.28),
        ("knee", "ankle", 0.28),
    )
)
# ... and past the ends: (from, end, reach past the end as a share of from -> end, radius)
_ENDS = tuple(
    (KP[f"{side}_{a}"], KP[f"{side}_{b}"], f, r)
    for side in ("left", "right")
    for a, b, f, r in (("elbow", "wrist", 0.45, 0.22), ("knee", "ankle", 0.15, 0.18))  # hand; heel and sole
)
_TRUNK = [KP[n] for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")]
_HEAD = [KP[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]


def _draw_figure(drawn: np.ndarray, k: np.ndarray, torso: float) -> None:
    """One body's figure from its keypoints (x, y in drawn's pixels), 255 on `drawn`."""

    def capsule(a: np.ndarray, b: np.ndarray, r: float) -> None:
        cv2.line(drawn, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, max(1, int(2 * r * torso)))

    for i, j, r in _LIMBS:
        capsule(k[i, :2], k[j, :2], r)
    for i, j, f, r in _ENDS:
        capsule(k[j, :2], k[j, :2] + f * (k[j, :2] - k[i, :2]), r)
    for wrist in (KP["left_wrist"], KP["right_wrist"]):  # what the hands hold: a bar, a ball
        cv2.circle(drawn, tuple(int(v) for v in k[wrist, :2]), int(0.6 * torso), 255, -1)
    trunk = k[_TRUNK, :2].astype(np.int32)
    cv2.fillConvexPoly(drawn, trunk, 255)
    cv2.polylines(drawn, [trunk], True, 255, max(1, int(0.5 * torso)))
    head = k[_HEAD, :2].mean(0)
    cv2.circle(drawn, tuple(int(v) for v in head), int(0.5 * torso), 255, -1)
    capsule(head, (k[_TRUNK[0], :2] + k[_TRUNK[1], :2]) / 2, 0.3)  # the neck


def body_shapes(
    shape: tuple[int, int], people_a: list[Pose17], people_b: list[Pose17], m: np.ndarray, scale: float
) -> tuple[np.ndarray, float]:
    """0 where a person's body is, 255 elsewhere, in b's small-frame pixels (a's people moved by m), and
    the body's reach: 0.35 of the largest torso drawn, in the same pixels.

    The body is drawn from its keypoints as a figure of capsules (limbs 0.22-0.28 torso lengths wide
    each side, the hands past the wrist, heel and sole below the ankle, the torso, the head), with a
    disk of 0.6 torso lengths around each hand for what it holds (a bar, a ball). A change within the
    reach of the figure is the body's (a toe, long hair, a skirt, a shadow at the feet); beyond it, it
    is not, even when the changed region touches the body (a caption whose line runs under the feet).
    The detector's box is not the body: a caption under the feet or a graphic beside the legs lies
    inside it. A person without a measurable torso is masked by its tight box."""
    h, w = shape
    drawn = np.zeros((h, w), np.uint8)
    largest = 0.0
    for people, move in ((people_b, None), (people_a, m)):
        for p in people:
            k = np.asarray(p.keypoints, np.float64).copy()
            k[:, :2] *= scale
            if move is not None:
                k[:, :2] = k[:, :2] @ move[:, :2].T + move[:, 2]
            torso = geometry.torso_length(k)
            if np.isfinite(k[:, :2]).all() and torso > 2:
                largest = max(largest, torso)
                _draw_figure(drawn, k, torso)
                continue
            x1, y1, x2, y2 = (np.asarray(p.box) * scale).tolist()
            if move is not None:
                c = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]]) @ move[:, :2].T + move[:, 2]
                (x1, y1), (x2, y2) = c.min(0), c.max(0)
            cv2.rectangle(drawn, (int(x1), int(y1)), (int(np.ceil(x2)), int(np.ceil(y2))), 255, -1)
    return 255 - drawn, 0.35 * largest


# a drawn graphic's colour: saturated and bright (HSV, OpenCV's 0-255 scales), as no lit fabric is
GRAPHIC_SATURATION, GRAPHIC_VALUE = 170, 200


def graphic_strokes(a: np.ndarray, b: np.ndarray, m: np.ndarray, scale: float, subject_b: Pose17) -> float | None:
    """The longest straight stroke of a drawn graphic that is in one frame and not the other, in the
    subject's torso lengths (a, b: RGB frames; m: a -> b in small-frame pixels, `scale` of them).

    A form line, an arrow or a skeleton drawn over the body lies inside the person, where the background
    comparison does not look, and moves with the body like a limb. What sets it apart is how it is
    drawn: a saturated, bright colour, thinner than any limb, straight. The strokes are the thin parts
    of each frame's saturated-colour mask (what an opening by 0.12 torso lengths removes: a yellow shirt
    is a blob and stays), less what the other frame has in that colour nearby; the longest straight
    segment (Hough) among them is the figure. Measured at most 640 px on the long side."""
    h, w = b.shape[:2]
    f = min(1.0, 640.0 / max(h, w))
    torso = geometry.torso_length(geometry.keypoints(subject_b)) * f
    if not torso > 8:
        return None
    size = (max(1, round(w * f)), max(1, round(h * f)))
    mf = m.copy()
    mf[:, 2] *= f / scale
    small_b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    small_a = cv2.warpAffine(cv2.resize(a, size, interpolation=cv2.INTER_AREA), mf, size, borderValue=0)
    k = max(5, int(0.12 * torso)) | 1
    opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    near = np.ones((5, 5), np.uint8)
    masks = []
    for img in (small_a, small_b):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        colour = ((hsv[..., 1] > GRAPHIC_SATURATION) & (hsv[..., 2] > GRAPHIC_VALUE)).astype(np.uint8)
        masks.append((colour, colour & (1 - cv2.morphologyEx(colour, cv2.MORPH_OPEN, opening))))
    longest = 0.0
    for (_, thin), (other, _) in ((masks[0], masks[1]), (masks[1], masks[0])):
        only = thin & (1 - cv2.dilate(other, near))
        lines = cv2.HoughLinesP(only * 255, 1, np.pi / 180, 30, minLineLength=max(10, int(0.3 * torso)), maxLineGap=3)
        if lines is not None and len(lines):
            seg = np.asarray(lines, np.float64).reshape(-1, 4)
            longest = max(longest, float(np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]).max()) / torso)
    return longest
