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
           "crop_to_image_frame", "nme", "param_prior", "contour_lines", "march_contour",
           "marched_landmarks", "CONTOUR"]

#: the iBUG contour (jaw) landmarks that landmark marching moves (all but the chin centre, 8)
CONTOUR = tuple(k for k in range(17) if k != 8)

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
                       weights: np.ndarray | None = None, march: int = 0) -> FitResult:
    """Fit parameters to landmarks already in the crop frame.

    Args:
        points: ``(B, 68, 2)`` crop-frame landmarks (x right, y up, crop pixels, 120×120 frame).
        reg: prior weight ``λ`` (crop px² per squared normalised coefficient).
        alternations: rounds of pose / shape alternation used to initialise.
        iterations: Gauss-Newton iterations.
        model: a :class:`~tddfa.morphable_model.MorphableModel` (default: the best available).
        weights: optional ``(B, 68)`` or ``(68,)`` per-landmark weights (e.g. 0 for invisible).
        march: rounds of **landmark marching** (300W-LP's label style): after a fit, each contour
            landmark is re-assigned to the outermost vertex of its candidate line under the
            fitted pose (:func:`march_contour`) and the fit is repeated from there. 0 keeps the
            fixed landmark-to-vertex correspondence. Needs the dense model.

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
    u = np.broadcast_to(np.asarray(mm.u_lm, np.float64).reshape(68, 3), (B, 68, 3))
    W = np.broadcast_to(np.asarray(mm.w_lm, np.float64).reshape(68, 3, 50), (B, 68, 3, 50))
    fit = _fit_with_bases(pts, u, W, reg, alternations, iterations, weights)
    for _ in range(max(0, int(march))):
        idx = march_contour(fit.params, model=mm)
        uu = np.asarray(mm.u, np.float64).reshape(-1, 3)[idx]
        WW = np.asarray(mm.w, np.float64).reshape(-1, 3, 50)[idx]
        fit = _fit_with_bases(pts, uu, WW, reg, alternations, iterations, weights)
    return fit


def _fit_with_bases(pts: np.ndarray, u: np.ndarray, W: np.ndarray, reg: float,
                    alternations: int, iterations: int, weights) -> FitResult:
    """The fit of :func:`fit_crop_landmarks` with per-face landmark bases ``u`` ``(B, 68, 3)``,
    ``W`` ``(B, 68, 3, 50)``; the returned landmarks are those of the given bases."""
    B = pts.shape[0]
    mean, std = param_prior()
    m_a, s_a = mean[12:], std[12:]

    def shape(a: np.ndarray) -> np.ndarray:
        return u + np.einsum("bvck,bk->bvc", W, a)
    wts = np.ones((B, 68)) if weights is None else np.broadcast_to(
        np.asarray(weights, np.float64), (B, 68)).copy()
    sw = np.sqrt(wts)

    # 1. alternation
    an = np.zeros((B, 50))  # normalised coefficients
    for _ in range(max(1, alternations)):
        X = shape(m_a + s_a * an)
        Xh = np.concatenate([X, np.ones((B, 68, 1))], axis=2)  # (B, 68, 4)
        Xw = Xh * sw[..., None]
        M = np.matmul(Xw.transpose(0, 2, 1), Xw) + 1e-9 * np.eye(4)
        rhs = np.matmul(Xw.transpose(0, 2, 1), pts * sw[..., None])  # (B, 4, 2)
        aff = np.linalg.solve(M, rhs).transpose(0, 2, 1)  # (B, 2, 4)
        s, R = _nearest_scaled_rotation(aff[:, :, :3])
        proj = s[:, None, None] * np.matmul(X, R[:, :2].transpose(0, 2, 1))
        t = ((pts - proj) * wts[..., None]).sum(1) / wts.sum(1)[:, None]
        # coefficients given the pose: s R2 (u + W (m + σ a)) + t ≈ pts
        J = s[:, None, None, None] * np.matmul(R[:, None, :2], W) * s_a  # (B,68,2,50)
        base = s[:, None, None] * np.matmul(u + (W @ m_a), R[:, :2].transpose(0, 2, 1)) + t[:, None]
        Jw = (J * sw[..., None, None]).reshape(B, 136, 50)
        r = ((pts - base) * sw[..., None]).reshape(B, 136)
        H = np.matmul(Jw.transpose(0, 2, 1), Jw) + reg * np.eye(50)
        an = np.linalg.solve(H, np.matmul(Jw.transpose(0, 2, 1), r[..., None]))[..., 0]

    # 2. regularised Gauss-Newton (LM) on (ω, log s, t, a)
    logs = np.log(s)
    mu = np.full(B, 1e-3)

    def residual(R, logs, t, an):
        X = shape(m_a + s_a * an)
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
        Ja = sc[:, None, None, None] * np.matmul(R2[:, None], W) * s_a  # (B,68,2,50)
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


# ---------------------------------------------------------------------------------------------
# landmark marching (300W-LP / AFLW2000-3D label style)

def contour_lines(model=None, band: float = 0.06, inner: float = 0.3,
                  bin_width: float = 0.02) -> tuple[np.ndarray, ...]:
    """Candidate vertex lines of the 17 contour landmarks, for landmark marching.

    For contour landmark ``k`` (iBUG 0–16) the line runs across the cheek at the landmark's
    height in the mean face: dense vertices within ``band`` (fraction of the face width) of its
    model ``y``, from the landmark's own vertex inwards to ``inner`` × its ``x`` (towards the
    nose), one vertex (the nearest to that height) per ``bin_width`` of ``x``. Entry 0 of each
    line is the landmark's own vertex; the chin centre (8) has only that.

    Returns:
        17 int64 arrays of dense vertex indices.
    """
    from tddfa.face.morphable_model import load_morphable_model

    mm = model if model is not None else load_morphable_model()
    key = ("contour_lines", band, inner, bin_width)
    if key not in mm._cache:
        mm._cache[key] = _contour_lines(mm, band, inner, bin_width)
    return mm._cache[key]


def _contour_lines(mm, band: float, inner: float, bin_width: float) -> tuple[np.ndarray, ...]:
    if not mm.has_dense:
        raise InputError("landmark marching needs the dense model (bfm_noneck or "
                         "bfm_noneck_approx); only the 68-landmark bases were found")
    u = np.asarray(mm.u, np.float64).reshape(-1, 3)
    kp = np.asarray(mm.keypoints, np.int64)  # (68,) dense vertex of each landmark
    width = u[:, 0].max() - u[:, 0].min()
    cx = u[kp[27:36], 0].mean()
    lines = []
    for k in range(17):
        v0 = int(kp[k])
        if k not in CONTOUR:
            lines.append(np.array([v0], np.int64))
            continue
        x0, y0 = u[v0, 0] - cx, u[v0, 1]
        lo, hi = sorted((x0, inner * x0))
        rel = u[:, 0] - cx
        cand = np.flatnonzero((np.abs(u[:, 1] - y0) < band * width) & (rel >= lo) & (rel <= hi))
        bins = np.floor((rel[cand] - lo) / (bin_width * width)).astype(int)
        picked = [v0]
        for b in np.unique(bins):
            c = cand[bins == b]
            best = int(c[np.argmin(np.abs(u[c, 1] - y0))])
            if best != v0:
                picked.append(best)
        lines.append(np.asarray(picked, np.int64))
    return tuple(lines)


def march_contour(params: np.ndarray, model=None) -> np.ndarray:
    """Landmark-to-vertex correspondence of 300W-LP's landmark marching.

    Each contour landmark moves to the vertex of its :func:`contour_lines` line that lies
    outermost in the image along the face's left-right direction (perpendicular to the image
    of the face's vertical axis) under the pose of ``params``
    (so at large yaw the far-side jaw points move onto the visible silhouette, as in the
    AFLW2000-3D ground truth; on the near side the landmark's own vertex stays outermost).

    Args:
        params: ``(B, 62)`` or ``(62,)`` de-normalised parameters (any frame; only the pose's
            direction and the shape matter).

    Returns:
        ``(B, 68)`` int64 dense vertex index per landmark.
    """
    from tddfa.face.morphable_model import load_morphable_model

    mm = model if model is not None else load_morphable_model()
    p = np.asarray(params, np.float64).reshape(-1, 62)
    lines = contour_lines(mm)
    kp = np.asarray(mm.keypoints, np.int64)  # (68,) dense vertex of each landmark
    idx = np.tile(kp, (len(p), 1))
    P = p[:, :12].reshape(-1, 3, 4)
    # the face's left-right image direction: perpendicular to the image of its vertical axis
    # (well defined up to 90° yaw, unlike the image of the model x axis, which vanishes there),
    # signed like the image of the x axis
    vert = P[:, :2, 1]
    e = np.stack([vert[:, 1], -vert[:, 0]], axis=1)
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    e *= np.where(np.einsum("bi,bi->b", e, P[:, :2, 0]) < 0, -1.0, 1.0)[:, None]
    u = np.asarray(mm.u, np.float64).reshape(-1, 3)
    w = np.asarray(mm.w, np.float64).reshape(-1, 3, 50)
    allv = np.unique(np.concatenate(lines))
    pos = {int(v): i for i, v in enumerate(allv)}
    shp = u[allv][None] + np.einsum("vck,bk->bvc", w[allv], p[:, 12:])  # (B, V, 3)
    xy = np.einsum("brc,bvc->bvr", P[:, :2, :3], shp)  # (B, V, 2) (offset irrelevant)
    along = np.einsum("bvr,br->bv", xy, e)
    cx = u[kp[27:36], 0].mean()
    for k in CONTOUR:
        cols = np.array([pos[int(v)] for v in lines[k]])
        side = 1.0 if u[kp[k], 0] > cx else -1.0
        best = np.argmax(side * along[:, cols], axis=1)
        idx[:, k] = lines[k][best]
    return idx


def marched_landmarks(params: np.ndarray, model=None) -> np.ndarray:
    """The 68 landmarks ``(B, 68, 3)`` float32 (crop frame) in 300W-LP style: the marched
    correspondence of :func:`march_contour` under ``params`` ``(B, 62)``."""
    from tddfa.face.morphable_model import load_morphable_model

    mm = model if model is not None else load_morphable_model()
    p = np.asarray(params, np.float64).reshape(-1, 62)
    idx = march_contour(p, mm)
    u = np.asarray(mm.u, np.float64).reshape(-1, 3)[idx]  # (B, 68, 3)
    w = np.asarray(mm.w, np.float64).reshape(-1, 3, 50)[idx]  # (B, 68, 3, 50)
    s = u + np.einsum("bvck,bk->bvc", w, p[:, 12:])
    P = p[:, :12].reshape(-1, 3, 4)
    return (np.einsum("brc,bvc->bvr", P[:, :, :3], s) + P[:, None, :, 3]).astype(np.float32)
