"""The Numba rasteriser against a brute-force per-pixel reference, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from tddfa.errors import InputError
from tddfa.render.rasterize import (
    empty_buffers,
    interpolate,
    rasterize,
    rasterize_meshes,
    visible_vertices,
)


def brute_force(v: np.ndarray, tri: np.ndarray, h: int, w: int):
    """Every triangle tested at every pixel (no bounding boxes), nearest z kept, earlier
    triangle kept on ties; the same edge-function arithmetic as the engine."""
    depth = np.full((h, w), -np.inf, np.float32)
    index = np.full((h, w), -1, np.int32)
    bary = np.zeros((h, w, 3), np.float32)
    py, px = np.mgrid[0:h, 0:w].astype(np.float64)
    v = v.astype(np.float32).astype(np.float64)
    for t, (i0, i1, i2) in enumerate(tri):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = v[i0], v[i1], v[i2]
        if not np.isfinite([x0, y0, z0, x1, y1, z1, x2, y2, z2]).all():
            continue
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) <= 1e-12:
            continue
        s = 1.0 if area > 0 else -1.0
        e0 = ((y1 - y2) * s) * px + (((x2 - x1) * s) * py + (x1 * y2 - x2 * y1) * s)
        e1 = ((y2 - y0) * s) * px + (((x0 - x2) * s) * py + (x2 * y0 - x0 * y2) * s)
        e2 = ((y0 - y1) * s) * px + (((x1 - x0) * s) * py + (x0 * y1 - x1 * y0) * s)
        inside = (e0 >= 0) & (e1 >= 0) & (e2 >= 0)
        inv = 1.0 / abs(area)
        w0, w1, w2 = e0 * inv, e1 * inv, e2 * inv
        z = (w0 * z0 + w1 * z1 + w2 * z2).astype(np.float32)
        upd = inside & (z > depth)
        depth[upd] = z[upd]
        index[upd] = t
        bary[upd] = np.stack([w0, w1, w2], axis=-1)[upd]
    return depth, index, bary


def random_mesh(rng: np.random.Generator, h: int, w: int, n: int = 14, m: int = 24):
    v = np.empty((n, 3), np.float32)
    v[:, 0] = rng.uniform(-8, w + 8, n)
    v[:, 1] = rng.uniform(-8, h + 8, n)
    v[:, 2] = rng.uniform(0, 50, n)
    tri = rng.integers(0, n, size=(m, 3)).astype(np.int32)
    tri[0] = [0, 0, 1]                    # degenerate: repeated vertex
    v[2] = (v[0] + v[1]) / 2              # and a collinear triple
    tri[1] = [0, 1, 2]
    v[3, :2] = np.round(v[3, :2])         # a vertex exactly on a pixel centre
    return v, tri


@pytest.mark.parametrize("seed", range(25))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
    v, tri = random_mesh(rng, h, w)
    depth, index, bary = rasterize(v, tri, h, w)
    ref_depth, ref_index, ref_bary = brute_force(v, tri, h, w)
    assert (index >= 0).any() or (ref_index < 0).all()
    np.testing.assert_array_equal(index, ref_index)          # coverage and nearest wins
    np.testing.assert_array_equal(depth, ref_depth)
    covered = index >= 0
    np.testing.assert_allclose(bary[covered], ref_bary[covered], atol=1e-6)
    # barycentric interpolation of the attributes
    attr = rng.normal(size=(len(v), 4)).astype(np.float32)
    got = interpolate(attr, tri, index, bary)
    want = np.einsum("hwk,hwkc->hwc", ref_bary, attr[tri[np.maximum(ref_index, 0)]])
    np.testing.assert_allclose(got[covered], want[covered], atol=1e-4)
    assert not got[~covered].any()


def test_coverage_includes_edges_and_counts_pixels():
    v = np.array([[0, 0, 1], [4, 0, 1], [0, 4, 1]], np.float32)
    depth, index, bary = rasterize(v, np.array([[0, 1, 2]]), 6, 6)
    yy, xx = np.mgrid[0:6, 0:6]
    np.testing.assert_array_equal(index >= 0, (xx + yy <= 4))   # 15 pixels, edges included
    assert (index >= 0).sum() == 15
    np.testing.assert_allclose(bary[0, 0], [1, 0, 0])
    np.testing.assert_allclose(bary[0, 4], [0, 1, 0])
    np.testing.assert_allclose(bary[2, 1], [0.25, 0.25, 0.5])
    assert np.isneginf(depth[5, 5]) and index[5, 5] == -1


def test_nearest_depth_wins_in_either_order():
    quad = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    sq = np.array([[1, 1], [10, 1], [10, 10], [1, 10]], np.float32)
    far = np.c_[sq, np.full(4, 5.0, np.float32)]
    near = np.c_[sq + 4, np.full(4, 9.0, np.float32)]
    for first, second, near_offset in ((far, near, 2), (near, far, 0)):
        v = np.concatenate([first, second])
        tri = np.concatenate([quad, quad + 4])
        depth, index, _ = rasterize(v, tri, 16, 16)
        assert depth[7, 7] == 9.0 and index[7, 7] in (near_offset, near_offset + 1)
        assert depth[2, 2] == 5.0                     # only the far square there
        assert depth[12, 12] == 9.0                   # only the near square there


def test_depth_interpolated_linearly():
    v = np.array([[0, 0, 0], [20, 0, 20], [0, 20, 0]], np.float32)   # z = x
    depth, index, bary = rasterize(v, np.array([[0, 1, 2]]), 21, 21)
    yy, xx = np.mgrid[0:21, 0:21]
    covered = index >= 0
    np.testing.assert_allclose(depth[covered], xx[covered], atol=1e-4)
    xy = interpolate(v[:, :2], np.array([[0, 1, 2]]), index, bary)
    np.testing.assert_allclose(xy[covered], np.stack([xx, yy], -1)[covered], atol=1e-4)


def test_shared_zbuffer_between_meshes():
    rng = np.random.default_rng(7)
    v, tri = random_mesh(rng, 30, 30)
    v2 = v.copy()
    v2[:, 0] += 3
    v2[:, 2] += 10                                     # second mesh nearer
    depth, index, bary = rasterize_meshes([v, v2], tri, 30, 30)
    m = len(tri)
    ref = brute_force(np.concatenate([v, v2]), np.concatenate([tri, tri + len(v)]), 30, 30)
    np.testing.assert_array_equal(index, ref[1])
    face = np.where(index >= 0, index // m, -1)
    assert {0, 1} <= set(np.unique(face).tolist())
    colours = np.stack([np.zeros((len(v), 1)), np.ones((len(v), 1))]).astype(np.float32)
    got = interpolate(colours, tri, index, bary)[..., 0]
    np.testing.assert_allclose(got[index >= 0], face[index >= 0], atol=1e-5)
    # the same through explicit buffers and offsets
    d2, i2, b2 = empty_buffers(30, 30)
    rasterize(v, tri, 30, 30, depth=d2, tri_index=i2, bary=b2)
    rasterize(v2, tri, 30, 30, depth=d2, tri_index=i2, bary=b2, tri_offset=m)
    np.testing.assert_array_equal(i2, index)


def test_watertight_grid_has_no_cracks():
    rng = np.random.default_rng(3)
    n = 9
    gy, gx = np.mgrid[0:n, 0:n].astype(np.float32)
    gx = gx * 4.3 + 0.37
    gy = gy * 3.9 + 0.21
    gx[1:-1, 1:-1] += rng.uniform(-1, 1, (n - 2, n - 2))   # jitter interior points
    gy[1:-1, 1:-1] += rng.uniform(-1, 1, (n - 2, n - 2))
    v = np.c_[gx.ravel(), gy.ravel(), np.zeros(n * n)].astype(np.float32)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    tri = np.concatenate([np.c_[a, b, c], np.c_[a, c, d]]).astype(np.int32)
    _, index, _ = rasterize(v, tri, 40, 40)
    yy, xx = np.mgrid[0:40, 0:40]
    inside = (xx > 0.37) & (xx < 8 * 4.3 + 0.37) & (yy > 0.21) & (yy < 8 * 3.9 + 0.21)
    assert (index[inside] >= 0).all()


def test_degenerate_offimage_and_nonfinite_triangles_are_skipped():
    v = np.array([[1, 1, 0], [1, 1, 0], [5, 5, 0],            # zero area
                  [-50, -50, 0], [-40, -50, 0], [-50, -40, 0],  # off-image
                  [np.nan, 2, 0], [8, 2, 0], [2, 8, 0],         # NaN vertex
                  [np.inf, 2, 0], [8, 2, 0], [2, 8, 0],         # infinite vertex
                  [-1e30, -1e30, 0], [1e30, 0, 0], [0, 1e30, 1]],  # huge coordinates
                 np.float32)
    tri = np.arange(15, dtype=np.int32).reshape(5, 3)
    depth, index, _ = rasterize(v, tri, 10, 10)
    assert (index[np.isfinite(depth)] == 4).all()     # only the huge triangle, clipped
    assert (index[:3] < 4).sum() == 0


def test_empty_inputs():
    depth, index, bary = rasterize(np.zeros((0, 3)), np.zeros((0, 3), np.int32), 4, 5)
    assert depth.shape == (4, 5) and (index == -1).all() and bary.shape == (4, 5, 3)
    depth, index, bary = rasterize(np.zeros((3, 3)), np.array([[0, 1, 2]]), 0, 0)
    assert depth.shape == (0, 0)
    assert interpolate(np.zeros((3, 2)), np.array([[0, 1, 2]]), index, bary).shape == (0, 0, 2)


@pytest.mark.parametrize(
    "vertices, triangles, match",
    [
        (np.zeros((3, 2)), np.array([[0, 1, 2]]), "vertices must be"),
        (np.zeros((3, 3)), np.array([0, 1, 2]), "triangles must be"),
        (np.zeros((3, 3)), np.array([[0, 1, 3]]), r"indices must lie in \[0, 2\]"),
        (np.zeros((3, 3)), np.array([[0.0, 1.0, 2.0]]), "integer"),
    ],
)
def test_bad_input_raises(vertices, triangles, match):
    with pytest.raises(InputError, match=match):
        rasterize(vertices, triangles, 4, 4)


def test_bad_buffers_raise():
    d, i, b = empty_buffers(4, 4)
    with pytest.raises(InputError, match="together"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 2]]), 4, 4, depth=d)
    with pytest.raises(InputError, match=r"depth buffer must be"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 2]]), 5, 4, depth=d, tri_index=i, bary=b)
    with pytest.raises(InputError, match="stacked"):
        interpolate(np.zeros((3, 1)), np.array([[0, 1, 2]]), np.full((2, 2), 5, np.int32),
                    np.zeros((2, 2, 3), np.float32))


def test_visible_vertices():
    quad = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    sq = np.array([[0, 0], [9, 0], [9, 9], [0, 9]], np.float32)
    v = np.concatenate([np.c_[sq, np.zeros(4)], np.c_[sq[:1] + 4, [[5.0]]],
                        np.c_[sq[:1] + 4, [[-5.0]]]]).astype(np.float32)
    depth, _, _ = rasterize(v, quad, 10, 10)
    vis = visible_vertices(v, depth, tol=0.5)
    np.testing.assert_array_equal(vis, [True, True, True, True, True, False])
