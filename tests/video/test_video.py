"""Video: frame sources, error messages, tracking with identities, overlays, writers, CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from tddfa.detection.faceboxes import box_iou
from tddfa.errors import InputError
from tddfa.io.video import ArraySource, Frame, VideoWriter, open_camera, open_video
from tddfa.video.overlay import draw_landmarks, draw_overlay
from tddfa.video.records import JsonlWriter, frame_record
from tddfa.video.tracker import VideoAligner

N_SMALL = 20
BAD_FRAME = 10


# ----------------------------------------------------------------------------- test videos


def _obama_frames(shared: Path, n: int, size=(640, 360)) -> list[np.ndarray]:
    src = open_video(shared / "samples" / "obama.mp4")
    out = []
    with src:
        for fr in src:
            out.append(cv2.resize(fr.image, size, interpolation=cv2.INTER_AREA))
            if len(out) == n:
                break
    return out


def _write_mjpg(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()
    return path


@pytest.fixture(scope="module")
def videos(shared, tmp_path_factory):
    """Small test videos made from the sample clip: good, one corrupted frame, empty, not a video."""
    d = tmp_path_factory.mktemp("videos")
    frames = _obama_frames(shared, N_SMALL)
    good = _write_mjpg(d / "good.avi", frames)
    data = bytearray(good.read_bytes())
    # MJPG: each frame is one JPEG (FF D8 FF ... FF D9); wipe frame BAD_FRAME completely
    starts = [i for i in range(len(data) - 2)
              if data[i] == 0xFF and data[i + 1] == 0xD8 and data[i + 2] == 0xFF]
    assert len(starts) == N_SMALL
    k = starts[BAD_FRAME]
    end = data.index(b"\xff\xd9", k) + 2
    data[k:end] = bytes(end - k)
    bad = d / "corrupt.avi"
    bad.write_bytes(bytes(data))
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    text = d / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    return {"good": good, "corrupt": bad, "empty": empty, "text": text, "frames": frames, "dir": d}


@pytest.fixture(scope="module")
def aligner(shared):
    from tddfa.pipeline.aligner import FaceAligner

    return FaceAligner(threads=1)


# ----------------------------------------------------------------------------- sources


def test_obama_has_158_frames_at_25_fps(shared):
    """All coded frames are returned (the file's edit list would hide the first 103)."""
    with open_video(shared / "samples" / "obama.mp4") as src:
        assert (src.width, src.height, src.fps) == (1280, 720, 25.0)
        frames = [(f.index, f.timestamp_ms) for f in src]
    assert len(frames) == 158
    assert [i for i, _ in frames] == list(range(158))
    ts = np.array([t for _, t in frames])
    assert ts[0] == 0.0 and np.all(np.diff(ts) > 0)
    assert src.skipped == []


def test_good_video_opencv_and_pyav_agree(videos):
    out = {}
    for backend in ("opencv", "pyav"):
        with open_video(videos["good"], backend=backend) as src:
            assert src.fps == pytest.approx(25.0)
            assert (src.width, src.height) == (640, 360)
            fr = list(src)
        assert [f.index for f in fr] == list(range(N_SMALL))
        np.testing.assert_allclose([f.timestamp_ms for f in fr], np.arange(N_SMALL) * 40.0, atol=1.0)
        out[backend] = fr
    for a, b in zip(out["opencv"], out["pyav"], strict=True):
        assert a.image.shape == b.image.shape == (360, 640, 3)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 3.0


@pytest.mark.parametrize("backend", ["opencv", "pyav"])
def test_corrupted_frame_is_skipped_and_logged(videos, backend, caplog):
    caplog.set_level(logging.WARNING, logger="tddfa")
    with open_video(videos["corrupt"], backend=backend) as src:
        idx = [f.index for f in src]
    assert idx == [i for i in range(N_SMALL) if i != BAD_FRAME]
    assert src.skipped == [BAD_FRAME]
    assert any(f"frame {BAD_FRAME} unreadable" in r.getMessage() for r in caplog.records)


def test_zero_length_missing_and_non_video_files(videos, tmp_path):
    with pytest.raises(InputError, match=r"empty file \(0 bytes\)"):
        open_video(videos["empty"])
    with pytest.raises(InputError, match="no such video file"):
        open_video(tmp_path / "nothing_here.mp4")
    with pytest.raises(InputError, match="could not open"):
        open_video(videos["text"])
    with pytest.raises(InputError, match="is a directory"):
        open_video(tmp_path)
    with pytest.raises(InputError, match="backend"):
        open_video(videos["good"], backend="gstreamer")


def test_missing_camera_gives_clear_message():
    with pytest.raises(InputError, match=r"camera 97 could not be opened"):
        open_camera(97)


def test_array_source():
    imgs = [np.zeros((8, 9, 3), np.uint8)] * 3
    src = ArraySource(imgs, fps=10)
    fr = list(src)
    assert [f.timestamp_ms for f in fr] == [0.0, 100.0, 200.0]
    assert (src.width, src.height, src.frame_count) == (9, 8, 3)
    with pytest.raises(InputError):
        ArraySource([])


# ----------------------------------------------------------------------------- tracking


def test_track_small_video_one_identity(videos, aligner):
    va = VideoAligner(aligner, smoothing="centered")
    with open_video(videos["good"]) as src:
        res = list(va.track(src))
    assert [r.index for r in res] == list(range(N_SMALL))
    assert all(len(r.faces) == 1 for r in res)
    assert {r.faces[0].track_id for r in res} == {0}
    for r in res:
        f = r.faces[0]
        assert r.image is not None and (r.width, r.height) == (640, 360)
        # the face is where the detector puts it on that frame
        det = aligner.detect(r.image)[0] if r.index % 7 == 0 else None
        if det is not None:
            assert box_iou(f.box[None], det[None, :4])[0, 0] > 0.4
        x1, y1, x2, y2 = f.box
        assert x1 < f.landmarks[:, 0].mean() < x2 and y1 < f.landmarks[:, 1].mean() < y2
        assert f.params.shape == (62,) and np.all(np.isfinite(f.landmarks))


def test_video_mode_requires_increasing_timestamps(aligner, videos):
    va = VideoAligner(aligner)
    img = videos["frames"][0]
    assert len(va.process(img, 0.0)) == 1
    with pytest.raises(InputError, match="increase"):
        va.process(img, 0.0)
    with pytest.raises(InputError, match="uint8"):
        va.process(img.astype(np.float32), 100.0)
    with pytest.raises(InputError, match="centred smoothing"):
        VideoAligner(aligner, smoothing="centered").process(img, 0.0)


def test_two_faces_keep_their_identities_while_moving(shared, aligner):
    from tddfa.io.images import read_image
    from tddfa.video.stability import smooth_random_motion, synthesize_video

    img = read_image(shared / "samples" / "trump_hillary.jpg")
    h, w = img.shape[:2]
    m = smooth_random_motion(25, [w / 2, h / 2], max_rotation_deg=2, max_shift_px=15, seed=1)
    frames = synthesize_video(img, m)
    va = VideoAligner(aligner, redetect_every=5)
    res = list(va.track(ArraySource(frames), keep_images=False))
    assert all(len(r.faces) == 2 for r in res)
    first = {f.track_id: f.landmarks[:, 0].mean() for f in res[0].faces}
    assert set(first) == {0, 1}
    for r in res[1:]:
        xs = {f.track_id: f.landmarks[:, 0].mean() for f in r.faces}
        assert set(xs) == {0, 1}
        # each id stays on its own person (left/right order preserved)
        assert (xs[0] < xs[1]) == (first[0] < first[1])
    assert va.stats["new_tracks"] == 2 and va.stats["lost"] == 0


def test_new_face_is_picked_up_and_old_id_kept(shared, aligner):
    from tddfa.io.images import read_image

    img = read_image(shared / "samples" / "trump_hillary.jpg")
    full = aligner.detect(img)
    assert len(full) == 2
    right = full[np.argmax(full[:, 0])]
    hidden = img.copy()
    x1 = int(right[0]) - 10
    hidden[:, x1:] = 0  # the right-hand face is not there yet
    frames = [hidden] * 8 + [img] * 12
    # the frame changes abruptly when the face appears: not a scene cut for this test
    for overlap, found in ((False, 8), (True, 12)):
        va = VideoAligner(aligner, redetect_every=4, max_unconfirmed=0, cut_threshold=0,
                          overlap=overlap, search_lag=4)
        res = list(va.track(ArraySource(frames), keep_images=False))
        assert all(len(r.faces) == 1 for r in res[:found])
        assert {f.track_id for r in res[:found] for f in r.faces} == {0}
        # picked up by the first search after it appears (frame 8: 4 frames since the last);
        # searched on a worker thread, it is taken up 4 frames (search_lag) later
        assert all(len(r.faces) == 2 for r in res[found:])
        assert {f.track_id for r in res[found:] for f in r.faces} == {0, 1}
        left0 = [f for f in res[0].faces][0].landmarks[:, 0].mean()
        left_late = [f for f in res[-1].faces if f.track_id == 0][0].landmarks[:, 0].mean()
        assert abs(left0 - left_late) < 5.0
        va.close()


def test_lost_track_is_dropped_and_face_redetected(videos, aligner):
    good = videos["frames"]
    blank = np.zeros_like(good[0])
    # the face leaves: implausible landmarks or unconfirmed by the detector -> dropped
    frames = good[:5] + [blank] * 10 + good[5:10]
    # (blank frames would be scene cuts, which end every id: cut detection off here)
    va = VideoAligner(aligner, redetect_every=2, max_unconfirmed=2, keep_lost=30, cut_threshold=0)
    res = list(va.track(ArraySource(frames), keep_images=False))
    assert len(res) == len(frames)
    assert all(len(r.faces) == 1 for r in res[:5])
    assert len(res[14].faces) == 0  # gone by the end of the blank stretch
    assert all(len(r.faces) == 1 for r in res[15:])
    # the returning face overlaps the lost track: its id is revived
    assert {f.track_id for r in res for f in r.faces} == {0}


def test_max_faces(shared, aligner):
    from tddfa.io.images import read_image

    img = read_image(shared / "samples" / "trump_hillary.jpg")
    va = VideoAligner(aligner, max_faces=1)
    res = list(va.track(ArraySource([img] * 3), keep_images=False))
    assert [len(r.faces) for r in res] == [1, 1, 1]
    with pytest.raises(InputError):
        VideoAligner(aligner, max_faces=0)


# ----------------------------------------------------------------------------- overlays, writers


def test_draw_landmarks_and_overlays(videos, aligner):
    img = videos["frames"][0]
    va = VideoAligner(aligner)
    faces = va.process(img, 0.0)
    out = draw_landmarks(img, faces)
    assert out is not img and out.shape == img.shape
    assert np.array_equal(img, videos["frames"][0])  # input untouched
    changed = np.any(out != img, axis=2)
    lm = np.round(faces[0].landmarks[:, :2]).astype(int)
    assert changed[lm[:, 1], lm[:, 0]].mean() > 0.9
    x1, y1, x2, y2 = faces[0].box
    assert changed[: int(y1) - 40].sum() < 500  # drawing stays near the face (the id label)
    assert draw_overlay("none", img, faces) is img
    with pytest.raises(InputError, match="overlay"):
        draw_overlay("wire", img, faces)
    pytest.importorskip("tddfa.render.registry")
    mm = aligner.morphable_model
    mesh = draw_overlay("mesh", img, faces, mm.tri, mm)
    assert np.any(mesh[int(y1):int(y2), int(x1):int(x2)] != img[int(y1):int(y2), int(x1):int(x2)])
    assert draw_overlay("pose", img, faces).shape == img.shape


def test_video_writer_atomic_and_readable(tmp_path, videos):
    frames = videos["frames"][:6]
    out = tmp_path / "o.mp4"
    w = VideoWriter(out, 12.5, (640, 360), render=lambda im, faces: im[::-1].copy())
    for f in frames:
        w.write(f, faces=[])
    assert not out.exists()  # only the temporary file so far
    w.close()
    assert out.exists() and not list(tmp_path.glob(".*tmp*"))
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.5)
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if n == 0:  # the render hook was applied (image flipped upside down)
            assert np.abs(img.astype(int) - frames[0][::-1]).mean() < 6
        n += 1
    assert n == 6
    with pytest.raises(InputError, match="frame size"):
        VideoWriter(tmp_path / "x.mp4", 25, (640, 360)).write(np.zeros((10, 10, 3), np.uint8))
    w2 = VideoWriter(tmp_path / "aborted.avi", 25, (640, 360))
    w2.write(frames[0])
    w2.abort()
    assert not (tmp_path / "aborted.avi").exists() and not list(tmp_path.glob(".aborted*"))


