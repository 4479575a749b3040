"""Smoothing: One-Euro and centred filters, image-frame parameters, face smoothers."""

from __future__ import annotations

import numpy as np
import pytest

from tddfa.errors import InputError
from tddfa.video.smoothing import (
    CausalFaceSmoother,
    CenteredFaceSmoother,
    OneEuroFilter,
    SmoothingConfig,
    centered_smooth,
    gaussian_weights,
    make_face_smoother,
    params_from_image,
    params_to_image,
)

# ----------------------------------------------------------------------------- generic filters


def test_one_euro_constant_input_is_returned_bitwise():
    x = np.array([[1.2345678, -9.87654321], [1e5, 3e-4]])
    f = OneEuroFilter(min_cutoff=1.0, beta=0.1)
    outs = [f(x, t / 25.0) for t in range(30)]
    for o in outs:
        assert np.array_equal(o, x)


def test_one_euro_reduces_noise_and_beta_reduces_lag():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 30.0
    noisy = rng.normal(0, 1.0, 200)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    smooth = np.array([f(np.array([v]), ti)[0] for v, ti in zip(noisy, t, strict=True)])
    assert smooth[50:].std() < 0.5 * noisy[50:].std()

    ramp = 100.0 * t  # units/s
    lag = {}
    for beta in (0.0, 0.1):
        f = OneEuroFilter(min_cutoff=1.0, beta=beta)
        out = np.array([f(np.array([v]), ti)[0] for v, ti in zip(ramp, t, strict=True)])
        lag[beta] = float(np.mean(ramp[100:] - out[100:]))
    assert lag[0.0] > 5.0  # a plain low-pass lags behind a ramp
    assert lag[0.1] < 0.3 * lag[0.0]


def test_one_euro_rejects_bad_time_and_shape():
    f = OneEuroFilter()
    f(np.zeros(3), 0.0)
    with pytest.raises(InputError, match="increase"):
        f(np.zeros(3), 0.0)
    with pytest.raises(InputError, match="shape"):
        f(np.zeros(4), 1.0)
    f.reset()
    assert np.array_equal(f(np.ones(4), 0.0), np.ones(4))


def test_one_euro_speed_fn_shares_one_cutoff():
    seen = []

    def speed(d):
        seen.append(d.copy())
        return float(np.abs(d).mean())

    f = OneEuroFilter(min_cutoff=1.0, beta=1.0, speed_fn=speed)
    f(np.zeros(2), 0.0)
    out = f(np.array([1.0, 10.0]), 0.1)
    # one alpha for both elements: outputs are in the ratio of the inputs
    assert out[1] / out[0] == pytest.approx(10.0)
    assert len(seen) == 1


def test_centered_smooth_constant_and_linear():
    const = np.full((20, 3), 7.123456789)
    assert np.array_equal(centered_smooth(const, window=7), const)
    ramp = np.arange(30, dtype=float)[:, None] * np.array([1.0, -2.0])
    out = centered_smooth(ramp, window=7, sigma=2.0)
    # a symmetric window leaves a straight line unchanged away from the ends
    np.testing.assert_allclose(out[3:-3], ramp[3:-3], atol=1e-9)
    rng = np.random.default_rng(1)
    noisy = rng.normal(0, 1, (500, 2))
    assert centered_smooth(noisy, window=9).std() < 0.6 * noisy.std()


def test_centered_smooth_valid_mask_and_errors():
    x = np.arange(10, dtype=float)
    x[4] = 1000.0
    valid = np.ones(10, bool)
    valid[4] = False
    out = centered_smooth(x, window=5, valid=valid)
    assert out[4] == 1000.0  # invalid frame left alone
    assert np.all(np.abs(out[[2, 3, 5, 6]] - np.array([2, 3, 5, 6])) < 0.5)  # and not used
    with pytest.raises(InputError, match="odd"):
        centered_smooth(x, window=4)


def test_gaussian_weights_normalised_and_symmetric():
    w = gaussian_weights(np.arange(-3, 4), 1.5)
    assert w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w[::-1])
    assert np.argmax(w) == 3


@pytest.mark.parametrize("kw", [dict(mode="x"), dict(target="pose"), dict(window=4),
                                dict(min_cutoff=0), dict(beta=-1), dict(sigma=0)])
def test_config_validation(kw):
    with pytest.raises(InputError):
        SmoothingConfig(**kw)


# ----------------------------------------------------------------------------- with the model


@pytest.fixture(scope="module")
def mm(shared):
    from tddfa.face.morphable_model import load_morphable_model

    return load_morphable_model("sparse")


@pytest.fixture(scope="module")
def base_params(shared):
    from tddfa.models.regressor import load_param_stats

    mean, std = load_param_stats()
    return mean.astype(np.float64), std.astype(np.float64)


def _face(mm, params, roi, track_id=0):
    from tddfa.face.morphable_model import to_image_frame
    from tddfa.face.pose import pose_from_params
    from tddfa.face.results import Face, Pose

    params = np.asarray(params, np.float32)
    roi = np.asarray(roi, np.float32)
    lm = to_image_frame(mm.reconstruct(params[None]), roi[None])[0]
    ang, R, s, t = pose_from_params(params)
    return Face(box=roi, score=1.0, roi_box=roi, params=params, landmarks=lm,
                pose=Pose(float(ang[0]), float(ang[1]), float(ang[2]), R, float(s), t),
                track_id=track_id)


