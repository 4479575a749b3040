"""Morphable model, pose and crop policies against the official outputs (reference JSON)."""

import json

import numpy as np
import pytest

from tddfa.face.crop import crop_batch, crop_roi, roi_from_box, roi_from_landmarks, sample_rois
from tddfa.face.morphable_model import load_morphable_model, to_image_frame
from tddfa.face.pose import angles_to_rotation, pose_from_params, rotation_to_angles


@pytest.fixture(scope="module")
def reference(shared):
    data = json.loads((shared / "reference" / "official_mb05_samples.json").read_text())
    return [(name, f) for name, v in data.items() for f in v["faces"]]


def test_sparse_landmarks_match_official(reference):
    mm = load_morphable_model("sparse")
    for _name, f in reference:
        lm = to_image_frame(mm.reconstruct(np.array([f["param"]])), np.array([f["roi_box"]]))[0]
        np.testing.assert_allclose(lm, np.array(f["landmarks68"]), atol=2e-3)


def test_dense_model_is_exact_at_landmarks(reference):
    dense = load_morphable_model()
    assert dense.has_dense and dense.tri.shape == (76073, 3)
    sparse = load_morphable_model("sparse")
    params = np.array([f["param"] for _n, f in reference])
    v = dense.reconstruct(params, dense=True)
    assert v.shape == (len(params), 38365, 3)
    np.testing.assert_allclose(v[:, dense.keypoints], sparse.reconstruct(params), rtol=1e-4, atol=1e-2)


def test_pose_matches_official(reference):
    for _name, f in reference:
        angles = pose_from_params(np.array(f["param"]))[0]
        np.testing.assert_allclose(angles, f["pose_yaw_pitch_roll_deg"], atol=1e-3)


def test_roi_policies_match_official(reference):
    for _name, f in reference:
        np.testing.assert_allclose(roi_from_box(f["box"]), f["roi_box"], atol=1e-3)
        lp = f["landmark_pass"]
        np.testing.assert_allclose(roi_from_landmarks(np.array(f["landmarks68"])), lp["roi_box"], atol=1e-3)


@pytest.mark.parametrize("yaw,pitch,roll", [(0.3, -0.2, 0.1), (-1.2, 0.5, -2.0), (0.0, 0.0, 0.0)])
def test_angles_round_trip(yaw, pitch, roll):
    np.testing.assert_allclose(rotation_to_angles(angles_to_rotation(yaw, pitch, roll)), [yaw, pitch, roll],
                               atol=1e-9)


def test_gimbal_lock():
    R = angles_to_rotation(np.pi / 2, 0.3, 0.0)
    yaw, _pitch, roll = rotation_to_angles(R)
    assert yaw == pytest.approx(np.pi / 2) and roll == 0.0



def test_pose_of_a_few_faces_equals_the_array_path():
    import warnings

    from tddfa.face.pose import _pose_few, decompose_projection

    rng = np.random.default_rng(0)
    P = rng.normal(size=(60, 62))
    for k, yaw in enumerate(np.radians([90, -90, 89.99, -89.99, 87.0, 0.0])):  # gimbal lock
        P[k, :12] = np.c_[angles_to_rotation(yaw, 0.3, 0.2) * 1e-3, [60, 60, 50]].ravel()
    P[10, 2], P[11, :] = np.nan, np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nan/inf rows
        scale, R, t = decompose_projection(P[:, :12].reshape(-1, 3, 4))
        angles = np.degrees(rotation_to_angles(R))
    for i in range(0, len(P), 6):
        a, r, s, tt = _pose_few(P[i : i + 6])
        np.testing.assert_allclose(a, angles[i : i + 6], atol=1e-9, equal_nan=True)
        np.testing.assert_allclose(r, R[i : i + 6], atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(s, scale[i : i + 6], rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(tt, t[i : i + 6])
    assert np.isnan(pose_from_params(P[10:12])[0]).all()
    zero = np.zeros((1, 62))  # a zero row: the array path's nan, not an exception
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(pose_from_params(zero)[0]).all()

def test_crop_outside_image_is_zero_filled():
    img = np.full((50, 60, 3), 200, np.uint8)
    c = crop_roi(img, np.array([-60.0, -50.0, 60.0, 70.0]))
    assert c.shape == (120, 120, 3)
    # the image covers crop columns 60..120 and rows 50..100; the rest is zero fill
    assert c[:45, :].max() == 0 and c[:, :55].max() == 0 and c[105:].max() == 0
    assert c[55:95, 65:115].min() == 200
    inside = crop_roi(img, np.array([0.0, 0.0, 60.0, 50.0]))
    assert inside.min() == 200


@pytest.mark.parametrize("dense", [False, True])
def test_fused_image_reconstruction_equals_two_step(reference, dense):
    mm = load_morphable_model()
    params = np.array([f["param"] for _n, f in reference], np.float32)
    rois = np.array([f["roi_box"] for _n, f in reference])
    fused = mm.reconstruct_image(params, rois, dense=dense)
    two_step = to_image_frame(mm.reconstruct(params, dense=dense), rois)
    np.testing.assert_allclose(fused, two_step, atol=2e-3 * np.abs(two_step).max() / 1000 + 1e-2)


def test_sparse_only_model_refuses_dense(shared):
    from tddfa.errors import AssetError

    mm = load_morphable_model("sparse")
    assert not mm.has_dense
    with pytest.raises(AssetError, match="dense reconstruction needs a dense model"):
        mm.reconstruct_image(np.zeros((1, 62), np.float32), np.array([[0, 0, 120, 120]]), dense=True)
    with pytest.raises(AssetError, match="dense reconstruction needs a dense model"):
        mm.reconstruct(np.zeros((1, 62), np.float32), dense=True)


def test_sample_rois_matches_the_crop_within_rounding():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    img = np.ascontiguousarray(np.repeat(np.repeat(img, 4, 0), 4, 1))  # smooth-ish: 4x4 blocks
    rois = np.array([[-40.0, -30.0, 200.0, 210.0], [100.4, 60.6, 300.2, 260.9],
                     [400.0, 300.0, 640.0, 540.0], [10.0, 10.0, 10.0, 50.0]])
    a, b = crop_batch(img, rois, 96).astype(int), sample_rois(img, rois, 96).astype(int)
    assert a.shape == b.shape == (4, 96, 96, 3)
    assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.2
    assert not b[3].any()  # an empty roi gives a zero tile


def test_dense_pass_is_the_same_on_any_number_of_threads(monkeypatch):
    from tddfa.face._dense_kernel import dense_affine, dense_threads

    rng = np.random.default_rng(3)
    n, k, b = 5000, 50, 3
    u = rng.normal(size=3 * n).astype(np.float32)
    w = rng.normal(size=(3 * n, k)).astype(np.float32)
    alpha = rng.normal(size=(b, k)).astype(np.float32)
    M = rng.normal(size=(b, 3, 3)).astype(np.float32)
    c = rng.normal(size=(b, 3)).astype(np.float32)
    outs = []
    for threads in (1, 2, 3):
        out = np.full((b, n, 3), np.nan, np.float32)
        dense_affine(u, w, alpha, M, c, out, threads)
        outs.append(out)
    want = np.einsum("bij,bnj->bni", M, (u + alpha @ w.T).reshape(b, n, 3)) + c[:, None]
    np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-3)
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])  # every vertex written, same values
    monkeypatch.setenv("TDDFA_DENSE_THREADS", "1")
    assert dense_threads() == 1
    monkeypatch.setenv("TDDFA_DENSE_THREADS", "junk")
    assert 1 <= dense_threads() <= 4
