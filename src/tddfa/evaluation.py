"""Evaluation: landmark and pose metrics on arrays, and the standard benchmark protocols.

Metrics (pure functions on arrays):

* :func:`nme` — normalised mean error per face, in **percent**: the mean Euclidean distance
  between predicted and ground-truth points (2-D, or 3-D with both clouds' depth centred), over
  the visible points, divided by a per-face normaliser (:func:`normaliser`: ``"box"`` =
  √(w·h) of the ground-truth points' box, ``"inter-ocular"`` = outer eye corners,
  ``"inter-pupil"`` = eye centres, ``"diagonal"`` = box diagonal).
* :func:`bucket_table` — means per |yaw| bucket ``[0, 30)``, ``[30, 60)``, ``[60, ∞)`` (named
  ``"0-30"``, ``"30-60"``, ``"60-90"`` as in the literature), their mean (``"mean"``) and the
  plain mean over every face (``"all"``).
* :func:`ced_curve` — cumulative error distribution; :func:`pose_mae` — head-pose error.

Protocols (each returns an :class:`EvalResult`; its ``summary`` is what the CLI writes as JSON):

* :func:`eval_aflw2000_crop` — 3DDFA's AFLW2000-3D protocol: the 2,000 given 120×120 crops,
  landmarks mapped back with the crop's roi box; plus head-pose MAE against ``Pose_Para``.
* :func:`eval_aflw2000_detector` — the 450×450 images through a face detector first; each
  image's ground truth is matched to the detection with the largest IoU with the ground-truth
  landmark box; unmatched images are counted as misses (never silently dropped).
* :func:`eval_300w` — 2-D NME (inter-ocular and box) on the 300W face crops.
* :func:`eval_aflw21` — 3DDFA's 21-point AFLW protocol (visible points only).

Pose convention mapping (AFLW2000-3D). ``Pose_Para[0, :3]`` are pitch, yaw, roll in radians of
the dataset's rotation ``Rz(roll)·Ry(yaw)·Rx(pitch)`` (``Rx``, ``Ry``, ``Rz`` the right-handed
elementary rotations). Our rotation (:mod:`tddfa.pose`, crop frame) is the **transpose** of
that matrix; this was verified on the 2,000 faces with mb05: among the 96 combinations of
axis order, signs and y/z flip, it is the only one (up to an equivalent flip) that agrees with
our predictions (mean MAE 4.6° against ≥ 7.6° for the next one). So the ground truth is
compared in the dataset's own convention: our predicted rotation ``R`` is transposed and
decomposed as ``pitch = atan2(M[2,1], M[2,2])``, ``yaw = −asin(M[2,0])``,
``roll = atan2(M[1,0], M[0,0])`` with ``M = Rᵀ`` (:func:`rotation_to_aflw_angles`). Yaw agrees
in sign with our ``Pose.yaw``; pitch and roll differ from ours because the Euler order differs
(ours is Z·Y·X about the crop axes). Following the usual head-pose protocol, only faces whose
three ground-truth angles are within ±99° are scored (1,969 of 2,000); angle differences are
wrapped to ``[-180°, 180°)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import InputError

__all__ = [
    "YAW_BUCKETS",
    "BUCKET_NAMES",
    "AFLW21_FROM_68",
    "EvalResult",
    "Predictor",
    "landmark_box",
    "normaliser",
    "nme",
    "bucket_table",
    "ced_curve",
    "auc_and_failure",
    "box_iou",
    "match_detection",
    "pose_para_to_rotation",
    "rotation_to_aflw_angles",
    "pose_errors",
    "pose_mae",
    "aflw21_from_68",
    "predict_params",
    "predict_landmarks",
    "AFLW2000Data",
    "PiecesAligner",
    "load_aflw2000",
    "eval_aflw2000_crop",
    "eval_aflw2000_detector",
    "eval_300w",
    "eval_aflw21",
    "write_json",
    "machine_info",
    "format_table",
    "add_parser",
    "run",
]

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


class Predictor(Protocol):
    """Anything with ``predict(crops (B, 120, 120, 3) uint8 BGR) -> (B, 62) float32``."""

    def predict(self, crops: np.ndarray) -> np.ndarray: ...


@dataclass
class EvalResult:
    """Outcome of one protocol.

    Attributes:
        summary: JSON-ready dict (protocol, model, n, nme table, timings, ...).
        arrays: per-face arrays for plots, e.g. ``nme`` ``(N,)`` percent, ``yaw`` ``(N,)``
            degrees, ``pose_err`` ``(M, 3)`` degrees.
    """

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def to_json(self, *, per_face: bool = True) -> str:
        """The summary as JSON; with ``per_face`` the per-face arrays go under ``"per_face"``."""
        d = dict(self.summary)
        if per_face and self.arrays:
            d["per_face"] = {k: _jsonable(v) for k, v in self.arrays.items()}
        return json.dumps(d, indent=1)


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
    from .detection import box_iou as iou_matrix

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


def aflw21_from_68(points: np.ndarray) -> np.ndarray:
    """Our 68 landmarks ``(N, 68, D)`` → the 21 AFLW points ``(N, 21, D)`` (see
    :data:`AFLW21_FROM_68`)."""
    p = np.asarray(points)
    if p.ndim != 3 or p.shape[1] != 68:
        raise InputError(f"points must be (N, 68, D), got {p.shape}")
    return np.stack([p[:, list(ix)].mean(axis=1) for ix in AFLW21_FROM_68], axis=1)


# --------------------------------------------------------------------------------------------
# protocols


def _model_info(predictor: Any, model: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"name": model or getattr(getattr(predictor, "info", None), "name", None)}
    src = getattr(predictor, "source", None)
    if src is not None:
        info["weights"] = str(src)
    return info


def predict_params(predictor: Predictor | Callable, crops: np.ndarray,
                   batch_size: int = 64) -> np.ndarray:
    """Run ``predictor`` on crops ``(N, 120, 120, 3)`` uint8 in batches → ``(N, 62)`` float32."""
    fn = predictor.predict if hasattr(predictor, "predict") else predictor
    out = [np.asarray(fn(crops[i:i + batch_size]), dtype=np.float32)
           for i in range(0, len(crops), batch_size)]
    params = np.concatenate(out) if out else np.zeros((0, 62), np.float32)
    if params.shape != (len(crops), 62):
        raise InputError(f"the predictor returned {params.shape}, expected ({len(crops)}, 62)")
    return params


def predict_landmarks(predictor: Predictor | Callable, crops: np.ndarray, rois: np.ndarray,
                      batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Parameters ``(N, 62)`` and 68 landmarks ``(N, 68, 3)`` image pixels for 120×120 crops and
    the roi boxes ``(N, 4)`` they were cut from."""
    from .morphable_model import load_morphable_model, to_image_frame

    params = predict_params(predictor, crops, batch_size)
    mm = load_morphable_model("sparse")
    lm = to_image_frame(mm.reconstruct(params), np.asarray(rois, np.float32).reshape(-1, 4))
    return params, lm


