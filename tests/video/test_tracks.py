"""Tracker state and robustness: scene cuts, association, minimum face size, validation, MOT
metrics (small synthetic clips)."""

from __future__ import annotations

import numpy as np
import pytest

from tddfa.io.video import ArraySource
from tddfa.video.mot import (
    Clip,
    TrueFace,
    gradient_background,
    mot_metrics,
    place,
    similarity,
    sprite_from_photo,
)
from tddfa.video.records import frame_record
from tddfa.video.tracker import VideoAligner
from tddfa.video.tracks import (
    RegionDetector,
    SceneCutDetector,
    TrackSet,
    association_cost,
    face_size,
    match,
)

# ----------------------------------------------------------------------------- no model needed


def _scene(colours, seed, shift=0):
    bg = gradient_background((320, 180), colours, seed=seed)
    return np.roll(bg, shift, axis=1)


def test_scene_cut_detector_fires_on_shot_changes_only():
    a = [_scene(((40, 90, 160), (150, 110, 60)), 1, s) for s in range(0, 40, 4)]
    b = [_scene(((120, 160, 90), (60, 60, 140)), 2, s) for s in range(0, 40, 4)]
    cd = SceneCutDetector(0.35)
    cuts = [cd(f) for f in a + b + a[:3]]
    assert cuts == [False] * 10 + [True] + [False] * 9 + [True, False, False]
    assert cd.last_distance < 0.35
    # a pan within one scene stays far below the threshold
    cd.reset()
    cd(a[0])
    cd(a[-1])
    assert cd.last_distance < 0.2


def test_match_is_optimal_and_gated():
    cost = np.array([[0.1, 0.2], [0.15, 0.9], [0.95, 0.99]])
    # greedy would give row 0 -> col 0 and leave row 1 without a partner
    assert sorted(match(cost, 0.7)) == [(0, 1), (1, 0)]
    assert match(np.zeros((0, 3)), 0.5) == []
    assert match(np.array([[0.8]]), 0.7) == []


def test_association_prefers_the_overlapping_box_of_similar_size():
    tracks = np.array([[0, 0, 100, 100], [200, 0, 260, 60]], float)
    dets = np.array([[205, 2, 262, 61], [5, 3, 104, 101], [0, 0, 30, 30]], float)
    c = association_cost(tracks, dets)
    assert c.shape == (2, 3)
    assert sorted(match(c, 0.8)) == [(0, 1), (1, 0)]


def _fake_face(x, y, s):
    from tddfa.face.results import Face, Pose

    lm = np.zeros((68, 3), np.float32)
    lm[:, 0] = x + np.linspace(0, s, 68)
    lm[:, 1] = y + np.linspace(0, s, 68)[::-1]
    box = np.array([x, y, x + s, y + s], np.float32)
    return Face(box, 1.0, box, np.zeros(62, np.float32), lm, Pose(0.0, 0.0, 0.0, np.eye(3), 1.0, np.zeros(3)))


def test_cut_ends_every_track_and_ids_are_never_reused():
    ts = TrackSet(keep_lost=10)
    a = ts.add(_fake_face(10, 10, 50), np.array([0, 0, 70, 70.0]), 1.0, 0)
    b = ts.add(_fake_face(100, 10, 50), np.array([90, 0, 160, 70.0]), 1.0, 0)
    ts.lose(b, "test", 1)
    assert [t.id for t in ts.live] == [a.id] and [t.id for t in ts.lost] == [b.id]
    # within the shot, a detection where b was revives b
    assert ts.revive(np.array([92, 2, 161, 71.0]), 3, 0.3) is b
    ts.lost.append(b)
    ts.cut(5)
    assert ts.live == [] and ts.lost == [] and ts.shot == 1
    assert ts.revive(np.array([92, 2, 161, 71.0]), 6, 0.3) is None
    c = ts.add(_fake_face(10, 10, 50), np.array([0, 0, 70, 70.0]), 1.0, 6)
    assert c.id not in (a.id, b.id) and c.shot == 1


