"""Landmark metrics on arrays: normalisers, NME in percent, yaw-bucket tables, CED curves, detection
matching and AFLW's 21 points from our 68."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tddfa.errors import InputError

log = logging.getLogger(__name__)


#: |yaw| buckets (degrees, lower bound inclusive, upper exclusive); the last is open-ended
#: because a few AFLW2000-3D faces have |yaw| > 90° in the benchmark's pose file.
YAW_BUCKETS: tuple[tuple[float, float], ...] = ((0.0, 30.0), (30.0, 60.0), (60.0, math.inf))
BUCKET_NAMES: tuple[str, ...] = ("0-30", "30-60", "60-90")

#: For each of AFLW's 21 points, the 0-based indices of our 68 (iBUG order) landmarks whose
#: mean stands for it: 6 brow points; per eye its left corner, centre (mean of its six points)
#: and right corner, in image order; left "ear" = jaw point 2; nose left wing, tip, right wing;
#: right "ear" = jaw point 14; mouth left corner, centre (mean of the eight inner-lip points),
#: right corner; chin. The same correspondence as 3DDFA's AFLW benchmark.
AFLW21_FROM_68: tuple[tuple[int, ...], ...] = (
    (17,), (19,), (21,), (22,), (24,), (26,),
    (36,), (36, 37, 38, 39, 40, 41), (39,), (42,), (42, 43, 44, 45, 46, 47), (45,),
    (2,), (31,), (30,), (35,), (14,),
    (48,), (60, 61, 62, 63, 64, 65, 66, 67), (54,), (8,),
)

_NORMALISERS = ("box", "inter-ocular", "inter-pupil", "diagonal")

# --------------------------------------------------------------------------------------------
# metrics


def _points(a: np.ndarray, name: str, min_dims: int = 2) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[2] < min_dims:
        raise InputError(f"{name} must be (N, K, {min_dims}+) points, got shape {a.shape}")
    return a


def _visible_mask(points: np.ndarray, visible: np.ndarray | None) -> np.ndarray:
    if visible is None:
        return np.ones(points.shape[:2], dtype=bool)
    v = np.asarray(visible, dtype=bool)
    if v.ndim == 1:
        v = v[None]
    if v.shape != points.shape[:2]:
        raise InputError(f"visible must be (N, K) = {points.shape[:2]}, got {v.shape}")
    return v


def landmark_box(points: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Box ``(N, 4)`` x1, y1, x2, y2 of the (visible) points ``(N, K, 2+)``, same units."""
    p = _points(points, "points")
    v = _visible_mask(p, visible)
    if not v.any(axis=1).all():
        raise InputError("every face needs at least one visible point to build its box")
    x = np.where(v, p[..., 0], np.nan)
    y = np.where(v, p[..., 1], np.nan)
    return np.stack([np.nanmin(x, 1), np.nanmin(y, 1), np.nanmax(x, 1), np.nanmax(y, 1)], axis=1)


def normaliser(gt: np.ndarray, kind: str = "box", visible: np.ndarray | None = None) -> np.ndarray:
    """Per-face normalising length ``(N,)`` from ground-truth points ``(N, K, 2+)``.

    Args:
        gt: ground-truth points, pixels.
        kind: ``"box"`` √(w·h) of the points' box (AFLW2000-3D / AFLW protocol);
            ``"diagonal"`` the box diagonal; ``"inter-ocular"`` distance of the outer eye
            corners (points 36 and 45, needs K = 68); ``"inter-pupil"`` distance of the eye
            centres (means of 36–41 and 42–47, needs K = 68).
        visible: optional ``(N, K)`` mask; invisible points are left out of the box.
    """
    p = _points(gt, "gt")
    if kind in ("box", "diagonal"):
        b = landmark_box(p, visible)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        return np.sqrt(w * h) if kind == "box" else np.hypot(w, h)
    if kind in ("inter-ocular", "inter-pupil"):
        if p.shape[1] != 68:
            raise InputError(f"{kind} normalisation needs 68 landmarks, got {p.shape[1]}")
        if kind == "inter-ocular":
            a, b = p[:, 36, :2], p[:, 45, :2]
        else:
            a, b = p[:, 36:42, :2].mean(1), p[:, 42:48, :2].mean(1)
        return np.linalg.norm(a - b, axis=1)
    raise InputError(f"normaliser kind must be one of {_NORMALISERS}, got {kind!r}")