def test_params_image_roundtrip_and_meaning(mm, base_params):
    mean, std = base_params
    rng = np.random.default_rng(2)
    params = mean + 0.3 * std * rng.normal(size=(4, 62))
    rois = np.array([[10, 20, 130, 140], [100, 50, 400, 350], [-30, -10, 90, 110], [5, 5, 65, 65.0]])
    img = params_to_image(params, rois)
    np.testing.assert_allclose(params_from_image(img, rois), params, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(img[:, 12:], params[:, 12:])
    # image-frame params reproduce the image landmarks directly (x, y; z up to the min shift)
    from tddfa.face.morphable_model import to_image_frame

    ref = to_image_frame(mm.reconstruct(params.astype(np.float32)), rois)
    P = img[:, :12].reshape(-1, 3, 4)
    s = mm.shape_vectors(params, dense=False).astype(np.float64)
    direct = np.einsum("bij,bnj->bni", P[:, :, :3], s) + P[:, None, :, 3]
    np.testing.assert_allclose(direct[..., :2], ref[..., :2], atol=2e-2)
    dz = direct[..., 2] - ref[..., 2]
    np.testing.assert_allclose(dz, dz[:, :1] * np.ones_like(dz), atol=2e-2)


def test_params_smoothing_ignores_crop_box_changes(mm, base_params):
    """The same head seen through different crop boxes is the same image-frame vector."""
    mean, _ = base_params
    roi_a = np.array([100.0, 100.0, 220.0, 220.0])
    face_a = _face(mm, mean, roi_a)
    roi_b = roi_a + np.array([7.0, -3.0, 7.0, -3.0])
    p_b = params_from_image(params_to_image(mean[None], roi_a[None]), roi_b[None])[0]
    face_b = _face(mm, p_b, roi_b)
    np.testing.assert_allclose(face_b.landmarks[:, :2], face_a.landmarks[:, :2], atol=1e-2)
    sm = CausalFaceSmoother(SmoothingConfig(mode="causal", min_cutoff=0.01), mm)
    sm([face_a], 0.0)
    out = sm([face_b], 0.04)[0]
    # even a heavy filter does not move the face when only the crop box changed
    np.testing.assert_allclose(out.landmarks[:, :2], face_a.landmarks[:, :2], atol=1e-2)
    np.testing.assert_array_equal(out.roi_box, roi_b)


def _moving_faces(mm, mean, n, noise, seed=0):
    rng = np.random.default_rng(seed)
    faces, truth = [], []
    for i in range(n):
        roi = np.array([100.0 + 2 * i, 80.0, 220.0 + 2 * i, 200.0])
        clean = _face(mm, mean, roi)
        p_img = params_to_image(mean[None], roi[None])[0]
        p_img[[3, 7]] += rng.normal(0, noise, 2)  # jitter the image-frame translation (px)
        noisy = _face(mm, params_from_image(p_img[None], roi[None])[0], roi)
        faces.append(noisy)
        truth.append(clean.landmarks)
    return faces, np.stack(truth)


@pytest.mark.parametrize("mode", ["causal", "centered"])
@pytest.mark.parametrize("target", ["params", "landmarks"])
def test_face_smoothers_reduce_jitter(mm, base_params, mode, target):
    from tddfa.video.stability import stability

    mean, _ = base_params
    faces, truth = _moving_faces(mm, mean, 40, noise=1.0)
    sm = make_face_smoother(SmoothingConfig(mode=mode, target=target), mm)
    if mode == "causal":
        out = [sm([f], i / 25.0)[0] for i, f in enumerate(faces)]
    else:
        out = []
        for i, f in enumerate(faces):
            out += [fs[0] for _, fs in sm.push(i, [f])]
        out += [fs[0] for _, fs in sm.flush()]
    assert len(out) == len(faces)
    raw = stability(np.stack([f.landmarks for f in faces]), truth)
    smooth = stability(np.stack([f.landmarks for f in out]), truth)
    assert smooth < 0.6 * raw
    if target == "params":  # landmarks and pose follow the smoothed parameters
        from tddfa.face.morphable_model import to_image_frame

        f = out[20]
        lm = to_image_frame(mm.reconstruct(f.params[None]), f.roi_box[None])[0]
        np.testing.assert_allclose(f.landmarks, lm, atol=1e-3)


def test_centered_smoother_order_delay_and_tracks(mm, base_params):
    mean, _ = base_params
    cfg = SmoothingConfig(mode="centered", window=5)
    sm = CenteredFaceSmoother(cfg, mm)
    roi = np.array([100.0, 80.0, 220.0, 200.0])
    emitted = []
    for i in range(8):
        faces = [_face(mm, mean, roi, track_id=0)]
        if 3 <= i < 6:  # a second face for three frames only
            faces.append(_face(mm, mean, roi + 300, track_id=1))
        got = list(sm.push(f"frame{i}", faces))
        emitted += got
        assert len(emitted) == max(0, i + 1 - cfg.half_window)
    emitted += list(sm.flush())
    assert [k for k, _ in emitted] == [f"frame{i}" for i in range(8)]
    assert [len(f) for _, f in emitted] == [1, 1, 1, 2, 2, 2, 1, 1]
    # a still face stays bitwise still
    for _, fs in emitted:
        np.testing.assert_array_equal(fs[0].landmarks, emitted[0][1][0].landmarks)
    assert make_face_smoother(SmoothingConfig(), mm) is None
