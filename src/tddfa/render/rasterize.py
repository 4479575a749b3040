"""A small z-buffer triangle rasteriser in Numba: the one engine behind every render.

Conventions:

* Vertices are ``(N, 3)`` image pixels: x to the right, y down, z **larger = nearer** the camera
  (the frame of :func:`tddfa.morphable_model.to_image_frame`).
* Pixels are sampled at integer coordinates (pixel centres at integers, as OpenCV): pixel
  ``(row, col)`` is the point ``x = col, y = row``.
* A pixel is covered by a triangle when it lies inside or exactly on its edges (the three edge
  functions have the sign of the triangle's area or are zero); when several triangles cover a
  pixel, the nearest (largest interpolated z) wins, ties going to the triangle drawn first.
* Attributes are interpolated with plain (perspective-free, affine) barycentric weights; the
  projection of a 3DMM face is orthographic, so this is exact.
* Degenerate triangles (zero area), triangles with non-finite coordinates and triangles entirely
  off the image are skipped; only each triangle's bounding box clipped to the image is visited.

Several meshes share one z-buffer in either of two ways:

* :func:`rasterize_meshes` stacks ``K`` meshes with the same triangle list; the triangle index it
  stores is ``k * M + t`` (``M`` triangles per mesh) and :func:`interpolate` takes ``(K, N, C)``
  attributes to match (``face_id = tri_index // M``).
* :func:`rasterize` with ``depth=``, ``tri_index=`` and ``bary=`` buffers from a previous call
  and a ``tri_offset`` draws into the same buffers (any triangle lists).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numba import njit

from tddfa.errors import InputError

__all__ = [
    "rasterize",
    "rasterize_meshes",
    "interpolate",
    "empty_buffers",
    "visible_vertices",
]

log = logging.getLogger(__name__)

#: Triangles whose doubled area (in square pixels) is at most this are treated as degenerate.
DEGENERATE_AREA = 1e-12


@njit(inline="always", cache=True, nogil=True)
def pixel_span(lo, hi, size):  # pragma: no cover - compiled
    """The pixel centres ``first … last`` (``first > last``: none) of an image axis of ``size``
    pixels within ``[lo, hi]`` (float64). An interval off the image, or with a NaN end, is
    empty; it is clipped in floating point before the integer casts, so huge coordinates
    cannot overflow them."""
    if not (hi >= 0.0 and lo <= size - 1.0):
        return 1, 0
    return int(math.ceil(max(lo, 0.0))), int(math.floor(min(hi, size - 1.0)))


@njit(inline="always", cache=True, nogil=True)
def edge_functions(x0, y0, x1, y1, x2, y2):  # pragma: no cover - compiled
    """A triangle's three edge functions in float64: ``(ok, (a0, b0, k0, a1, b1, k1, a2, b2,
    k2), 1 / |area|)``. Edge ``k`` (opposite vertex ``k``) is ``e_k = a_k x + b_k y + k_k``,
    oriented so that inside is ``>= 0``, and ``e_k / |area|`` is vertex ``k``'s barycentric
    weight; a shared edge gets exactly negated coefficients in its two triangles (no cracks).
    ``ok`` is False for a degenerate triangle (doubled area ``<= DEGENERATE_AREA``)."""
    x0, y0, x1, y1 = np.float64(x0), np.float64(y0), np.float64(x1), np.float64(y1)
    x2, y2 = np.float64(x2), np.float64(y2)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    if abs(area) <= DEGENERATE_AREA:
        return False, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), 0.0
    s = 1.0 if area > 0.0 else -1.0
    e = ((y1 - y2) * s, (x2 - x1) * s, (x1 * y2 - x2 * y1) * s,
         (y2 - y0) * s, (x0 - x2) * s, (x2 * y0 - x0 * y2) * s,
         (y0 - y1) * s, (x1 - x0) * s, (x0 * y1 - x1 * y0) * s)
    return True, e, 1.0 / abs(area)


@njit(cache=True, nogil=True, error_model="numpy")
def _raster_kernel(vertices, triangles, depth, tri_index, bary, tri_offset):  # pragma: no cover
    height, width = depth.shape
    n_vertices = vertices.shape[0]
    for t in range(triangles.shape[0]):
        i0 = triangles[t, 0]
        i1 = triangles[t, 1]
        i2 = triangles[t, 2]
        if i0 < 0 or i1 < 0 or i2 < 0 or i0 >= n_vertices or i1 >= n_vertices or i2 >= n_vertices:
            continue
        x0 = np.float64(vertices[i0, 0])
        y0 = np.float64(vertices[i0, 1])
        x1 = np.float64(vertices[i1, 0])
        y1 = np.float64(vertices[i1, 1])
        x2 = np.float64(vertices[i2, 0])
        y2 = np.float64(vertices[i2, 1])
        xmin = min(x0, min(x1, x2))
        xmax = max(x0, max(x1, x2))
        ymin = min(y0, min(y1, y2))
        ymax = max(y0, max(y1, y2))
        # NaN coordinates give empty spans; infinities are caught by the area below
        c0, c1 = pixel_span(xmin, xmax, width)
        r0, r1 = pixel_span(ymin, ymax, height)
        if c0 > c1 or r0 > r1:
            continue
        z0 = np.float64(vertices[i0, 2])
        z1 = np.float64(vertices[i1, 2])
        z2 = np.float64(vertices[i2, 2])
        if not (math.isfinite(xmin) and math.isfinite(xmax) and math.isfinite(ymin)
                and math.isfinite(ymax) and math.isfinite(z0 + z1 + z2)):
            continue
        ok, e, inv_area = edge_functions(x0, y0, x1, y1, x2, y2)
        if not ok:
            continue
        a0, b0, k0, a1, b1, k1, a2, b2, k2 = e
        for py in range(r0, r1 + 1):
            fy = np.float64(py)
            e0y = b0 * fy + k0
            e1y = b1 * fy + k1
            e2y = b2 * fy + k2
            for px in range(c0, c1 + 1):
                fx = np.float64(px)
                e0 = a0 * fx + e0y
                e1 = a1 * fx + e1y
                e2 = a2 * fx + e2y
                if (e0 >= 0.0) & (e1 >= 0.0) & (e2 >= 0.0):
                    w0 = e0 * inv_area
                    w1 = e1 * inv_area
                    w2 = e2 * inv_area
                    z = np.float32(w0 * z0 + w1 * z1 + w2 * z2)
                    if z > depth[py, px]:
                        depth[py, px] = z
                        tri_index[py, px] = t + tri_offset
                        bary[py, px, 0] = w0
                        bary[py, px, 1] = w1
                        bary[py, px, 2] = w2


@njit(inline="always", cache=True, nogil=True)
def pixel_corners(tri_index, bary, triangles, py, px):  # pragma: no cover - compiled
    """For a covered pixel: face number ``k`` (from a stored ``k * M + t``), the three vertex
    indices of its triangle ``t`` and the pixel's barycentric weights."""
    ti = tri_index[py, px]
    n_tri = triangles.shape[0]
    k = ti // n_tri
    t = ti - k * n_tri
    return (k, triangles[t, 0], triangles[t, 1], triangles[t, 2],
            bary[py, px, 0], bary[py, px, 1], bary[py, px, 2])


