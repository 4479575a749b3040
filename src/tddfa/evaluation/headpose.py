"""Head-pose error: AFLW2000-3D's Pose_Para convention (Rz·Ry·Rx) and mean absolute angle errors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from tddfa.errors import InputError

log = logging.getLogger(__name__)


def _rx(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def pose_para_to_rotation(pose_para: np.ndarray) -> np.ndarray:
    """Rotation ``(N, 3, 3)`` in **our** convention (crop frame, as :mod:`tddfa.pose`) from
    AFLW2000-3D ``Pose_Para`` ``(N, 7)`` (or ``(N, 3)``: pitch, yaw, roll in radians)."""
    p = np.asarray(pose_para, dtype=np.float64).reshape(-1, np.asarray(pose_para).shape[-1])
    if p.shape[1] < 3:
        raise InputError(f"pose_para must be (N, 3+) pitch, yaw, roll, got {p.shape}")
    m = _rz(p[:, 2]) @ _ry(p[:, 1]) @ _rx(p[:, 0])
    return np.swapaxes(m, -1, -2)


def rotation_to_aflw_angles(rotation: np.ndarray) -> np.ndarray:
    """Our rotation(s) ``(..., 3, 3)`` → AFLW2000-3D angles ``(..., 3)`` pitch, yaw, roll in
    **degrees** (the inverse of :func:`pose_para_to_rotation`, away from gimbal lock)."""
    m = np.swapaxes(np.asarray(rotation, dtype=np.float64), -1, -2)
    yaw = -np.arcsin(np.clip(m[..., 2, 0], -1.0, 1.0))
    pitch = np.arctan2(m[..., 2, 1], m[..., 2, 2])
    roll = np.arctan2(m[..., 1, 0], m[..., 0, 0])
    return np.degrees(np.stack([pitch, yaw, roll], axis=-1))


def pose_errors(pred_deg: np.ndarray, gt_deg: np.ndarray) -> np.ndarray:
    """Absolute angle differences ``(N, 3)`` degrees, wrapped to [0, 180]."""
    p = np.asarray(pred_deg, dtype=np.float64)
    g = np.asarray(gt_deg, dtype=np.float64)
    if p.shape != g.shape or p.shape[-1] != 3:
        raise InputError(f"pred {p.shape} and gt {g.shape} must both be (N, 3) angles")
    return np.abs((p - g + 180.0) % 360.0 - 180.0)


def pose_mae(pred_deg: np.ndarray, gt_deg: np.ndarray, limit: float = 99.0,
             names: Sequence[str] = ("pitch", "yaw", "roll")) -> dict[str, Any]:
    """Mean absolute error per angle and their mean, over faces whose ground-truth angles are
    all within ``±limit`` degrees.

    Returns:
        ``{"pitch": .., "yaw": .., "roll": .., "mean": .., "n": kept, "excluded": dropped,
        "limit_deg": limit}`` (degrees).
    """
    g = np.asarray(gt_deg, dtype=np.float64)
    err = pose_errors(pred_deg, g)
    keep = (np.abs(g) <= limit).all(axis=1)
    out: dict[str, Any] = {}
    for i, n in enumerate(names):
        out[n] = float(err[keep, i].mean()) if keep.any() else float("nan")
    out["mean"] = float(np.mean([out[n] for n in names]))
    out.update(n=int(keep.sum()), excluded=int((~keep).sum()), limit_deg=float(limit))
    return out
