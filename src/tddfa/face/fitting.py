"""Fit the 62 morphable-model parameters to 68 2-D landmarks (NumPy only, batched).

The fit works in the 120×120 **crop frame** of a roi box (the frame the regressor's parameters
live in: x right, y up, crop pixels; see :func:`tddfa.morphable_model.to_image_frame` for the
mapping to the image, which :func:`image_to_crop_frame` inverts). The model is the exact
68-landmark part of the morphable model (``MorphableModel.u_lm`` / ``w_lm``) under a scaled
orthographic projection ``x = s·R[:2]·(u + W α) + t[:2]``.

Algorithm, vectorised over the batch:

1. alternation (a few rounds): with the shape fixed, the best 2×4 affine map by least squares,
   projected to the nearest scaled rotation (SVD); with the pose fixed, the coefficients by
   ridge-regularised linear least squares;
2. regularised Gauss-Newton (Levenberg-Marquardt damping) on all unknowns jointly: a rotation
   increment (3), log-scale (1), 2-D offset (2) and the 50 **normalised** coefficients
   ``(α − mean) / std`` (``param_mean_std`` asset), with the prior ``λ·||(α − mean)/std||²``.

The depth offset ``t_z`` is not observable from 2-D points; it is set to the parameter mean's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tddfa.errors import InputError
from tddfa.face.crop import INPUT_SIZE

__all__ = ["FitResult", "fit_landmarks", "fit_crop_landmarks", "image_to_crop_frame",
           "crop_to_image_frame", "nme", "param_prior"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    """Result of :func:`fit_landmarks`.

    Attributes:
        params: ``(B, 62)`` float32 de-normalised parameters in the roi's crop frame.
        landmarks: ``(B, 68, 2)`` float32 fitted landmarks, same frame as the input points.
        rmse: ``(B,)`` float32 root-mean-square landmark residual, in the units of the input
            points (crop pixels for :func:`fit_crop_landmarks`, image pixels for
            :func:`fit_landmarks`).
    """

    params: np.ndarray
    landmarks: np.ndarray
    rmse: np.ndarray


def param_prior() -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` ``(62,)`` float64 of the ``param_mean_std`` asset."""
    from tddfa.assets import registry as assets
    from tddfa.assets.serialization import load_pickle

    d = load_pickle(assets.resolve("param_mean_std"))
    return (np.asarray(d["mean"], np.float64).reshape(62),
            np.asarray(d["std"], np.float64).reshape(62))


def image_to_crop_frame(points: np.ndarray, roi_boxes: np.ndarray,
                        size: int = INPUT_SIZE) -> np.ndarray:
    """Image pixels ``(B, K, 2)`` → crop frame of rois ``(B, 4)`` (x right, y up, crop px)."""
    p = np.asarray(points, np.float64)
    r = np.asarray(roi_boxes, np.float64).reshape(-1, 4)
    sx = (r[:, 2] - r[:, 0]) / size
    sy = (r[:, 3] - r[:, 1]) / size
    x = (p[..., 0] - r[:, 0, None]) / sx[:, None] + 1.0
    y = size - (p[..., 1] - r[:, 1, None]) / sy[:, None]
    return np.stack([x, y], axis=-1)


def crop_to_image_frame(points: np.ndarray, roi_boxes: np.ndarray,
                        size: int = INPUT_SIZE) -> np.ndarray:
    """Inverse of :func:`image_to_crop_frame`: crop frame ``(B, K, 2)`` → image pixels."""
    p = np.asarray(points, np.float64)
    r = np.asarray(roi_boxes, np.float64).reshape(-1, 4)
    sx = (r[:, 2] - r[:, 0]) / size
    sy = (r[:, 3] - r[:, 1]) / size
    x = (p[..., 0] - 1.0) * sx[:, None] + r[:, 0, None]
    y = (size - p[..., 1]) * sy[:, None] + r[:, 1, None]
    return np.stack([x, y], axis=-1)


def nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """2-D NME ``(B,)`` (fraction, not %) of points ``(B, K, 2)``: mean point distance divided by
    ``sqrt(w·h)`` of the ground truth's bounding box (the 3DDFA benchmark normalisation)."""
    from tddfa.evaluation.metrics import nme as nme_percent

    pred = np.asarray(pred, np.float64)[..., :2]
    gt = np.asarray(gt, np.float64)[..., :2]
    if pred.shape != gt.shape:
        raise InputError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    return nme_percent(pred, gt, "box") / 100.0


