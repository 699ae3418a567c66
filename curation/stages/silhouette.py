"""The body drawn from its keypoints, and what is drawn over it: the figure a change beside the body is
judged against (camera.compare_background), and the strokes of a graphic drawn over the body. Pure
functions over keypoints and frames."""

from __future__ import annotations

import itertools

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
REACH = 0.35  # the body's reach around its drawn figure, in torso lengths (body_shapes)
_HEAD = [KP[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]


def _draw_figure(drawn: np.ndarray, k: np.ndarray, torso: float, held: bool = True) -> None:
    """One body's figure from its keypoints (x, y in drawn's pixels), 255 on `drawn`; `held`: with the
    disks around the hands for what they hold."""

    def capsule(a: np.ndarray, b: np.ndarray, r: float) -> None:
        cv2.line(drawn, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, max(1, int(2 * r * torso)))

    for i, j, r in _LIMBS:
        capsule(k[i, :2], k[j, :2], r)
    for i, j, f, r in _ENDS:
        capsule(k[j, :2], k[j, :2] + f * (k[j, :2] - k[i, :2]), r)
    for wrist in (KP["left_wrist"], KP["right_wrist"]) if held else ():  # what the hands hold: a bar, a ball
        cv2.circle(drawn, tuple(int(v) for v in k[wrist, :2]), int(0.6 * torso), 255, -1)
    trunk = k[_TRUNK, :2].astype(np.int32)
    cv2.fillConvexPoly(drawn, trunk, 255)
    cv2.polylines(drawn, [trunk], True, 255, max(1, int(0.5 * torso)))
    head = k[_HEAD, :2].mean(0)
    cv2.circle(drawn, tuple(int(v) for v in head), int(0.5 * torso), 255, -1)
    capsule(head, (k[_TRUNK[0], :2] + k[_TRUNK[1], :2]) / 2, 0.3)  # the neck


def _people_in_b(people_a: list[Pose17], people_b: list[Pose17], m: np.ndarray, scale: float):
    """(person, keypoints in b's small-frame pixels, torso length or None when it is not measurable,
    the move applied: None for b's people, m for a's) for b's people, then a's moved by m."""
    for people, move in ((people_b, None), (people_a, m)):
        for p in people:
            k = np.asarray(p.keypoints, np.float64).copy()
            k[:, :2] *= scale
            if move is not None:
                k[:, :2] = k[:, :2] @ move[:, :2].T + move[:, 2]
            torso = geometry.torso_length(k)
            yield p, k, torso if np.isfinite(k[:, :2]).all() and torso > 2 else None, move


def body_shapes(
    shape: tuple[int, int],
    people_a: list[Pose17],
    people_b: list[Pose17],
    m: np.ndarray,
    scale: float,
    held: bool = True,
) -> tuple[np.ndarray, float]:
    """0 where a person's body is, 255 elsewhere, in b's small-frame pixels (a's people moved by m), and
    the body's reach: 0.35 of the largest torso drawn, in the same pixels.

    The body is drawn from its keypoints as a figure of capsules (limbs 0.22-0.28 torso lengths wide
    each side, the hands past the wrist, heel and sole below the ankle, the torso, the head), with a
    disk of 0.6 torso lengths around each hand for what it holds (a bar, a ball). A change within the
    reach of the figure is the body's (a toe, long hair, a skirt, a shadow at the feet); beyond it, it
    is not, even when the changed region touches the body (a caption whose line runs under the feet).
    The detector's box is not the body: a caption under the feet or a graphic beside the legs lies
    inside it. A person without a measurable torso is masked by its tight box. `held` False leaves the
    hands' disks out: the body alone (what hides a spot behind it)."""
    h, w = shape
    drawn = np.zeros((h, w), np.uint8)
    largest = 0.0
    for p, k, torso, move in _people_in_b(people_a, people_b, m, scale):
        if torso is not None:
            largest = max(largest, torso)
            _draw_figure(drawn, k, torso, held)
            continue
        x1, y1, x2, y2 = (np.asarray(p.box) * scale).tolist()
        if move is not None:
            c = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]]) @ move[:, :2].T + move[:, 2]
            (x1, y1), (x2, y2) = c.min(0), c.max(0)
        cv2.rectangle(drawn, (int(x1), int(y1)), (int(np.ceil(x2)), int(np.ceil(y2))), 255, -1)
    return 255 - drawn, REACH * largest


