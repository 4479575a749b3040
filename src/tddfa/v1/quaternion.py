"""Quaternion pose, as 3DDFA V1 regresses it: ``[sR | t]`` ↔ (scaled unit quaternion, translation).

Convention (documented here, used everywhere in :mod:`tddfa.v1`):

* ``P = [sR | t]`` is the 3×4 pose of the 62 parameters (row-major, crop frame, x right, y up),
  ``s > 0`` the scale, ``R`` a proper rotation (``det R = +1``), ``t`` the offset.
* The unit quaternion ``q̂ = (w, x, y, z)`` (scalar first, Hamilton product) gives ``R`` by the
  usual formula ``R = I + 2w[v]ₓ + 2[v]ₓ²``, ``v = (x, y, z)`` (an active rotation of the column
  vector the matrix multiplies).
* The **scaled** quaternion is ``q = √s · q̂``, so ``‖q‖² = s``; the sign is fixed by ``w ≥ 0``
  (for ``w = 0`` — a half-turn — the first non-zero of ``x, y, z`` is made positive).
* ``sR`` is a homogeneous quadratic in ``q``:
  ``M(q) = [[w²+x²−y²−z², 2(xy−wz), 2(xz+wy)], [2(xy+wz), w²−x²+y²−z², 2(yz−wx)],
  [2(xz−wy), 2(yz+wx), w²−x²−y²+z²]] = ‖q‖² R(q̂)``, so any 4-vector a network outputs is a
  valid scaled rotation — no constraint needed; the loss compares unit quaternions
  (:func:`unit_quaternion_loss`, sign-invariant).
* A 3×3 block that is not exactly a scaled rotation (a regressor's output) is first projected on
  the nearest one (SVD: ``R = U diag(1, 1, det(UVᵀ)) Vᵀ``, ``s`` = mean singular value).

The 57-d quaternion parameter vector is ``(q (4), t (3), shape (40), expression (10))``.
Quaternions have no gimbal lock: ±90° yaw round-trips like any other rotation (tested).
"""

from __future__ import annotations

import numpy as np

from tddfa.errors import InputError

__all__ = ["matrix_to_quaternion", "quaternion_to_matrix", "pose_to_quaternion",
           "quaternion_to_pose", "params_to_quaternion", "quaternion_to_params",
           "quaternion_params_torch", "params_from_quaternion_torch", "unit_quaternion_loss"]


