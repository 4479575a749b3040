"""Augmentation geometry: horizontal flip (landmark permutation, mirrored parameters), similarity warps
with exact new parameters, and the :class:`Augmenter` (V2 short-video synthesis, photometric jitter,
flips)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.face.crop import INPUT_SIZE

log = logging.getLogger(__name__)


#: iBUG 68-point left/right permutation (index of each point's mirror image)
FLIP_PERM = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65]
)



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
    from tddfa.face.fitting import param_prior
    from tddfa.face.morphable_model import load_morphable_model

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
    march: bool = False

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
                 rng: np.random.Generator, landmarks: np.ndarray | None = None):
        """Return an augmented ``(120, 120, 3)`` uint8 crop and its ``(62,)`` parameters; with
        ``landmarks`` ``(68, 2)`` (image pixels) also the ``(68, 2)`` crop-frame landmarks of
        the augmented crop (x right, y up), moved by the same warps and flip."""
        from tddfa.face.fitting import image_to_crop_frame

        size = INPUT_SIZE
        p = np.asarray(params, np.float32)
        lm = None if landmarks is None else np.asarray(landmarks, np.float64)
        if self.p_out_of_plane > 0 and rng.random() < self.p_out_of_plane:
            from tddfa.train.profiling import rotate_face

            dyaw, dpitch = rng.uniform(-self.out_of_plane_deg, self.out_of_plane_deg, 2)
            out = rotate_face(image, roi, p, dyaw, dpitch, march=self.march)
            if out is not None:
                image, roi, p = out.image, out.roi, out.params
                lm = None if lm is None else out.landmarks.astype(np.float64)
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
        pts = None
        if lm is not None:
            c = image_to_crop_frame(lm[None, :, :2], np.asarray(roi, np.float64)[None])[0]
            pts = c @ T[:, :2].T + T[:, 2]
        if rng.random() < self.p_flip:
            crop = np.ascontiguousarray(crop[:, ::-1])
            p = flip_params(p[None])[0]
            pts = None if pts is None else flip_points(pts)
        crop = self._photometric(crop, rng)
        if landmarks is None:
            return crop, p
        return crop, p, pts.astype(np.float32)

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
