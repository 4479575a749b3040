"""Training samples: the :class:`SampleSet` manifest and its readers (300W-LP .mat files, a crops
folder with a parameter file, landmark fits of the 300W crops)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.face.crop import INPUT_SIZE, roi_from_landmarks

log = logging.getLogger(__name__)


@dataclass
class SampleSet:
    """Parallel arrays of samples.

    Attributes:
        names: ``(N,)`` str identifiers.
        images: ``(N,)`` absolute image paths.
        roi_boxes: ``(N, 4)`` float32 image pixels.
        params: ``(N, 62)`` float32 de-normalised, crop frame of each roi.
        landmarks: ``(N, 68, 2)`` float32 image pixels, or ``None``.
        skipped: number of samples dropped while reading (corrupt or incomplete).
    """

    names: np.ndarray
    images: np.ndarray
    roi_boxes: np.ndarray
    params: np.ndarray
    landmarks: np.ndarray | None = None
    skipped: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index: np.ndarray | slice | Iterable[int]) -> SampleSet:
        """The samples at ``index``."""
        idx = index if isinstance(index, slice) else np.asarray(list(index) if not isinstance(
            index, np.ndarray) else index)
        lm = None if self.landmarks is None else self.landmarks[idx]
        return SampleSet(self.names[idx], self.images[idx], self.roi_boxes[idx], self.params[idx],
                         lm, self.skipped, dict(self.meta))

    @staticmethod
    def concat(sets: list[SampleSet]) -> SampleSet:
        """All samples of ``sets`` in order (landmarks kept only if every set has them)."""
        if not sets:
            raise InputError("concat needs at least one sample set")
        lms = [s.landmarks for s in sets]
        return SampleSet(
            np.concatenate([s.names for s in sets]), np.concatenate([s.images for s in sets]),
            np.concatenate([s.roi_boxes for s in sets]), np.concatenate([s.params for s in sets]),
            None if any(x is None for x in lms) else np.concatenate(lms),
            sum(s.skipped for s in sets),
        )


def save_manifest(path: str | Path, samples: SampleSet, **extra: np.ndarray) -> Path:
    """Write ``samples`` as a manifest ``.npz`` (image paths stored relative to its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = np.array([os.path.relpath(p, path.parent) for p in samples.images])
    arrays = dict(names=np.asarray(samples.names).astype(str), images=rel,
                  roi_boxes=np.asarray(samples.roi_boxes, np.float32),
                  params=np.asarray(samples.params, np.float32), **extra)
    if samples.landmarks is not None:
        arrays["landmarks"] = np.asarray(samples.landmarks, np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_manifest(path: str | Path) -> SampleSet:
    """Read a manifest written by :func:`save_manifest` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    from tddfa.assets.serialization import load_npz

    z = load_npz(path)
    missing = {"names", "images", "params"} - set(z)
    if missing:
        raise InputError(f"{path}: manifest lacks {sorted(missing)}; has {sorted(z)}")
    try:
        params = np.asarray(z["params"], np.float32)
        if params.ndim != 2 or params.shape[1] != 62:
            raise InputError(f"{path}: params must be (N, 62), got {params.shape}")
        images = np.array([str((path.parent / str(p)).resolve()) for p in np.ravel(z["images"])])
        rois = np.asarray(z["roi_boxes"], np.float32) if "roi_boxes" in z else None
        lm = np.asarray(z["landmarks"], np.float32) if "landmarks" in z else None
        names = np.ravel(np.asarray(z["names"]).astype(str))
    except (ValueError, TypeError, OSError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from exc
    if not (len(names) == len(images) == len(params)) or (
            rois is not None and rois.shape != (len(names), 4)):
        raise InputError(f"{path}: inconsistent manifest: {len(names)} names, {len(images)} "
                         f"images, params {params.shape}, roi_boxes "
                         f"{None if rois is None else rois.shape}")
    if rois is None:
        rois = np.tile(np.array([0, 0, INPUT_SIZE, INPUT_SIZE], np.float32), (len(names), 1))
    return SampleSet(names, images, rois, params, lm)


def read_crops_folder(folder: str | Path, param_file: str | Path) -> SampleSet:
    """A folder of images plus a parameter file (``.npz`` with ``names`` and ``params`` (N, 62),
    optional ``roi_boxes`` (N, 4) and ``landmarks``; without ``roi_boxes`` each image is taken to
    be the 120×120 crop itself). Image ``names[i]`` is looked up as ``folder/names[i]`` with or
    without a ``.jpg``/``.png`` extension; missing images are skipped with a warning."""
    folder = Path(folder)
    with np.load(param_file, allow_pickle=False) as z:
        if "names" not in z.files or "params" not in z.files:
            raise InputError(f"{param_file}: needs 'names' and 'params', has {sorted(z.files)}")
        names = np.asarray(z["names"]).astype(str)
        params = np.asarray(z["params"], np.float32)
        rois = np.asarray(z["roi_boxes"], np.float32) if "roi_boxes" in z.files else None
        lm = np.asarray(z["landmarks"], np.float32) if "landmarks" in z.files else None
    if params.shape != (len(names), 62):
        raise InputError(f"{param_file}: params must be ({len(names)}, 62), got {params.shape}")
    keep, paths = [], []
    for i, n in enumerate(names):
        cands = [folder / n] + [folder / (n + e) for e in (".jpg", ".png", ".jpeg")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            log.warning("image for %r not found in %s; skipped", n, folder)
            continue
        keep.append(i)
        paths.append(str(hit.resolve()))
    k = np.array(keep, dtype=int)
    if rois is None:
        rois = np.tile(np.array([0, 0, INPUT_SIZE, INPUT_SIZE], np.float32), (len(names), 1))
    return SampleSet(names[k], np.array(paths), rois[k], params[k],
                     None if lm is None else lm[k], skipped=len(names) - len(k))


def convert_300wlp(pose_para: np.ndarray, shape_para: np.ndarray, exp_para: np.ndarray,
                   image_height: int, roi: np.ndarray) -> np.ndarray:
    """300W-LP / AFLW2000-3D fitting parameters → our 62 parameters in the crop frame of ``roi``.

    ``pose_para`` (7,) is ``(pitch, yaw, roll, tx, ty, tz, s)`` (radians); the image point of a
    model point ``S`` is ``x = v_x``, ``y = H + 1 − v_y`` with ``v = s·R·S + t`` and
    ``R = Rx(pitch)·Ry(yaw)·Rz(roll)`` in that release's convention. The first 40 shape and 10
    expression coefficients are the model's (same bases). ``roi`` ``(4,)`` image pixels.
    """
    pp = np.asarray(pose_para, np.float64).reshape(-1)
    if pp.size != 7:
        raise InputError(f"Pose_Para must have 7 values, got {pp.size}")
    sp = np.asarray(shape_para, np.float64).reshape(-1)
    ep = np.asarray(exp_para, np.float64).reshape(-1)
    if sp.size < 40 or ep.size < 10:
        raise InputError(f"Shape_Para needs >= 40 and Exp_Para >= 10 values, got {sp.size}, {ep.size}")
    pitch, yaw, roll, tx, ty, tz, s = pp
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cz, sz = np.cos(roll), np.sin(roll)
    Rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    Ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    Rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    A = s * (Rx @ Ry @ Rz)
    t = np.array([tx, ty, tz])
    r = np.asarray(roi, np.float64).reshape(4)
    kx = INPUT_SIZE / (r[2] - r[0])
    ky = INPUT_SIZE / (r[3] - r[1])
    P = np.zeros((3, 4))
    # crop x = (v_x - x1) kx + 1 ; crop y = 120 - (H + 1 - v_y - y1) ky
    P[0, :3], P[0, 3] = kx * A[0], kx * (t[0] - r[0]) + 1.0
    P[1, :3], P[1, 3] = ky * A[1], ky * t[1] + INPUT_SIZE - (image_height + 1 - r[1]) * ky
    P[2, :3], P[2, 3] = (kx + ky) / 2 * A[2], _mean_tz()
    out = np.concatenate([P.reshape(-1), sp[:40], ep[:10]])
    return out.astype(np.float32)


@lru_cache(maxsize=1)
def _mean_tz() -> float:
    from tddfa.face.fitting import param_prior

    return float(param_prior()[0][11])


def read_300wlp(root: str | Path, limit: int | None = None) -> SampleSet:
    """Read real 300W-LP (or any folder of ``.jpg`` + ``.mat`` in its format), recursively.

    The roi of each face is :func:`tddfa.crop.roi_from_landmarks` of ``pt2d`` (68 points); the
    parameters come from :func:`convert_300wlp`, or from a landmark fit when the pose/shape
    fields are absent. Unreadable ``.mat`` files, missing images and missing fields are skipped
    with a warning and counted in ``SampleSet.skipped``.
    """
    from tddfa.assets.serialization import load_mat as loadmat
    from tddfa.face.fitting import fit_landmarks

    root = Path(root)
    mats = sorted(root.rglob("*.mat"))
    if limit:
        mats = mats[:limit]
    names, images, rois, params, lms = [], [], [], [], []
    skipped = 0
    to_fit: list[int] = []
    for m in mats:
        img = next((m.with_suffix(e) for e in (".jpg", ".png", ".jpeg") if m.with_suffix(e).is_file()),
                   None)
        try:
            if img is None:
                raise InputError("no image beside it")
            d = loadmat(str(m))
            pt = np.asarray(d.get("pt2d", d.get("pt3d_68")), dtype=np.float64)
            if pt.ndim != 2 or pt.shape[1] != 68 or pt.shape[0] < 2:
                raise InputError(f"pt2d must be (2, 68), got {pt.shape}")
            pt2 = pt[:2].T
            roi = roi_from_landmarks(pt2)
            if all(k in d for k in ("Pose_Para", "Shape_Para", "Exp_Para")):
                h = cv2.imread(str(img), cv2.IMREAD_UNCHANGED)
                if h is None:
                    raise InputError("image unreadable")
                p = convert_300wlp(d["Pose_Para"], d["Shape_Para"], d["Exp_Para"], h.shape[0], roi)
            else:
                p = np.full(62, np.nan, np.float32)
                to_fit.append(len(names))
        except Exception as exc:  # noqa: BLE001 - one bad sample must not stop the reader
            log.warning("300W-LP sample %s skipped: %s", m, exc)
            skipped += 1
            continue
        names.append(m.stem)
        images.append(str(img.resolve()))
        rois.append(roi)
        params.append(p)
        lms.append(pt2)
    if not names:
        raise InputError(f"no usable 300W-LP samples under {root} ({skipped} skipped)")
    params_a = np.stack(params).astype(np.float32)
    lms_a = np.stack(lms).astype(np.float32)
    rois_a = np.stack(rois).astype(np.float32)
    if to_fit:
        idx = np.array(to_fit)
        params_a[idx] = fit_landmarks(lms_a[idx], rois_a[idx]).params
    if skipped:
        log.warning("300W-LP: %d of %d samples skipped", skipped, len(mats))
    return SampleSet(np.array(names), np.array(images), rois_a, params_a, lms_a, skipped=skipped)


def fit_300w_split(root: str | Path, split: str, march: int = 0) -> tuple[SampleSet, np.ndarray]:
    """Fit parameters to the annotated landmarks of a 300W-crops split.

    Args:
        root: the ``300w-crops`` folder (``<split>.npz`` + ``<split>/<name>.jpg``).
        split: e.g. ``"helen_train"``, ``"afw"``, ``"helen_test"``.
        march: rounds of landmark marching in the fit (see
            :func:`~tddfa.face.fitting.fit_crop_landmarks`).

    Returns:
        the samples (roi = :func:`~tddfa.crop.roi_from_landmarks` of the annotation) and the
        per-face 2-D NME ``(N,)`` (fraction) of the fitted landmarks.
    """
    from tddfa.face.fitting import fit_landmarks, nme

    root = Path(root)
    z = np.load(root / f"{split}.npz", allow_pickle=False)
    names = np.asarray(z["names"]).astype(str)
    lm = np.asarray(z["landmarks"], np.float32)
    rois = np.stack([roi_from_landmarks(p) for p in lm]).astype(np.float32)
    fit = fit_landmarks(lm, rois, march=march)
    images = np.array([str((root / split / f"{n}.jpg").resolve()) for n in names])
    return SampleSet(names, images, rois, fit.params, lm), nme(fit.landmarks, lm)
