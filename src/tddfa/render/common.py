"""What every render shares: inputs (faces or vertex arrays), cached triangle data, vertex normals and
Lambert shading, and the tiled multi-face raster pass that composites per-vertex colours into the
image."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

from tddfa.errors import InputError
from tddfa.render.inputs import _as_image, _canvas, _meshes, _triangles, face_vertices  # noqa: F401
from tddfa.render.rasterize import _raster_kernel, empty_buffers, pixel_corners

log = logging.getLogger(__name__)


#: Largest side, in pixels, of one rasterisation tile (bounds the z-buffer memory).
TILE = 2048

#: Default light for :func:`render_mesh`: unit direction *towards* the light, image frame
#: (x right, y down, z towards the camera): a little up and to the left of the camera.
LIGHT_DIRECTION = (-0.25, -0.35, 1.0)

# ---------------------------------------------------------------------------------------------
# inputs


# ---------------------------------------------------------------------------------------------
# normals


_CACHE: dict[tuple, Any] = {}
_KEYS: dict[int, tuple[Any, tuple]] = {}


def _cached(key: tuple, make: Callable[[], Any]) -> Any:
    """A tiny bounded memo for values derived from a triangle list."""
    try:
        return _CACHE[key]
    except KeyError:
        pass
    if len(_CACHE) >= 16:
        _CACHE.pop(next(iter(_CACHE)))
    value = _CACHE[key] = make()
    return value


def _tri_key(tri: np.ndarray) -> tuple:
    """Cache key of a triangle list: a full checksum, computed once per array object (the same
    array object with the same shape and a matching sample of its values reuses it)."""
    import weakref

    sample = int(tri[:: max(1, len(tri) // 64)].sum()) if tri.size else 0
    hit = _KEYS.get(id(tri))
    if hit is not None:
        ref, key = hit
        if ref() is tri and key[0] == tri.shape and key[2] == sample:
            return key
    key = (tri.shape, zlib.adler32(np.ascontiguousarray(tri)), sample)
    try:
        _KEYS[id(tri)] = (weakref.ref(tri), key)
    except TypeError:  # pragma: no cover - arrays support weak references
        pass
    if len(_KEYS) > 64:
        _KEYS.pop(next(iter(_KEYS)))
    return key


@njit(cache=True, nogil=True)
def _normal_sums_kernel(v, tri, out):  # pragma: no cover - compiled
    """Scatter each triangle's (v1 - v0) x (v2 - v0) (twice its area times its normal) onto its
    corners; returns the summed z of all triangle normals (the mesh's signed projected area)."""
    total = 0.0
    for t in range(tri.shape[0]):
        a, b, c = tri[t, 0], tri[t, 1], tri[t, 2]
        e1x = v[b, 0] - v[a, 0]
        e1y = v[b, 1] - v[a, 1]
        e1z = v[b, 2] - v[a, 2]
        e2x = v[c, 0] - v[a, 0]
        e2y = v[c, 1] - v[a, 1]
        e2z = v[c, 2] - v[a, 2]
        fx = e1y * e2z - e1z * e2y
        fy = e1z * e2x - e1x * e2z
        fz = e1x * e2y - e1y * e2x
        if not (np.isfinite(fx) and np.isfinite(fy) and np.isfinite(fz)):
            continue
        total += fz
        for k in (a, b, c):
            out[k, 0] += fx
            out[k, 1] += fy
            out[k, 2] += fz
    return total


def _normal_sums(v: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-vertex sums of the adjacent triangles' area-weighted normals, as three ``(N,)``
    float32 arrays (x, y, z), oriented so the mesh as a whole faces +z."""
    out = np.zeros((len(v), 3), np.float32)
    total = _normal_sums_kernel(np.ascontiguousarray(v, np.float32),
                                np.ascontiguousarray(tri, np.int32), out)
    if total < 0:   # signed projected area < 0: the triangles are wound the other way
        out = -out
    return out[:, 0], out[:, 1], out[:, 2]


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray | None = None) -> np.ndarray:
    """Unit vertex normals ``(N, 3)`` float32, image frame (area-weighted mean of the adjacent
    triangles' normals).

    Oriented so that the mesh as a whole faces the camera (+z), whatever the triangles'
    winding. Vertices on no (non-degenerate) triangle get ``(0, 0, 1)``.
    """
    v = np.asarray(vertices, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"vertices must be (N, 3), got shape {v.shape}")
    tri = _triangles(triangles, len(v))
    n = np.stack(_normal_sums(v, tri), axis=1).astype(np.float32, copy=False)
    norm = np.sqrt(np.einsum("ij,ij->i", n, n))
    empty = ~(norm > 1e-20)
    norm[empty] = 1.0
    n /= norm[:, None]
    n[empty] = (0.0, 0.0, 1.0)
    return n


def _lambert(v: np.ndarray, tri: np.ndarray, ldir: np.ndarray) -> np.ndarray:
    """``max(n . l, 0)`` per vertex ``(N,)`` float32 for unit light direction ``ldir``."""
    nx, ny, nz = _normal_sums(v, tri)
    dot = nx * ldir[0] + ny * ldir[1] + nz * ldir[2]
    norm = np.sqrt(nx * nx + ny * ny + nz * nz)
    norm[~(norm > 1e-20)] = np.inf        # no adjacent area: unlit (ambient only)
    dot /= norm
    np.maximum(dot, 0.0, out=dot)
    return dot


# ---------------------------------------------------------------------------------------------
# the shared raster pass


@njit(cache=True, nogil=True, error_model="numpy")
def _composite_kernel(attributes, triangles, tri_index, bary, out, alpha, tint):  # pragma: no cover
    """out = (1 - alpha) out + alpha tint * interpolated attributes, where a triangle covers.

    ``attributes`` ``(K, N, C)`` with C = 1 (grey, scaled by the 3 ``tint`` values) or C = 3.
    """
    height, width = tri_index.shape
    grey = attributes.shape[2] == 1
    beta = np.float32(1.0) - alpha
    col = np.empty(3, dtype=np.float32)
    for py in range(height):
        for px in range(width):
            if tri_index[py, px] < 0:
                continue
            k, i0, i1, i2, b0, b1, b2 = pixel_corners(tri_index, bary, triangles, py, px)
            if grey:
                g = b0 * attributes[k, i0, 0] + b1 * attributes[k, i1, 0] + b2 * attributes[k, i2, 0]
                col[0] = g * tint[0]
                col[1] = g * tint[1]
                col[2] = g * tint[2]
            else:
                for c in range(3):
                    col[c] = tint[c] * (b0 * attributes[k, i0, c] + b1 * attributes[k, i1, c]
                                        + b2 * attributes[k, i2, c])
            for c in range(3):
                val = beta * out[py, px, c] + alpha * col[c] + np.float32(0.5)
                if val < 0.0:
                    val = 0.0
                elif val > 255.0:
                    val = 255.0
                out[py, px, c] = np.uint8(val)


@njit(cache=True, nogil=True, error_model="numpy")
def _finite_bounds(v):  # pragma: no cover
    """(xmin, ymin, xmax, ymax) over the vertices with finite x and y (inf if none)."""
    x0 = np.inf
    y0 = np.inf
    x1 = -np.inf
    y1 = -np.inf
    for i in range(v.shape[0]):
        x = v[i, 0]
        y = v[i, 1]
        if np.isfinite(x) and np.isfinite(y):
            x0 = min(x0, x)
            x1 = max(x1, x)
            y0 = min(y0, y)
            y1 = max(y1, y)
    return x0, y0, x1, y1


def _window(meshes: list[np.ndarray], height: int, width: int) -> tuple[int, int, int, int] | None:
    """Integer pixel window ``(x0, y0, x1, y1)`` (inclusive) covering the meshes, clipped."""
    lo = [np.inf, np.inf]
    hi = [-np.inf, -np.inf]
    for m in meshes:
        x0, y0, x1, y1 = _finite_bounds(m)
        lo = [min(lo[0], x0), min(lo[1], y0)]
        hi = [max(hi[0], x1), max(hi[1], y1)]
    if not all(np.isfinite(lo + hi)):
        return None
    x0 = int(max(np.ceil(lo[0]), 0))
    y0 = int(max(np.ceil(lo[1]), 0))
    x1 = int(min(np.floor(hi[0]), width - 1))
    y1 = int(min(np.floor(hi[1]), height - 1))
    if x0 > x1 or y0 > y1:
        return None
    return x0, y0, x1, y1


def _groups(meshes: list[np.ndarray], height: int, width: int):
    """Faces whose windows overlap, merged: ``[((x0, y0, x1, y1), [k, ...]), ...]``.

    Faces that cannot touch the same pixel are rasterised apart, so two faces far apart in a
    photo cost two small windows instead of one wide one.
    """
    groups = []
    for k, m in enumerate(meshes):
        win = _window([m], height, width)
        if win is not None:
            groups.append((win, [k]))
    merged = True
    while merged and len(groups) > 1:
        merged = False
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                (ax0, ay0, ax1, ay1), ka = groups[a]
                (bx0, by0, bx1, by1), kb = groups[b]
                if ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1:
                    groups[a] = ((min(ax0, bx0), min(ay0, by0), max(ax1, bx1), max(ay1, by1)),
                                 ka + kb)
                    del groups[b]
                    merged = True
                    break
            if merged:
                break
    return groups


def _tiles(meshes: list[np.ndarray], triangles: np.ndarray, height: int, width: int):
    """Yield ``(x0, y0, tri_index, bary, depth)`` rasters covering the faces, tile by tile
    (tiles of at most :data:`TILE` pixels a side, over each group of overlapping faces).

    ``tri_index`` stores ``k * M + t`` for triangle ``t`` of mesh ``k``.
    """
    if not len(triangles):
        return
    m = len(triangles)
    for (wx0, wy0, wx1, wy1), members in _groups(meshes, height, width):
        for ty in range(wy0, wy1 + 1, TILE):
            for tx in range(wx0, wx1 + 1, TILE):
                th = min(TILE, wy1 + 1 - ty)
                tw = min(TILE, wx1 + 1 - tx)
                depth, tri_index, bary = empty_buffers(th, tw)
                shift = np.array([tx, ty, 0], dtype=np.float32)
                for k in members:
                    # triangles were validated by _triangles(); call the engine's kernel directly
                    _raster_kernel(meshes[k] - shift, triangles, depth, tri_index, bary,
                                   np.int32(k * m))
                yield tx, ty, tri_index, bary, depth


def _paint(canvas: np.ndarray, meshes: list[np.ndarray], triangles: np.ndarray,
           colors: np.ndarray, alpha: float, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Composite per-vertex colours ``(K, N, 3)`` (0-255, BGR), or grey levels ``(K, N, 1)``
    times ``tint`` (BGR), over ``canvas`` in place."""
    h, w = canvas.shape[:2]
    colors = np.ascontiguousarray(colors, dtype=np.float32)
    tint = np.asarray(tint, dtype=np.float32)
    for x0, y0, tri_index, bary, _ in _tiles(meshes, triangles, h, w):
        th, tw = tri_index.shape
        view = np.ascontiguousarray(canvas[y0:y0 + th, x0:x0 + tw])
        _composite_kernel(colors, triangles, tri_index, bary, view, np.float32(alpha), tint)
        canvas[y0:y0 + th, x0:x0 + tw] = view
    return canvas


def _prepare(image: Any, faces_vertices: Any, triangles: np.ndarray | None):
    img = _as_image(image)
    meshes = _meshes(faces_vertices)
    tri = _triangles(triangles, len(meshes[0]) if meshes else 0)
    return img, meshes, tri


# ---------------------------------------------------------------------------------------------
