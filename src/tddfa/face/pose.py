"""Head pose from the 3×4 projection ``[s·R | t]`` of the 62 parameters.

Convention (3DDFA_V2): ``R`` rows are the first two rows of the 3×3 block normalised plus their
cross product. Angles in degrees: ``yaw = asin(R[2,0])``, ``pitch = atan2(R[2,1], R[2,2])``,
``roll = atan2(R[1,0], R[0,0])``; at gimbal lock (``|R[2,0]| > 0.998``) yaw is ±90°, roll 0 and
pitch comes from the first row. The frame is the 120×120 crop's (x right, y up, z towards the
camera), as the official code reports it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["decompose_projection", "rotation_to_angles", "angles_to_rotation", "pose_from_params"]

GIMBAL_LOCK = 0.998


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``P`` ``(..., 3, 4)`` into scale ``(...,)``, rotation ``(..., 3, 3)``, translation ``(..., 3)``.

    Scale is the mean norm of the first two rows of the 3×3 block; the rotation's rows are those
    two rows normalised plus their cross product.
    """
    P = np.asarray(P, dtype=np.float64)
    R = np.empty(P.shape[:-2] + (3, 3))
    n1 = np.sqrt(np.square(P[..., 0, :3]).sum(-1))
    n2 = np.sqrt(np.square(P[..., 1, :3]).sum(-1))
    scale = (n1 + n2) / 2.0
    r1 = np.divide(P[..., 0, :3], n1[..., None], out=R[..., 0, :])
    r2 = np.divide(P[..., 1, :3], n2[..., None], out=R[..., 1, :])
    # r1 × r2, written out (np.cross costs more than the product for one face)
    R[..., 2, 0] = r1[..., 1] * r2[..., 2] - r1[..., 2] * r2[..., 1]
    R[..., 2, 1] = r1[..., 2] * r2[..., 0] - r1[..., 0] * r2[..., 2]
    R[..., 2, 2] = r1[..., 0] * r2[..., 1] - r1[..., 1] * r2[..., 0]
    return scale, R, P[..., :, 3].copy()


def rotation_to_angles(R: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll in **radians** ``(..., 3)`` from rotation matrices ``(..., 3, 3)``."""
    R = np.asarray(R, dtype=np.float64)
    out = np.empty(R.shape[:-2] + (3,))
    r20 = R[..., 2, 0]
    np.arcsin(np.clip(r20, -1.0, 1.0), out=out[..., 0])
    np.arctan2(R[..., 2, 1], R[..., 2, 2], out=out[..., 1])
    np.arctan2(R[..., 1, 0], R[..., 0, 0], out=out[..., 2])
    hi = r20 > GIMBAL_LOCK
    lo = r20 < -GIMBAL_LOCK
    if hi.any() or lo.any():  # gimbal lock: yaw ±90°, roll 0, pitch from the first row
        out[..., 0] = np.where(hi, np.pi / 2, np.where(lo, -np.pi / 2, out[..., 0]))
        out[..., 1] = np.where(hi, np.arctan2(-R[..., 0, 1], -R[..., 0, 2]), out[..., 1])
        out[..., 1] = np.where(lo, np.arctan2(R[..., 0, 1], R[..., 0, 2]), out[..., 1])
        out[..., 2] = np.where(hi | lo, 0.0, out[..., 2])
    return out


def angles_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of :func:`rotation_to_angles` (radians) → ``(3, 3)`` float64, away from gimbal lock.

    ``R = Rz(roll) · Ry(yaw) · Rx(pitch)`` written so that ``R[2,0] = sin(yaw)``.
    """
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(-yaw), np.sin(-yaw)
    cz, sz = np.cos(roll), np.sin(roll)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def pose_from_params(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pose of parameter vectors ``(..., 62)`` (de-normalised).

    Returns:
        angles ``(..., 3)`` yaw/pitch/roll in degrees, rotation ``(..., 3, 3)``, scale ``(...,)``
        (crop pixels per model unit), translation ``(..., 3)`` in 120×120 crop pixels.
    """
    params = np.asarray(params, dtype=np.float64)
    if params.ndim == 2 and len(params) <= _FEW:
        try:
            return _pose_few(params)
        except ZeroDivisionError:  # a zero row: NumPy's nan/inf semantics below
            pass
    P = params[..., :12].reshape(params.shape[:-1] + (3, 4))
    scale, R, t = decompose_projection(P)
    return np.degrees(rotation_to_angles(R)), R, scale, t


#: up to this many faces, :func:`pose_from_params` works on Python floats (a video frame's
#: faces: a dozen tiny array operations cost more than the arithmetic)
_FEW = 16


def _pose_few(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`pose_from_params` of ``(B, 62)`` float64 params, face by face in Python floats
    (the same formulas; agrees to rounding). Raises ZeroDivisionError for a zero row."""
    b = len(params)
    angles, R, scale = np.empty((b, 3)), np.empty((b, 3, 3)), np.empty(b)
    for i, p in enumerate(params[:, :12].tolist()):
        n1 = math.sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2])
        n2 = math.sqrt(p[4] * p[4] + p[5] * p[5] + p[6] * p[6])
        a0, a1, a2 = p[0] / n1, p[1] / n1, p[2] / n1
        b0, b1, b2 = p[4] / n2, p[5] / n2, p[6] / n2
        c0, c1, c2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0
        R[i] = ((a0, a1, a2), (b0, b1, b2), (c0, c1, c2))
        scale[i] = (n1 + n2) / 2.0
        if c0 > GIMBAL_LOCK:
            angles[i] = (math.pi / 2, math.atan2(-a1, -a2), 0.0)
        elif c0 < -GIMBAL_LOCK:
            angles[i] = (-math.pi / 2, math.atan2(a1, a2), 0.0)
        else:  # |c0| <= GIMBAL_LOCK here (or NaN, which asin keeps): no clipping needed
            angles[i] = (math.asin(c0), math.atan2(c1, c2), math.atan2(b0, a0))
    return np.degrees(angles), R, scale, params[:, [3, 7, 11]]