def test_jsonl_writer_atomic(tmp_path, videos, aligner):
    va = VideoAligner(aligner)
    img = videos["frames"][0]
    src = ArraySource([img, img])
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as jw:
        for r in va.track(src, keep_images=False):
            jw.write(r)
        assert not path.exists()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[1])
    assert rec["frame"] == 1 and rec["timestamp_ms"] == 40.0
    (face,) = rec["faces"]
    assert face["id"] == 0 and len(face["box"]) == 4 and len(face["params"]) == 62
    assert np.array(face["landmarks"]).shape == (68, 3)
    assert set(face["pose"]) == {"yaw", "pitch", "roll"}
    with pytest.raises(RuntimeError), JsonlWriter(tmp_path / "bad.jsonl") as jw:
        jw.write({"frame": 0})
        raise RuntimeError("stop")
    assert not (tmp_path / "bad.jsonl").exists() and not list(tmp_path.glob(".bad*"))


def test_frame_record_rounding(aligner, videos):
    va = VideoAligner(aligner)
    r = next(iter(va.track(ArraySource([videos["frames"][0]]), keep_images=False)))
    rec = frame_record(r)
    f = r.faces[0]
    np.testing.assert_allclose(rec["faces"][0]["landmarks"], f.landmarks, atol=0.006)
    np.testing.assert_allclose(rec["faces"][0]["params"], f.params, rtol=1e-6)
    assert isinstance(Frame(0, 0.0, videos["frames"][0]).index, int)


