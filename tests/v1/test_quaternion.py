"""Scaled-quaternion pose: round trips, ±90° yaw, gimbal lock, projection, the torch form."""

from __future__ import annotations

import numpy as np
import pytest

from tddfa.errors import InputError
from tddfa.face.pose import angles_to_rotation
from tddfa.v1.quaternion import (
    matrix_to_quaternion,
    params_to_quaternion,
    pose_to_quaternion,
    quaternion_to_matrix,
    quaternion_to_params,
    quaternion_to_pose,
)


def _random_rotations(n, rng):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return quaternion_to_matrix(q)


def _special_rotations():
    out = []
    for yaw in (-90.0, 90.0, -89.9, 89.99, 180.0, 0.0):
        for pitch in (0.0, 30.0, -60.0, 90.0):
            for roll in (0.0, 45.0, -120.0):
                out.append(angles_to_rotation(np.deg2rad(yaw), np.deg2rad(pitch), np.deg2rad(roll)))
    return np.stack(out)


def test_random_and_special_rotations_round_trip():
    rng = np.random.default_rng(0)
    R = np.concatenate([_random_rotations(500, rng), _special_rotations()])
    assert np.allclose(np.matmul(R, R.transpose(0, 2, 1)), np.eye(3), atol=1e-9)
    s = rng.uniform(1e-4, 2e-3, len(R))
    t = rng.normal(size=(len(R), 3)) * 50
    P = np.concatenate([R * s[:, None, None], t[:, :, None]], axis=2)
    q, t2 = pose_to_quaternion(P)
    assert np.allclose(np.sum(q * q, axis=1), s, rtol=1e-9)  # ‖q‖² = s
    assert np.all(q[:, 0] >= -1e-9)  # canonical sign (w = 0 only for half-turns)
    np.testing.assert_allclose(quaternion_to_pose(q, t2), P, atol=1e-12)


def test_gimbal_lock_yaw_90_is_exact():
    # at ±90° yaw, pitch and roll trade off in Euler angles; the quaternion is still unique
    R1 = angles_to_rotation(np.pi / 2, np.deg2rad(30), 0.0)
    q = matrix_to_quaternion(R1[None])
    np.testing.assert_allclose(quaternion_to_matrix(q)[0], R1, atol=1e-12)
    R2 = angles_to_rotation(-np.pi / 2, 0.0, np.deg2rad(-40))
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R2[None]))[0], R2, atol=1e-12)


def test_half_turn_sign_is_canonical():
    R = np.diag([1.0, -1.0, -1.0])  # 180° about x: w = 0
    q = matrix_to_quaternion(R[None])[0]
    np.testing.assert_allclose(q, [0, 1, 0, 0], atol=1e-12)


def test_non_rotation_is_projected_and_singular_rejected():
    rng = np.random.default_rng(1)
    R = _random_rotations(1, rng)[0] * 5e-4
    noisy = R + rng.normal(size=(3, 3)) * 1e-6
    q, _ = pose_to_quaternion(np.concatenate([noisy, np.zeros((3, 1))], 1)[None])
    np.testing.assert_allclose(quaternion_to_matrix(q)[0], R, atol=5e-6)
    with pytest.raises(InputError):
        pose_to_quaternion(np.zeros((1, 3, 4)))
    with pytest.raises(InputError):
        pose_to_quaternion(np.full((1, 3, 4), np.nan))


def test_params_round_trip_and_torch_forward_matches(shared):
    torch = pytest.importorskip("torch")
    from tddfa.models.regressor import load_param_stats
    from tddfa.v1.quaternion import params_from_quaternion_torch, unit_quaternion_loss

    mean, std = load_param_stats()
    rng = np.random.default_rng(2)
    p = mean + rng.normal(size=(20, 62)).astype(np.float32) * std * 0.3
    R = _random_rotations(20, rng)
    p[:, :12] = np.concatenate([R * 5e-4, p[:, :12].reshape(-1, 3, 4)[:, :, 3:]], 2).reshape(-1, 12)
    qp = params_to_quaternion(p)
    assert qp.shape == (20, 57)
    np.testing.assert_allclose(quaternion_to_params(qp), p, rtol=1e-5, atol=1e-9)
    back = params_from_quaternion_torch(torch.from_numpy(qp)).numpy()
    np.testing.assert_allclose(back, p, rtol=1e-5, atol=1e-9)
    # the unit-quaternion loss is zero at the target and invariant to the quaternion's sign
    pt = torch.from_numpy(p.astype(np.float64))
    assert float(unit_quaternion_loss(pt, pt)) < 1e-10
    flipped = qp.copy()
    flipped[:, :4] *= -1  # -q gives the same sR
    assert float(unit_quaternion_loss(params_from_quaternion_torch(torch.from_numpy(flipped)), pt)) < 1e-10
    other = torch.from_numpy(np.roll(p, 1, axis=0).astype(np.float64))
    assert float(unit_quaternion_loss(other, pt)) > 1e-3
