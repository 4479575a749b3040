"""Landmark fitting: synthetic round trip and NME on the real 300W crops."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_shared

pytestmark = needs_shared


def test_round_trip_recovers_pose_and_landmarks():
    from tddfa.face.fitting import fit_crop_landmarks, param_prior
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.face.pose import angles_to_rotation, pose_from_params

    mm = load_morphable_model()
    mean, std = param_prior()
    rng = np.random.default_rng(0)
    B = 6
    params = np.tile(mean, (B, 1))
    params[:, 12:] += std[12:] * rng.normal(size=(B, 50)) * 0.5
    yaws = np.radians([-70, -40, -10, 15, 45, 75])
    for i in range(B):
        R = angles_to_rotation(yaws[i], np.radians(rng.uniform(-20, 20)), np.radians(rng.uniform(-20, 20)))
        P = np.concatenate([R * 6e-4, np.array([[60.0], [62.0], [mean[11]]])], axis=1)
        params[i, :12] = P.reshape(-1)
    pts = mm.reconstruct(params)[..., :2]
    fit = fit_crop_landmarks(pts, reg=0.05, iterations=30)
    assert fit.params.shape == (B, 62) and fit.params.dtype == np.float32
    assert np.all(fit.rmse < 0.3), fit.rmse
    a_true = pose_from_params(params)[0]
    a_fit = pose_from_params(fit.params)[0]
    assert np.abs(a_true - a_fit).max() < 2.0, (a_true, a_fit)
    # the returned landmarks are those of the returned parameters
    np.testing.assert_allclose(mm.reconstruct(fit.params)[..., :2], fit.landmarks, atol=1e-2)


def test_nme_on_300w_helen_test(shared):
    from tddfa.face.crop import roi_from_landmarks
    from tddfa.face.fitting import fit_landmarks, nme

    d = np.load(shared / "datasets" / "300w-crops" / "helen_test.npz")
    lm = d["landmarks"]
    rois = np.stack([roi_from_landmarks(p) for p in lm])
    fit = fit_landmarks(lm, rois)
    e = nme(fit.landmarks, lm) * 100
    assert np.median(e) <= 2.5, np.median(e)
    assert np.percentile(e, 95) < 4.0


def test_frames_round_trip_and_bad_input():
    from tddfa.errors import InputError
    from tddfa.face.fitting import crop_to_image_frame, fit_landmarks, image_to_crop_frame
    from tddfa.face.morphable_model import to_image_frame

    rng = np.random.default_rng(1)
    pts = rng.uniform(10, 110, size=(2, 68, 3)).astype(np.float32)
    rois = np.array([[10, 20, 210, 220], [-5, 0, 95, 100]], np.float64)
    img = to_image_frame(pts, rois)[..., :2]
    np.testing.assert_allclose(image_to_crop_frame(img, rois), pts[..., :2], atol=1e-3)
    np.testing.assert_allclose(crop_to_image_frame(pts[..., :2], rois), img, atol=1e-3)
    with pytest.raises(InputError):
        fit_landmarks(np.zeros((2, 5, 2)), rois)
    with pytest.raises(InputError):
        fit_landmarks(np.zeros((3, 68, 2)), rois)


def _posed(yaw_deg: float) -> np.ndarray:
    """Mean-face parameters turned to ``yaw_deg`` (crop frame, scale of the mean)."""
    from tddfa.face.fitting import param_prior
    from tddfa.face.pose import angles_to_rotation

    mean, _ = param_prior()
    p = mean.copy()
    P = p[:12].reshape(3, 4)
    s = np.linalg.norm(P[0, :3])
    P[:, :3] = s * angles_to_rotation(np.radians(yaw_deg), 0.0, 0.0)
    p[:12] = P.reshape(-1)
    return p


def test_landmark_marching_moves_only_the_far_side_to_the_silhouette():
    from tddfa.face.fitting import CONTOUR, contour_lines, march_contour, marched_landmarks
    from tddfa.face.morphable_model import load_morphable_model

    mm = load_morphable_model()
    if not mm.has_dense:
        pytest.skip("needs the dense model")
    kp = np.asarray(mm.keypoints)
    lines = contour_lines()
    assert all(line[0] == kp[k] for k, line in enumerate(lines)) and len(lines[8]) == 1
    left = [k for k in CONTOUR if k < 8][:5]  # upper jaw: 0..4 and 12..16
    right = [k for k in CONTOUR if k > 8][-5:]
    moved = {}
    for yaw in (-60.0, 60.0):
        p = _posed(yaw)
        idx = march_contour(p[None])[0]
        assert np.array_equal(idx[17:], kp[17:]) and idx[8] == kp[8]
        moved[yaw] = (int((idx[left] != kp[left]).sum()), int((idx[right] != kp[right]).sum()))
        # the marched points are at least as far out (along the face's left-right axis) as the
        # fixed ones, and on the far side strictly further
        lm_m = marched_landmarks(p[None])[0]
        lm_f = mm.reconstruct(p[None])[0]
        e = p[:12].reshape(3, 4)[:2, 0] / np.linalg.norm(p[:12].reshape(3, 4)[:2, 0])
        for k in left + right:
            side = -1 if k < 8 else 1
            assert side * lm_m[k, :2] @ e >= side * lm_f[k, :2] @ e - 1e-3
    # one side moves at +60°, the other at −60°; the near side keeps its vertices
    assert sorted([moved[60.0][0], moved[60.0][1]]) [0] <= 1
    assert max(moved[60.0]) >= 4 and max(moved[-60.0]) >= 4
    assert np.argmax(moved[60.0]) != np.argmax(moved[-60.0])


def test_fit_with_marching(shared):
    from tddfa.face.crop import roi_from_landmarks
    from tddfa.face.fitting import fit_landmarks, nme

    z = np.load(shared / "datasets" / "300w-crops" / "helen_test.npz")
    lm = z["landmarks"][:40].astype(np.float64)
    rois = np.stack([roi_from_landmarks(p) for p in lm])
    e0 = nme(fit_landmarks(lm, rois).landmarks, lm).mean()
    e2 = nme(fit_landmarks(lm, rois, march=2).landmarks, lm).mean()
    assert e2 < e0 + 0.0005, (e0, e2)  # marching fits the contour at least as well