# ----------------------------------------------------------------------------- command line


def _cli(argv):
    from tddfa.cli.main import main

    return main(argv)


def test_cli_corrupted_video_writes_every_readable_frame(videos, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="tddfa")
    out, jl = tmp_path / "c.avi", tmp_path / "c.jsonl"
    rc = _cli(["video", str(videos["corrupt"]), "-o", str(out), "--jsonl", str(jl), "--no-progress"])
    assert rc == 0
    recs = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [r["frame"] for r in recs] == [i for i in range(N_SMALL) if i != BAD_FRAME]
    assert all(len(r["faces"]) == 1 and r["faces"][0]["id"] == 0 for r in recs)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N_SMALL - 1
    assert any("unreadable" in r.getMessage() for r in caplog.records)


def test_cli_errors(videos, capsys):
    assert _cli(["video", str(videos["empty"]), "--no-progress"]) == 1
    assert "empty file (0 bytes)" in capsys.readouterr().err
    assert _cli(["video", "--camera", "97", "--no-progress"]) == 1
    assert "camera 97 could not be opened" in capsys.readouterr().err
    assert _cli(["video", "--no-progress"]) == 1
    assert "either a video file or --camera" in capsys.readouterr().err


def test_cli_obama_acceptance(shared, tmp_path):
    """`tddfa video obama.mp4 -o out.mp4 --jsonl out.jsonl`: 158 frames, one face id."""
    out, jl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    rc = _cli(["video", str(shared / "samples" / "obama.mp4"), "-o", str(out), "--jsonl", str(jl),
               "--no-progress"])
    assert rc == 0
    recs = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(158))
    assert {f["id"] for r in recs for f in r["faces"]} == {0}
    assert all(len(r["faces"]) == 1 for r in recs)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 158
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (1280, 720)


