"""AFLW's 21-point protocol."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tddfa.errors import InputError
from tddfa.evaluation.aflw2000 import _model_info, _read_crops, _read_list, predict_landmarks
from tddfa.evaluation.metrics import aflw21_from_68, bucket_table, nme, normaliser
from tddfa.evaluation.report import EvalResult, Predictor

log = logging.getLogger(__name__)


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
    from tddfa.assets.serialization import load_npy

    pts21, rois, yaws = (load_npy(g / f) for f in ("AFLW_GT_pts21.npy", "AFLW_GT_crop_roi_box.npy",
                                                   "AFLW_GT_crop_yaws.npy"))
    if pts21.ndim != 3 or rois.ndim != 2 or rois.shape[1] < 4 or yaws.ndim < 1 or not all(
            np.issubdtype(a.dtype, np.number) for a in (pts21, rois, yaws)):
        raise InputError(f"{g}: unexpected ground-truth arrays: pts21 {pts21.shape}, rois "
                         f"{rois.shape}, yaws {yaws.shape}")
    pts21 = pts21.astype(np.float64).transpose(0, 2, 1)
    rois = rois.astype(np.float32)
    yaws = yaws.astype(np.float64)
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
        p68 = load_npy(pts68_path)
        if p68.ndim != 3 or not np.issubdtype(p68.dtype, np.number):
            raise InputError(f"{pts68_path}: expected (N, 2|3, 68) numbers, got {p68.shape}")
        p68 = p68.astype(np.float64)[: len(names)]
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
