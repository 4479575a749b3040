"""Training data: sample lists (manifests), readers, on-the-fly augmentation and flip symmetry.

A training sample is an image file, a roi box ``(x1, y1, x2, y2)`` in its pixels, and the 62
de-normalised parameters in that roi's 120×120 crop frame (the regressor's frame). Sources:

* a **manifest** ``.npz`` (written by ``tddfa data fit`` and ``tddfa data profile``, or by hand):
  ``names`` (N,), ``images`` (N,) paths relative to the manifest's folder, ``roi_boxes`` (N, 4),
  ``params`` (N, 62), optional ``landmarks`` (N, 68, 2) image pixels. A plain folder of crops
  plus a parameter file is the same thing: :func:`read_crops_folder` fills ``roi_boxes`` with
  the whole image when the file has none (images already 120×120 crops);
* real **300W-LP** (:func:`read_300wlp`): ``.jpg`` + ``.mat`` with ``Pose_Para``, ``Shape_Para``,
  ``Exp_Para`` and ``pt2d``; the parameters are converted into the crop frame of the roi of
  ``pt2d`` (:func:`convert_300wlp`), falling back to a landmark fit when the pose fields are
  missing; a ``.mat`` without usable fields is skipped with a warning and counted;
* the **300W crops** with 68 annotated landmarks (:func:`fit_300w_split`): parameters from
  :func:`tddfa.fitting.fit_landmarks`.

Augmentation (:class:`Augmenter`) acts on the image *and* the parameters, so labels stay exact:
3-D-aided short-video synthesis (V2): small in-plane rotation, scale 0.95–1.05, shift — one
similarity composed with the crop, so the image is resampled once — plus small out-of-plane
rotations through face profiling (:mod:`.profiling`, optional, costlier), Gaussian noise and
motion blur; photometric jitter; and horizontal flip.

Flip: mirroring a crop maps crop-frame points by ``x → 121 − x`` (``x`` is 1-based in the crop
frame) and swaps left/right landmarks (the iBUG 68-point permutation :data:`FLIP_PERM`). For the
parameters, ``[sR | t]`` becomes ``[M sR M | M t + c]`` with ``M = diag(−1, 1, 1)``; the model's
shape/expression coefficients are not exactly mirror-symmetric, so the mirrored coefficients
are the linear least-squares map (ridge in normalised units) that best reproduces the mirrored
68 landmarks (:func:`flip_params`); its residual is below a pixel on typical faces (tested).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..crop import INPUT_SIZE, roi_from_landmarks
from ..errors import InputError

__all__ = [
    "FLIP_PERM",
    "SampleSet",
    "load_manifest",
    "save_manifest",
    "read_crops_folder",
    "read_300wlp",
    "convert_300wlp",
    "fit_300w_split",
    "flip_params",
    "flip_points",
    "similarity_params",
    "Augmenter",
    "FaceDataset",
    "collate_skip",
    "SkipCounter",
]

log = logging.getLogger(__name__)

#: iBUG 68-point left/right permutation (index of each point's mirror image)
FLIP_PERM = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65]
)


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
    with np.load(path, allow_pickle=False) as z:
        missing = {"names", "images", "params"} - set(z.files)
        if missing:
            raise InputError(f"{path}: manifest lacks {sorted(missing)}; has {sorted(z.files)}")
        params = np.asarray(z["params"], np.float32)
        if params.ndim != 2 or params.shape[1] != 62:
            raise InputError(f"{path}: params must be (N, 62), got {params.shape}")
        images = np.array([str((path.parent / p).resolve()) for p in z["images"]])
        rois = np.asarray(z["roi_boxes"], np.float32) if "roi_boxes" in z.files else None
        lm = np.asarray(z["landmarks"], np.float32) if "landmarks" in z.files else None
        names = np.asarray(z["names"]).astype(str)
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
    from ..fitting import param_prior

    return float(param_prior()[0][11])


def read_300wlp(root: str | Path, limit: int | None = None) -> SampleSet:
    """Read real 300W-LP (or any folder of ``.jpg`` + ``.mat`` in its format), recursively.

    The roi of each face is :func:`tddfa.crop.roi_from_landmarks` of ``pt2d`` (68 points); the
    parameters come from :func:`convert_300wlp`, or from a landmark fit when the pose/shape
    fields are absent. Unreadable ``.mat`` files, missing images and missing fields are skipped
    with a warning and counted in ``SampleSet.skipped``.
    """
    from scipy.io import loadmat

    from ..fitting import fit_landmarks

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


def fit_300w_split(root: str | Path, split: str) -> tuple[SampleSet, np.ndarray]:
    """Fit parameters to the annotated landmarks of a 300W-crops split.

    Args:
        root: the ``300w-crops`` folder (``<split>.npz`` + ``<split>/<name>.jpg``).
        split: e.g. ``"helen_train"``, ``"afw"``, ``"helen_test"``.

    Returns:
        the samples (roi = :func:`~tddfa.crop.roi_from_landmarks` of the annotation) and the
        per-face 2-D NME ``(N,)`` (fraction) of the fitted landmarks.
    """
    from ..fitting import fit_landmarks, nme

    root = Path(root)
    z = np.load(root / f"{split}.npz", allow_pickle=False)
    names = np.asarray(z["names"]).astype(str)
    lm = np.asarray(z["landmarks"], np.float32)
    rois = np.stack([roi_from_landmarks(p) for p in lm]).astype(np.float32)
    fit = fit_landmarks(lm, rois)
    images = np.array([str((root / split / f"{n}.jpg").resolve()) for n in names])
    return SampleSet(names, images, rois, fit.params, lm), nme(fit.landmarks, lm)


# ---------------------------------------------------------------------------------------------
# geometry of augmentations

def flip_points(points: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Mirror crop-frame landmarks ``(..., 68, 2|3)``: ``x → size + 1 − x`` and left/right swap."""
    p = np.array(points, dtype=np.float64, copy=True)[..., FLIP_PERM, :]
    p[..., 0] = size + 1 - p[..., 0]
    return p


