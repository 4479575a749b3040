"""Renders on real meshes (official mb05 parameters of the sample photos, approximate dense model)."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import cv2
import numpy as np
import pytest

from conftest import load_sample
from tddfa.errors import InputError
from tddfa.render.common import vertex_normals
from tddfa.render.depth import render_depth
from tddfa.render.landmarks import draw_dense_points, draw_landmarks
from tddfa.render.mesh import render_mesh
from tddfa.render.normal import render_normal
from tddfa.render.pncc import render_pncc
from tddfa.render.pose import draw_pose, pose_box_points
from tddfa.render.rasterize import rasterize
from tddfa.render.registry import RENDERERS, render, save_renders
from tddfa.render.uv import uv_coordinates, uv_texture

KINDS = ["mesh", "depth", "pncc", "normal", "uv", "pose", "dense", "landmarks", "paf"]


@pytest.fixture(scope="module")
def guo(shared):
    return load_sample(shared, "JianzhuGuo.jpg")


@pytest.fixture(scope="module")
def pair(shared):
    return load_sample(shared, "trump_hillary.jpg")


def test_pncc_at_vertices_equals_ncc(guo, shared):
    img, faces, tri = guo
    ncc = np.load(shared / "assets" / "3ddfa_v2" / "ncc_code.npy")      # (3, 38365)
    v0 = faces[0].vertices
    rng = np.random.default_rng(0)
    checked = 0
    for k in rng.choice(len(v0), 400, replace=False):
        v = v0.copy()
        v[:, :2] += np.round(v0[k, :2]) - v0[k, :2]       # vertex k exactly on a pixel centre
        x, y = int(round(v[k, 0])), int(round(v[k, 1]))
        depth, _, _ = rasterize(v, tri, img.shape[0], img.shape[1])
        if abs(depth[y, x] - v[k, 2]) > 1e-3:               # hidden by a nearer surface
            continue
        out = render_pncc(img, [v], tri, background=True)
        np.testing.assert_allclose(out[y, x], np.round(ncc[:, k] * 255), atol=1)
        checked += 1
        if checked == 25:
            break
    assert checked == 25


def test_depth_brighter_towards_camera(guo):
    img, faces, tri = guo
    v = faces[0].vertices
    out = render_depth(img, [v], tri, background=True)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    depth, _, _ = rasterize(v, tri, img.shape[0], img.shape[1])
    covered = np.isfinite(depth)
    grey = out[..., 0].astype(np.float64)
    zn = (depth[covered] - v[:, 2].min()) / np.ptp(v[:, 2]) * 255
    np.testing.assert_allclose(grey[covered], zn, atol=1.0)   # grey level = normalised z-buffer
    assert np.corrcoef(grey[covered], depth[covered])[0, 1] > 0.999
    nose = faces[0].landmarks[30]                              # nose tip: nearest to the camera
    jaw = faces[0].landmarks[[2, 14]]
    assert grey[int(round(nose[1])), int(round(nose[0]))] > 200
    assert all(grey[int(round(p[1])), int(round(p[0]))] < 150 for p in jaw)
    assert (out[~covered] == 0).all()


def test_mesh_overlay_blends_only_the_face(guo):
    img, faces, tri = guo
    out = render_mesh(img, [faces[0].vertices], tri, alpha=0.6)
    depth, _, _ = rasterize(faces[0].vertices, tri, img.shape[0], img.shape[1])
    covered = np.isfinite(depth)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~covered], img[~covered])
    assert np.abs(out[covered].astype(int) - img[covered]).mean() > 20
    opaque = render_mesh(img, [faces[0].vertices], tri, alpha=1.0)
    # grey shading: B = G = R, lit between ambient and full
    assert (np.ptp(opaque[covered].astype(int), axis=1) <= 1).all()
    assert 70 <= opaque[covered, 0].min() and opaque[covered, 0].max() <= 220
    black = render_mesh(img, [faces[0].vertices], tri, background=True)
    assert (black[~covered] == 0).all()
    np.testing.assert_array_equal(black[covered], opaque[covered])
    # blending arithmetic at alpha 0.6
    blend = 0.4 * img[covered].astype(np.float64) + 0.6 * opaque[covered]
    assert np.abs(out[covered] - blend).max() <= 1.5
    with pytest.raises(InputError, match="alpha"):
        render_mesh(img, [faces[0].vertices], tri, alpha=1.5)


def test_vertex_normals_face_the_camera(guo):
    _, faces, tri = guo
    n = vertex_normals(faces[0].vertices, tri)
    assert n.shape == (38365, 3) and n.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-4)
    nose = faces[0].vertices[:, 2].argmax()
    assert n[nose, 2] > 0.5
    assert np.median(n[:, 2]) > 0.3
    # winding does not matter
    np.testing.assert_allclose(vertex_normals(faces[0].vertices, tri[:, ::-1]), n, atol=1e-5)


def test_normal_map_colours(guo):
    img, faces, tri = guo
    out = render_normal(img, [faces[0].vertices], tri, background=True)
    depth, _, _ = rasterize(faces[0].vertices, tri, img.shape[0], img.shape[1])
    px = out[np.isfinite(depth)].astype(int)
    assert px[:, 0].mean() > 200 > px[:, 2].mean()              # blue (z to the camera) dominates
    lm = faces[0].landmarks
    left, right = lm[1], lm[15]                                  # cheeks: normals point outwards
    r_left = out[int(round(left[1])) , int(round(left[0])) + 3, 2]
    r_right = out[int(round(right[1])), int(round(right[0])) - 3, 2]
    assert r_left < 128 < r_right                                # red channel = x


def test_many_faces_resolved_by_depth(pair):
    img, faces, tri = pair
    a = faces[0].vertices
    b = a.copy()
    b[:, 0] += 40
    near, far = b.copy(), b.copy()
    near[:, 2] += 1000
    far[:, 2] -= 1000
    only_b = render_pncc(img, [near], tri, background=True)
    only_a = render_pncc(img, [a], tri, background=True)
    both_near = render_pncc(img, [a, near], tri, background=True)
    both_far = render_pncc(img, [a, far], tri, background=True)
    db, _, _ = rasterize(near, tri, img.shape[0], img.shape[1])
    da, _, _ = rasterize(a, tri, img.shape[0], img.shape[1])
    np.testing.assert_array_equal(both_near[np.isfinite(db)], only_b[np.isfinite(db)])
    np.testing.assert_array_equal(both_far[np.isfinite(da)], only_a[np.isfinite(da)])
    assert (np.isfinite(da) & np.isfinite(db)).sum() > 10000        # they really overlap


def test_uv_texture_samples_the_photo(guo):
    img, faces, tri = guo
    v = faces[0].vertices
    h, w = img.shape[:2]
    ramp = np.zeros_like(img)
    ramp[..., 0] = (np.arange(w) * 255 // (w - 1))[None, :]       # B encodes x
    ramp[..., 1] = (np.arange(h) * 255 // (h - 1))[:, None]       # G encodes y
    uv = uv_coordinates()
    for size in (256, 512):
        tex = uv_texture(ramp, v, size, triangles=tri)
        assert tex.shape == (size, size, 3) and tex.dtype == np.uint8
        col = np.rint(uv[:, 0] * (size - 1)).astype(int)
        row = np.rint((1 - uv[:, 1]) * (size - 1)).astype(int)
        got = tex[row, col, :2].astype(float)
        want = np.stack([v[:, 0] * 255 / (w - 1), v[:, 1] * 255 / (h - 1)], axis=1)
        err = np.abs(got - want)
        assert np.median(err) < 1.0 and np.percentile(err, 95) < 4.0
    real = uv_texture(img, v, 256, triangles=tri)
    assert 0.4 < (real.max(axis=2) > 0).mean() < 0.95
    with pytest.raises(InputError, match="38365-vertex"):
        uv_texture(img, v[:100], 256, triangles=tri[:10])
    with pytest.raises(InputError, match="size"):
        uv_texture(img, v, 4)


def test_pose_box_and_overlays(pair):
    img, faces, tri = pair
    out = draw_pose(img, faces)
    assert out.shape == img.shape and (out != img).any()
    box = pose_box_points(faces[0].pose.rotation, faces[0].landmarks.mean(0)[:2], 100)
    assert box.shape == (8, 2)
    # front face (towards the nose) is shifted the way the face looks: the nose tip lies on that
    # side of the landmark centre
    shift = box[4:].mean(0) - box[:4].mean(0)
    nose = faces[0].landmarks[30, :2] - faces[0].landmarks.mean(0)[:2]
    assert np.dot(shift, nose) > 0
    # identity rotation: an axis-aligned square of side 200
    sq = pose_box_points(np.eye(3), np.array([50.0, 60.0]), 100)
    np.testing.assert_allclose(sq[:4], sq[4:])
    np.testing.assert_allclose(sq[:4], [[-50, 160], [150, 160], [150, -40], [-50, -40]])
    lm = draw_landmarks(img, faces)
    p = faces[1].landmarks[30]
    assert (lm[int(p[1]) - 1:int(p[1]) + 2, int(p[0]) - 1:int(p[0]) + 2] != img[
        int(p[1]) - 1:int(p[1]) + 2, int(p[0]) - 1:int(p[0]) + 2]).any()
    dense = draw_dense_points(img, faces, tri, step=3)
    changed = (dense != img).any(axis=2)
    dots = np.zeros_like(changed)
    for f in faces:
        q = np.rint(f.vertices[::3, :2]).astype(int)
        dots[q[:, 1], q[:, 0]] = True
    assert not (changed & ~dots).any()                  # nothing drawn off the vertices
    assert changed[dots].mean() > 0.99                  # and every sampled vertex drawn
    with pytest.raises(InputError, match="pose"):
        draw_pose(img, [faces[0].vertices])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_handles_edge_cases(pair, kind):
    img, faces, tri = pair
    out = render(kind, img, faces, tri)
    assert out.dtype == np.uint8
    if kind == "uv":
        assert out.shape == (256, 512, 3)
    else:
        assert out.shape == img.shape and (out != img).any()
    # empty face list: the photo itself (uv: a black texture)
    empty = render(kind, img, [], tri)
    if kind == "uv":
        assert empty.shape == (256, 256, 3) and not empty.any()
    else:
        np.testing.assert_array_equal(empty, img)
    # faces partly (and one entirely) outside the image
    shifted = [replace(faces[0], vertices=faces[0].vertices - [300, 200, 0],
                       landmarks=faces[0].landmarks - [300, 200, 0]),
               replace(faces[1], vertices=faces[1].vertices + [5000, 0, 0],
                       landmarks=faces[1].landmarks + [5000, 0, 0])]
    assert render(kind, img, shifted, tri).shape == out.shape
    # degenerate triangles (collapsed vertices) and a vertex at NaN
    broken = faces[0].vertices.copy()
    broken[tri[:5000, 1]] = broken[tri[:5000, 0]]
    broken[tri[6000, 0]] = np.nan
    one = render(kind, img, [replace(faces[0], vertices=broken)], tri)
    assert one.shape == ((256, 256, 3) if kind == "uv" else img.shape)


def test_faces_without_vertices_are_reconstructed(guo):
    img, faces, tri = guo
    bare = replace(faces[0], vertices=None)
    np.testing.assert_array_equal(render("depth", img, [bare], tri),
                                  render("depth", img, faces, tri))


def test_unknown_kind_suggests():
    with pytest.raises(InputError, match="did you mean 'mesh'"):
        render("mehs", np.zeros((4, 4, 3), np.uint8), [], None)
    assert set(KINDS) == set(RENDERERS)


def test_save_renders(tmp_path, guo):
    img, faces, tri = guo
    paths = save_renders(img, faces, tri, ["mesh", "pncc", "uv"], tmp_path, "guo")
    assert [p.name for p in paths] == ["guo_mesh.png", "guo_pncc.png", "guo_uv.png"]
    assert cv2.imread(str(paths[0])).shape == img.shape
    assert cv2.imread(str(paths[2])).shape == (256, 256, 3)
    with pytest.raises(InputError, match="did you mean 'depth'"):
        save_renders(img, faces, tri, ["mesh", "dept"], tmp_path / "x", "guo")
    assert not (tmp_path / "x").exists()                   # nothing written on a bad kind list
    # options reach the kinds that take them and only those
    opt = save_renders(img, faces, tri, ["uv", "pose", "mesh"], tmp_path / "o", "g", size=512,
                       background=True, alpha=0.9)
    assert cv2.imread(str(opt[0])).shape == (512, 512, 3)
    assert not cv2.imread(str(opt[1]))[:10, :10].any()     # pose on black
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        p.name for p in paths)


def test_huge_image_small_face(guo):
    img, faces, tri = guo
    big = np.zeros((8000, 8000, 3), np.uint8)
    big[:img.shape[0], :img.shape[1]] = img
    out = render_mesh(big, [faces[0].vertices + [7700, 7700, 0]], tri)   # partly outside
    assert out.shape == big.shape and out[7750:, 7750:].any()


@pytest.mark.slow
def test_huge_image_huge_face_stays_in_memory(guo):
    img, faces, tri = guo
    v = faces[0].vertices.copy()
    c = v.mean(axis=0)
    v = (v - c) * 30 + [4000, 4000, 0]                       # a face ~6000 px across
    big = np.zeros((8000, 8000, 3), np.uint8)
    tracemalloc.start()
    try:
        for kind in ("mesh", "depth", "pncc", "normal"):
            out = render(kind, big, [v], tri)
            assert out[4000, 4000].any()
            del out
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # image copies (192 MB each) + one 2048-px tile of buffers, far below a full-size z-buffer
    assert peak < 900e6, peak


def test_bad_meshes_raise(guo):
    img, faces, tri = guo
    with pytest.raises(InputError, match="integer"):
        render("mesh", img, faces, tri.astype(np.float64))
    with pytest.raises(InputError, match=r"\[0, 38364\]"):
        render("depth", img, faces, tri + 1)
    with pytest.raises(InputError, match="same vertex count"):
        render_mesh(img, [faces[0].vertices, faces[0].vertices[:10]], tri)
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        render_pncc(img, [faces[0].vertices[:, :2]], tri)


def test_far_apart_faces_render_as_separately(pair):
    img, faces, tri = pair
    a, b = faces[0].vertices, faces[1].vertices
    for fn in (render_pncc, render_mesh, render_normal):
        together = fn(img, [a, b], tri)
        one_by_one = fn(fn(img, [a], tri), [b], tri)
        np.testing.assert_array_equal(together, one_by_one)
