"""Normal map: per-pixel interpolated vertex normals as RGB."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from tddfa.render.common import _canvas, _prepare, _tiles, vertex_normals
from tddfa.render.rasterize import pixel_corners

log = logging.getLogger(__name__)


def render_normal(
    image: Any,
    faces_vertices: Sequence[np.ndarray] | np.ndarray,
    triangles: np.ndarray | None = None,
    *,
    background: bool = False,
) -> np.ndarray:
    """Normal map: per-pixel unit normal, RGB = (x right, y up, z towards the camera) mapped from
    [-1, 1] to [0, 255] (a surface facing the camera is (128, 128, 255), light blue).

    Returns ``(H, W, 3)`` uint8 BGR.
    """
    img, meshes, tri = _prepare(image, faces_vertices, triangles)
    canvas = _canvas(img, background)
    if not meshes:
        return canvas
    normals = np.stack([vertex_normals(m, tri) for m in meshes])
    h, w = canvas.shape[:2]
    for x0, y0, tri_index, bary, _ in _tiles(meshes, tri, h, w):
        th, tw = tri_index.shape
        view = np.ascontiguousarray(canvas[y0:y0 + th, x0:x0 + tw])
        _normal_kernel(normals, tri, tri_index, bary, view)
        canvas[y0:y0 + th, x0:x0 + tw] = view
    return canvas


@njit(cache=True, nogil=True, error_model="numpy")
def _normal_kernel(normals, triangles, tri_index, bary, out):  # pragma: no cover
    """Interpolate unit normals (image frame), renormalise, write B, G, R = z, -y, x in [0, 255]."""
    height, width = tri_index.shape
    for py in range(height):
        for px in range(width):
            if tri_index[py, px] < 0:
                continue
            k, i0, i1, i2, b0, b1, b2 = pixel_corners(tri_index, bary, triangles, py, px)
            nx = b0 * normals[k, i0, 0] + b1 * normals[k, i1, 0] + b2 * normals[k, i2, 0]
            ny = b0 * normals[k, i0, 1] + b1 * normals[k, i1, 1] + b2 * normals[k, i2, 1]
            nz = b0 * normals[k, i0, 2] + b1 * normals[k, i1, 2] + b2 * normals[k, i2, 2]
            norm = np.sqrt(nx * nx + ny * ny + nz * nz)
            if norm > 1e-12:
                nx /= norm
                ny /= norm
                nz /= norm
            out[py, px, 0] = np.uint8(min(max((nz + 1.0) * 127.5 + 0.5, 0.0), 255.0))
            out[py, px, 1] = np.uint8(min(max((1.0 - ny) * 127.5 + 0.5, 0.0), 255.0))
            out[py, px, 2] = np.uint8(min(max((nx + 1.0) * 127.5 + 0.5, 0.0), 255.0))
