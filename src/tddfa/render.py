"""Renders of aligned faces, all built on the one Numba engine of :mod:`tddfa.rasterize`.

Every render takes the input image (``(H, W, 3)`` uint8 BGR) and returns a new uint8 BGR image
of the same size — drawn over the photo, or on black with ``background=True`` — except
:func:`uv_texture`, which returns the unwrapped ``size × size`` texture.

Meshes are ``(N, 3)`` float32 vertices in image pixels (x right, y down, z larger = nearer, as
:attr:`tddfa.results.Face.vertices`); several faces in one image share a z-buffer, so the nearer
surface wins where they overlap. Rasterisation runs only over the faces' bounding window (in
tiles of at most :data:`TILE` pixels a side), so faces partly outside the image and very large
images cost memory in proportion to the faces, not the image.

Kinds of :func:`render` (the :data:`RENDERERS` registry): ``mesh`` (shaded, alpha-blended mesh),
``depth`` (grey, brighter = nearer), ``pncc`` (projected normalised coordinate code: array
channel k holds the k-th NCC coordinate x, y, z, i.e. BGR = xyz, as the official renderer),
``normal`` (normal map, RGB = x right, y up, z towards the camera, mapped from [-1, 1] to
[0, 255]), ``uv`` (UV texture of each face, side by side), ``pose`` (3-D box and axes),
``dense`` (dense 2-D landmarks) and ``landmarks`` (the 68 points and their contours).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numba import njit

from .errors import InputError, unknown_name
from .rasterize import _raster_kernel, empty_buffers, interpolate, pixel_corners, rasterize

__all__ = [
    "RENDERERS",
    "TILE",
    "render",
    "render_mesh",
    "render_depth",
    "render_pncc",
    "render_normal",
    "draw_dense_points",
    "draw_landmarks",
    "draw_pose",
    "pose_box_points",
    "uv_texture",
    "uv_coordinates",
    "vertex_normals",
    "face_vertices",
    "save_renders",
]

log = logging.getLogger(__name__)

#: Largest side, in pixels, of one rasterisation tile (bounds the z-buffer memory).
TILE = 2048

#: Default light for :func:`render_mesh`: unit direction *towards* the light, image frame
#: (x right, y down, z towards the camera): a little up and to the left of the camera.
LIGHT_DIRECTION = (-0.25, -0.35, 1.0)

# The 68-point contours of the iBUG scheme: (first, last, closed).
_CONTOURS = [(0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
             (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True)]


# ---------------------------------------------------------------------------------------------
# inputs


def _as_image(image: Any) -> np.ndarray:
    from .image_io import load_image

    return load_image(image)


def face_vertices(face: Any) -> np.ndarray:
    """Dense vertices ``(38365, 3)`` float32, image pixels, of a :class:`~tddfa.results.Face`
    (reconstructed from its parameters and roi box when ``face.vertices`` is ``None``), or an
    ``(N, 3)`` array passed through."""
    verts = getattr(face, "vertices", face)
    if verts is None:
        from .morphable_model import load_morphable_model

        verts = load_morphable_model().reconstruct_image(
            np.asarray(face.params)[None], np.asarray(face.roi_box)[None], dense=True)[0]
    v = np.asarray(verts, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"face vertices must be (N, 3) image pixels, got shape {v.shape}")
    return v


def _meshes(faces_vertices: Any) -> list[np.ndarray]:
    if isinstance(faces_vertices, np.ndarray) and faces_vertices.ndim == 2:
        faces_vertices = [faces_vertices]
    meshes = [face_vertices(f) for f in faces_vertices]
    if len({len(m) for m in meshes}) > 1:
        raise InputError(f"all meshes must have the same vertex count, got {[len(m) for m in meshes]}")
    return meshes


def _triangles(triangles: np.ndarray | None, n_vertices: int) -> np.ndarray:
    if triangles is None:
        from .morphable_model import load_morphable_model

        triangles = load_morphable_model().tri
        if triangles is None:
            raise InputError("no triangles given and the morphable model has no dense mesh")
    t = np.asarray(triangles)
    if t.ndim != 2 or t.shape[1] != 3:
        if t.ndim == 2 and t.shape[0] == 3:
            t = t.T
        else:
            raise InputError(f"triangles must be (M, 3) vertex indices, got shape {t.shape}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise InputError(f"triangles must hold integer vertex indices, got dtype {t.dtype}")
    t = np.ascontiguousarray(t, dtype=np.int32)
    if t.size and n_vertices and (int(t.min()) < 0 or int(t.max()) >= n_vertices):
        raise InputError(
            f"triangle indices must lie in [0, {n_vertices - 1}], got [{int(t.min())}, {int(t.max())}]"
        )
    return t


def _canvas(image: np.ndarray, background: bool) -> np.ndarray:
    return np.zeros_like(image) if background else image.copy()


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
# renders


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


@lru_cache(maxsize=1)
def _ncc_code() -> np.ndarray:
    from . import assets

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


def pose_box_points(rotation: np.ndarray, center: np.ndarray, half_size: float) -> np.ndarray:
    """The 8 corners ``(8, 2)`` float64 (image pixels) of a cube of half-side ``half_size``
    pixels centred on ``center`` ``(2,)``, turned by the head rotation ``rotation`` ``(3, 3)``
    (crop frame, y up, as :attr:`tddfa.results.Pose.rotation`) and projected orthographically.

    Corners ``0-3`` are the back face (model z = -1), ``4-7`` the front face (towards the nose),
    each in the order (-x,-y), (+x,-y), (+x,+y), (-x,+y) of the model frame.
    """
    R = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    sq = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    cube = np.concatenate([np.c_[sq, -np.ones(4)], np.c_[sq, np.ones(4)]])
    rotated = cube @ R.T * half_size
    rotated[:, 1] *= -1.0            # crop frame y up -> image y down
    return rotated[:, :2] + np.asarray(center, dtype=np.float64)[:2]


def draw_pose(
    image: Any,
    faces: Sequence[Any],
    *,
    style: str = "both",
    background: bool = False,
) -> np.ndarray:
    """Head pose of each :class:`~tddfa.results.Face`: a 3-D box around the head (back face grey,
    front face — the direction the face looks — yellow) and/or axes (x red, y green, forward
    blue) from the landmarks' centre, drawn from ``face.pose.rotation``.

    Args:
        style: ``"box"``, ``"axes"`` or ``"both"``.

    Returns ``(H, W, 3)`` uint8 BGR.
    """
    if style not in ("box", "axes", "both"):
        raise InputError(f"style must be 'box', 'axes' or 'both', got {style!r}")
    img = _as_image(image)
    canvas = _canvas(img, background)
    for face in faces:
        pose = getattr(face, "pose", None)
        if pose is None:
            raise InputError(f"draw_pose needs Face objects with a pose, got {type(face).__name__}")
        lm = _landmarks_of(face)
        if not np.isfinite(lm).all():
            continue
        center = lm.mean(axis=0)
        spread = float(np.sqrt(((lm - center) ** 2).sum(axis=1)).max())
        half = 0.75 * spread
        thick = max(1, int(round(spread / 60)))
        R = np.asarray(pose.rotation, dtype=np.float64)
        if style in ("box", "both"):
            c = np.rint(pose_box_points(R, center[:2], half) * 4).astype(np.int32)
            back, front = c[:4], c[4:]
            cv2.polylines(canvas, [back], True, (200, 200, 200), thick, cv2.LINE_AA, shift=2)
            for i in range(4):
                cv2.line(canvas, tuple(back[i]), tuple(front[i]), (200, 200, 200), thick,
                         cv2.LINE_AA, shift=2)
            cv2.polylines(canvas, [front], True, (0, 230, 255), thick + 1, cv2.LINE_AA, shift=2)
        if style in ("axes", "both"):
            axes = R.T * half                          # rows: model x, y, z axes in crop frame
            axes[:, 1] *= -1.0
            o = center[:2]
            for vec, col in zip(axes, [(0, 0, 255), (0, 255, 0), (255, 80, 0)], strict=True):
                tip = o + vec[:2]
                cv2.arrowedLine(canvas, (int(round(o[0] * 4)), int(round(o[1] * 4))),
                                (int(round(tip[0] * 4)), int(round(tip[1] * 4))), col, thick + 1,
                                cv2.LINE_AA, shift=2, tipLength=0.12)
    return canvas


# ---------------------------------------------------------------------------------------------
# UV texture


@lru_cache(maxsize=1)
def uv_coordinates() -> np.ndarray:
    """UV coordinates ``(38365, 2)`` float32 in [0, 1] (u right, v up) of the noneck mesh:
    the rows of ``BFM_UV.mat`` selected by ``indices.npy``."""
    import scipy.io

    from . import assets

    uv = scipy.io.loadmat(assets.resolve("bfm_uv"))["UV"]
    idx = np.load(assets.resolve("indices"), allow_pickle=False).astype(np.int64)
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


# ---------------------------------------------------------------------------------------------
# registry and entry points


def _mesh_kind(fn: Callable) -> Callable:
    def run(image, faces, triangles, **opts):
        return fn(image, list(faces), triangles, **opts)

    run.__doc__ = fn.__doc__
    return run


#: kind -> callable(image, faces, triangles, **options) -> uint8 BGR image.
RENDERERS: dict[str, Callable[..., np.ndarray]] = {
    "mesh": _mesh_kind(render_mesh),
    "depth": _mesh_kind(render_depth),
    "pncc": _mesh_kind(render_pncc),
    "normal": _mesh_kind(render_normal),
    "uv": _render_uv,
    "pose": lambda image, faces, triangles=None, **opts: draw_pose(image, faces, **opts),
    "dense": _mesh_kind(draw_dense_points),
    "landmarks": lambda image, faces, triangles=None, **opts: draw_landmarks(image, faces, **opts),
}


_TARGETS: dict[str, Callable] = {
    "mesh": render_mesh, "depth": render_depth, "pncc": render_pncc, "normal": render_normal,
    "uv": _render_uv, "pose": draw_pose, "dense": draw_dense_points, "landmarks": draw_landmarks,
}


def _options_for(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that the render function of ``kind`` accepts by name."""
    import inspect

    params = inspect.signature(_TARGETS[kind]).parameters
    return {k: v for k, v in options.items() if k in params and k not in ("image", "faces")}


