"""300W (helen_test and the other 300W crops): NME with inter-ocular or box normalisation, from
landmark crops or the detector."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import InputError
from tddfa.evaluation.aflw2000 import _model_info, predict_landmarks
from tddfa.evaluation.metrics import auc_and_failure, landmark_box, match_detection, nme
from tddfa.evaluation.report import EvalResult, Predictor

log = logging.getLogger(__name__)


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
    from tddfa.face.crop import crop_roi, roi_from_box, roi_from_landmarks

    t0 = time.perf_counter()
    folder, npz = _resolve_300w(Path(data_dir), split)
    from tddfa.assets.serialization import load_npz

    z = load_npz(npz)
    if "names" not in z or "landmarks" not in z or not np.issubdtype(z["landmarks"].dtype, np.number):
        raise InputError(f"{npz}: expected arrays names (N,) and landmarks (N, 68, 2), "
                         f"found {sorted(z)}")
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