@lru_cache(maxsize=1)
def _flip_map() -> tuple[np.ndarray, np.ndarray, float]:
    """``(F (50, 50), f (50,), x0)``: mirrored coefficients ``α' = F α + f`` and the mirror plane."""
    from ..fitting import param_prior
    from ..morphable_model import load_morphable_model

    mm = load_morphable_model()
    mean, std = param_prior()
    u = np.asarray(mm.u_lm, np.float64).reshape(68, 3)
    W = np.asarray(mm.w_lm, np.float64).reshape(68, 3, 50)
    x0 = float(np.mean(u[:, 0]))  # mirror plane x = x0 (the mean face is nearly centred)
    Mv = np.array([-1.0, 1.0, 1.0])
    # mirrored shape: S'(i) = M (S(perm i) - x0 e_x) + x0 e_x
    Wm = (W[FLIP_PERM] * Mv[None, :, None]).reshape(204, 50)
    um = (u[FLIP_PERM] - np.array([x0, 0, 0])) * Mv + np.array([x0, 0, 0])
    Wf = W.reshape(204, 50)
    s = std[12:]
    lam = 1e-3
    # ridge in normalised units: min ||Wf s a' - (target)||² + lam ||a'||² · scale
    A = Wf * s
    H = A.T @ A
    H += lam * np.trace(H) / 50 * np.eye(50)
    # a' = s * b with b the ridge solution of A b = Wm a + (um - u)
    F = s[:, None] * np.linalg.solve(H, A.T @ Wm)
    f = s * np.linalg.solve(H, A.T @ (um.reshape(-1) - u.reshape(-1)))
    return F, f, x0