def hand_zones(
    shape: tuple[int, int], people_a: list[Pose17], people_b: list[Pose17], m: np.ndarray, scale: float
) -> np.ndarray:
    """255 within the disk body_shapes draws around each hand (0.6 torso lengths; a's people moved by m),
    0 elsewhere, in b's small-frame pixels: where what a hand holds is held (camera.held_objects)."""
    h, w = shape
    zones = np.zeros((h, w), np.uint8)
    for _, k, torso, _ in _people_in_b(people_a, people_b, m, scale):
        if torso is not None:
            for wrist in (KP["left_wrist"], KP["right_wrist"]):
                cv2.circle(zones, tuple(int(v) for v in k[wrist, :2]), int(0.6 * torso), 255, -1)
    return zones


# a drawn graphic's colour: saturated and bright (HSV, OpenCV's 0-255 scales), as no lit fabric is
GRAPHIC_SATURATION, GRAPHIC_VALUE = 170, 200
STROKE_WIDTH = 0.12  # torso lengths: a drawn stroke is thinner than this (the opening that removes it)
WORK_SIDE = 640.0  # graphics are looked for at most this many pixels on the frame's long side


def _working_size(a: np.ndarray, b: np.ndarray, m: np.ndarray, scale: float, subject_b: Pose17):
    """The frames at most 640 px on the long side, a warped onto b; m in those pixels; their scale; the
    subject's torso in them; an opening by 0.12 torso lengths (what removes a stroke thinner than a
    limb); where warped a has picture, 3 px in from its edge (outside it, a's black fill would make
    whatever b shows there look new). None when the torso is under 8 px there."""
    h, w = b.shape[:2]
    f = min(1.0, WORK_SIDE / max(h, w))
    torso = geometry.torso_length(geometry.keypoints(subject_b)) * f
    if not torso > 8:
        return None
    size = (max(1, round(w * f)), max(1, round(h * f)))
    mf = m.copy()
    mf[:, 2] *= f / scale
    small_b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    small_a = cv2.warpAffine(cv2.resize(a, size, interpolation=cv2.INTER_AREA), mf, size, borderValue=0)
    seen = cv2.warpAffine(np.ones(small_b.shape[:2], np.uint8), mf, size, flags=cv2.INTER_NEAREST, borderValue=0)
    seen = cv2.erode(seen, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_REPLICATE)
    k = max(5, int(STROKE_WIDTH * torso)) | 1
    return small_a, small_b, mf, f, torso, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)), seen