def _read_crops(folder: Path, names: Sequence[str], size: int = 120) -> np.ndarray:
    import cv2

    out = np.empty((len(names), size, size, 3), np.uint8)
    for i, n in enumerate(names):
        img = cv2.imread(str(folder / n), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"cannot read crop {folder / n} (missing or not an image)")
        if img.shape[:2] != (size, size):
            raise InputError(f"crop {folder / n} is {img.shape[1]}x{img.shape[0]}, "
                             f"expected {size}x{size}")
        out[i] = img
    return out


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"list file not found: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


@dataclass
class AFLW2000Data:
    """AFLW2000-3D benchmark files.

    Attributes:
        root: the benchmark folder.
        names: ``(N,)`` crop/image file names in protocol order.
        rois: ``(N, 4)`` float32 roi boxes of the crops, image pixels.
        gt: ``(N, 68, 2|3)`` float64 ground-truth landmarks, image pixels.
        yaw: ``(N,)`` absolute yaw, degrees (bucketing).
        gt_kind: ``"original"`` or ``"reannotated"``.
    """

    root: Path
    names: list[str]
    rois: np.ndarray
    gt: np.ndarray
    yaw: np.ndarray
    gt_kind: str

    def pose_para(self) -> np.ndarray:
        """``(N, 7)`` float64 ``Pose_Para`` from the ``.mat`` files (pitch, yaw, roll radians, …)."""
        import scipy.io

        out = np.empty((len(self.names), 7))
        for i, n in enumerate(self.names):
            path = self.root / "AFLW2000" / (Path(n).stem + ".mat")
            if not path.is_file():
                raise InputError(f"pose ground truth not found: {path}")
            out[i] = scipy.io.loadmat(str(path), variable_names=["Pose_Para"])["Pose_Para"].reshape(-1)[:7]
        return out


def load_aflw2000(root: str | Path, gt: str = "original") -> AFLW2000Data:
    """Read the AFLW2000-3D protocol files of ``root`` (the ``benchmarks/aflw2000-3d`` layout).

    Args:
        gt: ``"original"`` (``AFLW2000-3D.pts68.npy``, 3-D) or ``"reannotated"``
            (``AFLW2000-3D-Reannotated.pts68.npy``, 2-D).
    """
    root = Path(root)
    files = {"original": "AFLW2000-3D.pts68.npy", "reannotated": "AFLW2000-3D-Reannotated.pts68.npy"}
    if gt not in files:
        raise InputError(f"gt must be one of {list(files)}, got {gt!r}")
    need = ["AFLW2000-3D_crop.list", "AFLW2000-3D_crop.roi_box.npy", "AFLW2000-3D.pose.npy", files[gt]]
    missing = [f for f in need if not (root / f).is_file()]
    if missing:
        raise InputError(f"{root} is not an AFLW2000-3D benchmark folder: missing {missing}")
    names = _read_list(root / "AFLW2000-3D_crop.list")
    rois = np.load(root / "AFLW2000-3D_crop.roi_box.npy", allow_pickle=False).astype(np.float32)
    pts = np.load(root / files[gt], allow_pickle=False).astype(np.float64).transpose(0, 2, 1)
    yaw = np.abs(np.load(root / "AFLW2000-3D.pose.npy", allow_pickle=False).astype(np.float64))
    n = len(names)
    if not (len(rois) == len(pts) == len(yaw) == n):
        raise InputError(f"{root}: inconsistent lengths: list {n}, rois {len(rois)}, "
                         f"landmarks {len(pts)}, yaw {len(yaw)}")
    return AFLW2000Data(root, names, rois, pts, yaw, gt)