@njit(cache=True, nogil=True, error_model="numpy")
def _interp_kernel(attributes, triangles, tri_index, bary, out):  # pragma: no cover
    height, width = tri_index.shape
    n_channels = attributes.shape[2]
    for py in range(height):
        for px in range(width):
            if tri_index[py, px] < 0:
                continue
            k, i0, i1, i2, b0, b1, b2 = pixel_corners(tri_index, bary, triangles, py, px)
            for c in range(n_channels):
                out[py, px, c] = (b0 * attributes[k, i0, c] + b1 * attributes[k, i1, c]
                                  + b2 * attributes[k, i2, c])


def check_mesh(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a mesh: vertices ``(N, 3)``, integer triangles ``(M, 3)`` indexing them.

    Returns contiguous float32 vertices and int32 triangles; raises :class:`InputError`.
    """
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"vertices must be (N, 3) image pixels, got shape {v.shape}")
    t = np.asarray(triangles)
    if t.ndim != 2 or t.shape[1] != 3:
        raise InputError(f"triangles must be (M, 3) vertex indices, got shape {t.shape}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise InputError(f"triangles must hold integer indices, got dtype {t.dtype}")
    if t.size and (int(t.min()) < 0 or int(t.max()) >= len(v)):
        raise InputError(
            f"triangle indices must lie in [0, {len(v) - 1}] for {len(v)} vertices, "
            f"got range [{int(t.min())}, {int(t.max())}]"
        )
    return (np.ascontiguousarray(v, dtype=np.float32),
            np.ascontiguousarray(t, dtype=np.int32))


def empty_buffers(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh buffers for :func:`rasterize`: depth ``(H, W)`` float32 ``-inf``, triangle index
    ``(H, W)`` int32 ``-1``, barycentric weights ``(H, W, 3)`` float32 zeros."""
    height, width = int(height), int(width)
    if height < 0 or width < 0:
        raise InputError(f"height and width must be >= 0, got {height}x{width}")
    depth = np.full((height, width), -np.inf, dtype=np.float32)
    tri_index = np.full((height, width), -1, dtype=np.int32)
    bary = np.zeros((height, width, 3), dtype=np.float32)
    return depth, tri_index, bary


def rasterize(
    vertices: np.ndarray,
    triangles: np.ndarray,
    height: int,
    width: int,
    *,
    depth: np.ndarray | None = None,
    tri_index: np.ndarray | None = None,
    bary: np.ndarray | None = None,
    tri_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise one triangle mesh with a z-buffer.

    Args:
        vertices: ``(N, 3)`` float image pixels, x right, y down, z larger = nearer.
        triangles: ``(M, 3)`` int vertex indices (0-based).
        height, width: size of the raster in pixels.
        depth, tri_index, bary: optional buffers from :func:`empty_buffers` or an earlier call,
            updated **in place** (pass all three together) so several meshes share a z-buffer.
        tri_offset: added to the triangle index stored for this mesh (e.g. ``k * M`` for the
            ``k``-th mesh, or the running total of triangles), so pixels can be traced back.

    Returns:
        ``depth`` ``(H, W)`` float32 interpolated z of the nearest triangle, ``-inf`` where empty;
        ``tri_index`` ``(H, W)`` int32 triangle index (+ ``tri_offset``), ``-1`` where empty;
        ``bary`` ``(H, W, 3)`` float32 barycentric weights of its three corners (undefined
        where empty; zeros in fresh buffers).

    Raises:
        InputError: wrong shapes or dtypes, out-of-range triangle indices, mismatched buffers.
    """
    v, t = check_mesh(vertices, triangles)
    given = [b is not None for b in (depth, tri_index, bary)]
    if any(given) and not all(given):
        raise InputError("pass depth, tri_index and bary buffers together (or none of them)")
    if depth is None:
        depth, tri_index, bary = empty_buffers(height, width)
    else:
        expected = {"depth": ((height, width), np.float32), "tri_index": ((height, width), np.int32),
                    "bary": ((height, width, 3), np.float32)}
        for name, buf in (("depth", depth), ("tri_index", tri_index), ("bary", bary)):
            shape, dtype = expected[name]
            if buf.shape != shape or buf.dtype != dtype or not buf.flags.c_contiguous:
                raise InputError(
                    f"{name} buffer must be C-contiguous {shape} {np.dtype(dtype).name}, "
                    f"got {buf.shape} {buf.dtype.name}"
                )
    if tri_offset < 0 or tri_offset + len(t) > np.iinfo(np.int32).max:
        raise InputError(f"tri_offset must keep indices within int32, got {tri_offset}")
    if len(t) and height > 0 and width > 0:
        _raster_kernel(v, t, depth, tri_index, bary, np.int32(tri_offset))
    return depth, tri_index, bary


def rasterize_meshes(
    meshes: list[np.ndarray] | np.ndarray,
    triangles: np.ndarray,
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise ``K`` meshes sharing one triangle list into one z-buffer (nearest wins).

    Args:
        meshes: ``K`` arrays ``(N, 3)`` (or one ``(K, N, 3)`` array), image pixels.
        triangles: ``(M, 3)`` int, the same for every mesh.

    Returns:
        As :func:`rasterize`; the stored triangle index is ``k * M + t``, so on covered pixels
        (``tri_index >= 0``) the mesh is ``tri_index // M`` and its triangle ``tri_index % M``.
    """
    depth, tri_index, bary = empty_buffers(height, width)
    m = len(np.asarray(triangles).reshape(-1, 3))
    for k, mesh in enumerate(meshes):
        rasterize(mesh, triangles, height, width, depth=depth, tri_index=tri_index, bary=bary,
                  tri_offset=k * m)
    return depth, tri_index, bary


def interpolate(
    attributes: np.ndarray,
    triangles: np.ndarray,
    tri_index: np.ndarray,
    bary: np.ndarray,
) -> np.ndarray:
    """Interpolate per-vertex attributes over a raster.

    Args:
        attributes: ``(N, C)`` (or ``(N,)``) per-vertex values for one mesh, or ``(K, N, C)`` for
            the ``K`` meshes of :func:`rasterize_meshes` (stored index ``k * M + t``).
        triangles: ``(M, 3)`` int, as given to the rasteriser.
        tri_index, bary: from :func:`rasterize`.

    Returns:
        ``(H, W, C)`` float32, zeros where no triangle covers the pixel.
    """
    a = np.asarray(attributes, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"attributes must be (N, C) or (K, N, C), got shape {a.shape}")
    t = np.ascontiguousarray(np.asarray(triangles).reshape(-1, 3), dtype=np.int32)
    tri_index = np.asarray(tri_index)
    bary = np.asarray(bary)
    if tri_index.ndim != 2 or bary.shape != tri_index.shape + (3,):
        raise InputError(
            f"tri_index must be (H, W) and bary (H, W, 3), got {tri_index.shape} and {bary.shape}"
        )
    if t.size and (int(t.min()) < 0 or int(t.max()) >= a.shape[1]):
        raise InputError(
            f"triangle indices must lie in [0, {a.shape[1] - 1}] for {a.shape[1]} attribute rows, "
            f"got range [{int(t.min())}, {int(t.max())}]"
        )
    if tri_index.size and int(tri_index.max()) >= len(t) * a.shape[0]:
        raise InputError(
            f"tri_index holds {int(tri_index.max())}, beyond {a.shape[0]} mesh(es) of {len(t)} "
            "triangles: pass (K, N, C) attributes for stacked meshes"
        )
    out = np.zeros(tri_index.shape + (a.shape[2],), dtype=np.float32)
    if tri_index.size and len(t):
        _interp_kernel(np.ascontiguousarray(a), t, np.ascontiguousarray(tri_index, dtype=np.int32),
                       np.ascontiguousarray(bary, dtype=np.float32), out)
    return out


def visible_vertices(vertices: np.ndarray, depth: np.ndarray, tol: float = 1.0) -> np.ndarray:
    """Which vertices are not hidden: ``(N,)`` bool.

    A vertex is visible when it projects inside the raster and its z is within ``tol`` pixels
    of the z-buffer at its nearest pixel.
    """
    v = np.asarray(vertices, dtype=np.float32)
    h, w = depth.shape
    col = np.rint(v[:, 0])
    row = np.rint(v[:, 1])
    inside = np.isfinite(col) & np.isfinite(row) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    vis = np.zeros(len(v), dtype=bool)
    ci = col[inside].astype(np.int64)
    ri = row[inside].astype(np.int64)
    vis[inside] = v[inside, 2] >= depth[ri, ci] - tol
    return vis
