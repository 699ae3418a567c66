"""Pairs from handheld footage (issue 22): background alignment and stabilised pairs, overlays that
change, people tracked through the clip, reflections, bodies cut by the frame or hidden, transitions,
person-centred crops, margins and repeatable decisions. Each on a clip of its kind made from real
footage (tests/clipkit.py), through the real decode, pose model and funnel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clipkit import KINDS, make, read
from conftest import write_video
from test_quality import detector, run_clip  # noqa: F401  (the module's pose model fixture)

from curation.config import MotionConfig, QualityConfig
from curation.stages import body, camera, crop, quality, silhouette
from schemas.records import Pose17

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clipkit")


def clip_reasons(res) -> list[str]:
    return [r.reason.value for r in res.rejects if r.level.value == "clip"]


def spans(res, lo: float, hi: float) -> bool:
    """Some accepted pair takes a frame inside [lo, hi] seconds, or spans across it."""
    return any(p.pair.before_time_s <= hi and p.pair.after_time_s >= lo for p in res.pairs)


def test_a_pan_following_the_subject_is_camera_motion(detector, clips):  # noqa: F811
    """The clipkit pan at three times its speed (every third frame at the same rate): the background
    slides ~0.05 of the diagonal between frames half a second apart."""
    make("pan_follow", clips)
    import decord

    vr = decord.VideoReader(str(clips / "pan_follow.mp4"), ctx=decord.cpu(0), num_threads=1)
    frames = vr.get_batch(list(range(0, len(vr), 3))).asnumpy()
    fast = write_video(clips / "pan_fast.mp4", [np.ascontiguousarray(f[..., ::-1]) for f in frames], fps=12.0)
    res = run_clip(fast, detector)
    assert not res.accepted and clip_reasons(res) == ["camera_motion"], res.rejects


def test_a_slow_zoom_on_a_near_still_subject_gives_nothing(detector, clips):  # noqa: F811
    res = run_clip(make("slow_zoom_still", clips), detector)
    assert not res.accepted and clip_reasons(res)[0] in KINDS["slow_zoom_still"].reasons, res.rejects


def test_a_static_camera_on_a_plain_background_is_static_and_kept(detector, clips):  # noqa: F811
    res = run_clip(make("plain_static", clips), detector)
    assert res.accepted, res.rejects
    for p in res.pairs:
        q = p.pair.quality
        assert q.camera_status == "static" and q.background_residual <= 2 and p.pair.stabilise_matrix is None


def test_a_small_handheld_shake_is_stabilised(detector, clips):  # noqa: F811
    res = run_clip(make("handheld_shake", clips), detector)
    assert res.accepted, res.rejects
    stabilised = [p for p in res.pairs if p.pair.quality.camera_status == "stabilised"]
    assert stabilised
    for p in stabilised:
        q, m = p.pair.quality, p.pair.motion
        # the shake is taken out: what the background still differs by is near zero
        assert 0.006 < m.camera_motion <= MotionConfig().max_camera_motion
        assert q.background_residual <= MotionConfig().max_background_residual
        assert len(p.pair.stabilise_matrix) == 6 and p.pair.crop_box is not None
        print(f"{p.pair.pair_id}: camera {m.camera_motion:.3f}, residual {q.background_residual:.1f} gray levels")


def test_an_overlay_that_appears_rejects_the_pairs_spanning_it(detector, clips):  # noqa: F811
    spec = KINDS["overlay_popup"]
    path = make("overlay_popup", clips)
    res = run_clip(path, detector)
    t = spec.facts["change_s"]
    for p in res.pairs:  # pairs may be taken on either side of the change, never across it
        assert (p.pair.before_time_s < t) == (p.pair.after_time_s < t)
    # every candidate spans the change (the dribbler's camera drifts over such spans: allowed here, so
    # that the overlay is what decides): the clip is rejected for it
    loose = {"max_camera_motion": 0.2, "max_background_residual": 30}
    across = run_clip(path, detector, pairing={"min_gap_s": 2.2, "max_gap_s": 4.0}, motion=loose)
    assert clip_reasons(across) == ["overlay_changed"], across.rejects
    # the measure itself, on a frame before and one after the pop-up
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    fps = vr.get_avg_fps()
    a, b = vr[int((t - 0.2) * fps)].asnumpy(), vr[int((t + 0.2) * fps)].asnumpy()
    people = detector([a, b])
    step = quality.background_step(a, b, people[0] + people[1])
    al = camera.align_pair(a, b, people[0], people[1], step.matrix, False, 0.006, 0.03, 6.0)
    assert al.largest_change > QualityConfig().max_overlay_change
    x0, y0, x1, y1 = spec.facts["box"]
    bx0, by0, bx1, by1 = al.change_box
    assert bx0 < x1 and bx1 > x0 and by0 < y1 and by1 > y0  # found where the pop-up is


def test_a_partner_hidden_for_part_of_the_clip_is_multiple_people(detector, clips):  # noqa: F811
    res = run_clip(make("hidden_partner", clips), detector)
    assert not res.accepted and clip_reasons(res) == ["multiple_people"], res.rejects
    assert "tracked" in res.rejects[-1].detail


def test_a_reflection_is_not_a_second_person(detector, clips):  # noqa: F811
    res = run_clip(make("mirror", clips), detector)
    assert res.accepted, res.rejects


@pytest.mark.parametrize("kind", ["horizontal_cut", "legs_cut_bottom", "counter"])
def test_bodies_cut_by_the_frame_or_hidden_are_partial(detector, clips, kind):  # noqa: F811
    res = run_clip(make(kind, clips), detector)
    assert not res.accepted and clip_reasons(res)[0] in KINDS[kind].reasons, res.rejects
    # the upper-body preset may accept what it sees as an upper body, never as a whole one
    upper = run_clip(
        make(kind, clips),
        detector,
        motion={
            "required_keypoints": ["left_shoulder", "right_shoulder"],
            "min_visible_keypoints": 5,
            "whole_body": False,
        },
        quality={"min_edge_margin": 0},
    )
    assert "partial_body" not in clip_reasons(upper)


def test_a_vertical_video_between_blurred_copies_of_itself_is_the_picture(detector, clips, monkeypatch):  # noqa: F811
    """A phone video shown as YouTube shows it, between blurred, enlarged copies of itself: the bands
    are found (the straight edges either side of the picture), nobody is looked for and no background
    compared in them, and the crops stay inside the picture. Without the bands found the blurred copies,
    changing with the picture, reject every pair (overlay_changed, shot_cut, camera_motion)."""
    path = make("blur_fill", clips)
    picture = KINDS["blur_fill"].facts["picture"]
    frames, _ = read(path)
    assert body.content_box(list(frames[::5])) == picture
    res = run_clip(path, detector)
    assert res.pairs, res.rejects
    for p in res.pairs:
        x1, _, x2, _ = p.pair.crop_box
        assert picture[0] <= x1 and x2 <= picture[2], p.pair.crop_box
    monkeypatch.setattr(body, "framed_picture", lambda frames, box: box)
    assert body.content_box(list(frames[::5])) == (0, 0, 640, 360)
    assert not run_clip(path, detector).pairs


def _room(floor_and_ceiling: bool) -> list[np.ndarray]:
    """Eight frames of a plain room: a centred door far off (jambs at 280 and 360 from row 130 down), and the
    lines where the ceiling and the floor meet the wall (rows 108 and 252) when asked."""
    rng = np.random.default_rng(5)
    room = np.full((360, 640, 3), 190, np.uint8)
    room[130:, 280:284] = 90
    room[130:, 356:360] = 90
    if floor_and_ceiling:
        room[:108] = 225
        room[252:] = 120
    return [np.clip(room + rng.normal(0, 2, room.shape), 0, 255).astype(np.uint8) for _ in range(8)]


def test_a_room_s_own_edges_mirrored_about_the_middle_do_not_frame_it():
    """A centred door's jambs leave the top third of the frame: no band. The lines where the
    ceiling and the floor meet the wall run the whole width, mirrored about the middle, so the picture
    alone reads them as bands; a person standing on the floor (his ankles below the line) shows they
    are the room's own: the track keeps the whole frame and drops nobody."""
    from curation.stages.track import ClipTrack, FrameObs

    assert body.framed_picture(_room(False), (0, 0, 640, 360)) == (0, 0, 640, 360)
    frames = _room(True)
    assert body.content_box(frames) == (0, 108, 640, 252)
    k = np.zeros((17, 3))
    k[:, 0], k[:, 2] = 320, 0.9
    k[:, 1] = np.linspace(120, 300, 17)  # head under the ceiling line, ankles on the floor
    person = Pose17(keypoints=k.tolist(), frame_width=640, frame_height=360, box=[290, 110, 350, 310], score=0.9)
    obs = [FrameObs(i, i / 4, [person]) for i in range(8)]
    track = ClipTrack.build(obs, frames, MotionConfig(), QualityConfig())
    assert track.content == (0, 0, 640, 360) and track.bands is None
    assert all(o.poses == [person] for o in track.obs)


