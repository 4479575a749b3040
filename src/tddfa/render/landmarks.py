"""Point renders: the 68 landmarks with their contours, and the dense vertices as dots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.render.inputs import _as_image, _canvas, _meshes

log = logging.getLogger(__name__)


# The 68-point contours of the iBUG scheme: (first, last, closed).
_CONTOURS = [(0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
             (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True)]


def draw_dense_points(
    image: Any,
    faces_vertices: Sequence[np.ndarray] | np.ndarray,
    triangles: np.ndarray | None = None,
    *,
    step: int = 6,
    color: tuple[int, int, int] = (255, 255, 80),
    background: bool = False,
) -> np.ndarray:
    """Dense 2-D landmarks: every ``step``-th vertex drawn as a one-pixel dot (``triangles`` is
    unused; it is accepted for a uniform signature). Returns ``(H, W, 3)`` uint8 BGR."""
    if step < 1:
        raise InputError(f"step must be >= 1, got {step}")
    img = _as_image(image)
    canvas = _canvas(img, background)
    h, w = canvas.shape[:2]
    for m in _meshes(faces_vertices):
        xy = np.rint(m[::step, :2])
        ok = np.isfinite(xy).all(axis=1)
        xy = xy[ok]
        ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        xy = xy[ok].astype(np.int64)
        canvas[xy[:, 1], xy[:, 0]] = color
    return canvas


def _landmarks_of(face: Any) -> np.ndarray:
    pts = getattr(face, "landmarks", face)
    p = np.asarray(pts, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise InputError(f"landmarks must be (68, 2) or (68, 3), got shape {p.shape}")
    return p


def draw_landmarks(
    image: Any,
    faces: Sequence[Any],
    *,
    color: tuple[int, int, int] = (80, 255, 80),
    lines: bool = True,
    background: bool = False,
) -> np.ndarray:
    """The 68 sparse landmarks of each face (``Face`` or ``(68, 2|3)`` array) as dots, joined
    along the iBUG contours (jaw, brows, nose, eyes, lips). Returns ``(H, W, 3)`` uint8 BGR."""
    img = _as_image(image)
    canvas = _canvas(img, background)
    for face in faces:
        p = _landmarks_of(face)[:, :2]
        if not np.isfinite(p).all():
            continue
        size = float(np.ptp(p[:, 0]) + np.ptp(p[:, 1])) / 2 if len(p) else 0.0
        radius = int(np.clip(size / 90.0, 1, 6))
        thick = max(1, radius // 2)
        pts = np.rint(np.clip(p, -1e6, 1e6) * 4).astype(np.int32)  # 2 fractional bits
        if lines and len(p) == 68:
            for first, last, closed in _CONTOURS:
                cv2.polylines(canvas, [pts[first:last + 1]], closed, (255, 255, 255), thick,
                              cv2.LINE_AA, shift=2)
        for q in pts:
            cv2.circle(canvas, (int(q[0]), int(q[1])), radius * 4, color, -1, cv2.LINE_AA, shift=2)
    return canvas