def _strokes(img: np.ndarray, opening: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frame's graphic-coloured pixels (saturated and bright) and their thin parts: what an opening by
    `opening` (0.12 torso lengths) removes, so strokes thinner than a limb (a yellow shirt is a blob)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    colour = ((hsv[..., 1] > GRAPHIC_SATURATION) & (hsv[..., 2] > GRAPHIC_VALUE)).astype(np.uint8)
    return colour, colour & (1 - cv2.morphologyEx(colour, cv2.MORPH_OPEN, opening))


# the limbs a drawn pose skeleton joins, arms and legs: upper arms, forearms, thighs, shins (the trunk's
# lines lie on the clothes, and collapse into a stroke of their own on a body seen side-on)
_ARMS = tuple(
    (KP[f"{s}_{a}"], KP[f"{s}_{b}"]) for s in ("left", "right") for a, b in (("shoulder", "elbow"), ("elbow", "wrist"))
)
_LEGS = tuple(
    (KP[f"{s}_{a}"], KP[f"{s}_{b}"]) for s in ("left", "right") for a, b in (("hip", "knee"), ("knee", "ankle"))
)
BONE_SAMPLES = np.linspace(0.2, 0.8, 11)  # where along a limb a drawn line is looked for
BONE_NEAR, BONE_HITS, BONE_FIT, MIN_BONES = 0.12, 0.7, 0.03, 4


def _lined(thin: np.ndarray, p: np.ndarray, q: np.ndarray, torso: float) -> bool:
    """A thin stroke runs along the limb p -> q. The limb is crossed at BONE_SAMPLES along it, within
    BONE_NEAR torso lengths of its axis; each crossing's runs of thin-mask pixels no wider than a stroke
    are where a line may pass (a stripe across the limb fills the crossing: no run). The limb carries a
    line when one straight line, within BONE_FIT torso lengths, passes through such runs in BONE_HITS
    of the crossings (stripes at an angle to the limb meet it at scattered places). Points outside
    the picture meet nothing."""
    length = float(np.linalg.norm(q - p))
    if not length > 4:
        return False
    u = (q - p) / length
    v = np.array([-u[1], u[0]])
    r = max(2, round(BONE_NEAR * torso))
    offs = np.arange(-r, r + 1, dtype=np.float64)
    pts = p + BONE_SAMPLES[:, None, None] * (q - p) + offs[None, :, None] * v  # (crossings, offsets, xy)
    xs, ys = np.rint(pts[..., 0]).astype(int), np.rint(pts[..., 1]).astype(int)
    inside = (xs >= 0) & (xs < thin.shape[1]) & (ys >= 0) & (ys < thin.shape[0])
    hits = np.zeros(xs.shape, bool)
    hits[inside] = thin[ys[inside], xs[inside]] > 0
    runs = []  # (crossing, offset of a narrow run's middle)
    for n, row in enumerate(hits):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if offs[b - 1] - offs[a] <= STROKE_WIDTH * torso:
                runs.append((n, (offs[a] + offs[b - 1]) / 2))
    need = BONE_HITS * len(BONE_SAMPLES)
    if len({n for n, _ in runs}) < need:
        return False
    tol = max(1.5, BONE_FIT * torso)
    for (n0, o0), (n1, o1) in itertools.combinations(runs, 2):
        if n0 == n1:
            continue
        slope = (o1 - o0) / (n1 - n0)
        if len({n for n, o in runs if abs(o - (o0 + slope * (n - n0))) <= tol}) >= need:
            return True
    return False


def drawn_skeleton(frame: np.ndarray, subject: Pose17, kp_conf: float) -> float | None:
    """The share of the subject's limbs along which a drawn line runs (frame: RGB): a pose skeleton
    drawn over the person, as pose-estimation demos publish their videos.

    Such a skeleton is redrawn in every frame where the body is, so the difference between the two
    frames hardly shows it, and each stroke alone is short (graphic_strokes). What gives it away is
    where its strokes lie: along the limbs, joint to joint. A limb (both ends at kp_conf) carries a
    line when a thin graphic-coloured stroke (_strokes: saturated, bright, thinner than a limb) runs
    along it (_lined: crossing the limb at 11 points of its middle 60 %, within 0.12 torso lengths of
    its axis, one straight line passes through a narrow run of the stroke in 70 % of them); the
    share of the 8 limbs (upper arms, forearms, thighs, shins) that carry one is the figure (a limb
    not seen carries none, so a body half hidden does not read as lined on a few limbs), counted only
    when an arm and a leg both carry one: a skeleton is drawn over the whole body, while a band held
    down the legs or a seam stripe lines the legs or the arms (0 then). A coloured sleeve or top is a
    blob, not a stroke; stripes across a limb fill the crossings they meet. None when fewer than 4
    limbs are seen or the torso is under 8 px (the frame at most WORK_SIDE px on the long side)."""
    h, w = frame.shape[:2]
    f = min(1.0, WORK_SIDE / max(h, w))
    k = geometry.keypoints(subject).copy()
    k[:, :2] *= f
    torso = geometry.torso_length(k)
    if not torso > 8:
        return None
    img = cv2.resize(frame, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    o = max(5, int(STROKE_WIDTH * torso)) | 1
    _, thin = _strokes(img, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (o, o)))
    lined = {}
    for i, j in _ARMS + _LEGS:
        if k[i, 2] >= kp_conf and k[j, 2] >= kp_conf and np.isfinite(k[[i, j], :2]).all():
            lined[i, j] = _lined(thin, k[i, :2], k[j, :2], torso)
    if len(lined) < MIN_BONES:
        return None
    if not any(lined.get(b, False) for b in _ARMS) or not any(lined.get(b, False) for b in _LEGS):
        return 0.0  # a skeleton is drawn over the whole body; a band or a stripe lines the legs or the arms
    return sum(lined.values()) / len(_ARMS + _LEGS)


def graphic_strokes(a: np.ndarray, b: np.ndarray, m: np.ndarray, scale: float, subject_b: Pose17) -> float | None:
    """The longest straight stroke of a drawn graphic that is in one frame and not the other, in the
    subject's torso lengths (a, b: RGB frames; m: a -> b in small-frame pixels, `scale` of them).

    A form line, an arrow or a skeleton drawn over the body lies inside the person, where the background
    comparison does not look, and moves with the body like a limb. What sets it apart is how it is
    drawn: a saturated, bright colour, thinner than any limb, straight. The strokes are the thin parts
    of each frame's saturated-colour mask (what an opening by 0.12 torso lengths removes: a yellow shirt
    is a blob and stays), less what the other frame has in that colour nearby; the longest straight
    segment (Hough) among them is the figure. Measured at most 640 px on the long side."""
    work = _working_size(a, b, m, scale, subject_b)
    if work is None:
        return None
    small_a, small_b, _, _, torso, opening, seen = work
    near = np.ones((5, 5), np.uint8)
    masks = [_strokes(img, opening) for img in (small_a, small_b)]
    longest = 0.0
    for (_, thin), (other, _) in ((masks[0], masks[1]), (masks[1], masks[0])):
        only = thin & (1 - cv2.dilate(other, near)) & seen
        lines = cv2.HoughLinesP(only * 255, 1, np.pi / 180, 30, minLineLength=max(10, int(0.3 * torso)), maxLineGap=3)
        if lines is not None and len(lines):
            seg = np.asarray(lines, np.float64).reshape(-1, 4)
            longest = max(longest, float(np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]).max()) / torso)
    return longest


