"""Temporal stability of landmark tracking and synthetic short videos with known motion.

**The measure** (3DDFA_V2's video stability): over adjacent frames ``t, t+1`` compare the
predicted landmark motion ``Δp = p_{t+1} − p_t`` with the true motion ``Δq = q_{t+1} − q_t``;
the error ``‖Δp − Δq‖`` (2-D, pixels, per landmark) is divided by the face size of frame ``t``
(``sqrt(w·h)`` of the true landmarks' box unless given) and averaged over landmarks and frame
pairs. A perfect tracker scores 0; a tracker that jitters on a still face scores its jitter.
It ignores a constant bias (a landmark off by the same amount in every frame) on purpose: it
measures shake, not accuracy.

**Synthetic video**: a still photo is warped frame by frame with 2-D similarity transforms
(in-plane rotation about the face centre, isotropic scale, shift) following a smooth random
trajectory. Because the warp is exact, the true position of every image point in every frame is
known, and so is ``Δq`` for the landmarks.

Small out-of-plane rotations (yaw, pitch of a few degrees) are synthesised through the face's
dense mesh (3-D-aided): the mesh fitted to the photo is rotated in 3-D about its centre, then
moved by the frame's similarity; it is rasterised (:mod:`tddfa.rasterize`) and every pixel it
covers takes the colour of the photo at the same surface point before the motion. Outside the
mesh the background follows the 2-D similarity. The true landmarks are the mesh's landmark
vertices moved the same way (:func:`transform_points_3d`). Limits: surface that was hidden in
the photo is filled from whatever covered it (negligible for a few degrees), and the face
region moves against the unrotated hair/ears, leaving a seam at the mesh border.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from tddfa.errors import InputError

__all__ = [
    "Motion",
    "stability",
    "stability_per_pair",
    "face_size",
    "smooth_random_motion",
    "still_motion",
    "similarity_matrices",
    "transform_points",
    "synthesize_video",
    "transform_points_3d",
]

log = logging.getLogger(__name__)


def _xy(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3 or a.shape[2] < 2:
        raise InputError(f"{name} must be (T, K, 2|3) landmarks per frame, got shape {a.shape}")
    return a[:, :, :2]


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """``sqrt(w·h)`` of the landmark box per frame: ``(T, K, 2|3)`` → ``(T,)`` float64 pixels."""
    from tddfa.evaluation.metrics import normaliser

    return normaliser(_xy(landmarks, "landmarks"), "box")


def stability_per_pair(
    pred: np.ndarray, truth: np.ndarray, size: np.ndarray | float | None = None
) -> np.ndarray:
    """Normalised motion error of each adjacent frame pair.

    Args:
        pred: ``(T, K, 2|3)`` predicted landmarks, image pixels.
        truth: ``(T, K, 2|3)`` true landmarks (only their frame-to-frame motion matters).
        size: face size in pixels, scalar or ``(T,)``; default :func:`face_size` of ``truth``.

    Returns:
        ``(T − 1,)`` float64: mean over landmarks of ``‖Δp − Δq‖ / size_t``.
    """
    p, q = _xy(pred, "pred"), _xy(truth, "truth")
    if p.shape != q.shape:
        raise InputError(f"pred and truth must have the same shape, got {p.shape} and {q.shape}")
    if p.shape[0] < 2:
        raise InputError(f"stability needs at least 2 frames, got {p.shape[0]}")
    s = face_size(truth) if size is None else np.broadcast_to(np.asarray(size, np.float64), (p.shape[0],))
    if np.any(s[:-1] <= 0):
        raise InputError("face size must be > 0 pixels in every frame")
    err = np.linalg.norm(np.diff(p, axis=0) - np.diff(q, axis=0), axis=2)  # (T-1, K)
    return err.mean(axis=1) / s[:-1]


def stability(pred: np.ndarray, truth: np.ndarray, size: np.ndarray | float | None = None) -> float:
    """3DDFA_V2 stability: mean of ``‖Δp − Δq‖ / size`` over landmarks and adjacent frames.

    A dimensionless fraction of the face size (multiply by 100 for percent). See
    :func:`stability_per_pair` for the arguments.
    """
    return float(stability_per_pair(pred, truth, size).mean())


@dataclass(frozen=True)
class Motion:
    """A known 2-D similarity motion per frame.

    Attributes:
        rotation_deg: ``(T,)`` in-plane rotation in degrees (counter-clockwise on screen).
        scale: ``(T,)`` isotropic scale factor (1 = unchanged).
        shift: ``(T, 2)`` translation in pixels (x right, y down).
        center: ``(2,)`` pixel the rotation and scale are about (the face centre).
        yaw_deg, pitch_deg: ``(T,)`` out-of-plane rotations in degrees about the image's
            vertical / horizontal axis through the face's 3-D centre (``None`` = none); applied
            before the 2-D similarity, and only through a face mesh (:func:`synthesize_video`).
    """

    rotation_deg: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    center: np.ndarray
    yaw_deg: np.ndarray | None = None
    pitch_deg: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rotation_deg.shape[0])

    @property
    def out_of_plane(self) -> bool:
        """Whether any frame has a non-zero yaw or pitch."""
        return any(a is not None and np.any(np.asarray(a) != 0) for a in (self.yaw_deg, self.pitch_deg))

    def rotations_3d(self) -> np.ndarray:
        """``(T, 3, 3)`` out-of-plane rotations (image frame: x right, y down, z to the camera)."""
        n = len(self)
        yaw = np.radians(np.zeros(n) if self.yaw_deg is None else np.asarray(self.yaw_deg, np.float64))
        pitch = np.radians(np.zeros(n) if self.pitch_deg is None else np.asarray(self.pitch_deg, np.float64))
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        Ry = np.zeros((n, 3, 3))
        Ry[:, 0, 0], Ry[:, 0, 2], Ry[:, 1, 1], Ry[:, 2, 0], Ry[:, 2, 2] = cy, sy, 1.0, -sy, cy
        Rx = np.zeros((n, 3, 3))
        Rx[:, 0, 0], Rx[:, 1, 1], Rx[:, 1, 2], Rx[:, 2, 1], Rx[:, 2, 2] = 1.0, cp, -sp, sp, cp
        return Ry @ Rx

    @property
    def matrices(self) -> np.ndarray:
        """``(T, 2, 3)`` float64 affine matrices mapping source pixels to frame pixels."""
        return similarity_matrices(self.rotation_deg, self.scale, self.shift, self.center)


def similarity_matrices(
    rotation_deg: np.ndarray, scale: np.ndarray, shift: np.ndarray, center: np.ndarray
) -> np.ndarray:
    """``(T, 2, 3)`` similarity transforms: rotate/scale about ``center`` then shift (pixels)."""
    a = np.radians(np.asarray(rotation_deg, np.float64))
    s = np.asarray(scale, np.float64)
    d = np.asarray(shift, np.float64).reshape(-1, 2)
    c = np.asarray(center, np.float64).reshape(2)
    cos, sin = s * np.cos(a), s * np.sin(a)
    # y points down on screen, so a counter-clockwise rotation on screen is [[c, s], [-s, c]].
    M = np.empty((a.shape[0], 2, 3))
    M[:, 0, 0], M[:, 0, 1] = cos, sin
    M[:, 1, 0], M[:, 1, 1] = -sin, cos
    M[:, :, 2] = c - np.einsum("tij,j->ti", M[:, :, :2], c) + d
    return M


def transform_points(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply ``(T, 2, 3)`` affine matrices to ``(K, 2|3)`` points → ``(T, K, 2)`` float64."""
    p = np.asarray(points, np.float64)[:, :2]
    M = np.asarray(matrices, np.float64)
    return np.einsum("tij,kj->tki", M[:, :, :2], p) + M[:, None, :, 2]


