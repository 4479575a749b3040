"""Stability measure, synthetic motion, and the tracker's stability on synthetic video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tddfa.errors import InputError
from tddfa.video.stability import (
    Motion,
    face_size,
    similarity_matrices,
    smooth_random_motion,
    stability,
    stability_per_pair,
    still_motion,
    synthesize_video,
    transform_points,
    transform_points_3d,
)


def _square_landmarks(side=100.0, k=68):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, side, (k, 2))
    pts[0], pts[1] = (0, 0), (side, side)  # the box is exactly side × side
    return pts


def test_stability_zero_for_exact_motion_and_constant_bias():
    q0 = _square_landmarks()
    m = smooth_random_motion(20, q0.mean(0), seed=3)
    truth = transform_points(q0, m.matrices)
    assert stability(truth, truth) == 0.0
    assert stability(truth + np.array([3.0, -2.0]), truth) == pytest.approx(0.0, abs=1e-12)


def test_stability_value_for_known_jitter():
    q0 = _square_landmarks(side=100.0)
    truth = np.repeat(q0[None], 10, axis=0)
    d = 0.5
    pred = truth.copy()
    pred[1::2, :, 0] += d  # x alternates by d: every |Δp − Δq| is d
    np.testing.assert_allclose(face_size(truth), 100.0)
    assert stability(pred, truth) == pytest.approx(d / 100.0)
    per = stability_per_pair(pred, truth, size=50.0)
    np.testing.assert_allclose(per, d / 50.0)
    # 3-D input: only x, y count
    pred3 = np.concatenate([pred, np.random.default_rng(0).normal(size=pred.shape[:2] + (1,))], 2)
    truth3 = np.concatenate([truth, np.zeros(truth.shape[:2] + (1,))], 2)
    assert stability(pred3, truth3) == pytest.approx(d / 100.0)


def test_stability_errors():
    with pytest.raises(InputError, match="same shape"):
        stability(np.zeros((3, 68, 2)), np.zeros((3, 5, 2)))
    with pytest.raises(InputError, match="at least 2"):
        stability(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)))
    with pytest.raises(InputError, match="T, K"):
        stability(np.zeros((68, 2)), np.zeros((68, 2)))
    with pytest.raises(InputError, match="> 0"):
        stability(np.zeros((3, 68, 2)), np.zeros((3, 68, 2)))


def test_smooth_random_motion_bounds_and_determinism():
    c = np.array([50.0, 60.0])
    m = smooth_random_motion(100, c, max_rotation_deg=2.0, max_shift_px=4.0, max_scale=0.02, seed=7)
    assert len(m) == 100
    assert m.rotation_deg[0] == 0 and m.scale[0] == 1 and np.all(m.shift[0] == 0)
    assert np.abs(m.rotation_deg).max() == pytest.approx(2.0)
    assert np.abs(m.shift).max() == pytest.approx(4.0)
    assert np.abs(m.scale - 1).max() == pytest.approx(0.02)
    assert np.abs(np.diff(m.rotation_deg)).max() < 0.5  # smooth, not frame-to-frame noise
    m2 = smooth_random_motion(100, c, max_rotation_deg=2.0, max_shift_px=4.0, max_scale=0.02, seed=7)
    np.testing.assert_array_equal(m.matrices, m2.matrices)
    M = m.matrices[0]
    np.testing.assert_allclose(M, [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_similarity_matrices_geometry():
    c = np.array([10.0, 20.0])
    M = similarity_matrices([90.0], [2.0], [[1.0, 2.0]], c)
    # the centre only moves by the shift
    np.testing.assert_allclose(transform_points(c[None], M)[0, 0], c + [1, 2], atol=1e-12)
    # a point to the right of the centre goes up on screen (counter-clockwise), twice as far
    p = transform_points((c + [5.0, 0.0])[None], M)[0, 0]
    np.testing.assert_allclose(p, c + [1, 2] + [0, -10], atol=1e-9)


def test_synthesized_frames_follow_the_known_motion():
    """Warped image content lands exactly where transform_points says (bright dots)."""
    h, w = 160, 200
    img = np.zeros((h, w, 3), np.uint8)
    dots = np.array([[60.0, 50.0], [140.0, 70.0], [90.0, 120.0]])
    for x, y in dots:
        cv2.circle(img, (int(x), int(y)), 4, (255, 255, 255), -1)
    m = Motion(np.array([0.0, 3.0, -5.0]), np.array([1.0, 1.03, 0.97]),
               np.array([[0, 0], [4.5, -2.0], [-3.0, 6.0]]), np.array([100.0, 80.0]))
    frames = synthesize_video(img, m)
    assert frames.shape == (3, h, w, 3)
    np.testing.assert_array_equal(frames[0], img)
    expect = transform_points(dots, m.matrices)
    gray = frames[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(3):
        for k in range(3):
            ex, ey = expect[t, k]
            win = (np.abs(xx - ex) < 9) & (np.abs(yy - ey) < 9)
            wgt = gray[t] * win
            cx, cy = (wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()
            assert abs(cx - ex) < 0.15 and abs(cy - ey) < 0.15


def test_synthesize_video_rejects_bad_image():
    with pytest.raises(InputError, match="uint8"):
        synthesize_video(np.zeros((10, 10, 3), np.float32), still_motion(2, [5, 5]))


# ----------------------------------------------------------------------------- with the tracker


@pytest.fixture(scope="module")
def aligner(shared):
    from tddfa.pipeline.aligner import FaceAligner

    return FaceAligner(threads=1)


@pytest.fixture(scope="module")
def photo(shared):
    from tddfa.io.images import read_image

    return read_image(shared / "samples" / "JianzhuGuo.jpg")


def _track(aligner, frames, **kw):
    from tddfa.io.video import ArraySource
    from tddfa.video.tracker import VideoAligner

    va = VideoAligner(aligner, **kw)
    res = list(va.track(ArraySource(frames), keep_images=False))
    assert [len(r.faces) for r in res] == [1] * len(frames)
    assert {r.faces[0].track_id for r in res} == {0}
    return np.stack([r.faces[0].landmarks for r in res])


@pytest.mark.parametrize("smoothing", ["none", "causal", "centered"])
def test_still_frame_repeated_has_zero_jitter(aligner, photo, smoothing):
    frames = synthesize_video(photo, still_motion(30, [0, 0]))
    lm = _track(aligner, frames, smoothing=smoothing)
    assert np.abs(np.diff(lm, axis=0)).max() == 0.0
    assert stability(lm, lm[:1].repeat(30, 0)) == 0.0


def test_smoothing_lowers_synthetic_motion_stability(aligner, photo):
    ref = aligner.refine(photo, aligner.align(photo).faces)[0].landmarks
    m = smooth_random_motion(50, ref[:, :2].mean(0), seed=0)
    frames = synthesize_video(photo, m)
    truth = transform_points(ref, m.matrices)
    s = {mode: stability(_track(aligner, frames, smoothing=mode), truth)
         for mode in ("none", "causal", "centered")}
    # measured (percent of face size) and printed with -s
    print("synthetic stability %:", {k: round(v * 100, 4) for k, v in s.items()})
    assert s["causal"] < s["none"]
    assert s["centered"] < s["none"]
    assert s["none"] < 0.01  # tracking itself follows the motion (< 1 % of the face size)


# ----------------------------------------------------------------------------- out-of-plane motion


def test_out_of_plane_needs_mesh_and_rotations_are_proper():
    m = smooth_random_motion(10, [50, 50], max_yaw_deg=5, max_pitch_deg=3, seed=2)
    assert m.out_of_plane and not smooth_random_motion(10, [50, 50]).out_of_plane
    with pytest.raises(InputError, match="mesh"):
        synthesize_video(np.zeros((20, 20, 3), np.uint8), m)
    R = m.rotations_3d()
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    assert np.abs(np.degrees(np.arcsin(np.clip(R[:, 0, 2], -1, 1)))).max() <= 5.0 + 1e-9
    # without yaw/pitch the 3-D version is the 2-D similarity (z scaled)
    m2 = smooth_random_motion(6, [40, 30], seed=4)
    pts = np.random.default_rng(0).uniform(0, 80, (12, 3))
    p3 = transform_points_3d(pts, m2)
    np.testing.assert_allclose(p3[..., :2], transform_points(pts, m2.matrices), atol=1e-9)
    np.testing.assert_allclose(p3[..., 2], pts[None, :, 2] * m2.scale[:, None], atol=1e-9)


@pytest.fixture(scope="module")
def fitted(aligner, photo):
    face = aligner.refine(photo, aligner.align(photo).faces, dense=True)[0]
    return face, aligner.morphable_model


def test_mesh_warp_without_rotation_equals_the_2d_warp(photo, fitted):
    face, mm = fitted
    m = smooth_random_motion(4, face.vertices[:, :2].mean(0), seed=5)
    a = synthesize_video(photo, m).astype(np.int16)
    b = synthesize_video(photo, m, face.vertices, mm.tri).astype(np.int16)
    assert np.abs(a - b).mean() < 0.05
    assert np.abs(a - b).max() <= 2


def test_out_of_plane_synthetic_video_stability(aligner, photo, fitted):
    face, mm = fitted
    v = face.vertices
    m = smooth_random_motion(40, v[:, :2].mean(0), max_yaw_deg=6, max_pitch_deg=4, seed=0)
    frames = synthesize_video(photo, m, v, mm.tri)
    # the face really turns: the nose tip moves sideways relative to the face outline
    truth = transform_points_3d(v[mm.keypoints], m, pivot=v.mean(0))
    nose_offset = truth[:, 30, 0] - truth[:, [0, 16], 0].mean(axis=1)
    assert np.ptp(nose_offset) > 5.0
    s = {mode: stability(_track(aligner, frames, smoothing=mode), truth)
         for mode in ("none", "causal", "centered")}
    print("out-of-plane synthetic stability %:", {k: round(val * 100, 4) for k, val in s.items()})
    assert s["causal"] < s["none"] and s["centered"] < s["none"]
    assert s["none"] < 0.01
