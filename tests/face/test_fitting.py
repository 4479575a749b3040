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
