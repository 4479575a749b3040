"""UV texture: the face unwrapped into the BFM's UV layout, sampled from the photo."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.render.common import _as_image, _cached, _tri_key, _triangles, face_vertices
from tddfa.render.rasterize import interpolate, rasterize

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# UV texture


@lru_cache(maxsize=1)
def uv_coordinates() -> np.ndarray:
    """UV coordinates ``(38365, 2)`` float32 in [0, 1] (u right, v up) of the noneck mesh:
    the rows of ``BFM_UV.mat`` selected by ``indices.npy``."""
    from tddfa.assets import registry as assets
    from tddfa.assets.serialization import load_mat, load_npy

    mat = load_mat(assets.resolve("bfm_uv"), ["UV"])
    if "UV" not in mat:
        raise InputError(f"{assets.resolve('bfm_uv')}: no 'UV' variable")
    uv = np.asarray(mat["UV"])
    idx = load_npy(assets.resolve("indices")).astype(np.int64)
    if uv.ndim != 2 or uv.shape[1] != 2 or idx.max() >= len(uv):
        raise InputError(f"BFM_UV.mat UV must be (53215, 2) covering indices, got {uv.shape}")
    out = np.ascontiguousarray(uv[idx], dtype=np.float32)
    out.setflags(write=False)
    return out


def _uv_raster(size: int, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangle index and barycentric weights of the mesh rasterised in UV space (cached)."""

    def make():
        uv = uv_coordinates()
        pos = np.empty((len(uv), 3), dtype=np.float32)
        pos[:, 0] = uv[:, 0] * (size - 1)
        pos[:, 1] = (1.0 - uv[:, 1]) * (size - 1)
        pos[:, 2] = 0.0
        _, tri_index, bary = rasterize(pos, tri, size, size)
        tri_index.setflags(write=False)
        bary.setflags(write=False)
        return tri_index, bary

    return _cached(("uv", size) + _tri_key(tri), make)


def uv_texture(
    image: Any,
    vertices: np.ndarray,
    size: int = 256,
    *,
    triangles: np.ndarray | None = None,
) -> np.ndarray:
    """Unwrapped face texture ``(size, size, 3)`` uint8 BGR in the BFM UV layout.

    Each texel's position on the face comes from the mesh rasterised in UV space (cached per
    size), then the photo is sampled there bilinearly; texels outside the layout are black.
    Row 0 is v = 1 (the top of the face), as image files store it.

    Args:
        image: ``(H, W, 3)`` uint8 BGR photo.
        vertices: ``(38365, 3)`` float vertices in image pixels (or a ``Face``).
        size: texture side in pixels (256 and 512 are the usual; any 16..8192 works).
    """
    size = int(size)
    if not 16 <= size <= 8192:
        raise InputError(f"UV texture size must be in [16, 8192], got {size}")
    img = _as_image(image)
    v = face_vertices(vertices)
    uv = uv_coordinates()
    if len(v) != len(uv):
        raise InputError(f"the UV texture needs the {len(uv)}-vertex mesh, got {len(v)} vertices")
    tri = _triangles(triangles, len(v))
    tri_index, bary = _uv_raster(size, tri)
    xy = interpolate(v[:, :2], tri, tri_index, bary)
    tex = cv2.remap(img, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    tex[tri_index < 0] = 0
    return tex


def _render_uv(image: Any, faces: Sequence[Any], triangles: np.ndarray | None, *,
               size: int = 256, **_: Any) -> np.ndarray:
    if not faces:
        return np.zeros((size, size, 3), dtype=np.uint8)
    return np.concatenate([uv_texture(image, f, size, triangles=triangles) for f in faces], axis=1)