def _skew(v: np.ndarray) -> np.ndarray:
    """``(..., 3)`` → ``(..., 3, 3)`` cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    return np.stack([
        np.stack([z, -v[..., 2], v[..., 1]], -1),
        np.stack([v[..., 2], z, -v[..., 0]], -1),
        np.stack([-v[..., 1], v[..., 0], z], -1),
    ], -2)


def _rodrigues(w: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(B, 3, 3)`` of rotation vectors ``(B, 3)`` (radians)."""
    th = np.linalg.norm(w, axis=-1)[:, None, None]
    K = _skew(w / np.maximum(th[..., 0], 1e-12))
    eye = np.eye(3)[None]
    return eye + np.sin(th) * K + (1 - np.cos(th)) * (K @ K)


def _nearest_scaled_rotation(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(B, 2, 3)`` → scale ``(B,)``, rotation ``(B, 3, 3)`` whose first two rows best match."""
    U, S, Vt = np.linalg.svd(A)
    R2 = U @ Vt[:, :2, :]
    r3 = np.cross(R2[:, 0], R2[:, 1])
    return S.mean(axis=1), np.concatenate([R2, r3[:, None]], axis=1)


def fit_crop_landmarks(points: np.ndarray, *, reg: float = 1.0, alternations: int = 4,
                       iterations: int = 15, model=None,
                       weights: np.ndarray | None = None) -> FitResult:
    """Fit parameters to landmarks already in the crop frame.

    Args:
        points: ``(B, 68, 2)`` crop-frame landmarks (x right, y up, crop pixels, 120×120 frame).
        reg: prior weight ``λ`` (crop px² per squared normalised coefficient).
        alternations: rounds of pose / shape alternation used to initialise.
        iterations: Gauss-Newton iterations.
        model: a :class:`~tddfa.morphable_model.MorphableModel` (default: the best available).
        weights: optional ``(B, 68)`` or ``(68,)`` per-landmark weights (e.g. 0 for invisible).

    Returns:
        :class:`FitResult` with landmarks in the crop frame.
    """
    from tddfa.face.morphable_model import load_morphable_model

    pts = np.asarray(points, np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise InputError(f"points must be (B, 68, 2), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise InputError("points contain NaN or inf")
    B = pts.shape[0]
    mm = model if model is not None else load_morphable_model()
    mean, std = param_prior()
    m_a, s_a = mean[12:], std[12:]
    u = np.asarray(mm.u_lm, np.float64).reshape(68, 3)
    W = np.asarray(mm.w_lm, np.float64).reshape(68, 3, 50)
    W2 = W.reshape(204, 50)
    wts = np.ones((B, 68)) if weights is None else np.broadcast_to(
        np.asarray(weights, np.float64), (B, 68)).copy()
    sw = np.sqrt(wts)

    # 1. alternation
    an = np.zeros((B, 50))  # normalised coefficients
    for _ in range(max(1, alternations)):
        X = u + ((m_a + s_a * an) @ W2.T).reshape(B, 68, 3)
        Xh = np.concatenate([X, np.ones((B, 68, 1))], axis=2)  # (B, 68, 4)
        Xw = Xh * sw[..., None]
        M = np.matmul(Xw.transpose(0, 2, 1), Xw) + 1e-9 * np.eye(4)
        rhs = np.matmul(Xw.transpose(0, 2, 1), pts * sw[..., None])  # (B, 4, 2)
        aff = np.linalg.solve(M, rhs).transpose(0, 2, 1)  # (B, 2, 4)
        s, R = _nearest_scaled_rotation(aff[:, :, :3])
        proj = s[:, None, None] * np.matmul(X, R[:, :2].transpose(0, 2, 1))
        t = ((pts - proj) * wts[..., None]).sum(1) / wts.sum(1)[:, None]
        # coefficients given the pose: s R2 (u + W (m + σ a)) + t ≈ pts
        J = s[:, None, None, None] * np.matmul(R[:, None, :2], W[None]) * s_a  # (B,68,2,50)
        base = s[:, None, None] * np.matmul(u + (W @ m_a), R[:, :2].transpose(0, 2, 1)) + t[:, None]
        Jw = (J * sw[..., None, None]).reshape(B, 136, 50)
        r = ((pts - base) * sw[..., None]).reshape(B, 136)
        H = np.matmul(Jw.transpose(0, 2, 1), Jw) + reg * np.eye(50)
        an = np.linalg.solve(H, np.matmul(Jw.transpose(0, 2, 1), r[..., None]))[..., 0]

    # 2. regularised Gauss-Newton (LM) on (ω, log s, t, a)
    logs = np.log(s)
    mu = np.full(B, 1e-3)

    def residual(R, logs, t, an):
        X = u + ((m_a + s_a * an) @ W2.T).reshape(B, 68, 3)
        proj = np.exp(logs)[:, None, None] * np.matmul(X, R[:, :2].transpose(0, 2, 1)) + t[:, None]
        res = (proj - pts) * sw[..., None]
        cost = (res**2).sum((1, 2)) + reg * (an**2).sum(1)
        return X, proj, res, cost

    X, proj, res, cost = residual(R, logs, t, an)
    for _ in range(iterations):
        sc = np.exp(logs)
        R2 = R[:, :2]
        Jw_ = -sc[:, None, None, None] * np.matmul(R2[:, None], _skew(X))  # (B,68,2,3)
        Js = (proj - t[:, None])[..., None]  # (B,68,2,1)
        Jt = np.broadcast_to(np.eye(2), (B, 68, 2, 2))
        Ja = sc[:, None, None, None] * np.matmul(R2[:, None], W[None]) * s_a  # (B,68,2,50)
        J = np.concatenate([Jw_, Js, Jt, Ja], axis=3) * sw[..., None, None]
        J = J.reshape(B, 136, 56)
        g = np.matmul(J.transpose(0, 2, 1), res.reshape(B, 136, 1))[..., 0]
        g[:, 6:] += reg * an
        H = np.matmul(J.transpose(0, 2, 1), J)
        H[:, 6:, 6:] += reg * np.eye(50)
        diag = np.einsum("bii->bi", H)
        Hd = H + (mu[:, None] * (diag + 1e-6))[:, :, None] * np.eye(56)
        d = -np.linalg.solve(Hd, g[..., None])[..., 0]
        Rn = R @ _rodrigues(d[:, :3])
        ln, tn, ann = logs + d[:, 3], t + d[:, 4:6], an + d[:, 6:]
        Xn, projn, resn, costn = residual(Rn, ln, tn, ann)
        ok = costn < cost
        R = np.where(ok[:, None, None], Rn, R)
        logs, t, an = np.where(ok, ln, logs), np.where(ok[:, None], tn, t), np.where(ok[:, None], ann, an)
        X = np.where(ok[:, None, None], Xn, X)
        proj = np.where(ok[:, None, None], projn, proj)
        res = np.where(ok[:, None, None], resn, res)
        cost = np.where(ok, costn, cost)
        mu = np.where(ok, mu * 0.3, mu * 10.0)

    sc = np.exp(logs)
    params = np.empty((B, 62))
    P = np.concatenate([sc[:, None, None] * R, np.zeros((B, 3, 1))], axis=2)
    P[:, :2, 3] = t
    P[:, 2, 3] = mean[11]
    params[:, :12] = P.reshape(B, 12)
    params[:, 12:] = m_a + s_a * an
    rmse = np.sqrt(((proj - pts) ** 2).sum(-1).mean(-1))
    return FitResult(params.astype(np.float32), proj.astype(np.float32), rmse.astype(np.float32))


def fit_landmarks(landmarks: np.ndarray, roi_boxes: np.ndarray, **kwargs) -> FitResult:
    """Fit parameters to landmarks in image pixels, in the crop frame of each roi box.

    Args:
        landmarks: ``(B, 68, 2)`` image pixels (x right, y down), iBUG 68-point order.
        roi_boxes: ``(B, 4)`` (or ``(4,)``) roi ``(x1, y1, x2, y2)``, image pixels; e.g.
            :func:`tddfa.crop.roi_from_landmarks` of the same landmarks.
        **kwargs: see :func:`fit_crop_landmarks`.

    Returns:
        :class:`FitResult`; ``params`` live in each roi's crop frame, ``landmarks`` are the fitted
        landmarks mapped back to image pixels.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise InputError(f"landmarks must be (B, 68, 2), got {np.shape(landmarks)}")
    rois = np.asarray(roi_boxes, np.float64).reshape(-1, 4)
    if len(rois) != len(lm):
        raise InputError(f"got {len(lm)} landmark sets but {len(rois)} roi boxes")
    fit = fit_crop_landmarks(image_to_crop_frame(lm, rois), **kwargs)
    scale = ((rois[:, 2] - rois[:, 0]) + (rois[:, 3] - rois[:, 1])) / (2 * INPUT_SIZE)
    return FitResult(fit.params, crop_to_image_frame(fit.landmarks, rois).astype(np.float32),
                     (fit.rmse * scale).astype(np.float32))