def test_region_detector_maps_tile_boxes_back_to_the_image():
    calls = []

    def fake_detector(canvas):
        calls.append(canvas.shape)
        # one face in the middle of tile 1 (of 2), 32 px wide in tile pixels
        return np.array([[64 + 16, 16, 64 + 48, 48, 0.9]], np.float32)

    rd = RegionDetector(fake_detector, 64)
    img = np.zeros((200, 300, 3), np.uint8)
    out = rd(img, np.array([[0, 0, 64, 64], [100, 50, 228, 178.0]]))
    assert calls == [(64, 128, 3)]
    assert len(out[0]) == 0 and len(out[1]) == 1
    np.testing.assert_allclose(out[1][0, :4], [132, 82, 196, 146], atol=1e-4)
    assert out[1][0, 4] == pytest.approx(0.9)


def test_mot_metrics_counts():
    frame = np.zeros((100, 200, 3), np.uint8)

    def tf(i, x):
        return TrueFace(i, np.array([[x, 20], [x + 40, 60]], float))

    clip = Clip()
    clip.add_shot("a", [frame] * 4, [[tf(0, 10), tf(1, 100)]] * 4)
    clip.add_shot("b", [frame] * 2, [[tf(2, 10)]] * 2)
    box0, box1 = np.array([10, 20, 50, 60.0]), np.array([100, 20, 140, 60.0])
    outs = [
        [(0, box0), (1, box1)],
        [(0, box0), (5, box1)],                       # id switch on face 1
        [(0, box0)],                                  # face 1 missed
        [(0, box0), (5, box1), (9, np.array([150, 70, 160, 80.0]))],  # fragment + a false small
        [(0, box0)],                                  # id 0 carried across the cut
        [(7, box0)],                                  # and a switch
    ]
    m = mot_metrics(outs, clip, min_size=24)
    assert m["id_switches"] == 2 and m["ids_across_cuts"] == 1
    assert m["missed"] == 1 and m["fragmentations"] == 1
    assert m["false"] == 1 and m["below_min"] == 1
    assert m["required"] == 10 and m["outputs"] == 10



def test_early_check_is_used_only_for_the_tiles_it_started():
    from concurrent.futures import ThreadPoolExecutor

    from tddfa.video.redetect import EarlyCheck

    calls = []

    def regions(img, tiles):
        calls.append(tiles.copy())
        if tiles[0, 0] < 0:
            raise ValueError("bad tile")
        return [np.full((1, 5), tiles[0, 0], np.float32)]

    img = np.zeros((8, 8, 3), np.uint8)
    a, b = np.array([[1.0, 2, 3, 4]]), np.array([[1.0, 2, 3, 5]])
    with ThreadPoolExecutor(1) as pool:
        early = EarlyCheck(pool, regions, img, a)
        assert early.result(a.copy())[0][0, 0] == 1.0
        assert EarlyCheck(pool, regions, img, a).result(b) is None  # other tiles: run again
        assert EarlyCheck(pool, regions, img, a).result(np.vstack([a, a])) is None
        EarlyCheck(pool, regions, img, -a).discard()  # its error is dropped with it
        with pytest.raises(ValueError, match="bad tile"):
            EarlyCheck(pool, regions, img, -a).result(-a)
    assert len(calls) == 5

# ----------------------------------------------------------------------------- with the model


@pytest.fixture(scope="module")
def aligner(shared):
    from tddfa.pipeline.aligner import FaceAligner

    return FaceAligner(threads=1)


@pytest.fixture(scope="module")
def sprite(shared, aligner):
    from tddfa.io.images import read_image

    sp, _ = sprite_from_photo(aligner, read_image(shared / "samples" / "JianzhuGuo.jpg"))
    return sp


def _frame(sprite, face_px, x, y, colours=((40, 90, 160), (150, 110, 60)), seed=0):
    lm = sprite.landmarks[0]
    b = np.r_[lm.min(0), lm.max(0)]
    s = face_px / np.sqrt((b[2] - b[0]) * (b[3] - b[1]))
    return place(gradient_background((320, 240), colours, seed), sprite.image,
                 similarity(s, x, y))


def test_min_face_small_faces_are_skipped_and_reported(aligner, sprite):
    big = [_frame(sprite, 60, 100 + k, 40) for k in range(3)]
    small = [_frame(sprite, 14, 100 + k, 40) for k in range(3)]
    va = VideoAligner(aligner, min_face_size=24)
    res = list(va.track(ArraySource(big), keep_images=False))
    assert all(len(r.faces) == 1 and face_size(r.faces[0].box) >= 24 for r in res)
    # a 14 px face is not tracked, whether or not the detector finds it
    va = VideoAligner(aligner, min_face_size=24, score_threshold=0.3)
    res = list(va.track(ArraySource(small), keep_images=False))
    assert all(len(r.faces) == 0 for r in res)
    va2 = VideoAligner(aligner, min_face_size=10, score_threshold=0.3)
    found = list(va2.track(ArraySource(small), keep_images=False))
    if any(r.faces for r in found):  # the detector sees it: then it is reported as skipped
        assert any(len(r.skipped) for r in res)
        rec = frame_record(next(r for r in res if len(r.skipped)))
        assert rec["faces"] == [] and len(rec["skipped"]) >= 1


