"""Depth render: each pixel's z (towards the camera) as grey, brightest nearest."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from tddfa.render.common import _canvas, _paint, _prepare

log = logging.getLogger(__name__)


def render_depth(
    image: Any,
    faces_vertices: Sequence[np.ndarray] | np.ndarray,
    triangles: np.ndarray | None = None,
    *,
    background: bool = False,
) -> np.ndarray:
    """Depth map: each face's z normalised to [0, 255] grey, brighter = nearer the camera.

    Returns ``(H, W, 3)`` uint8 BGR (the three channels equal where a face is drawn).
    """
    img, meshes, tri = _prepare(image, faces_vertices, triangles)
    canvas = _canvas(img, background)
    if not meshes:
        return canvas
    levels = np.empty((len(meshes), len(meshes[0]), 1), dtype=np.float32)
    for k, m in enumerate(meshes):
        z = m[:, 2]
        zmin, zmax = np.nanmin(z), np.nanmax(z)
        span = float(zmax - zmin) if np.isfinite(zmax - zmin) and zmax > zmin else 1.0
        levels[k, :, 0] = (z - zmin) * (255.0 / span)
    return _paint(canvas, meshes, tri, levels, 1.0)
