"""PNCC render: the mesh coloured by its normalised coordinate code (NCC), z-buffered."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from tddfa.errors import InputError
from tddfa.render.common import _canvas, _paint, _prepare

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _ncc_code() -> np.ndarray:
    from tddfa.assets import registry as assets

    code = np.load(assets.resolve("ncc_code"), allow_pickle=False)
    if code.ndim != 2 or code.shape[0] != 3:
        raise InputError(f"ncc_code.npy must be (3, N), got {code.shape}")
    return np.ascontiguousarray(code.T.astype(np.float32) * 255.0)


def render_pncc(
    image: Any,
    faces_vertices: Sequence[np.ndarray] | np.ndarray,
    triangles: np.ndarray | None = None,
    *,
    background: bool = False,
) -> np.ndarray:
    """PNCC: the normalised coordinate code of ``ncc_code.npy`` ``(3, 38365)`` in [0, 1] drawn
    as colour; array channel k = 255 × NCC coordinate k (so BGR = xyz, as 3DDFA_V2).

    Returns ``(H, W, 3)`` uint8.
    """
    img, meshes, tri = _prepare(image, faces_vertices, triangles)
    canvas = _canvas(img, background)
    if not meshes:
        return canvas
    code = _ncc_code()
    if len(code) != len(meshes[0]):
        raise InputError(f"PNCC needs the {len(code)}-vertex mesh, got {len(meshes[0])} vertices")
    colors = np.broadcast_to(code, (len(meshes),) + code.shape)
    return _paint(canvas, meshes, tri, colors, 1.0)