def flip_params(params: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Parameters ``(B, 62)`` of the horizontally mirrored crop (see the module docstring)."""
    p = np.asarray(params, np.float64).reshape(-1, 62)
    F, f, x0 = _flip_map()
    P = p[:, :12].reshape(-1, 3, 4).copy()
    M = np.diag([-1.0, 1.0, 1.0])
    A = M @ P[:, :, :3] @ M
    t = P[:, :, 3] * np.array([-1.0, 1.0, 1.0]) + np.array([size + 1.0, 0, 0])
    # S' = M S(perm) + d with d = 2 x0 e_x  =>  t' = M t + c - A' d
    t = t - A[:, :, 0] * (2 * x0)
    out = np.empty_like(p)
    out[:, :12] = np.concatenate([A, t[:, :, None]], axis=2).reshape(-1, 12)
    out[:, 12:] = p[:, 12:] @ F.T + f
    return out.astype(np.float32)


def similarity_params(params: np.ndarray, angle: float, scale: float, shift: tuple[float, float],
                      size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Apply an in-plane similarity about the crop centre to parameters ``(62,)``.

    Args:
        angle: in-plane rotation, radians (counter-clockwise in the y-up crop frame).
        scale: zoom factor (> 1 enlarges the face).
        shift: ``(dx, dy)`` crop pixels in the y-up crop frame.

    Returns:
        new parameters ``(62,)`` float32 and the ``(2, 3)`` map of crop-frame points.
    """
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    L = np.array([[c, -s], [s, c]])
    ctr = np.array([(size + 1) / 2.0, size / 2.0])  # centre of the crop in the crop frame
    T = np.concatenate([L, (ctr - L @ ctr + np.asarray(shift, np.float64))[:, None]], axis=1)
    p = np.asarray(params, np.float64).reshape(62).copy()
    P = p[:12].reshape(3, 4)
    P2 = T[:, :2] @ P[:2]
    P2[:, 3] += T[:, 2]
    P[:2] = P2
    P[2, :3] *= scale
    p[:12] = P.reshape(-1)
    return p.astype(np.float32), T


def _crop_frame_to_pixels(size: int = INPUT_SIZE) -> np.ndarray:
    """``(3, 3)`` map from crop-frame (x 1-based, y up) to crop pixel coordinates (y down)."""
    return np.array([[1.0, 0, -1.0], [0, -1.0, float(size)], [0, 0, 1.0]])


def _roi_affine(roi: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """``(3, 3)`` map from image pixels to crop pixels of ``roi`` (rounded as :func:`crop_roi`)."""
    sx, sy, ex, ey = (int(round(float(v))) for v in roi[:4])
    kx, ky = size / max(ex - sx, 1), size / max(ey - sy, 1)
    # cv2.resize's pixel-centre convention: out = (in + 0.5) k - 0.5
    return np.array([[kx, 0, (0.5 - sx) * kx - 0.5], [0, ky, (0.5 - sy) * ky - 0.5], [0, 0, 1.0]])


@dataclass
class Augmenter:
    """On-the-fly augmentation; every field is a probability or a range.

    Geometric (short-video synthesis): ``rotate_deg`` max in-plane rotation, ``scale`` range,
    ``shift`` max shift as a fraction of the crop, ``out_of_plane_deg`` max yaw/pitch change
    applied with probability ``p_out_of_plane`` (needs the dense model; uses face profiling).
    Degradations: ``p_noise`` with std up to ``noise_std`` grey levels, ``p_blur`` motion blur
    with a kernel up to ``blur_max`` pixels. Photometric: brightness/contrast/saturation jitter
    ``color``, ``p_gray``. ``p_flip`` horizontal flip with exact label handling.
    """

    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.95, 1.05)
    shift: float = 0.04
    out_of_plane_deg: float = 0.0
    p_out_of_plane: float = 0.0
    p_noise: float = 0.3
    noise_std: float = 6.0
    p_blur: float = 0.2
    blur_max: int = 7
    color: float = 0.25
    p_gray: float = 0.05
    p_flip: float = 0.5

    @classmethod
    def from_config(cls, cfg: dict | None) -> Augmenter | None:
        """Build from a config mapping (``None`` or ``{"enabled": false}`` → no augmentation)."""
        if cfg is None or cfg is False or (isinstance(cfg, dict) and not cfg.get("enabled", True)):
            return None
        kw = {k: v for k, v in dict(cfg).items() if k != "enabled"}
        unknown = set(kw) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown augmentation options {sorted(unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        if "scale" in kw:
            kw["scale"] = tuple(kw["scale"])
        return cls(**kw)

    def __call__(self, image: np.ndarray, roi: np.ndarray, params: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Return an augmented ``(120, 120, 3)`` uint8 crop and its ``(62,)`` parameters."""
        size = INPUT_SIZE
        p = np.asarray(params, np.float32)
        if self.p_out_of_plane > 0 and rng.random() < self.p_out_of_plane:
            from .profiling import rotate_face

            dyaw, dpitch = rng.uniform(-self.out_of_plane_deg, self.out_of_plane_deg, 2)
            out = rotate_face(image, roi, p, dyaw, dpitch)
            if out is not None:
                image, roi, p = out.image, out.roi, out.params
        ang = np.radians(rng.uniform(-self.rotate_deg, self.rotate_deg))
        sc = rng.uniform(*self.scale)
        sh = rng.uniform(-self.shift, self.shift, 2) * size
        p, T = similarity_params(p, ang, sc, (sh[0], sh[1]))
        T3 = np.vstack([T, [0, 0, 1.0]])
        C = _crop_frame_to_pixels(size)
        # image px -> crop px -> crop frame -> similarity -> crop frame -> crop px
        full = C @ T3 @ np.linalg.inv(C) @ _roi_affine(roi, size)
        crop = cv2.warpAffine(image, full[:2], (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        if rng.random() < self.p_flip:
            crop = np.ascontiguousarray(crop[:, ::-1])
            p = flip_params(p[None])[0]
        crop = self._photometric(crop, rng)
        return crop, p

    def _photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = img.astype(np.float32)
        if self.color > 0:
            b = rng.uniform(-self.color, self.color) * 64
            c = 1 + rng.uniform(-self.color, self.color)
            sat = 1 + rng.uniform(-self.color, self.color)
            gray = x.mean(axis=2, keepdims=True)
            x = gray + (x - gray) * sat
            x = (x - 127.5) * c + 127.5 + b
        if rng.random() < self.p_gray:
            x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
        if self.p_blur > 0 and rng.random() < self.p_blur:
            k = int(rng.integers(3, max(4, self.blur_max + 1)))
            ker = np.zeros((k, k), np.float32)
            ker[k // 2, :] = 1.0 / k
            M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
            ker = cv2.warpAffine(ker, M, (k, k))
            ker /= max(float(ker.sum()), 1e-6)
            x = cv2.filter2D(x, -1, ker)
        if self.p_noise > 0 and rng.random() < self.p_noise:
            x = x + rng.normal(0, rng.uniform(0, self.noise_std), x.shape).astype(np.float32)
        return np.clip(x, 0, 255).astype(np.uint8)


class SkipCounter:
    """Counts samples skipped for bad input (within one process)."""

    def __init__(self) -> None:
        self.count = 0


def _read_image(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read image {path!r} (missing or corrupt)")
    return img


class FaceDataset:
    """A map-style dataset (usable by ``torch.utils.data.DataLoader``).

    Item ``i`` is ``(crop (3, 120, 120) float32 network input, params (62,) float32 normalised)``
    or ``None`` for a sample whose image cannot be read (a warning is logged, :attr:`skipped`
    counts it, and :func:`collate_skip` drops it from the batch).

    Args:
        samples: the :class:`SampleSet`.
        mean, std: ``(62,)`` parameter normalisation.
        augment: an :class:`Augmenter`, or ``None`` for the plain crop.
        seed: base seed; each item uses ``seed + epoch * N + index`` (call :meth:`set_epoch`).
    """

    def __init__(self, samples: SampleSet, mean: np.ndarray, std: np.ndarray,
                 augment: Augmenter | None = None, seed: int = 0) -> None:
        self.samples = samples
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def crop(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(120, 120, 3)`` uint8 crop and ``(62,)`` de-normalised parameters of sample ``i``."""
        from ..crop import crop_roi

        img = _read_image(self.samples.images[i])
        roi = self.samples.roi_boxes[i]
        p = self.samples.params[i]
        if self.augment is None:
            return crop_roi(img, roi), p
        rng = np.random.default_rng(self.seed + self.epoch * 1_000_003 + i)
        return self.augment(img, roi, p, rng)

    def __getitem__(self, i: int):
        try:
            crop, p = self.crop(int(i))
        except Exception as exc:  # noqa: BLE001 - one bad sample must never stop training
            self.skipped += 1
            log.warning("sample %d (%s) skipped: %s", i, self.samples.names[i], exc)
            return None
        x = (crop.transpose(2, 0, 1).astype(np.float32) - 127.5) / 128.0
        return x, ((p - self.mean) / self.std).astype(np.float32)


def collate_skip(batch: list):
    """Collate ``(x, p)`` items into tensors, dropping ``None`` items.

    Returns ``(x (B, 3, 120, 120), p (B, 62), n_skipped)``, or ``None`` if every item was bad.
    """
    import torch

    good = [b for b in batch if b is not None]
    n_bad = len(batch) - len(good)
    if not good:
        return None
    x = torch.from_numpy(np.stack([g[0] for g in good]))
    p = torch.from_numpy(np.stack([g[1] for g in good]))
    return x, p, n_bad