def test_cli_max_frames_pyav_and_smoothing_options(videos, tmp_path):
    jl = tmp_path / "m.jsonl"
    rc = _cli(["video", str(videos["good"]), "--jsonl", str(jl), "--max-frames", "5", "--backend", "pyav",
               "--smooth", "causal", "--min-cutoff", "0.5", "--beta", "0.1", "--no-progress"])
    assert rc == 0
    recs = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [r["frame"] for r in recs] == [0, 1, 2, 3, 4]
    assert _cli(["video", str(videos["good"]), "--window", "4", "--no-progress"]) == 1


def test_tracks_converging_on_one_face_are_merged(videos, aligner):
    from tddfa.video.tracks import Track

    img = videos["frames"][0]
    va = VideoAligner(aligner, redetect_every=0)
    (f,) = va.process(img, 0.0)
    # a second track on the same face (as after an occlusion): merged into the older id
    t = va._tracks[0]
    va._tracks.append(Track(7, t.face, t.roi + 3.0, 1.0, 0, 0, t.ref_size))
    faces = va.process(img, 40.0)
    assert [x.track_id for x in faces] == [0]


class _FakeCapture:
    """Stands in for cv2.VideoCapture(index): 3 frames, 2 failed reads, 2 frames, then nothing."""

    def __init__(self, index):
        self.script = [True, True, True, False, False, True, True]
        self.released = False

    def isOpened(self):
        return True

    def read(self):
        ok = self.script.pop(0) if self.script else False
        return (ok, np.full((6, 8, 3), 9, np.uint8)) if ok else (False, None)

    def get(self, prop):
        props = {cv2.CAP_PROP_FPS: 30.0, cv2.CAP_PROP_FRAME_WIDTH: 8, cv2.CAP_PROP_FRAME_HEIGHT: 6}
        return props.get(prop, 0.0)

    def set(self, prop, value):
        return True

    def release(self):
        self.released = True