def test_cut_gives_new_ids_even_for_the_same_place(aligner, sprite):
    shot1 = [_frame(sprite, 70, 100 + 2 * k, 40) for k in range(4)]
    shot2 = [_frame(sprite, 70, 108 + 2 * k, 40, ((120, 160, 90), (60, 60, 140)), 3)
             for k in range(4)]
    va = VideoAligner(aligner)
    res = list(va.track(ArraySource(shot1 + shot2), keep_images=False))
    assert [r.cut for r in res] == [False] * 4 + [True] + [False] * 3
    ids1 = {f.track_id for r in res[:4] for f in r.faces}
    ids2 = {f.track_id for r in res[4:] for f in r.faces}
    assert len(ids1) == 1 and len(ids2) == 1 and not ids1 & ids2
    assert frame_record(res[4])["cut"] is True and "cut" not in frame_record(res[3])
    # without cut detection the face keeps its id across the (undetected) cut
    va = VideoAligner(aligner, cut_threshold=0)
    res = list(va.track(ArraySource(shot1 + shot2), keep_images=False))
    assert len({f.track_id for r in res for f in r.faces}) == 1


def test_validation_ends_a_track_whose_face_disappeared(aligner, sprite):
    face = [_frame(sprite, 70, 100 + 2 * k, 40) for k in range(4)]
    empty = gradient_background((320, 240), ((40, 90, 160), (150, 110, 60)), 0)
    gone = [empty] * 6  # the face is gone, the scene is the same (no cut)
    va = VideoAligner(aligner, validate_every=1, cut_threshold=0, redetect_every=0)
    res = list(va.track(ArraySource(face + gone), keep_images=False))
    assert all(len(r.faces) == 1 for r in res[:4])
    # a track with no face behind it is not drawn from the first frame without the face on
    # (on background the regressor may answer a profile pose: not a licence to keep the track)
    assert all(len(r.faces) == 0 for r in res[4:])
    assert va.stats["failed_checks"] + va.stats["lost"] >= 1


def test_occluded_face_keeps_its_id(aligner, sprite):
    frames = [_frame(sprite, 70, 100 + 2 * k, 40) for k in range(12)]
    for k in range(4, 7):  # covered for 3 frames
        frames[k] = frames[k].copy()
        frames[k][20:200, 80:260] = (90, 100, 110)
    va = VideoAligner(aligner, validate_every=1, cut_threshold=0)
    res = list(va.track(ArraySource(frames), keep_images=False))
    assert len(res[0].faces) == 1 and len(res[-1].faces) == 1
    assert {f.track_id for r in res for f in r.faces} == {0}


def test_cli_writes_cuts_and_new_ids_to_the_jsonl(aligner, sprite, tmp_path):
    import json

    import cv2

    from tddfa.cli.main import main

    shot1 = [_frame(sprite, 70, 100 + 2 * k, 40) for k in range(4)]
    shot2 = [_frame(sprite, 70, 108 + 2 * k, 40, ((120, 160, 90), (60, 60, 140)), 3)
             for k in range(4)]
    path = tmp_path / "two_shots.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    for f in shot1 + shot2:
        vw.write(f)
    vw.release()
    jl = tmp_path / "out.jsonl"
    assert main(["video", str(path), "--jsonl", str(jl), "--no-progress", "--min-face", "24",
                 "--cut-threshold", "0.35"]) == 0
    recs = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [r.get("cut", False) for r in recs] == [False] * 4 + [True] + [False] * 3
    ids = [{f["id"] for f in r["faces"]} for r in recs]
    assert all(len(i) == 1 for i in ids) and ids[0] == ids[3] and ids[4] == ids[7]
    assert not ids[3] & ids[4]