# drawn text: near white and unsaturated (HSV, OpenCV's 0-255 scales), as captions and titles are
TEXT_SATURATION, TEXT_VALUE, TEXT_CONTRAST = 50, 200, 80


def text_change(
    a: np.ndarray, b: np.ndarray, m: np.ndarray, scale: float, people_a: list[Pose17], people_b: list[Pose17]
) -> float | None:
    """The largest word of bright text that is in one frame and not the other: its stroke pixels per
    squared torso length of the subject (a, b: RGB frames; m: a -> b in small-frame pixels, `scale`).

    A caption, a title or an exercise name that appears, vanishes or changes between the frames is thin
    near-white strokes in a row, often by the feet, where the background comparison leaves a change to
    the body's reach and, at its working size, sees the letters as a few pixels. Here, at most 640 px
    on the long side, the strokes are the thin parts of each frame's near-white mask (what an opening
    by 0.12 torso lengths removes: a white shirt is a blob and stays) that belong to a small near-white
    blob of their own, as a letter does (at most half a torso high; the fringe of a white wall that
    the body uncovers belongs to the wall), outside every drawn body figure, joined into words (a
    closing along the row; wider than twice their height). A word's stroke pixels count where the
    other frame has no near-white within 0.3 % of the picture's long side and its gray level differs by
    more than TEXT_CONTRAST there: a caption present in both frames (shifted a pixel) counts nothing, a
    new or changed one counts its letters."""
    work = _working_size(a, b, m, scale, people_b[0]) if people_b else None
    if work is None:
        return None
    small_a, small_b, mf, f, torso, opening, seen = work
    off_body = body_shapes(small_b.shape[:2], people_a, people_b, mf, f)[0] > 0
    r = max(1, round(0.003 * max(small_b.shape[:2])))
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    contrast = (
        np.abs(cv2.cvtColor(small_a, cv2.COLOR_RGB2GRAY).astype(np.int16) - cv2.cvtColor(small_b, cv2.COLOR_RGB2GRAY))
        > TEXT_CONTRAST
    )
    masks = []
    for img in (small_a, small_b):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        white = ((hsv[..., 1] < TEXT_SATURATION) & (hsv[..., 2] > TEXT_VALUE)).astype(np.uint8)
        thin = white & (1 - cv2.morphologyEx(white, cv2.MORPH_OPEN, opening))
        masks.append((white, (thin > 0) & off_body))
    largest = 0
    for (white, strokes), (other, _) in ((masks[0], masks[1]), (masks[1], masks[0])):
        new = strokes & (cv2.dilate(other, near) == 0) & contrast & (seen > 0)
        largest = max(largest, _new_in_words(white, strokes, new, torso))
    return largest / torso**2


def _new_in_words(white: np.ndarray, strokes: np.ndarray, new: np.ndarray, torso: float) -> int:
    """The most `new` stroke pixels in one word: strokes of letters (small near-white blobs, at most half
    a torso high and a quarter torso squared) closed along the row into blobs wider than twice their
    height. Looked at only around the new pixels (half a torso above and below, a torso and a half to
    the sides); a blob cut by that window's inner edges is no letter."""
    ys, xs = np.nonzero(new)
    if not len(ys):
        return 0
    h, w = new.shape
    py, px = int(0.5 * torso) + 2, int(1.5 * torso) + 2
    y0, y1, x0, x1 = max(0, ys.min() - py), min(h, ys.max() + py + 1), max(0, xs.min() - px), min(w, xs.max() + px + 1)
    win = np.s_[y0:y1, x0:x1]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(white[win]))
    bx, by, bw, bh, area = (stats[:, k] for k in range(5))
    cut = (
        ((bx == 0) & (x0 > 0))
        | ((by == 0) & (y0 > 0))
        | ((bx + bw == x1 - x0) & (x1 < w))
        | ((by + bh == y1 - y0) & (y1 < h))
    )
    letter = (bh <= 0.5 * torso) & (area <= 0.25 * torso**2) & ~cut
    letter[0] = False  # (not white)
    letters = strokes[win] & letter[labels]
    words = cv2.morphologyEx(letters.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 9), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(words)
    counts = np.bincount(labels[new[win] & letters], minlength=n)
    wide = stats[:, cv2.CC_STAT_WIDTH] >= 2 * stats[:, cv2.CC_STAT_HEIGHT]
    wide[0] = False
    return int(counts[wide].max()) if wide.any() else 0