def _subset(data: AFLW2000Data, limit: int | None) -> AFLW2000Data:
    if not limit or limit >= len(data.names):
        return data
    return AFLW2000Data(data.root, data.names[:limit], data.rois[:limit], data.gt[:limit],
                        data.yaw[:limit], data.gt_kind)


def _nme_block(pred: np.ndarray, gt: np.ndarray, yaw: np.ndarray, dims: int,
               norm: str = "box", visible: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    # the normaliser always comes from the 2-D ground-truth box, also for 3-D NME
    n = normaliser(gt[..., :2], norm, visible)
    e = nme(pred, gt, n, dims=dims, visible=visible)
    table = bucket_table(e, yaw)
    return table, e


def _pose_block(params: np.ndarray, pose_para: np.ndarray,
                limit: float = 99.0) -> tuple[dict, np.ndarray, np.ndarray]:
    from .pose import pose_from_params

    _, R, _, _ = pose_from_params(params)
    pred = rotation_to_aflw_angles(R)
    gt = np.degrees(pose_para[:, :3])
    res = pose_mae(pred, gt, limit)
    res["convention"] = ("AFLW2000-3D Pose_Para (pitch, yaw, roll); ours mapped as "
                         "R_ours = (Rz(roll) Ry(yaw) Rx(pitch))^T")
    keep = (np.abs(gt) <= limit).all(axis=1)
    return res, pose_errors(pred, gt), keep


def eval_aflw2000_crop(
    predictor: Predictor | Callable,
    data_dir: str | Path,
    *,
    gt: str = "original",
    dims: int = 2,
    batch_size: int = 64,
    model: str | None = None,
    pose: bool = True,
    limit: int | None = None,
) -> EvalResult:
    """3DDFA's crop protocol on AFLW2000-3D.

    Each given 120×120 crop (``AFLW2000-3D_crop/``, no re-cropping) is regressed, its 68
    landmarks are mapped back to the 450×450 image with the crop's roi box, and the NME is
    normalised by √(w·h) of the ground-truth landmark box; bucket means by |yaw| from
    ``AFLW2000-3D.pose.npy``. With ``pose`` the head-pose MAE against ``Pose_Para`` is added.

    Args:
        predictor: e.g. :class:`tddfa.regressor.Regressor`.
        data_dir: the AFLW2000-3D folder (``benchmarks/aflw2000-3d``).
        gt: ``"original"`` or ``"reannotated"`` 68-point ground truth.
        dims: 2, or 3 for 3-D NME (original ground truth only).
        limit: evaluate only the first ``limit`` faces (quick checks).
    """
    if dims == 3 and gt != "original":
        raise InputError("3-D NME needs the original (3-D) ground truth; the reannotated one is 2-D")
    t0 = time.perf_counter()
    data = _subset(load_aflw2000(data_dir, gt), limit)
    crops = _read_crops(Path(data.root) / "AFLW2000-3D_crop", data.names)
    t1 = time.perf_counter()
    params, lm = predict_landmarks(predictor, crops, data.rois, batch_size)
    t2 = time.perf_counter()
    table, e = _nme_block(lm, data.gt, data.yaw, dims)
    counts = table.pop("counts")
    summary: dict[str, Any] = {
        "protocol": "crop", "dataset": "AFLW2000-3D", "model": _model_info(predictor, model),
        "n": len(data.names), "nme": table, "counts": counts, "gt": gt, "dims": dims,
        "normaliser": "sqrt(w*h) of the ground-truth 68-landmark box", "unit": "percent",
    }
    arrays: dict[str, np.ndarray] = {"nme": e, "yaw": data.yaw}
    if pose:
        pp = data.pose_para()
        res, err, keep = _pose_block(params, pp)
        summary["pose_mae"] = res
        arrays["pose_err"] = err[keep]
        arrays["gt_pitch"] = np.degrees(pp[:, 0])
    t3 = time.perf_counter()
    summary["timing_s"] = {"read": t1 - t0, "regress_and_reconstruct": t2 - t1,
                           "metrics": t3 - t2, "total": t3 - t0}
    return EvalResult(summary, arrays)


class PiecesAligner:
    """Minimal aligner (detect + align_rois) from a detector callable and a predictor, used when
    :class:`tddfa.pipeline.FaceAligner` is unavailable and in tests.

    Args:
        detector: ``image (H, W, 3) uint8 -> (K, 5)`` boxes + score.
        predictor: ``.predict(crops) -> (B, 62)``.
    """

    def __init__(self, detector: Callable[[np.ndarray], np.ndarray], predictor: Predictor):
        self.detector = detector
        self.predictor = predictor

    def detect(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self.detector(image), np.float32).reshape(-1, 5)

    def align_rois(self, image: np.ndarray, rois: np.ndarray, *, dense: bool = False,
                   boxes: np.ndarray | None = None) -> list:
        from types import SimpleNamespace

        from .crop import crop_batch

        rois = np.asarray(rois, np.float64).reshape(-1, 4)
        params, lm = predict_landmarks(self.predictor, crop_batch(image, rois), rois)
        return [SimpleNamespace(params=p, landmarks=q, roi_box=r)
                for p, q, r in zip(params, lm, rois, strict=True)]


def eval_aflw2000_detector(
    aligner: Any,
    data_dir: str | Path,
    *,
    gt: str = "original",
    dims: int = 2,
    min_iou: float = 0.1,
    model: str | None = None,
    pose: bool = True,
    limit: int | None = None,
) -> EvalResult:
    """AFLW2000-3D through the detector: full 450×450 images, our detector, the detection best
    matching the ground truth (:func:`match_detection` against the ground-truth landmark box),
    then the same NME. Misses are counted per bucket and reported; their NME is NaN per face and
    the NME table is over detected faces.

    Args:
        aligner: object with ``detect(image) -> (K, 5)`` and ``align_rois(image, rois, boxes=)``
            returning faces with ``.landmarks`` ``(68, 3)`` and ``.params`` ``(62,)``
            (:class:`tddfa.pipeline.FaceAligner`, or :class:`PiecesAligner`).
    """
    import cv2

    from .crop import roi_from_box

    if dims == 3 and gt != "original":
        raise InputError("3-D NME needs the original (3-D) ground truth; the reannotated one is 2-D")
    t0 = time.perf_counter()
    data = _subset(load_aflw2000(data_dir, gt), limit)
    n = len(data.names)
    lm = np.full((n, 68, 3), np.nan)
    params = np.full((n, 62), np.nan, np.float32)
    n_dets = np.zeros(n, np.int64)
    ious = np.zeros(n)
    gt_boxes = landmark_box(data.gt)
    t_det = t_align = 0.0
    for i, name in enumerate(data.names):
        path = data.root / "AFLW2000" / name
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"cannot read image {path} (missing or not an image)")
        ta = time.perf_counter()
        dets = np.asarray(aligner.detect(img), np.float32).reshape(-1, 5)
        tb = time.perf_counter()
        t_det += tb - ta
        n_dets[i] = len(dets)
        j = match_detection(dets, gt_boxes[i], min_iou)
        if j < 0:
            continue
        ious[i] = box_iou(dets[j:j + 1], gt_boxes[i])[0]
        faces = aligner.align_rois(img, roi_from_box(dets[j])[None], boxes=dets[j:j + 1])
        t_align += time.perf_counter() - tb
        lm[i] = np.asarray(faces[0].landmarks, np.float64)
        params[i] = np.asarray(faces[0].params, np.float32)
    hit = ~np.isnan(lm[:, 0, 0])
    e = np.full(n, np.nan)
    if hit.any():
        _, e_hit = _nme_block(lm[hit], data.gt[hit], data.yaw[hit], dims)
        e[hit] = e_hit
    table = bucket_table(e, data.yaw)
    counts = table.pop("counts")
    idx = _bucket_index(data.yaw, YAW_BUCKETS)
    misses = {name: int(((idx == k) & ~hit).sum()) for k, name in enumerate(BUCKET_NAMES)}
    summary: dict[str, Any] = {
        "protocol": "detector", "dataset": "AFLW2000-3D", "model": _model_info(aligner, model),
        "n": n, "detected": int(hit.sum()), "misses": int((~hit).sum()), "misses_by_bucket": misses,
        "nme": table, "counts": counts, "gt": gt, "dims": dims, "min_iou": min_iou,
        "median_iou": float(np.median(ious[hit])) if hit.any() else float("nan"),
        "images_without_detection": int((n_dets == 0).sum()),
        "normaliser": "sqrt(w*h) of the ground-truth 68-landmark box", "unit": "percent",
        "note": "NME table over detected faces only; misses listed separately",
    }
    arrays: dict[str, np.ndarray] = {"nme": e, "yaw": data.yaw}
    if pose and hit.any():
        res, err, keep = _pose_block(params[hit].astype(np.float64), data.pose_para()[hit])
        summary["pose_mae"] = res
        arrays["pose_err"] = err[keep]
    total = time.perf_counter() - t0
    summary["timing_s"] = {"detect": t_det, "crop_regress_reconstruct": t_align, "total": total}
    return EvalResult(summary, arrays)