def test_camera_source_with_a_fake_device(monkeypatch, caplog):
    import tddfa.io.video as video

    monkeypatch.setattr(video.cv2, "VideoCapture", _FakeCapture)
    caplog.set_level(logging.WARNING, logger="tddfa")
    with open_camera(0) as cam:
        assert cam.live and cam.fps == 30.0 and (cam.width, cam.height) == (8, 6)
        cam.max_consecutive_failures = 4
        frames = list(cam)
    assert [f.index for f in frames] == [0, 1, 2, 5, 6]
    assert cam.skipped == [3, 4]
    ts = [f.timestamp_ms for f in frames]
    assert all(b >= a for a, b in zip(ts, ts[1:], strict=False))
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped" in msgs and "stopping" in msgs


@pytest.mark.parametrize("name", ["0013.jpg", "trump_hillary.jpg"])
def test_first_frame_matches_the_official_landmark_pass(shared, aligner, name):
    """With init_iterations=0 the tracker's first frame is the official video tracker's
    detect → box crop → landmark re-crop, as recorded in the reference outputs."""
    from tddfa.io.images import read_image

    ref = json.loads((shared / "reference" / "official_mb05_samples.json").read_text())[name]
    img = read_image(shared / "samples" / name)
    faces = VideoAligner(aligner, init_iterations=0).process(img, 0.0)
    assert len(faces) == len(ref["faces"])
    for r in ref["faces"]:
        lp = np.array(r["landmark_pass"]["landmarks68"])
        best = min(np.abs(f.landmarks[:, :2] - lp[:, :2]).max() for f in faces)
        assert best < 0.01