def nme(
    pred: np.ndarray,
    gt: np.ndarray,
    norm: np.ndarray | str = "box",
    *,
    dims: int = 2,
    visible: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised mean error per face, **percent** ``(N,)`` float64.

    Args:
        pred: predicted points ``(N, K, 2|3)``, image pixels.
        gt: ground truth ``(N, K, 2|3)``, same frame.
        norm: ``(N,)`` normalising lengths, or a :func:`normaliser` kind computed from ``gt``.
        dims: 2 (x, y) or 3 (x, y, z; each cloud's mean depth is subtracted first, because the
            depth origin is arbitrary in both).
        visible: optional ``(N, K)`` bool mask of the points to score.
    """
    if dims not in (2, 3):
        raise InputError(f"dims must be 2 or 3, got {dims}")
    p = _points(pred, "pred", dims)
    g = _points(gt, "gt", dims)
    if p.shape[:2] != g.shape[:2]:
        raise InputError(f"pred {p.shape[:2]} and gt {g.shape[:2]} must have the same (N, K)")
    v = _visible_mask(g, visible)
    p, g = p[..., :dims].copy(), g[..., :dims].copy()
    if dims == 3:
        cnt = np.maximum(v.sum(1, keepdims=True), 1)
        p[..., 2] -= np.where(v, p[..., 2], 0).sum(1, keepdims=True) / cnt
        g[..., 2] -= np.where(v, g[..., 2], 0).sum(1, keepdims=True) / cnt
    if isinstance(norm, str):
        norm = normaliser(g, norm, visible)
    norm = np.asarray(norm, dtype=np.float64).reshape(-1)
    if norm.shape[0] != p.shape[0]:
        raise InputError(f"norm must have one value per face ({p.shape[0]}), got {norm.shape[0]}")
    d = np.linalg.norm(p - g, axis=2)
    n_vis = v.sum(1)
    if (n_vis == 0).any():
        raise InputError(f"{int((n_vis == 0).sum())} face(s) have no visible point to score")
    return np.where(v, d, 0.0).sum(1) / n_vis / norm * 100.0


def _bucket_index(yaw: np.ndarray, buckets: Sequence[tuple[float, float]]) -> np.ndarray:
    a = np.abs(np.asarray(yaw, dtype=np.float64))
    idx = np.full(a.shape, -1, dtype=np.int64)
    for i, (lo, hi) in enumerate(buckets):
        idx[(a >= lo) & (a < hi)] = i
    return idx


def bucket_table(
    errors: np.ndarray,
    yaw: np.ndarray,
    buckets: Sequence[tuple[float, float]] = YAW_BUCKETS,
    names: Sequence[str] = BUCKET_NAMES,
) -> dict[str, Any]:
    """Mean error per |yaw| bucket, their mean and the plain mean over all faces.

    Args:
        errors: ``(N,)`` per-face errors (e.g. NME percent); NaN entries (misses) are skipped.
        yaw: ``(N,)`` yaw in degrees (its absolute value is bucketed).

    Returns:
        ``{name: mean, ..., "mean": mean of the bucket means, "all": mean over every face,
        "counts": {name: n, ...}}``. An empty bucket gives NaN.
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    y = np.asarray(yaw, dtype=np.float64).reshape(-1)
    if e.shape != y.shape:
        raise InputError(f"errors {e.shape} and yaw {y.shape} must have the same length")
    idx = _bucket_index(y, buckets)
    ok = np.isfinite(e)
    out: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for i, name in enumerate(names):
        sel = (idx == i) & ok
        counts[name] = int(sel.sum())
        out[name] = float(e[sel].mean()) if sel.any() else float("nan")
    out["mean"] = float(np.mean([out[n] for n in names]))
    out["all"] = float(e[ok].mean()) if ok.any() else float("nan")
    out["counts"] = counts
    return out


def ced_curve(errors: np.ndarray, max_error: float | None = None,
              n_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds ``(n_points,)`` and the fraction ``(n_points,)``
    of faces whose error is ≤ each threshold (misses, NaN, count as failures)."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise InputError("ced_curve needs at least one error, got an empty array")
    finite = np.sort(e[np.isfinite(e)])
    if max_error is None:
        max_error = float(np.percentile(finite, 99)) if finite.size else 1.0
    x = np.linspace(0.0, max_error, n_points)
    y = np.searchsorted(finite, x, side="right") / e.size
    return x, y


def auc_and_failure(errors: np.ndarray, threshold: float) -> tuple[float, float]:
    """Area under the CED curve up to ``threshold`` (normalised to [0, 1]) and the failure rate
    (fraction with error > threshold or NaN)."""
    x, y = ced_curve(errors, threshold, 1001)
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / threshold)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    fail = float(np.mean(~(np.isfinite(e) & (e <= threshold))))
    return area, fail


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU ``(K,)`` of boxes ``(K, 4+)`` with one box ``(4,)``, all x1, y1, x2, y2."""
    from tddfa.detection.faceboxes import box_iou as iou_matrix

    return iou_matrix(boxes, np.asarray(box).reshape(-1)[None])[:, 0]


def match_detection(boxes: np.ndarray, gt_box: np.ndarray, min_iou: float = 0.1) -> int:
    """Index of the detection that matches the ground-truth box, or ``-1`` for a miss.

    The detection with the largest IoU wins when it reaches ``min_iou``; otherwise the one whose
    centre is nearest the ground-truth centre, provided that centre lies inside the ground-truth
    box; otherwise a miss.
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return -1
    b = b.reshape(-1, b.shape[-1])
    iou = box_iou(b, gt_box)
    best = int(np.argmax(iou))
    if iou[best] >= min_iou:
        return best
    g = np.asarray(gt_box, dtype=np.float64)
    c = (b[:, :2] + b[:, 2:4]) / 2.0
    d = np.hypot(c[:, 0] - (g[0] + g[2]) / 2, c[:, 1] - (g[1] + g[3]) / 2)
    j = int(np.argmin(d))
    inside = g[0] <= c[j, 0] <= g[2] and g[1] <= c[j, 1] <= g[3]
    return j if inside else -1


def aflw21_from_68(points: np.ndarray) -> np.ndarray:
    """Our 68 landmarks ``(N, 68, D)`` → the 21 AFLW points ``(N, 21, D)`` (see
    :data:`AFLW21_FROM_68`)."""
    p = np.asarray(points)
    if p.ndim != 3 or p.shape[1] != 68:
        raise InputError(f"points must be (N, 68, D), got {p.shape}")
    return np.stack([p[:, list(ix)].mean(axis=1) for ix in AFLW21_FROM_68], axis=1)