def _resolve_300w(data_dir: Path, split: str) -> tuple[Path, Path]:
    """(image folder, npz) for a 300W split given either the parent folder or the split folder."""
    if (data_dir / f"{split}.npz").is_file() and (data_dir / split).is_dir():
        return data_dir / split, data_dir / f"{split}.npz"
    npz = data_dir.parent / f"{data_dir.name}.npz"
    if npz.is_file() and data_dir.is_dir():
        return data_dir, npz
    raise InputError(f"{data_dir}: expected a 300W crops folder holding {split}/ and {split}.npz, "
                     f"or a split folder with <split>.npz beside it")


def eval_300w(
    predictor: Predictor | Callable | None,
    data_dir: str | Path,
    *,
    split: str = "helen_test",
    roi: str = "landmarks",
    aligner: Any = None,
    batch_size: int = 64,
    model: str | None = None,
    min_iou: float = 0.1,
) -> EvalResult:
    """2-D NME on 300W face crops (iBUG 68 points), normalised by the outer-eye-corner distance
    ("inter-ocular") and by √(w·h) of the ground-truth box ("box").

    Args:
        predictor: regressor (for ``roi="landmarks"``).
        data_dir: ``datasets/300w-crops`` (with ``<split>/`` and ``<split>.npz``) or the split
            folder itself.
        roi: ``"landmarks"`` — crop each face with the landmark re-crop policy
            (:func:`tddfa.crop.roi_from_landmarks`) from its ground-truth landmarks;
            ``"detector"`` — detect faces with ``aligner`` and match to the ground truth.
        aligner: needed for ``roi="detector"``.
    """
    from .crop import crop_roi, roi_from_box, roi_from_landmarks

    t0 = time.perf_counter()
    folder, npz = _resolve_300w(Path(data_dir), split)
    with np.load(npz, allow_pickle=False) as z:
        names = [str(s) for s in z["names"]]
        gt = z["landmarks"].astype(np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (68, 2) or len(gt) != len(names):
        raise InputError(f"{npz}: expected names (N,) and landmarks (N, 68, 2), got {gt.shape}")
    import cv2

    def read(n: str) -> np.ndarray:
        for ext in ("", ".jpg", ".png"):
            p = folder / (n + ext)
            if p.is_file():
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if img is not None:
                    return img
        raise InputError(f"cannot read image {folder / n}[.jpg|.png]")

    n = len(names)
    lm = np.full((n, 68, 3), np.nan)
    if roi == "landmarks":
        if predictor is None:
            raise InputError("roi='landmarks' needs a predictor")
        rois = np.stack([roi_from_landmarks(g) for g in gt])
        crops = np.stack([crop_roi(read(nm), r) for nm, r in zip(names, rois, strict=True)])
        _, lm = predict_landmarks(predictor, crops, rois, batch_size)
        lm = lm.astype(np.float64)
    elif roi == "detector":
        if aligner is None:
            raise InputError("roi='detector' needs an aligner (detect + align_rois)")
        gt_boxes = landmark_box(gt)
        for i, nm in enumerate(names):
            img = read(nm)
            dets = np.asarray(aligner.detect(img), np.float32).reshape(-1, 5)
            j = match_detection(dets, gt_boxes[i], min_iou)
            if j >= 0:
                faces = aligner.align_rois(img, roi_from_box(dets[j])[None], boxes=dets[j:j + 1])
                lm[i] = np.asarray(faces[0].landmarks, np.float64)
    else:
        raise InputError(f"roi must be 'landmarks' or 'detector', got {roi!r}")
    hit = ~np.isnan(lm[:, 0, 0])
    res: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for kind in ("inter-ocular", "box"):
        e = np.full(n, np.nan)
        if hit.any():
            e[hit] = nme(lm[hit, :, :2], gt[hit], kind)
        arrays[f"nme_{kind}"] = e
        auc, fail = auc_and_failure(e, 8.0 if kind == "inter-ocular" else 4.0)
        res[kind] = {"mean": float(np.nanmean(e)) if hit.any() else float("nan"),
                     "median": float(np.nanmedian(e)) if hit.any() else float("nan"),
                     "auc": auc, "failure_rate": fail,
                     "threshold": 8.0 if kind == "inter-ocular" else 4.0}
    inner = np.zeros((n, 68), bool)
    inner[:, 17:] = True
    e_in = np.full(n, np.nan)
    if hit.any():
        e_in[hit] = nme(lm[hit, :, :2], gt[hit], "inter-ocular", visible=inner[hit])
    arrays["nme_inner51_inter-ocular"] = e_in
    res["inner51-inter-ocular"] = {
        "mean": float(np.nanmean(e_in)) if hit.any() else float("nan"),
        "median": float(np.nanmedian(e_in)) if hit.any() else float("nan"),
        "points": "17-67 (no jaw line)"}
    summary = {
        "protocol": "300w", "dataset": f"300W {split}", "model": _model_info(predictor or aligner, model),
        "n": n, "detected": int(hit.sum()), "misses": int((~hit).sum()), "roi": roi,
        "nme": res, "unit": "percent", "dims": 2,
        "normalisers": {"inter-ocular": "outer eye corners (points 36, 45)",
                        "box": "sqrt(w*h) of the ground-truth 68-landmark box"},
        "timing_s": {"total": time.perf_counter() - t0},
    }
    return EvalResult(summary, arrays)


def _find_aflw_gt(data_dir: Path, gt_dir: Path | None) -> Path:
    cands = [gt_dir] if gt_dir is not None else [data_dir, data_dir.parent]
    for c in cands:
        if c is not None and (Path(c) / "AFLW_GT_pts21.npy").is_file():
            return Path(c)
    raise InputError(f"AFLW 21-point ground truth (AFLW_GT_pts21.npy, AFLW_GT_crop_roi_box.npy, "
                     f"AFLW_GT_crop_yaws.npy) not found in {[str(c) for c in cands]}; pass --gt DIR")


def eval_aflw21(
    predictor: Predictor | Callable,
    data_dir: str | Path,
    *,
    gt_dir: str | Path | None = None,
    norm: str = "auto",
    batch_size: int = 64,
    model: str | None = None,
    limit: int | None = None,
) -> EvalResult:
    """3DDFA's 21-point AFLW protocol (21,080 test faces).

    Layout: ``data_dir/AFLW_GT_crop/`` holds the 120×120 crops, listed in protocol order by
    ``data_dir/AFLW_GT_crop.list`` (if the list is absent, the sorted image names are used).
    Ground truth (``gt_dir``, default ``data_dir`` or its parent): ``AFLW_GT_pts21.npy``
    ``(N, 2, 21)`` with ``-1`` for invisible points, ``AFLW_GT_crop_roi_box.npy`` ``(N, 4)``,
    ``AFLW_GT_crop_yaws.npy`` ``(N,)`` degrees; optional ``AFLW_GT_pts68.npy`` ``(N, 2|3, 68)``.

    Each crop's 68 landmarks are mapped back with its roi box, reduced to 21 points
    (:data:`AFLW21_FROM_68`), and only the visible ground-truth points are scored.

    Args:
        norm: ``"pts68"`` — √(w·h) of the 68-point ground-truth box (3DDFA's normaliser; needs
            ``AFLW_GT_pts68.npy``, which 3DDFA did not publish); ``"pts21"`` — √(w·h) of the
            visible 21 points' box; ``"roi"`` — √(w·h) of the crop roi box; ``"auto"`` —
            ``pts68`` when that file exists, else ``pts21`` (then the figures are not directly
            comparable with published tables: on AFLW2000-3D the 21-point box is ~7 % smaller).
    """
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    g = _find_aflw_gt(data_dir, Path(gt_dir) if gt_dir is not None else None)
    pts21 = np.load(g / "AFLW_GT_pts21.npy", allow_pickle=False).astype(np.float64).transpose(0, 2, 1)
    rois = np.load(g / "AFLW_GT_crop_roi_box.npy", allow_pickle=False).astype(np.float32)
    yaws = np.load(g / "AFLW_GT_crop_yaws.npy", allow_pickle=False).astype(np.float64)
    pts68_path = g / "AFLW_GT_pts68.npy"
    if norm == "auto":
        norm = "pts68" if pts68_path.is_file() else "pts21"
    if norm not in ("pts68", "pts21", "roi"):
        raise InputError(f"norm must be auto, pts68, pts21 or roi, got {norm!r}")
    crop_dir = data_dir / "AFLW_GT_crop"
    if not crop_dir.is_dir():
        raise InputError(f"AFLW crops folder not found: {crop_dir} (the AFLW images are not "
                         f"distributed with tddfa; put the 120x120 crops there)")
    lst = data_dir / "AFLW_GT_crop.list"
    if lst.is_file():
        names = _read_list(lst)
    else:
        names = sorted(p.name for p in crop_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if not (len(names) == len(pts21) == len(rois) == len(yaws)):
        raise InputError(f"AFLW: {len(names)} crops but ground truth for {len(pts21)} faces "
                         f"({len(rois)} rois, {len(yaws)} yaws)")
    if limit:
        names, pts21, rois, yaws = names[:limit], pts21[:limit], rois[:limit], yaws[:limit]
    visible = (pts21 != -1).all(axis=2)
    if norm == "pts68":
        p68 = np.load(pts68_path, allow_pickle=False).astype(np.float64)[: len(names)]
        n_len = normaliser(p68.transpose(0, 2, 1)[..., :2], "box")
    elif norm == "pts21":
        n_len = normaliser(pts21, "box", visible)
    else:
        n_len = np.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1])).astype(np.float64)
    crops = _read_crops(crop_dir, names)
    _, lm = predict_landmarks(predictor, crops, rois, batch_size)
    pred21 = aflw21_from_68(lm[..., :2].astype(np.float64))
    e = nme(pred21, pts21, n_len, visible=visible)
    table = bucket_table(e, yaws)
    counts = table.pop("counts")
    summary = {
        "protocol": "aflw21", "dataset": "AFLW (21 points)", "model": _model_info(predictor, model),
        "n": len(names), "nme": table, "counts": counts, "normaliser": norm, "unit": "percent",
        "visible_points": int(visible.sum()), "dims": 2,
        "comparable_with_published": norm == "pts68",
        "timing_s": {"total": time.perf_counter() - t0},
    }
    return EvalResult(summary, {"nme": e, "yaw": np.abs(yaws)})