def test_a_scene_s_own_straight_edges_do_not_frame_a_picture():
    """A door frame on one side and a wall corner off the middle (straight, full-height edges that stay
    put) are not bands: framed_picture wants a pair of them mirrored about the middle. White bars are."""
    rng = np.random.default_rng(3)
    scene = np.full((360, 640, 3), 180, np.uint8)
    scene[:, 100:130] = 60  # a door frame
    scene[:, 420:] = 140  # a wall corner, 100 columns off the mirror image of the door
    scene = np.clip(scene + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
    frames = [scene.copy() for _ in range(8)]
    assert body.framed_picture(frames, (0, 0, 640, 360)) == (0, 0, 640, 360)
    barred = [f.copy() for f in frames]
    for f in barred:
        f[:, :160] = 250
        f[:, 480:] = 250
    assert body.framed_picture(barred, (0, 0, 640, 360)) == (160, 0, 480, 360)


@pytest.mark.parametrize("kind", ["crossfade", "fade_black", "card_dissolve"])
def test_no_pair_takes_a_frame_inside_a_transition(detector, clips, kind):  # noqa: F811
    res = run_clip(make(kind, clips), detector, pairing={"pairs_per_clip": 6})
    lo, hi = KINDS[kind].facts["span_s"]
    inside = [
        (p.pair.before_time_s, p.pair.after_time_s)
        for p in res.pairs
        if lo <= p.pair.before_time_s <= hi
        or lo <= p.pair.after_time_s <= hi
        or p.pair.before_time_s < lo < hi < p.pair.after_time_s
    ]
    assert not inside, inside


def test_a_faint_ghost_of_the_next_shot_is_measured_and_rejects_its_frame(detector, clips):  # noqa: F811
    """The first frame of a dissolve into a card holds an eighth of it: too faint for the background's
    change threshold, so only transition_mix (its place between the shots around it) keeps it out."""
    path = make("card_dissolve", clips)
    lo, _ = KINDS["card_dissolve"].facts["span_s"]
    off = run_clip(path, detector, pairing={"pairs_per_clip": 6}, quality={"max_transition_mix": 0.5})
    ghosts = [p.pair for p in off.pairs if abs(p.pair.after_time_s - lo) < 0.01]
    assert ghosts, [(p.pair.before_time_s, p.pair.after_time_s) for p in off.pairs]
    assert all(0.09 < g.quality.transition_mix < 0.16 for g in ghosts), [g.quality.transition_mix for g in ghosts]
    assert all(p.pair.quality.transition_mix == 0 for p in off.pairs if p.pair.after_time_s < lo)
    on = run_clip(path, detector, pairing={"pairs_per_clip": 6})
    assert on.accepted and all(p.pair.after_time_s < lo for p in on.pairs)


def test_a_cross_fade_between_two_camera_angles_of_one_room_is_kept_out(detector):  # noqa: F811
    """A real yoga clip (tests/data/extra) cross-fades from a front shot into a side shot of the same
    sunlit studio: the two views' colours correlate 0.67-0.70, over the cut threshold (0.5), so the
    dissolve's frames were not looked at and a pair took its after frame 10 % into the fade, a ghost
    of the other shot beside her. Under quality.transition_similarity (0.8) they are two shots."""
    path = Path(__file__).parent / "data" / "extra" / "yoga_views_crossfade.mp4"
    lo, hi = 1.9, 3.2  # the fade, as seen frame by frame

    def inside(res):
        times = [(p.pair.before_time_s, p.pair.after_time_s) for p in res.pairs]
        return [t for t in times if any(lo <= x <= hi for x in t) or t[0] < lo < hi < t[1]]

    on = run_clip(path, detector, pairing={"pairs_per_clip": 6})
    assert on.accepted and not inside(on), [(p.pair.before_time_s, p.pair.after_time_s) for p in on.pairs]
    off = run_clip(path, detector, pairing={"pairs_per_clip": 6}, quality={"transition_similarity": 0.5})
    assert inside(off)  # the cut threshold alone lets the ghost frame in


def test_blend_share_reads_a_mix_of_its_neighbours_and_nothing_else():
    """The dissolve figure on plain pictures: a frame that is 0.9 of one neighbour and 0.1 of the
    other reads 0.1 (whichever side is which); a picture of neither (a checkerboard: motion, not a mix)
    and frames of different sizes read 0."""
    from curation.stages.figures import blend_share

    a = np.full((64, 64), 20, np.uint8)
    b = np.full((64, 64), 220, np.uint8)
    x = (0.9 * a + 0.1 * b).astype(np.uint8)
    assert blend_share(a, x, b, 1.0, []) == pytest.approx(0.1, abs=0.01)
    assert blend_share(b, x, a, 1.0, []) == pytest.approx(0.1, abs=0.01)
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    assert blend_share(a, board, b, 1.0, []) == 0.0
    assert blend_share(a, x[:32], b, 1.0, []) == 0.0


def test_two_runs_decide_alike_and_borderline_pairs_are_marked(detector, clips):  # noqa: F811
    path = make("handheld_shake", clips)
    one, two = run_clip(path, detector), run_clip(path, detector)
    assert [p.pair.pair_id for p in one.pairs] == [p.pair.pair_id for p in two.pairs]
    assert [p.pair.quality.model_dump() for p in one.pairs] == [p.pair.quality.model_dump() for p in two.pairs]
    # a threshold set just under one pair's figure (5 % margin, under quality.borderline_margin):
    # that pair is borderline, dropped by default, kept and marked with borderline: keep
    pair = one.pairs[0].pair
    near = {"min_person_change": pair.quality.person_change / 1.05}
    kept = run_clip(path, detector, quality={**near, "borderline": "keep"})
    dropped = run_clip(path, detector, quality=near)
    assert pair.pair_id not in {p.pair.pair_id for p in dropped.pairs}
    (marked,) = [p.pair for p in kept.pairs if p.pair.pair_id == pair.pair_id]
    assert marked.quality.borderline and "person_change" in marked.quality.borderline_checks
    assert 0 < marked.quality.min_margin < 0.1


def test_person_crops_are_one_box_for_both_frames(detector, clips):  # noqa: F811
    res = run_clip(make("plain_static", clips), detector)
    for p in res.pairs:
        pair = p.pair
        x1, y1, x2, y2 = pair.crop_box
        assert (pair.frame_width, pair.frame_height) == (x2 - x1, y2 - y1)
        assert (pair.decoded_width, pair.decoded_height) == (360, 640) and pair.source_width == 360
        for pose in (pair.before_pose, pair.after_pose):  # the person lies inside the stored image
            bx1, by1, bx2, by2 = pose.box
            assert bx1 >= -1 and by1 >= -1 and bx2 <= pair.frame_width + 1 and by2 <= pair.frame_height + 1
            assert pose.frame_width == pair.frame_width


def test_person_box_pads_keeps_the_aspect_and_never_cuts_the_person():
    box = crop.person_box([[100, 100, 150, 300], [120, 110, 180, 290]], (0, 0, 640, 480), 0.1, 1.0)
    x1, y1, x2, y2 = box
    assert x1 <= 100 and y1 <= 100 and x2 >= 180 and y2 >= 300
    assert abs((x2 - x1) - (y2 - y1)) <= 2  # square
    # a tall person in a portrait frame: the crop keeps the person whole, the aspect gives way
    tall = crop.person_box([[50, 20, 300, 600]], (0, 0, 360, 640), 0.1, 1.0)
    assert tall[1] <= 20 and tall[3] >= 600 and tall[0] >= 0 and tall[2] <= 360
    # inside letterbox bars
    inside = crop.person_box([[100, 40, 200, 200]], (0, 32, 340, 224), 0.2, 1.0)
    assert inside[1] >= 32 and inside[3] <= 224


def test_a_pose_moved_into_a_crop_and_back_is_the_same_pose():
    """crop.shift_pose (frame -> crop) and crop.unshift_pose (a pose found in a crop -> its frame, as the
    second look's crop look needs) undo each other."""
    from schemas.records import Pose17

    kps = [[100.0 + 3 * k, 60.0 + 5 * k, 0.9] for k in range(17)]
    pose = Pose17(keypoints=kps, frame_width=640, frame_height=360, box=[90.0, 50.0, 200.0, 160.0], score=0.8)
    box = (80, 40, 280, 240)
    inside = crop.shift_pose(pose, box)
    assert inside.box == [10.0, 10.0, 120.0, 120.0] and (inside.frame_width, inside.frame_height) == (200, 200)
    assert inside.keypoints[0] == [20.0, 20.0, 0.9]
    assert crop.unshift_pose(inside, box, 640, 360) == pose


def test_pair_precision_in_eval(tmp_path, capsys):
    import pandas as pd

    from curation.report.labels import pair_precision, read_pair_labels

    labels = tmp_path / "pairs.csv"
    labels.write_text("pair_id,clip,keep,why\np1,a,yes,clean\np2,a,no,background slides\n")
    samples = pd.DataFrame({"pair_id": ["p1", "p2", "p3"], "clip_id": ["a", "a", "b"]})
    pp = pair_precision(samples, read_pair_labels(labels))
    assert pp["precision"] == 0.5 and pp["labelled"] == 2 and [d["pair_id"] for d in pp["dropped"]] == ["p2"]
    assert [u["pair_id"] for u in pp["unlabelled"]] == ["p3"]
    json.dumps(pp)


def test_a_frame_replaced_inside_a_frame_folder_changes_its_identity(tmp_path):
    """The identity of a folder of frames hashes its frames, and its cache entry follows the frames'
    own stats: a frame rewritten in place (same name, same size, the folder's stat unchanged) is seen."""
    import os

    from curation.sources import ContentIds

    folder = tmp_path / "P01_01"
    folder.mkdir()
    for k in range(3):
        (folder / f"frame_{k:010d}.jpg").write_bytes(bytes([k]) * 500)
    ids = ContentIds(tmp_path / "cache.json")
    first = ids(str(folder))
    st = os.stat(folder)
    middle = folder / "frame_0000000001.jpg"
    middle.write_bytes(b"\xff" * 500)  # same size, other content
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(folder).st_mtime_ns == st.st_mtime_ns
    assert ids(str(folder)) != first
    assert ContentIds()(str(folder)) == ids(str(folder))  # the same answer without a cache


def test_a_graphic_inside_the_person_box_but_off_the_body_is_an_overlay(detector, clips):  # noqa: F811
    """The detector's box is not the body: a graphic drawn inside it, apart from the limbs (a cartoon
    beside the legs, a caption under the feet), changes the picture where the person is not. It is
    measured as an overlay change; the same frame pair without it measures none."""
    import decord

    path = make("plain_static", clips)
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    a = vr[16].asnumpy()  # his arms and legs spread: room inside his box off the body
    (person,) = [p for p in detector([a])[0] if p.score >= 0.5][:1]
    s = quality.small_gray(a)[1]
    h, w = quality.small_gray(a)[0].shape
    shapes, reach = camera.body_shapes((h, w), [person], [person], np.eye(2, 3), s)
    pad = int(np.ceil(reach / s)) + 2  # beyond the body's reach
    # a spot inside the box (a 24 px square) clear of the drawn body by its reach
    x1, y1, x2, y2 = (int(v) for v in person.box)

    def clear(x: int, y: int) -> bool:
        rows = slice(max(0, int((y - pad) * s)), int((y + 24 + pad) * s))
        cols = slice(max(0, int((x - pad) * s)), int((x + 24 + pad) * s))
        return bool((shapes[rows, cols] == 255).all())

    spot = next((x, y) for y in range(y1 + 2, y2 - 26, 2) for x in range(x1 + 2, x2 - 26, 2) if clear(x, y))
    b = a.copy()
    cv2 = pytest.importorskip("cv2")
    cv2.rectangle(b, spot, (spot[0] + 24, spot[1] + 24), (200, 30, 30), -1)  # the graphic
    cv2.putText(b, "GO", (spot[0] + 1, spot[1] + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2)
    args = (np.eye(2, 3), False, 0.006, 0.03, 6.0)
    marked = camera.align_pair(a, b, [person], [person], *args)
    assert marked.largest_change > QualityConfig().max_overlay_change, marked
    bx0, by0, bx1, by1 = marked.change_box
    assert bx0 <= spot[0] + 24 and bx1 >= spot[0] and by0 <= spot[1] + 24 and by1 >= spot[1]
    assert camera.align_pair(a, a.copy(), [person], [person], *args).largest_change == 0.0


def two_frames(detector, clips):  # noqa: F811
    """Frames 4 and 16 of the clipkit dribbler on a plain static background (RGB), and his pose in each."""
    import decord

    path = make("plain_static", clips)
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    a, b = vr[4].asnumpy(), vr[16].asnumpy()
    (pa,), (pb,) = ([p for p in detector([f])[0] if p.score >= 0.5][:1] for f in (a, b))
    return a, b, pa, pb


def test_a_graphic_drawn_over_the_body_in_one_frame_is_an_overlay(detector, clips):  # noqa: F811
    """Form lines drawn over the body (a saturated yellow stroke from shoulder to hip to ankle, as
    fitness videos draw them) lie inside the person, where the background comparison does not look:
    the stroke in one frame only is the figure. The person's own motion between the frames, a yellow
    top worn in both (a blob, not a stroke) and a line in the scene in both frames are not."""
    import cv2

    a, b, pa, pb = two_frames(detector, clips)
    args = (np.eye(2, 3), False, 0.006, 0.03, 6.0)
    limit = QualityConfig().max_graphic_stroke

    def drawn(frame, pose, lines=False, top=False, scene=False):
        out = frame.copy()
        k = np.asarray(pose.keypoints)[:, :2].astype(int)
        if top:  # a yellow top: the trunk filled
            cv2.fillConvexPoly(out, k[[5, 6, 12, 11]], (250, 230, 20))
        if lines:  # shoulder -> hip -> ankle, with the joints marked
            for i, j in ((5, 11), (11, 15)):
                cv2.line(out, tuple(k[i]), tuple(k[j]), (255, 240, 0), 4, cv2.LINE_AA)
            for i in (5, 11, 15):
                cv2.circle(out, tuple(k[i]), 7, (255, 240, 0), -1, cv2.LINE_AA)
        if scene:  # a court line across the floor, in the scene
            cv2.line(out, (0, out.shape[0] - 12), (out.shape[1], out.shape[0] - 12), (230, 40, 40), 3)
        return out

    plain = camera.align_pair(a, b, [pa], [pb], *args).graphic_stroke
    assert plain is not None and plain <= limit
    marked = camera.align_pair(a, drawn(b, pb, lines=True), [pa], [pb], *args).graphic_stroke
    assert marked > limit, marked
    worn = camera.align_pair(drawn(a, pa, top=True), drawn(b, pb, top=True), [pa], [pb], *args)
    assert worn.graphic_stroke <= limit, worn
    court = camera.align_pair(drawn(a, pa, scene=True), drawn(b, pb, scene=True), [pa], [pb], *args)
    assert court.graphic_stroke <= limit, court


# the colours pose-estimation demos draw their skeletons in (RGB): OpenPose's and MMPose's limb palettes
SKELETON_COLOURS = [(255, 0, 0), (255, 170, 0), (170, 255, 0), (0, 255, 85), (0, 170, 255), (85, 0, 255)]
BONES = [
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
    (5, 11),
    (6, 12),
    (5, 6),
    (11, 12),
]  # arms, legs, trunk


def skeleton_over(frame, pose, bones=BONES, shift=0.04, seed=0):
    """A pose skeleton drawn over the person as another model would: its joints a little off ours
    (up to `shift` torso lengths), a 3-px coloured line per limb and a dot per joint."""
    import cv2

    from curation import geometry

    out = frame.copy()
    k = geometry.keypoints(pose)[:, :2]
    k = k + np.random.default_rng(seed).uniform(-shift, shift, k.shape) * geometry.torso_length(
        geometry.keypoints(pose)
    )
    for n, (i, j) in enumerate(bones):
        colour = SKELETON_COLOURS[n % len(SKELETON_COLOURS)]
        cv2.line(out, tuple(int(v) for v in k[i]), tuple(int(v) for v in k[j]), colour, 3, cv2.LINE_AA)
    for i in {i for b in bones for i in b}:
        cv2.circle(out, tuple(int(v) for v in k[i]), 4, (255, 255, 0), -1, cv2.LINE_AA)
    return out


def test_a_pose_skeleton_drawn_over_the_person_is_an_overlay(detector, clips):  # noqa: F811
    """A coloured skeleton drawn joint to joint over the body (pose-estimation demos) is redrawn in every
    frame, so the difference between the frames hardly shows it: the share of limbs with a drawn line
    along them, arms and legs both, is the figure. The plain frames, coloured sleeves and leggings
    (blobs), stripes down both legs alone, lines along three limbs (under the limit and outside its
    margin), stripes across every limb and a body with under 4 limbs seen stay under it or are not
    measured."""
    import cv2

    from curation import geometry

    a, b, pa, pb = two_frames(detector, clips)
    q = QualityConfig()
    limit, kp = q.max_drawn_skeleton, MotionConfig().keypoint_conf
    plain = [silhouette.drawn_skeleton(f, p, kp) for f, p in ((a, pa), (b, pb))]
    assert all(v is not None and v <= 0.25 for v in plain), plain
    for frame, pose, seed in ((a, pa, 0), (b, pb, 1)):
        drawn = silhouette.drawn_skeleton(skeleton_over(frame, pose, seed=seed), pose, kp)
        assert drawn > limit and drawn >= 0.75, drawn
    # a body facing the camera, limbs apart, on a plain canvas: each limb's line is its own
    head_xy = [(200, 100), (210, 92), (190, 92), (220, 96), (180, 96)]
    arms_xy = [(250, 150), (150, 150), (300, 220), (100, 220), (330, 290), (70, 290)]
    legs_xy = [(235, 300), (165, 300), (260, 420), (140, 420), (270, 540), (130, 540)]
    spread = head_xy + arms_xy + legs_xy
    front = Pose17(
        keypoints=[[x, y, 0.9] for x, y in spread], frame_width=400, frame_height=600, box=[60, 80, 340, 560], score=0.9
    )
    canvas = np.full((600, 400, 3), 128, np.uint8)
    assert silhouette.drawn_skeleton(canvas, front, kp) == 0.0
    assert silhouette.drawn_skeleton(skeleton_over(canvas, front, shift=0.02), front, kp) == 1.0
    legs = silhouette.drawn_skeleton(skeleton_over(canvas, front, bones=BONES[4:8]), front, kp)
    assert legs == 0.0, legs  # lines (a band, stripes) down both legs, 4 of the 8 limbs, no arm: not a skeleton
    three = silhouette.drawn_skeleton(skeleton_over(canvas, front, bones=[BONES[0], BONES[4], BONES[5]]), front, kp)
    assert three == 3 / 8 and three <= limit  # an arm and a leg: 3 of the 8 limbs
    assert (limit - three) / limit > q.borderline_margin  # nor borderline (stages/margins.py), so kept
    four = silhouette.drawn_skeleton(
        skeleton_over(canvas, front, bones=[BONES[0], BONES[1], BONES[4], BONES[5]]), front, kp
    )
    assert four == 0.5 and four > limit
    k = geometry.keypoints(pa)
    torso = geometry.torso_length(k)
    worn = a.copy()  # saturated sleeves and leggings: thick, limb-wide
    for i, j in BONES[:8]:
        p0, p1 = (tuple(int(v) for v in k[n, :2]) for n in (i, j))
        cv2.line(worn, p0, p1, (250, 230, 20), max(3, int(0.3 * torso)), cv2.LINE_AA)
    assert silhouette.drawn_skeleton(worn, pa, kp) <= 0.25
    striped = a.copy()  # thin neon stripes across every limb, 0.1 torso lengths apart
    for i, j in BONES[:8]:
        p0, p1 = k[i, :2], k[j, :2]
        u = (p1 - p0) / np.linalg.norm(p1 - p0)
        v = np.array([-u[1], u[0]]) * 0.15 * torso
        for s in np.arange(0.0, np.linalg.norm(p1 - p0), 0.1 * torso):
            c0 = p0 + u * s
            cv2.line(striped, tuple(int(x) for x in c0 - v), tuple(int(x) for x in c0 + v), (255, 40, 200), 3)
    assert silhouette.drawn_skeleton(striped, pa, kp) <= 0.25
    few = pa.model_copy(update={"keypoints": [[x, y, c if n < 9 else 0.0] for n, (x, y, c) in enumerate(pa.keypoints)]})
    assert silhouette.drawn_skeleton(skeleton_over(a, pa), few, kp) is None  # upper arms only: 2 limbs, under 4


def test_a_drawn_line_runs_along_a_limb_and_a_border_rim_is_not_one():
    """_lined on thin masks: a straight line along the limb (a little off its axis and at a slight
    angle, as another model's joints put it) is one; stripes across it or at an angle to it are not; a
    limb that runs off the picture meets nothing there, so a coloured rim along the border is not one."""
    torso = 100.0
    p, q = np.array([100.0, 60.0]), np.array([100.0, 200.0])
    along = np.zeros((300, 200), np.uint8)
    for y in range(60, 201):
        along[y, 104 + (y - 60) // 28] = 1  # 4-9 px off the axis, leaning by 5 px
    assert silhouette._lined(along, p, q, torso)
    across = np.zeros_like(along)
    across[60:201:10, 80:121] = 1
    assert not silhouette._lined(across, p, q, torso)
    diagonal = np.zeros_like(along)
    for y0 in range(0, 300, 12):
        for x in range(80, 121):
            y = y0 + (x - 80)
            if y < 300:
                diagonal[y, x] = 1
    assert not silhouette._lined(diagonal, p, q, torso)
    rim = np.zeros_like(along)
    rim[:, :3] = 1  # a coloured bar down the left border
    off = np.array([-150.0, 60.0]), np.array([-150.0, 200.0])  # a limb wholly off the picture, left of it
    assert not silhouette._lined(rim, *off, torso)
    assert silhouette._lined(rim, np.array([1.0, 60.0]), np.array([1.0, 200.0]), torso)  # the rim itself is a line


def test_a_real_clip_with_a_pose_skeleton_drawn_over_the_dancer_gives_no_pair(detector):  # noqa: F811
    """A real pose-estimation demo (tests/data/extra: a dancer on a stage with a coloured skeleton drawn
    over him in every frame). The fifth out-of-sample batch accepted two of its pairs: the skeleton's
    strokes are short and near the other frame's (graphic_stroke 0.73 and 0.90, under 1.2; plain squats
    on a wall read 0.90-0.95). With lines along most of his limbs it is overlay_changed; with the check
    off (max_drawn_skeleton 1) the same clip gives pairs."""
    path = Path(__file__).parent / "data" / "extra" / "dance_drawn_skeleton.mp4"
    on = run_clip(path, detector)
    assert not on.accepted, [(p.pair.before_time_s, p.pair.after_time_s) for p in on.pairs]
    assert [r.reason.value for r in on.rejects] == ["overlay_changed"], on.rejects
    off = run_clip(path, detector, quality={"max_drawn_skeleton": 1.0})
    limit = QualityConfig().max_drawn_skeleton
    assert off.accepted and all(p.pair.quality.drawn_skeleton > limit for p in off.pairs)


def test_a_cue_list_that_grows_beside_a_lifter_is_not_something_he_holds(detector, monkeypatch):  # noqa: F811
    """A real deadlift demo (tests/data/extra) with a list of cues beside the lifter that gains a line
    every few seconds. A new line at the bar's height is a thin straight row pointing at his hands, which
    the held-object rule took for something he holds (overlay_change 0; a pair from 5.54 to 9.34 s was
    accepted across two new lines). A row of many small pieces in one frame only is letters: with the
    rule (camera._glyphs) no pair spans a new line; without it (and without the text detector), one does."""
    path = Path(__file__).parent / "data" / "extra" / "deadlift_cue_list_grows.mp4"
    new_lines = (6.8, 8.9)  # seen frame by frame (the list also grows at 1.7, 13.5 and 18.3 s)

    def across(res):
        times = [(p.pair.before_time_s, p.pair.after_time_s) for p in res.pairs]
        return [t for t in times if any(t[0] < x < t[1] for x in new_lines)]

    from curation.stages import text_boxes

    detected = []
    find = text_boxes.text_boxes
    monkeypatch.setattr(text_boxes, "text_boxes", lambda frame: detected.append(1) or find(frame))
    on = run_clip(path, detector)
    assert on.accepted and not across(on), [(p.pair.before_time_s, p.pair.after_time_s) for p in on.pairs]
    assert detected and all(p.pair.quality.text_box_change == 0 for p in on.pairs)
    monkeypatch.setattr(camera, "_glyphs", lambda *args: False)
    # the text detector (text_box_change) is a second check on the same lines: off here (never called,
    # its figure not measured), so that this shows the glyph rule alone
    detected.clear()
    off = run_clip(path, detector, quality={"max_text_box_change": 1.0})
    assert across(off) and not detected
    assert all(p.pair.quality.text_box_change is None for p in off.pairs)


def test_bright_text_in_one_frame_only_is_an_overlay(detector, clips):  # noqa: F811
    """An exercise name or a pose-name caption that appears or changes between the frames, drawn in thin
    near-white letters by the feet (within the body's reach, where the background comparison leaves a
    change to the body): the word in one frame only is the figure. The same caption in both frames
    (shifted by a pixel, as a re-encoded frame shifts it) and the person's own motion are not."""
    import cv2

    a, b, pa, pb = two_frames(detector, clips)
    args = (np.eye(2, 3), False, 0.006, 0.03, 6.0)
    limit = QualityConfig().max_text_change
    h, w = b.shape[:2]
    feet = int(max(p.keypoints[k][1] for p in (pa, pb) for k in (15, 16)))  # the lower ankle
    x0 = max(2, int(min(pb.keypoints[15][0], pb.keypoints[16][0])) - w // 5)

    def on_mat(frame):  # a grey mat under the feet in both frames, as a yoga video's floor
        out = frame.copy()
        out[feet + h // 40 : feet + h // 8] = (90, 90, 95)
        return out

    def captioned(frame, text, dx=0, x=None):
        out = frame.copy()
        y = feet + h // 12
        at = (x0 if x is None else x) + dx
        cv2.putText(out, text, (at, y), cv2.FONT_HERSHEY_SIMPLEX, h / 700, (250, 250, 250), 2, cv2.LINE_AA)
        return out

    a, b = on_mat(a), on_mat(b)

    def text(x, y):  # on the pair's alignment, as the funnel measures it
        al = camera.align_pair(x, y, [pa], [pb], *args)
        assert al.status == "static", al
        return silhouette.text_change(x, y, al.matrix, al.scale, [pa], [pb])

    plain = text(a, b)
    assert plain is not None and plain <= limit, plain
    shown = text(a, captioned(b, "WARRIOR II"))
    assert shown > limit, shown
    changed = text(captioned(a, "WARRIOR II"), captioned(b, "TRIANGLE"))
    assert changed > limit, changed
    kept = text(captioned(a, "WARRIOR II"), captioned(b, "WARRIOR II", dx=1))
    assert kept <= limit, kept
    # the background comparison, by itself, leaves the appearing caption to the body's reach
    assert (
        camera.align_pair(a, captioned(b, "WARRIOR II"), [pa], [pb], *args).largest_change
        <= QualityConfig().max_overlay_change
    )

    # a camera that pans 24 px between the frames, taken out (a stabilised pair): a sign in the scene at
    # the left edge is in both frames; the strip of b that warped a does not cover is not new text
    pan = 24
    shift = np.array([[1.0, 0.0, pan], [0.0, 1.0, 0.0]])  # before -> after, in pixels (scale 1)
    moved = pb.model_copy(update={"keypoints": [[x - pan, y, c] for x, y, c in pb.keypoints]})

    def panned(after):  # the same scene seen 24 px further right, and the text figure over the pan
        before = np.ascontiguousarray(np.concatenate([after[:, pan:], after[:, -pan:]], axis=1))
        return silhouette.text_change(before, after, shift, 1.0, [moved], [pb])

    assert max(b.shape[:2]) <= 640  # measured at full size: the matrix is in these pixels
    signed, unsigned = panned(captioned(b, "GYM", x=2)), panned(b)
    assert signed == unsigned, (signed, unsigned)


def test_a_bar_the_hands_hold_is_not_an_overlay(detector, clips):  # noqa: F811
    """A landmine bar: one end on the floor, the other in his hand, at another angle in each frame as
    the hand moves. Its change runs far past the body's reach, in thin straight pieces that point at
    the hand, so it is the person's, not an overlay (tests/data/real/landmine_squat.mp4 is the real
    clip). The same strokes that do not reach towards a hand, a thick band from the hand (a pop-up's
    size) and a bar in one frame only that points nowhere near a hand stay overlay changes."""
    import cv2

    a, b, pa, pb = two_frames(detector, clips)
    args = (np.eye(2, 3), False, 0.006, 0.03, 6.0)
    limit = QualityConfig().max_overlay_change
    h, w = b.shape[:2]
    right = 10  # the right wrist
    hands = [tuple(int(v) for v in p.keypoints[right][:2]) for p in (pa, pb)]
    anchor = (6, h - 8) if hands[1][0] > w // 2 else (w - 6, h - 8)  # on the floor, away from him

    def bar(frame, start, end, thick=3, colour=(30, 30, 30)):
        out = frame.copy()
        cv2.line(out, start, end, colour, thick, cv2.LINE_AA)
        return out

    # the ball he dribbles leaves his reach between these frames: the largest change without a bar
    base = camera.align_pair(a, b, [pa], [pb], *args).largest_change
    assert base is not None, base
    plain = max(base, limit)
    held = camera.align_pair(bar(a, hands[0], anchor), bar(b, hands[1], anchor), [pa], [pb], *args)
    assert held.largest_change <= plain, held
    # a bar drawn in one frame only across the top of the picture, above his head: it points at no hand
    head = min(p.box[1] for p in (pa, pb))
    assert head > 60
    loose = camera.align_pair(a, bar(b, (6, 20), (w - 6, 50)), [pa], [pb], *args)
    assert loose.largest_change > 2 * plain, loose
    # a band as thick as a forearm from his hand to the floor, in one frame only
    torso = float(np.hypot(*(np.subtract(pb.keypoints[5][:2], pb.keypoints[11][:2]))))
    band = camera.align_pair(a, bar(b, hands[1], anchor, thick=int(0.5 * torso)), [pa], [pb], *args)
    assert band.largest_change > 2 * plain, band