def _check_kind(kind: str) -> Callable[..., np.ndarray]:
    try:
        return RENDERERS[kind]
    except (KeyError, TypeError):
        raise unknown_name("render kind", kind, RENDERERS) from None


def render(kind: str, image: Any, faces: Sequence[Any], triangles: np.ndarray | None = None,
           **options: Any) -> np.ndarray:
    """Render ``kind`` (one of :data:`RENDERERS`) of ``faces`` over ``image``.

    Args:
        kind: ``mesh``, ``depth``, ``pncc``, ``normal``, ``uv``, ``pose``, ``dense`` or
            ``landmarks``.
        image: ``(H, W, 3)`` uint8 BGR, or a path.
        faces: :class:`~tddfa.results.Face` objects (dense vertices are reconstructed from the
            parameters when absent), or ``(N, 3)`` vertex arrays for the mesh kinds.
        triangles: ``(M, 3)`` int (default: the morphable model's).
        options: passed to the render function (e.g. ``alpha``, ``background``, ``size``).

    Returns:
        uint8 BGR image, the size of ``image`` (``uv``: ``size × (size·K)``).

    Raises:
        InputError: unknown kind (with the closest match), bad arrays.
    """
    return _check_kind(kind)(image, list(faces), triangles, **options)


def save_renders(
    image: Any,
    faces: Sequence[Any],
    triangles: np.ndarray | None,
    kinds: Sequence[str],
    out_dir: str | os.PathLike,
    stem: str,
    **options: Any,
) -> list[Path]:
    """Write ``<out_dir>/<stem>_<kind>.png`` for each kind (atomically) and return the paths.

    Every kind is checked before anything is written. ``options`` (e.g. ``background=True``,
    ``alpha=0.8``, ``size=512``) go to each kind that accepts them and are ignored by the others.
    """
    from .image_io import write_image

    for k in kinds:
        _check_kind(k)
    img = _as_image(image)
    out_dir = Path(out_dir)
    paths = []
    for k in kinds:
        res = render(k, img, faces, triangles, **_options_for(k, options))
        paths.append(write_image(out_dir / f"{stem}_{k}.png", res))
        log.debug("wrote %s", paths[-1])
    return paths
