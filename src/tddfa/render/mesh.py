"""The shaded mesh overlay (3DDFA_V2's 'mesh' render): Lambert-lit grey surface blended over the photo."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from tddfa.errors import InputError
from tddfa.render.common import LIGHT_DIRECTION, _canvas, _lambert, _paint, _prepare

log = logging.getLogger(__name__)


def render_mesh(
    image: Any,
    faces_vertices: Sequence[np.ndarray] | np.ndarray,
    triangles: np.ndarray | None = None,
    *,
    alpha: float = 0.6,
    background: bool = False,
    color: tuple[float, float, float] = (220.0, 220.0, 220.0),
    ambient: float = 0.35,
    diffuse: float = 0.65,
    light: tuple[float, float, float] = LIGHT_DIRECTION,
) -> np.ndarray:
    """Shaded mesh: ambient + one directional light on vertex normals, alpha-blended.

    Args:
        image: ``(H, W, 3)`` uint8 BGR (or a path).
        faces_vertices: list of ``(N, 3)`` float vertices (image pixels), or Faces.
        triangles: ``(M, 3)`` int (default: the morphable model's).
        alpha: opacity of the mesh over the photo, in [0, 1].
        background: ``True`` draws the mesh opaque on a black image instead of the photo.
        color: surface colour, BGR 0-255. ambient, diffuse: light intensities.
        light: direction towards the light, image frame (x right, y down, z to the camera).

    Returns:
        ``(H, W, 3)`` uint8 BGR.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    img, meshes, tri = _prepare(image, faces_vertices, triangles)
    canvas = _canvas(img, background)
    if not meshes:
        return canvas
    ldir = np.asarray(light, dtype=np.float32)
    ldir = ldir / max(float(np.linalg.norm(ldir)), 1e-12)
    shades = np.empty((len(meshes), len(meshes[0]), 1), dtype=np.float32)
    for k, m in enumerate(meshes):
        lam = _lambert(m, tri, ldir)
        lam *= diffuse
        lam += ambient
        np.minimum(lam, 1.0, out=shades[k, :, 0])
    return _paint(canvas, meshes, tri, shades, 1.0 if background else alpha, tint=color)
