"""The features 3DDFA V1's cascade looks at, rendered from a parameter estimate at crop resolution.

Both are built on the 64×64 = 4,096 surface anchors of ``Model_PAF.pkl`` (a regular grid laid
over the BFM face surface, row-major as ``(64, 64)`` after V1's own ``reshape(64, 64, 3)
.transpose(1, 0, 2)``):

* **PNCC** (projected normalised coordinate code): the anchor grid as a triangle mesh (two
  triangles per grid cell; cells with an edge longer than 3× the median edge of the mean face
  are dropped), posed with the estimate, z-buffered by :func:`tddfa.render.rasterize.rasterize`
  and coloured by each anchor's NCC — its mean-face position normalised to [0, 1] per axis with
  the bounds of the noneck mean (the definition behind ``ncc_code.npy``). It is the same render
  as :mod:`tddfa.render.pncc`, at the anchor grid's resolution instead of 38,365 vertices (a
  120×120 crop has only ~4,000 face pixels, so the 4,096-anchor mesh loses nothing visible and
  is ~10× cheaper). ``(B, 120, 120, 3)`` uint8, channel k = 255 × NCC coordinate k.
* **PAF** (pose-adaptive feature): the anchors projected with the estimate; around each anchor a
  ``k × k`` patch (pixel offsets −(k−1)/2 … (k−1)/2) is sampled **bilinearly** from the crop and
  the patches are tiled into a ``(64k, 64k, 3)`` map, patch (i, j) at rows ``ik…ik+k−1``, columns
  ``jk…jk+k−1`` — so a convolution with kernel k and stride k over this map (the *pose-adaptive
  convolution*, :class:`tddfa.v1.net.CascadeStageNet`) is a convolution over the face surface that
  follows the current pose. Samples outside the crop are 0.

Expression at the anchors: ``Model_PAF.pkl`` holds the shape basis at the anchors
(``w_filter``, 40 columns) but its ``w_exp_filter`` is only a copy of the first 10 shape columns,
not an expression basis. We do not use it: each anchor takes the 10 expression columns of the
nearest vertex of the dense noneck model (mean faces compared), and anchors farther than
:data:`EXP_RADIUS` model units from any noneck vertex (neck and ears, which the noneck model
lacks) get no expression motion. With the approximate dense model (see
:mod:`tddfa.face.morphable_model`) those columns are themselves interpolated from the 68
landmarks.

Coordinates: parameters are in the 120×120 crop frame (x right, y up); anchors are mapped to
crop pixels as the rest of tddfa does (x − 1, 120 − y; z larger = nearer).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from tddfa.errors import AssetError, InputError
from tddfa.render.rasterize import edge_functions, pixel_span

__all__ = ["AnchorModel", "load_anchor_model", "anchors_crop", "render_pncc_crops",
           "render_paf_crops", "render_features", "stage_inputs", "GRID", "EXP_RADIUS"]

GRID = 64
#: Anchors farther than this (model units; the face is ~170,000 wide) from the noneck mesh get
#: no expression basis.
EXP_RADIUS = 5000.0
CROP = 120


@dataclass(frozen=True, eq=False)
class AnchorModel:
    """The morphable model at the 4,096 PAF anchors.

    Attributes:
        u: ``(4096, 3)`` float32 mean face at the anchors, model units.
        w: ``(4096, 3, 50)`` float32 shape (40, from ``w_filter``) and expression (10, from the
            nearest noneck vertex) bases.
        tri: ``(M, 3)`` int32 triangles of the anchor grid.
        ncc: ``(4096, 3)`` float32 NCC colour in [0, 1].
    """

    u: np.ndarray
    w: np.ndarray
    tri: np.ndarray
    ncc: np.ndarray

    @property
    def w_flat(self) -> np.ndarray:
        """``(50, 12288)`` float32 bases, one row per coefficient (for one matrix product)."""
        return _flat(self)


@lru_cache(maxsize=2)
def _flat(m: AnchorModel) -> np.ndarray:
    return np.ascontiguousarray(m.w.reshape(-1, 50).T)


def _grid_triangles(u: np.ndarray) -> np.ndarray:
    idx = np.arange(GRID * GRID).reshape(GRID, GRID)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tri = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    e = np.stack([np.linalg.norm(u[tri[:, i]] - u[tri[:, (i + 1) % 3]], axis=1) for i in range(3)], 1)
    keep = e.max(1) <= 3.0 * np.median(e)
    return np.ascontiguousarray(tri[keep], dtype=np.int32)


@lru_cache(maxsize=1)
def load_anchor_model() -> AnchorModel:
    """Build the :class:`AnchorModel` from ``model_paf`` and the dense model (cached)."""
    from scipy.spatial import cKDTree

    from tddfa.assets import registry as assets
    from tddfa.assets.serialization import load_pickle
    from tddfa.face.morphable_model import load_morphable_model

    d = load_pickle(assets.resolve("model_paf"))
    try:
        mu = np.asarray(d["mu_filter"], np.float64).reshape(-1)
        ws = np.asarray(d["w_filter"], np.float64)
    except (KeyError, TypeError) as exc:
        raise AssetError(f"Model_PAF.pkl: expected mu_filter and w_filter, got {exc}") from exc
    if mu.shape != (3 * GRID * GRID,) or ws.shape != (3 * GRID * GRID, 40):
        raise AssetError(f"Model_PAF.pkl: unexpected shapes {mu.shape}, {ws.shape}")
    # V1 reads the anchors as reshape(64, 64, 3).transpose(1, 0, 2): make that our row-major grid
    order = np.arange(GRID * GRID).reshape(GRID, GRID).T.ravel()
    u = mu.reshape(-1, 3)[order]
    w_shp = ws.reshape(-1, 3, 40)[order]
    mm = load_morphable_model()
    w_exp = np.zeros((len(u), 3, 10))
    if mm.has_dense:
        dense_u = mm.u.reshape(-1, 3).astype(np.float64)
        dist, near = cKDTree(dense_u).query(u)
        ok = dist <= EXP_RADIUS
        w_exp[ok] = mm.w.reshape(-1, 3, 50)[near[ok], :, 40:]
        lo, hi = dense_u.min(0), dense_u.max(0)
    else:
        lo, hi = u.min(0), u.max(0)
    ncc = np.clip((u - lo) / (hi - lo), 0.0, 1.0)
    return AnchorModel(u=u.astype(np.float32),
                       w=np.ascontiguousarray(np.concatenate([w_shp, w_exp], 2), dtype=np.float32),
                       tri=_grid_triangles(u), ncc=ncc.astype(np.float32))


def _check_params(params: np.ndarray) -> np.ndarray:
    p = np.asarray(params, dtype=np.float32)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 62:
        raise InputError(f"params must be (B, 62) crop-frame parameters, got {p.shape}")
    return p


def anchors_crop(params: np.ndarray, model: AnchorModel | None = None) -> np.ndarray:
    """Anchors ``(B, 4096, 3)`` float32 in crop pixels (x right, y down, z larger = nearer) for
    de-normalised crop-frame parameters ``(B, 62)``."""
    p = _check_params(params)
    m = model or load_anchor_model()
    v = np.empty((len(p), len(m.u), 3), np.float32)
    # compiled, not BLAS: OpenBLAS keeps its threads spinning after a product this small, taking
    # the core that the PNCC/PAF renders (run side by side) need
    _pose_anchors(p, m.w_flat, m.u.reshape(-1), v)
    return v


@njit(cache=True, nogil=True, fastmath={"contract"})  # FMA only: NaN must stay NaN
def _pose_anchors(p, w, u, out):  # pragma: no cover - compiled
    """``out[b] = crop frame of (R_b (u + w^T p_b[12:]) + t_b)`` for ``(B, 62)`` params."""
    n = u.shape[0]
    s = np.empty(n, np.float32)
    for b in range(p.shape[0]):
        s[:] = u
        for k in range(w.shape[0]):
            c = p[b, 12 + k]
            for j in range(n):
                s[j] += c * w[k, j]
        for a in range(n // 3):
            x, y, z = s[3 * a], s[3 * a + 1], s[3 * a + 2]
            out[b, a, 0] = p[b, 0] * x + p[b, 1] * y + p[b, 2] * z + p[b, 3] - 1.0
            out[b, a, 1] = CROP - (p[b, 4] * x + p[b, 5] * y + p[b, 6] * z + p[b, 7])
            out[b, a, 2] = p[b, 8] * x + p[b, 9] * y + p[b, 10] * z + p[b, 11]


def render_pncc_crops(params: np.ndarray, model: AnchorModel | None = None,
                      anchors: np.ndarray | None = None) -> np.ndarray:
    """PNCC ``(B, 120, 120, 3)`` uint8 of each estimate (channel k = 255 × NCC_k, 0 off-face)."""
    m = model or load_anchor_model()
    v = anchors_crop(params, m) if anchors is None else anchors
    out = np.zeros((len(v), CROP, CROP, 3), np.uint8)
    _pncc_into(v, m, out.transpose(0, 3, 1, 2))
    return out


def _pncc_into(v: np.ndarray, m: AnchorModel, out: np.ndarray) -> None:
    """Render the PNCC of posed anchors ``v`` ``(B, 4096, 3)`` into zeroed ``out``
    ``(B, 3, 120, 120)`` (channels first; any strides)."""
    colors = _ncc_colors(m)
    for b in range(len(v)):
        if np.all(np.isfinite(v[b])):
            _pncc_kernel(np.ascontiguousarray(v[b]), m.tri, colors, out[b])


@lru_cache(maxsize=2)
def _ncc_colors(m: AnchorModel) -> np.ndarray:
    return np.ascontiguousarray(m.ncc * 255.0, dtype=np.float32)


@njit(cache=True, nogil=True)
def _pncc_kernel(v, tri, colors, out):  # pragma: no cover - compiled
    """One face: z-buffer the anchor mesh ``v`` ``(N, 3)`` (finite; checked by the caller) with
    :func:`tddfa.render.rasterize.rasterize`'s rules (pixel centres, edge functions in float64,
    nearest wins, the first triangle on a tie) and write the NCC colour interpolated at each
    pixel into ``out`` ``(3, H, W)`` uint8 whenever a triangle wins the pixel — no triangle-index
    or barycentric buffers, so the same values as rasterising and then interpolating."""
    h, w = out.shape[1], out.shape[2]
    depth = np.full((h, w), -np.inf, np.float32)
    for t in range(tri.shape[0]):
        i0, i1, i2 = tri[t, 0], tri[t, 1], tri[t, 2]
        xmin = np.float64(min(v[i0, 0], min(v[i1, 0], v[i2, 0])))
        xmax = np.float64(max(v[i0, 0], max(v[i1, 0], v[i2, 0])))
        c0, c1 = pixel_span(xmin, xmax, w)
        if c0 > c1:  # no pixel centre in the bounding box: most of a 4,096-anchor mesh's cells
            continue
        ymin = np.float64(min(v[i0, 1], min(v[i1, 1], v[i2, 1])))
        ymax = np.float64(max(v[i0, 1], max(v[i1, 1], v[i2, 1])))
        r0, r1 = pixel_span(ymin, ymax, h)
        if r0 > r1:
            continue
        ok, e, inv_area = edge_functions(v[i0, 0], v[i0, 1], v[i1, 0], v[i1, 1], v[i2, 0], v[i2, 1])
        if not ok:
            continue
        z0, z1, z2 = np.float64(v[i0, 2]), np.float64(v[i1, 2]), np.float64(v[i2, 2])
        for py in range(r0, r1 + 1):
            fy = np.float64(py)
            e0y, e1y, e2y = e[1] * fy + e[2], e[4] * fy + e[5], e[7] * fy + e[8]
            for px in range(c0, c1 + 1):
                fx = np.float64(px)
                e0, e1, e2 = e[0] * fx + e0y, e[3] * fx + e1y, e[6] * fx + e2y
                if (e0 >= 0.0) & (e1 >= 0.0) & (e2 >= 0.0):
                    w0, w1, w2 = e0 * inv_area, e1 * inv_area, e2 * inv_area
                    z = np.float32(w0 * z0 + w1 * z1 + w2 * z2)
                    if z > depth[py, px]:
                        depth[py, px] = z
                        g0, g1, g2 = np.float32(w0), np.float32(w1), np.float32(w2)
                        for c in range(3):
                            val = g0 * colors[i0, c] + g1 * colors[i1, c] + g2 * colors[i2, c]
                            out[c, py, px] = np.uint8(min(255.0, max(0.0, val + 0.5)))


@njit(inline="always", cache=True, nogil=True)
def _patch_3x3(rows, base, y0a, w00, w01, w10, w11, block, out, oy, ox):  # pragma: no cover
    """:func:`_paf_kernel`'s inner patch for ``k = 3`` and 3 channels (the same arithmetic,
    loops of constant length)."""
    for a in range(4):
        for j in range(12):
            block[a, j] = rows[y0a + a, base + j]
    for a in range(3):
        for bb in range(3):
            for c in range(3):
                j = 3 * bb + c
                acc = (w00 * block[a, j] + w01 * block[a, j + 3]
                       + w10 * block[a + 1, j] + w11 * block[a + 1, j + 3])
                out[c, oy + a, ox + bb] = np.uint8(min(255.0, acc + 0.5))


@njit(cache=True, nogil=True)
def _paf_kernel(img, anchors, k, out):  # pragma: no cover - compiled
    """One crop ``img`` ``(H, W, C)`` (C-contiguous) → ``out`` ``(C, 64k, 64k)`` (any strides):
    the ``k × k`` bilinear patch around each anchor ``anchors[n, :2]``.

    Every tap of a patch has the same sub-pixel fractions, so a patch inside the crop reads one
    ``(k + 1) × (k + 1)`` block of pixels, converted to float once; taps are
    ``w00·p00 + w01·p01 + w10·p10 + w11·p11`` in float64, rounded half up. A patch that reaches
    past the crop's border takes 0 for the missing pixels."""
    h, w, ch = img.shape
    rows = img.reshape(h, w * ch)
    half = (k - 1) / 2.0
    kc = (k + 1) * ch
    block = np.empty((k + 1, kc), np.float64)
    for n in range(anchors.shape[0]):
        ax, ay = anchors[n, 0], anchors[n, 1]
        if not (np.isfinite(ax) and np.isfinite(ay)):
            continue
        gi = n // 64
        oy, ox = gi * k, (n - gi * 64) * k
        bx, by = ax - half, ay - half
        x0a, y0a = int(np.floor(bx)), int(np.floor(by))
        fx, fy = bx - x0a, by - y0a  # the same fractions for every tap of the patch
        w00, w01 = (1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx
        w10, w11 = fy * (1.0 - fx), fy * fx
        if x0a >= 0 and y0a >= 0 and x0a + k < w and y0a + k < h:
            base = x0a * ch
            if k == 3 and ch == 3:  # the shipped kernel: loops of constant length, unrolled
                _patch_3x3(rows, base, y0a, w00, w01, w10, w11, block, out, oy, ox)
                continue
            for a in range(k + 1):
                for j in range(kc):
                    block[a, j] = rows[y0a + a, base + j]
            for a in range(k):
                for bb in range(k):
                    for c in range(ch):
                        j = bb * ch + c
                        acc = (w00 * block[a, j] + w01 * block[a, j + ch]
                               + w10 * block[a + 1, j] + w11 * block[a + 1, j + ch])
                        out[c, oy + a, ox + bb] = np.uint8(min(255.0, acc + 0.5))
            continue
        for a in range(k):
            y0 = y0a + a
            for bb in range(k):
                x0 = x0a + bb
                for c in range(ch):
                    acc = 0.0
                    if 0 <= y0 < h:
                        if 0 <= x0 < w:
                            acc += w00 * img[y0, x0, c]
                        if 0 <= x0 + 1 < w:
                            acc += w01 * img[y0, x0 + 1, c]
                    if 0 <= y0 + 1 < h:
                        if 0 <= x0 < w:
                            acc += w10 * img[y0 + 1, x0, c]
                        if 0 <= x0 + 1 < w:
                            acc += w11 * img[y0 + 1, x0 + 1, c]
                    out[c, oy + a, ox + bb] = np.uint8(min(255.0, acc + 0.5))


def render_paf_crops(crops: np.ndarray, params: np.ndarray, kernel: int = 3,
                     model: AnchorModel | None = None, anchors: np.ndarray | None = None
                     ) -> np.ndarray:
    """PAF maps ``(B, 64k, 64k, C)`` uint8: a ``k × k`` bilinear patch of the crop around each
    projected anchor, tiled in anchor-grid order (see the module docstring); 0 outside the crop.

    Args:
        crops: ``(B, 120, 120, C)`` uint8 crops (any colour order; kept).
        params: ``(B, 62)`` de-normalised crop-frame estimates.
        kernel: patch side ``k`` (odd), the stride of the pose-adaptive convolution.
    """
    crops = _check_crops(crops, kernel)
    m = model or load_anchor_model()
    v = anchors_crop(params, m) if anchors is None else anchors
    size = GRID * kernel
    out = np.zeros((len(crops), size, size, crops.shape[3]), np.uint8)
    _paf_into(crops, v, kernel, out.transpose(0, 3, 1, 2))
    return out


def _check_crops(crops: np.ndarray, kernel: int) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[1:3] != (CROP, CROP) or crops.dtype != np.uint8:
        raise InputError(f"crops must be (B, {CROP}, {CROP}, C) uint8, got {crops.shape} {crops.dtype}")
    if kernel < 1 or kernel % 2 == 0:
        raise InputError(f"kernel must be a positive odd number, got {kernel}")
    return crops


def _paf_into(crops: np.ndarray, v: np.ndarray, kernel: int, out: np.ndarray) -> None:
    """PAF maps of ``crops`` ``(B, 120, 120, C)`` at posed anchors ``v`` ``(B, 4096, 3)`` into
    zeroed ``out`` ``(B, C, 64k, 64k)`` (channels first; any strides)."""
    if len(v) != len(crops):
        raise InputError(f"{len(crops)} crops but {len(v)} parameter vectors")
    for b in range(len(v)):
        _paf_kernel(np.ascontiguousarray(crops[b]), v[b], kernel, out[b])


def stage_inputs(crops: np.ndarray, params: np.ndarray, kernel: int = 3,
                 model: AnchorModel | None = None, pool=None) -> tuple[np.ndarray, np.ndarray]:
    """A cascade stage graph's inputs (:mod:`tddfa.v1.stage_graph`), both channels-first so the
    runtime has no transpose or channel concat left: ``image`` ``(B, 6, 120, 120)`` uint8, the
    crop's channels then the PNCC's, and ``paf`` ``(B, C, 64k, 64k)`` uint8 — the values of
    :func:`render_features`, laid out as planes.

    ``pool``: as in :func:`render_features` (the PNCC is rendered on it, beside the PAF)."""
    crops = _check_crops(crops, kernel)
    m = model or load_anchor_model()
    a = anchors_crop(params, m)
    b = len(crops)
    image = np.empty((b, 3 + 3, CROP, CROP), np.uint8)
    image[:, :3] = crops.transpose(0, 3, 1, 2)
    image[:, 3:] = 0
    paf = np.zeros((b, crops.shape[3], GRID * kernel, GRID * kernel), np.uint8)
    if pool is None:
        _pncc_into(a, m, image[:, 3:])
        _paf_into(crops, a, kernel, paf)
        return image, paf
    pncc = pool.submit(_pncc_into, a, m, image[:, 3:])
    _paf_into(crops, a, kernel, paf)
    pncc.result()
    return image, paf


def render_features(crops: np.ndarray, params: np.ndarray, kernel: int = 3,
                    model: AnchorModel | None = None, pool=None) -> tuple[np.ndarray, np.ndarray]:
    """PNCC and PAF of each estimate from one set of posed anchors: ``(B, 120, 120, 3)`` and
    ``(B, 64k, 64k, 3)`` uint8 (see :func:`render_pncc_crops`, :func:`render_paf_crops`).

    ``pool``: an optional :class:`concurrent.futures.Executor`; the two renders (compiled code
    that releases the GIL) then run side by side. The result does not depend on it."""
    m = model or load_anchor_model()
    a = anchors_crop(params, m)
    if pool is None:
        return render_pncc_crops(params, m, a), render_paf_crops(crops, params, kernel, m, a)
    pncc = pool.submit(render_pncc_crops, params, m, a)
    paf = render_paf_crops(crops, params, kernel, m, a)
    return pncc.result(), paf