def test_profile_track_survives_a_blind_detector_a_frontal_one_does_not(aligner, sprite, shared,
                                                                       monkeypatch):
    from tddfa.io.images import read_image

    turned, _ = sprite_from_photo(aligner, read_image(shared / "samples" / "emma.jpg"), 0)
    assert abs(turned.yaws[0]) >= 50  # this face of the sample is turned by ~57 degrees
    for sp, survives in ((turned, True), (sprite, False)):
        frames = [_frame(sp, 80, 100 + k, 40) for k in range(8)]
        va = VideoAligner(aligner, validate_every=1, cut_threshold=0, redetect_every=0)
        res = [va.process(f, 40.0 * k) for k, f in enumerate(frames[:3])]
        assert all(len(r) == 1 for r in res)
        with monkeypatch.context() as m:  # the detector stops seeing the face
            m.setattr(va._regions, "detector", lambda img: np.zeros((0, 5), np.float32))
            m.setattr(va.aligner, "detect", lambda img: np.zeros((0, 5), np.float32))
            res = [va.process(f, 40.0 * (k + 3)) for k, f in enumerate(frames[3:])]
        if survives:
            assert all(len(r) == 1 for r in res) and {r[0].track_id for r in res} == {0}
        else:
            assert all(len(r) == 0 for r in res)


def test_overlapped_detector_work_gives_the_same_results_as_sequential(aligner, sprite, monkeypatch):
    # a face that moves, is covered (tracks lost and revived: the early tiles no longer match)
    # and comes back; validation on every frame
    frames = [_frame(sprite, 70, 100 + 2 * k, 40) for k in range(14)]
    for k in range(5, 8):
        frames[k] = frames[k].copy()
        frames[k][20:200, 80:260] = (90, 100, 110)
    # then it slides out of the frame: lost by the regression step itself, so the tiles started
    # early (one live track) are not the check's (one lost track)
    frames += [_frame(sprite, 70, 130 + 30 * k, 40) for k in range(8)]
    # a new shot with the face tracked: the cut is found beside the regression, which it drops
    shot2 = [_frame(sprite, 70, 100 + 2 * k, 40, ((120, 160, 90), (60, 60, 140)), 3)
             for k in range(6)]
    frames += [frames[0]] * 3 + shot2
    threads = []
    real = RegionDetector.__call__

    def spy(self, image, regions):
        import threading

        threads.append(threading.current_thread().name)
        return real(self, image, regions)

    monkeypatch.setattr(RegionDetector, "__call__", spy)
    runs = {}
    for overlap in (True, False):
        threads.clear()
        va = VideoAligner(aligner, validate_every=1, overlap=overlap)
        runs[overlap] = ([[(f.track_id, f.landmarks) for f in r.faces]
                          for r in va.track(ArraySource(frames), keep_images=False)], dict(va.stats))
        va.close()
        on_worker = sum(name.startswith("tddfa-check") for name in threads)
        assert (on_worker > 0) if overlap else (on_worker == 0)
    (a, stats_a), (b, stats_b) = runs[True], runs[False]
    assert stats_a == stats_b and stats_a["failed_checks"] + stats_a["lost"] >= 1
    assert stats_a["cuts"] >= 1
    assert [[i for i, _ in fr] for fr in a] == [[i for i, _ in fr] for fr in b]
    for fa, fb in zip(a, b, strict=True):
        for (_, la), (_, lb) in zip(fa, fb, strict=True):
            np.testing.assert_array_equal(la, lb)


def test_no_worker_reads_the_frame_after_a_failed_step(aligner, sprite, monkeypatch):
    import time

    from tddfa.video.tracks import SceneCutDetector

    frames = [_frame(sprite, 70, 100 + 2 * k, 40) for k in range(4)]
    va = VideoAligner(aligner, validate=False)  # only the cut test runs beside the regression
    for i, f in enumerate(frames[:2]):
        va.process(f, 40.0 * i)
    finished = []
    real = SceneCutDetector.__call__

    def slow_cut_test(self, image):
        time.sleep(0.2)
        out = real(self, image)
        finished.append(time.perf_counter())
        return out

    def broken(*a, **k):
        raise RuntimeError("the regressor failed")

    monkeypatch.setattr(SceneCutDetector, "__call__", slow_cut_test)
    monkeypatch.setattr(va.aligner, "align_rois", broken)
    with pytest.raises(RuntimeError, match="regressor failed"):
        va.process(frames[2], 80.0)
    returned = time.perf_counter()
    assert finished and finished[0] <= returned  # the cut test ran on a worker, and is over
    va.close()
