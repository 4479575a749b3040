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
    q = torch.from_numpy(qp[:, :4])
    assert float(unit_quaternion_loss(q, pt)) < 1e-10
    assert float(unit_quaternion_loss(-3.0 * q, pt)) < 1e-10  # sign and scale do not matter
    assert float(unit_quaternion_loss(torch.roll(q, 1, 0), pt)) > 1e-3


def test_quaternion_training_option_one_step(shared):
    torch = pytest.importorskip("torch")
    from tddfa.models.regressor import load_param_stats
    from tddfa.v1.cascade_train import _apply, _apply_q
    from tddfa.v1.net import CascadeStageNet
    from tddfa.v1.quaternion import unit_quaternion_loss

    mean, std = load_param_stats()
    net = CascadeStageNet(std, 3, n_out=57)
    torch.nn.init.normal_(net.out.weight, std=0.01)
    crops = torch.randint(0, 255, (2, 120, 120, 3), dtype=torch.uint8)
    paf = torch.randint(0, 255, (2, 192, 192, 3), dtype=torch.uint8)
    p0 = np.tile(mean, (2, 1)).astype(np.float64)
    R = angles_to_rotation(0.3, -0.2, 0.1) * 4e-4  # a proper scaled rotation (the mean is not one)
    p0[:, :12] = np.concatenate([np.tile(R, (2, 1, 1)), p0[:, :12].reshape(-1, 3, 4)[:, :, 3:]],
                                2).reshape(-1, 12)
    start = torch.from_numpy(p0)
    d = net(crops, crops, paf).double()
    assert d.shape == (2, 57)
    new, q_new = _apply_q(d, start, True, torch.from_numpy(std.reshape(1, -1).astype(np.float64)))
    assert new.shape == (2, 62) and q_new.shape == (2, 4)
    target = start.clone()
    target[:, 3] += 1.0
    loss = ((new - target) ** 2).mean() + unit_quaternion_loss(q_new, target)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert float(net.out.weight.grad.abs().sum()) > 0
    # a zero update returns the start estimate (quaternion round trip)
    same = _apply(torch.zeros(2, 57, dtype=torch.float64), start, True,
                  torch.from_numpy(std.reshape(1, -1).astype(np.float64)))
    np.testing.assert_allclose(same.numpy(), start.numpy(), rtol=1e-5, atol=1e-9)
