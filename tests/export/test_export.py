"""Mesh export (OBJ, PLY, GLB) loaded back with trimesh."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_sample
from tddfa.errors import InputError
from tddfa.export.formats import WRITERS, export_mesh, sample_vertex_colors, save_exports, to_frame

trimesh = pytest.importorskip("trimesh")


@pytest.fixture(scope="module")
def guo(shared):
    return load_sample(shared, "JianzhuGuo.jpg")


def load(path):
    """The one mesh in a file (GLB: the scene's geometry, which keeps its vertex colours)."""
    loaded = trimesh.load(str(path), process=False)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return loaded


@pytest.mark.parametrize("fmt", ["obj", "ply", "glb"])
@pytest.mark.parametrize("frame", ["image", "centered_yup"])
def test_round_trip(tmp_path, guo, fmt, frame):
    img, faces, tri = guo
    v = faces[0].vertices
    colors = sample_vertex_colors(img, v)
    path = export_mesh(tmp_path / f"face.{fmt}", v, tri, colors=colors, frame=frame)
    m = load(path)
    assert m.vertices.shape == (38365, 3) and m.faces.shape == (76073, 3)
    want = to_frame(v, frame)
    np.testing.assert_allclose(m.vertices, want, atol=1e-4 if fmt == "obj" else 1e-6)
    # same triangles (each may have two corners swapped to face +z), normals towards the camera
    np.testing.assert_array_equal(np.sort(m.faces, axis=1), np.sort(tri, axis=1))
    assert m.face_normals[:, 2].mean() > 0.3
    if frame == "centered_yup":
        np.testing.assert_allclose((want.min(0) + want.max(0)) / 2, 0, atol=1e-3)
        assert np.corrcoef(want[:, 1], -v[:, 1])[0, 1] > 0.9999        # y flipped: up
    if fmt == "glb":       # glTF vertex colours are linear RGB floats
        lin = np.asarray(m.visual.vertex_attributes["color"])[:, :3]
        srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055) * 255
        assert np.abs(srgb - colors).max() <= 0.5
    else:
        vc = np.asarray(m.visual.vertex_colors)[:, :3].astype(int)
        assert np.abs(vc - colors).max() <= 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp files left


def test_textured_obj_and_glb(tmp_path, guo):
    from tddfa.render.uv import uv_coordinates, uv_texture

    img, faces, tri = guo
    v = faces[0].vertices
    uv = uv_coordinates()
    tex = uv_texture(img, v, 256, triangles=tri)
    export_mesh(tmp_path / "t.obj", v, tri, uv=uv, texture=tex)
    assert {p.name for p in tmp_path.iterdir()} == {"t.obj", "t.mtl", "t_texture.png"}
    assert "map_Kd t_texture.png" in (tmp_path / "t.mtl").read_text()
    export_mesh(tmp_path / "t.glb", v, tri, uv=uv, texture=tex)
    for name in ("t.obj", "t.glb"):
        m = load(tmp_path / name)
        assert m.vertices.shape == (38365, 3) and m.faces.shape == (76073, 3)
        assert isinstance(m.visual, trimesh.visual.TextureVisuals)
        np.testing.assert_allclose(m.visual.uv, uv, atol=1e-5)
        assert np.asarray(m.visual.material.baseColorTexture if hasattr(
            m.visual.material, "baseColorTexture") else m.visual.material.image).shape[:2] == (256, 256)
    with pytest.raises(InputError, match="needs uv"):
        export_mesh(tmp_path / "x.obj", v, tri, texture=tex)


def test_ply_is_binary_little_endian(tmp_path, guo):
    _, faces, tri = guo
    path = export_mesh(tmp_path / "f.ply", faces[0].vertices, tri)
    head = path.read_bytes()[:400]
    assert b"format binary_little_endian 1.0" in head and b"element vertex 38365" in head
    assert b"element face 76073" in head
    assert path.stat().st_size == head.index(b"end_header\n") + 11 + 38365 * 12 + 76073 * 13


def test_sample_vertex_colors_bilinear_rgb():
    img = np.zeros((4, 5, 3), np.uint8)
    img[1, 2] = (10, 20, 30)          # BGR
    img[1, 3] = (30, 40, 50)
    pts = np.array([[2, 1], [2.5, 1], [-10, -10], [np.nan, 1]], np.float32)
    rgb = sample_vertex_colors(img, pts)
    np.testing.assert_array_equal(rgb[0], (30, 20, 10))
    np.testing.assert_array_equal(rgb[1], (40, 30, 20))
    np.testing.assert_array_equal(rgb[2], img[0, 0, ::-1])   # outside: nearest border pixel
    np.testing.assert_array_equal(rgb[3], 0)


def test_save_exports_names(tmp_path, shared):
    img, faces, tri = load_sample(shared, "trump_hillary.jpg")
    paths = save_exports(img, faces, tri, ["ply", "glb", "obj"], tmp_path, "th",
                         frame="centered_yup", texture_size=256)
    assert [p.name for p in paths] == ["th_face0.ply", "th_face0.glb", "th_face0.obj",
                                       "th_face1.ply", "th_face1.glb", "th_face1.obj"]
    assert (tmp_path / "th_face1_texture.png").is_file()
    with pytest.raises(InputError, match="did you mean 'ply'"):
        save_exports(img, faces, tri, ["pyl"], tmp_path / "y", "th")
    assert not (tmp_path / "y").exists()
    assert save_exports(img, [], tri, ["obj"], tmp_path / "z", "th") == []


@pytest.mark.parametrize(
    "vertices, triangles, kwargs, match",
    [
        (np.full((3, 3), np.nan), [[0, 1, 2]], {}, "finite"),
        (np.zeros((3, 2)), [[0, 1, 2]], {}, r"\(N, 3\)"),
        (np.zeros((3, 3)), [[0, 1, 3]], {}, r"\[0, 2\]"),
        (np.zeros((3, 3)), [[0, 1, 2]], {"colors": np.zeros((2, 3))}, "colors must be"),
        (np.zeros((3, 3)), [[0, 1, 2]], {"frame": "yup"}, "frame must be"),
    ],
)
def test_bad_input(tmp_path, vertices, triangles, kwargs, match):
    with pytest.raises(InputError, match=match):
        export_mesh(tmp_path / "bad.ply", np.asarray(vertices), np.asarray(triangles), **kwargs)
    assert not list(tmp_path.iterdir())


def test_unknown_format(tmp_path):
    with pytest.raises(InputError, match="did you mean 'obj'"):
        export_mesh(tmp_path / "a.ob", np.zeros((3, 3)), np.array([[0, 1, 2]]))
    assert set(WRITERS) == {"obj", "ply", "glb"}