def transform_points_3d(points: np.ndarray, motion: Motion, pivot: np.ndarray | None = None) -> np.ndarray:
    """Move 3-D points ``(K, 3)`` (image pixels, z to the camera) by each frame's motion.

    The out-of-plane rotation turns them about ``pivot`` ``(3,)`` (default: their mean; use the
    mesh centre given to :func:`synthesize_video`), then the 2-D similarity moves x, y (z is
    scaled). Returns ``(T, K, 3)`` float64.
    """
    p = np.asarray(points, np.float64).reshape(-1, 3)
    c = p.mean(axis=0) if pivot is None else np.asarray(pivot, np.float64).reshape(3)
    rotated = np.einsum("tij,kj->tki", motion.rotations_3d(), p - c) + c
    M = motion.matrices
    out = np.empty_like(rotated)
    out[..., :2] = np.einsum("tij,tkj->tki", M[:, :, :2], rotated[..., :2]) + M[:, None, :, 2]
    out[..., 2] = rotated[..., 2] * np.asarray(motion.scale, np.float64)[:, None]
    return out


def still_motion(n_frames: int, center: np.ndarray) -> Motion:
    """No motion at all: the same frame ``n_frames`` times."""
    return Motion(np.zeros(n_frames), np.ones(n_frames), np.zeros((n_frames, 2)),
                  np.asarray(center, np.float64).reshape(2))


