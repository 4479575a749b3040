"""AFLW2000-3D: the 3DDFA crop protocol and the detector protocol, with head-pose error."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import InputError
from tddfa.evaluation.headpose import pose_errors, pose_mae, rotation_to_aflw_angles
from tddfa.evaluation.metrics import (
    BUCKET_NAMES,
    YAW_BUCKETS,
    _bucket_index,
    box_iou,
    bucket_table,
    landmark_box,
    match_detection,
    nme,
    normaliser,
)
from tddfa.evaluation.report import EvalResult, Predictor

log = logging.getLogger(__name__)


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
    from tddfa.face.morphable_model import load_morphable_model, to_image_frame

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
        from tddfa.assets.serialization import load_mat

        out = np.empty((len(self.names), 7))
        for i, n in enumerate(self.names):
            path = self.root / "AFLW2000" / (Path(n).stem + ".mat")
            if not path.is_file():
                raise InputError(f"pose ground truth not found: {path}")
            pose = np.asarray(load_mat(path, ["Pose_Para"]).get("Pose_Para", np.zeros(0)))
            if pose.size < 7 or not np.issubdtype(pose.dtype, np.number):
                raise InputError(f"{path}: expected a numeric Pose_Para of 7 values, got "
                                 f"{pose.shape} {pose.dtype}")
            out[i] = pose.reshape(-1)[:7]
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
    from tddfa.assets.serialization import load_npy

    rois = load_npy(root / "AFLW2000-3D_crop.roi_box.npy")
    pts = load_npy(root / files[gt])
    yaw = load_npy(root / "AFLW2000-3D.pose.npy")
    if rois.ndim != 2 or rois.shape[1] < 4 or pts.ndim != 3 or pts.shape[1] not in (2, 3) \
            or yaw.ndim < 1 or not all(np.issubdtype(a.dtype, np.number) for a in (rois, pts, yaw)):
        raise InputError(f"{root}: unexpected ground-truth arrays: rois {rois.shape} {rois.dtype}, "
                         f"landmarks {pts.shape} {pts.dtype}, pose {yaw.shape} {yaw.dtype}")
    rois = rois.astype(np.float32)
    pts = pts.astype(np.float64).transpose(0, 2, 1)
    yaw = np.abs(yaw.astype(np.float64))
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
    from tddfa.face.pose import pose_from_params

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
    stage_rows = None
    if hasattr(predictor, "predict_stages"):  # a cascade: NME after every stage
        params, lm, stage_rows = _cascade_stages(predictor, crops, data, dims, batch_size)
    else:
        params, lm = predict_landmarks(predictor, crops, data.rois, batch_size)
    t2 = time.perf_counter()
    table, e = _nme_block(lm, data.gt, data.yaw, dims)
    counts = table.pop("counts")
    summary: dict[str, Any] = {
        "protocol": "crop", "dataset": "AFLW2000-3D", "model": _model_info(predictor, model),
        "n": len(data.names), "nme": table, "counts": counts, "gt": gt, "dims": dims,
        "normaliser": "sqrt(w*h) of the ground-truth 68-landmark box", "unit": "percent",
    }
    if stage_rows is not None:
        summary["stages"] = stage_rows
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


def _cascade_stages(predictor: Any, crops: np.ndarray, data: AFLW2000Data, dims: int,
                    batch_size: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Final parameters and landmarks of a cascade plus ``[{"stage", "buckets", "mean", ...}]``
    (bucket NME after each stage, 0 = the start; ``skipped``: faces a stage's yaw gate passed
    through; ``fallbacks`` on the last row: non-finite stage outputs replaced)."""
    from tddfa.face.morphable_model import load_morphable_model, to_image_frame

    per: list[list[np.ndarray]] = []
    fallbacks = 0
    skipped: np.ndarray | None = None
    for i in range(0, len(crops), batch_size):
        st, flags = predictor.predict_stages(crops[i:i + batch_size])
        per.append(st)
        fallbacks += int(np.asarray(flags).sum())
        gated = getattr(predictor, "last_skipped", None)
        if gated is not None and len(gated) == len(flags):
            skipped = np.asarray(gated).sum(0) + (0 if skipped is None else skipped)
    n_st = len(per[0]) if per else 1
    mm = load_morphable_model("sparse")
    rois = np.asarray(data.rois, np.float32).reshape(-1, 4)
    rows, lm = [], None
    for k in range(n_st):
        p = np.concatenate([b[k] for b in per]) if per else np.zeros((0, 62), np.float32)
        lm = to_image_frame(mm.reconstruct(p), rois)
        table, _ = _nme_block(lm, data.gt, data.yaw, dims)
        buckets = [table[key] for key in table if key not in ("counts", "mean", "all")][:3]
        rows.append({"stage": k, "buckets": [float(b) for b in buckets],
                     "mean": float(table["mean"]), "all": float(table.get("all", float("nan")))})
        if k > 0 and skipped is not None:
            rows[-1]["skipped"] = int(skipped[k - 1])  # faces the stage's yaw gate passed through
        params = p
    rows[-1]["fallbacks"] = fallbacks
    return params, lm, rows


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

        from tddfa.face.crop import crop_batch

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

    from tddfa.face.crop import roi_from_box

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