# --------------------------------------------------------------------------------------------
# output


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()] if v.ndim else _jsonable(v.item())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if not math.isfinite(f) else round(f, 6)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def machine_info() -> dict[str, Any]:
    """Machine and library versions recorded with every result."""
    import os

    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor()
                            or platform.machine(), "cpu_count": os.cpu_count(),
                            "python": platform.python_version(), "numpy": np.__version__}
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not on every OS
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def write_json(result: EvalResult | dict, path: str | Path, *, per_face: bool = True) -> Path:
    """Write a result (summary plus, with ``per_face``, the per-face arrays) as JSON atomically."""
    from .atomic import atomic_write_text

    if isinstance(result, EvalResult):
        d = dict(result.summary)
        if per_face and result.arrays:
            d["per_face"] = dict(result.arrays)
    else:
        d = dict(result)
    return atomic_write_text(path, json.dumps(_jsonable(d), indent=1) + "\n")


def format_table(summary: dict[str, Any]) -> str:
    """Human-readable lines for a summary (the CLI prints them)."""
    lines = []
    proto = summary.get("protocol")
    if proto in ("crop", "detector", "aflw21"):
        nm = summary["nme"]
        counts = summary.get("counts", {})
        head = f"{summary.get('dataset')} [{proto}] model={summary['model'].get('name')} n={summary['n']}"
        if proto == "detector":
            head += f" detected={summary['detected']} misses={summary['misses']}"
        lines.append(head)
        for b in BUCKET_NAMES:
            lines.append(f"  NME |yaw| {b:>6}: {nm[b]:.3f} %  (n={counts.get(b, '?')})")
        lines.append(f"  NME mean of buckets: {nm['mean']:.3f} %   all faces: {nm['all']:.3f} %")
        if "pose_mae" in summary:
            p = summary["pose_mae"]
            lines.append(f"  pose MAE (deg, n={p['n']}): yaw {p['yaw']:.3f}  pitch {p['pitch']:.3f}  "
                         f"roll {p['roll']:.3f}  mean {p['mean']:.3f}")
    elif proto == "300w":
        lines.append(f"{summary['dataset']} roi={summary['roi']} model={summary['model'].get('name')} "
                     f"n={summary['n']} misses={summary['misses']}")
        for k, v in summary["nme"].items():
            line = f"  NME ({k}): mean {v['mean']:.3f} %  median {v['median']:.3f} %"
            if "auc" in v:
                line += f"  AUC@{v['threshold']:g} {v['auc']:.3f}  failure {v['failure_rate']:.3f}"
            lines.append(line)
    if "timing_s" in summary:
        lines.append(f"  time: {summary['timing_s'].get('total', float('nan')):.1f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tddfa eval`` with sub-commands ``aflw2000``, ``300w``, ``aflw``, ``card``."""
    p = subparsers.add_parser("eval", help="benchmark protocols (AFLW2000-3D, 300W, AFLW) and the model card",
                              description="Evaluate a model on the standard benchmarks.")
    sub = p.add_subparsers(dest="eval_command", metavar="{aflw2000,300w,aflw,card}")
    sub.required = True

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data", required=True, help="benchmark folder")
        sp.add_argument("--model", default="mb05", help="regressor name (default mb05)")
        sp.add_argument("--checkpoint", default=None, help="weights to use instead of the registered ones")
        sp.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
        sp.add_argument("--plot", action="store_true",
                        help="write PNG figures (CED per yaw bucket, NME vs yaw, pose-error histograms)")
        sp.add_argument("--plot-dir", default=None, metavar="DIR",
                        help="folder for the figures (default: beside --json, else ./eval-plots)")
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
        sp.add_argument("--limit", type=int, default=None, help="only the first N faces (quick check)")

    a = sub.add_parser("aflw2000", help="AFLW2000-3D: NME by yaw bucket (crop / detector protocol), pose MAE")
    common(a)
    a.add_argument("--protocol", choices=["crop", "detector", "both"], default="crop")
    a.add_argument("--gt", choices=["original", "reannotated"], default="original",
                   help="68-point ground truth (default: original)")
    a.add_argument("--3d", dest="dims3", action="store_true", help="3-D NME (x, y, z)")
    a.add_argument("--min-iou", type=float, default=0.1, help="detector protocol: matching IoU")
    a.add_argument("--no-pose", action="store_true", help="skip the head-pose MAE")

    w = sub.add_parser("300w", help="300W crops: 2-D NME (inter-ocular and box)")
    common(w)
    w.add_argument("--split", default="helen_test")
    w.add_argument("--roi", choices=["landmarks", "detector"], default="landmarks")

    f = sub.add_parser("aflw", help="AFLW 21-point protocol (needs the AFLW crops)")
    common(f)
    f.add_argument("--gt", dest="gt_dir", default=None, help="folder with AFLW_GT_*.npy")
    f.add_argument("--norm", choices=["auto", "pts68", "pts21", "roi"], default="auto")

    c = sub.add_parser("card", help="generate docs/model-card.md from result JSON files")
    c.add_argument("--results", required=True, help="folder of result JSON files")
    c.add_argument("--out", default="docs/model-card.md")
    return p


def _make_regressor(args: argparse.Namespace):
    from .regressor import Regressor

    return Regressor(model=args.model, checkpoint=args.checkpoint, threads=args.threads)


def _make_aligner(args: argparse.Namespace):
    try:
        from .pipeline import FaceAligner
    except ImportError:
        from .detection import FaceBoxesDetector

        log.info("tddfa.pipeline not available; using FaceBoxesDetector + Regressor directly")
        return PiecesAligner(FaceBoxesDetector(threads=args.threads), _make_regressor(args))
    return FaceAligner(model=args.model, checkpoint=args.checkpoint, threads=args.threads)


def _plot_dir(args: argparse.Namespace) -> Path | None:
    if not args.plot and not args.plot_dir:
        return None
    if args.plot_dir:
        return Path(args.plot_dir)
    return Path(args.json).parent if args.json else Path("eval-plots")


def _emit(results: list[EvalResult], args: argparse.Namespace, stem: str) -> None:
    for r in results:
        print(format_table(r.summary))
    if args.json:
        if len(results) == 1:
            write_json(results[0], args.json)
        else:
            base = Path(args.json)
            for r in results:
                write_json(r, base.with_name(f"{base.stem}-{r.summary['protocol']}{base.suffix}"))
    pd = _plot_dir(args)
    if pd is not None:
        from .plots import plot_result

        for r in results:
            proto = r.summary["protocol"]
            for p in plot_result(r, pd, stem=stem if proto == stem else f"{stem}-{proto}"):
                print(f"  plot: {p}")


def run(args: argparse.Namespace) -> int:
    """Execute ``tddfa eval ...``; returns the exit status."""
    cmd = args.eval_command
    if cmd == "card":
        from .model_card import write_model_card

        out = write_model_card(args.results, args.out)
        print(f"wrote {out}")
        return 0
    if cmd == "aflw2000":
        dims = 3 if args.dims3 else 2
        results = []
        if args.protocol in ("crop", "both"):
            results.append(eval_aflw2000_crop(
                _make_regressor(args), args.data, gt=args.gt, dims=dims,
                batch_size=args.batch_size, model=args.model, pose=not args.no_pose,
                limit=args.limit))
        if args.protocol in ("detector", "both"):
            results.append(eval_aflw2000_detector(
                _make_aligner(args), args.data, gt=args.gt, dims=dims, min_iou=args.min_iou,
                model=args.model, pose=not args.no_pose, limit=args.limit))
        for r in results:
            r.summary["command"] = _command_line(args)
            r.summary["machine"] = machine_info()
        _emit(results, args, "aflw2000")
        return 0
    if cmd == "300w":
        if args.roi == "detector":
            r = eval_300w(None, args.data, split=args.split, roi="detector",
                          aligner=_make_aligner(args), model=args.model)
        else:
            r = eval_300w(_make_regressor(args), args.data, split=args.split, roi="landmarks",
                          batch_size=args.batch_size, model=args.model)
        r.summary["command"] = _command_line(args)
        r.summary["machine"] = machine_info()
        _emit([r], args, "300w")
        return 0
    if cmd == "aflw":
        r = eval_aflw21(_make_regressor(args), args.data, gt_dir=args.gt_dir, norm=args.norm,
                        batch_size=args.batch_size, model=args.model, limit=args.limit)
        r.summary["command"] = _command_line(args)
        r.summary["machine"] = machine_info()
        _emit([r], args, "aflw")
        return 0
    raise InputError(f"unknown eval command {cmd!r}")  # pragma: no cover


def _command_line(args: argparse.Namespace) -> str:
    import shlex
    import sys

    argv = sys.argv[1:]
    if argv and argv[0] in ("eval", "bench") and argv[0] == getattr(args, "command", argv[0]):
        return "tddfa " + " ".join(shlex.quote(a) for a in argv)
    keys = {k: v for k, v in vars(args).items() if v not in (None, False) and k != "func"}
    return "tddfa eval " + " ".join(f"{k}={v}" for k, v in keys.items())