def smooth_random_motion(
    n_frames: int,
    center: np.ndarray,
    *,
    max_rotation_deg: float = 3.0,
    max_shift_px: float = 6.0,
    max_scale: float = 0.03,
    fps: float = 25.0,
    max_freq_hz: float = 1.0,
    max_yaw_deg: float = 0.0,
    max_pitch_deg: float = 0.0,
    seed: int = 0,
) -> Motion:
    """A smooth random trajectory, like a person moving slightly in front of a camera.

    Each of rotation, scale, shift-x and shift-y (and yaw, pitch when their maxima are > 0) is a
    sum of three sinusoids with random frequencies in ``[0.1, max_freq_hz]`` Hz and random
    phases, starting at 0 and rescaled so that its largest excursion is the given maximum
    (degrees, fraction of size, pixels).
    """
    if n_frames < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / float(fps)

    def signal(amplitude: float) -> np.ndarray:
        f = rng.uniform(0.1, max_freq_hz, 3)
        ph = rng.uniform(0, 2 * math.pi, 3)
        x = np.sin(2 * math.pi * f[None, :] * t[:, None] + ph[None, :]).sum(axis=1)
        x = x - x[0]
        peak = np.abs(x).max()
        return x * (amplitude / peak) if peak > 0 else x

    rot = signal(max_rotation_deg)
    scale = 1.0 + signal(max_scale)
    shift = np.stack([signal(max_shift_px), signal(max_shift_px)], axis=1)
    yaw = signal(max_yaw_deg) if max_yaw_deg > 0 else None
    pitch = signal(max_pitch_deg) if max_pitch_deg > 0 else None
    return Motion(rot, scale, shift, np.asarray(center, np.float64).reshape(2), yaw, pitch)


def synthesize_video(
    image: np.ndarray,
    motion: Motion,
    mesh: np.ndarray | None = None,
    triangles: np.ndarray | None = None,
) -> np.ndarray:
    """Warp a still ``(H, W, 3)`` uint8 image by each frame's motion → ``(T, H, W, 3)`` uint8.

    Args:
        image: the still photo.
        motion: per-frame motion. With out-of-plane rotation (``yaw_deg``/``pitch_deg``),
            ``mesh`` and ``triangles`` are required.
        mesh: ``(N, 3)`` dense face vertices in the photo (image pixels, z to the camera), e.g.
            a :class:`~tddfa.results.Face`'s ``vertices``; rotated about its mean.
        triangles: ``(M, 3)`` int triangles of the mesh.

    Bilinear interpolation, borders reflected (no black wedges entering the face crop).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.dtype != np.uint8:
        raise InputError(f"image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    out = np.empty((len(motion), h, w, img.shape[2]), np.uint8)
    if mesh is None:
        if motion.out_of_plane:
            raise InputError("out-of-plane motion (yaw/pitch) needs the face mesh and its triangles")
        for i, M in enumerate(motion.matrices):
            if np.allclose(M, [[1, 0, 0], [0, 1, 0]]):
                out[i] = img
            else:
                out[i] = cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT_101)
        return out
    from tddfa.render.rasterize import interpolate, rasterize

    v = np.asarray(mesh, np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or triangles is None:
        raise InputError(f"mesh must be (N, 3) vertices with (M, 3) triangles, got {v.shape}")
    tri = np.ascontiguousarray(np.asarray(triangles).reshape(-1, 3), dtype=np.int32)
    moved = transform_points_3d(v, motion, pivot=v.mean(axis=0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    src_xy = v[:, :2].astype(np.float32)
    for i, M in enumerate(motion.matrices):
        inv = cv2.invertAffineTransform(M)
        map_x = (inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]).astype(np.float32)
        map_y = (inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]).astype(np.float32)
        _, tri_index, bary = rasterize(moved[i].astype(np.float32), tri, h, w)
        covered = tri_index >= 0
        src = interpolate(src_xy, tri, tri_index, bary)
        map_x[covered] = src[..., 0][covered]
        map_y[covered] = src[..., 1][covered]
        out[i] = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out