def _canonical(q: np.ndarray) -> np.ndarray:
    q = q.copy()
    lead = np.where(np.abs(q[:, 0]) > 1e-12, q[:, 0],
                    np.where(np.abs(q[:, 1]) > 1e-12, q[:, 1],
                             np.where(np.abs(q[:, 2]) > 1e-12, q[:, 2], q[:, 3])))
    q[lead < 0] *= -1.0
    return q


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(B, 4)`` (w, x, y, z; ``w ≥ 0``) of rotations ``(B, 3, 3)``
    (Shepperd's method: the largest of the four diagonal combinations is the pivot)."""
    R = np.asarray(R, np.float64).reshape(-1, 3, 3)
    tr = np.trace(R, axis1=1, axis2=2)
    cand = np.stack([tr, R[:, 0, 0], R[:, 1, 1], R[:, 2, 2]], axis=1)
    k = np.argmax(cand, axis=1)
    q = np.zeros((len(R), 4))
    for i in range(len(R)):
        m = R[i]
        if k[i] == 0:
            r = np.sqrt(max(1.0 + tr[i], 0.0)) * 2
            q[i] = (0.25 * r, (m[2, 1] - m[1, 2]) / r, (m[0, 2] - m[2, 0]) / r, (m[1, 0] - m[0, 1]) / r)
        elif k[i] == 1:
            r = np.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0)) * 2
            q[i] = ((m[2, 1] - m[1, 2]) / r, 0.25 * r, (m[0, 1] + m[1, 0]) / r, (m[0, 2] + m[2, 0]) / r)
        elif k[i] == 2:
            r = np.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 0.0)) * 2
            q[i] = ((m[0, 2] - m[2, 0]) / r, (m[0, 1] + m[1, 0]) / r, 0.25 * r, (m[1, 2] + m[2, 1]) / r)
        else:
            r = np.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 0.0)) * 2
            q[i] = ((m[1, 0] - m[0, 1]) / r, (m[0, 2] + m[2, 0]) / r, (m[1, 2] + m[2, 1]) / r, 0.25 * r)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return _canonical(q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """``M(q)`` ``(B, 3, 3)`` for (scaled) quaternions ``(B, 4)``: ``‖q‖² R(q/‖q‖)``."""
    q = np.asarray(q, np.float64).reshape(-1, 4)
    w, x, y, z = q.T
    return np.stack([
        np.stack([w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z], -1),
    ], axis=1)


def pose_to_quaternion(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[sR | t]`` ``(B, 3, 4)`` (or ``(B, 12)``) → scaled quaternions ``(B, 4)`` and ``t`` ``(B, 3)``.

    Raises:
        InputError: wrong shape, non-finite values or a singular 3×3 block.
    """
    P = np.asarray(P, np.float64)
    P = P.reshape(-1, 3, 4) if P.shape[-1] != 4 or P.ndim == 2 else P.reshape(-1, 3, 4)
    if not np.all(np.isfinite(P)):
        raise InputError("pose matrix has non-finite values")
    U, S, Vt = np.linalg.svd(P[:, :, :3])
    if np.any(S[:, -1] <= 1e-12 * np.maximum(S[:, 0], 1e-300)):
        raise InputError("pose matrix is singular: no scaled rotation")
    D = np.ones((len(P), 3))
    D[:, 2] = np.sign(np.linalg.det(np.matmul(U, Vt)))
    R = np.matmul(U * D[:, None, :], Vt)
    s = S.mean(axis=1)
    return matrix_to_quaternion(R) * np.sqrt(s)[:, None], P[:, :, 3].copy()


def quaternion_to_pose(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Scaled quaternions ``(B, 4)`` and offsets ``(B, 3)`` → ``[sR | t]`` ``(B, 3, 4)``."""
    M = quaternion_to_matrix(q)
    return np.concatenate([M, np.asarray(t, np.float64).reshape(-1, 3, 1)], axis=2)


def params_to_quaternion(params: np.ndarray) -> np.ndarray:
    """62 parameters ``(B, 62)`` → 57 ``(q, t, shape, expression)``."""
    p = np.asarray(params, np.float64).reshape(-1, 62)
    q, t = pose_to_quaternion(p[:, :12].reshape(-1, 3, 4))
    return np.concatenate([q, t, p[:, 12:]], axis=1)


def quaternion_to_params(qp: np.ndarray) -> np.ndarray:
    """57 ``(q, t, shape, expression)`` ``(B, 57)`` → 62 parameters."""
    qp = np.asarray(qp, np.float64).reshape(-1, 57)
    P = quaternion_to_pose(qp[:, :4], qp[:, 4:7])
    return np.concatenate([P.reshape(-1, 12), qp[:, 7:]], axis=1)


# -- PyTorch (training) --------------------------------------------------------------------------


def quaternion_params_torch(params):
    """``(B, 62)`` tensor → ``(B, 57)`` (no gradient: through NumPy)."""
    import torch

    return torch.from_numpy(params_to_quaternion(params.detach().cpu().numpy())).to(params.dtype)


def params_from_quaternion_torch(qp):
    """``(B, 57)`` tensor → ``(B, 62)``, differentiable (``sR = M(q)``)."""
    import torch

    w, x, y, z = qp[:, 0], qp[:, 1], qp[:, 2], qp[:, 3]
    t = qp[:, 4:7]
    rows = [
        [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y), t[:, 0]],
        [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x), t[:, 1]],
        [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z, t[:, 2]],
    ]
    P = torch.stack([torch.stack(r, dim=1) for r in rows], dim=1).reshape(-1, 12)
    return torch.cat([P, qp[:, 7:]], dim=1)


def unit_quaternion_loss(pred_q, target_params):
    """Mean ``min(‖q̂ − ĝ‖², ‖q̂ + ĝ‖²)`` between the predicted scaled quaternions ``(B, 4)``
    normalised to unit length (differentiable) and the unit quaternions of the target ``(B, 62)``
    parameters (sign-invariant: ``q`` and ``−q`` are the same rotation)."""
    import torch

    q = pred_q / pred_q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    g = torch.from_numpy(matrix_to_quaternion(
        _project(target_params.detach().cpu().numpy()))).to(q.dtype)
    a = ((q - g) ** 2).sum(1)
    b = ((q + g) ** 2).sum(1)
    return torch.minimum(a, b).mean()


def _project(params: np.ndarray) -> np.ndarray:
    q, _ = pose_to_quaternion(np.asarray(params, np.float64)[:, :12].reshape(-1, 3, 4))
    return quaternion_to_matrix(q / np.linalg.norm(q, axis=1, keepdims=True))
