"""3-D mesh export: Wavefront OBJ (+ MTL and PNG texture), binary PLY and GLB (binary glTF 2.0).

Coordinate frames (``frame=``):

* ``"image"`` (default) — the vertices as produced: image pixels, x to the right, **y down**,
  z towards the camera (each face's smallest z is 0). Viewers that assume y up show the face
  upside down; use it to overlay the mesh on the photo or for further processing.
* ``"centered_yup"`` — for 3-D viewers and Blender: the same pixel units, origin at the centre of
  the mesh's bounding box, x right, **y up**, z towards the camera (right-handed; glTF's frame).

In both frames the triangles are wound so that their right-hand normals point towards +z (out of
the face, towards the camera). Colours are sRGB 8-bit RGB; per-vertex colours come from the photo
(:func:`sample_vertex_colors`, bilinear). UV coordinates are ``(u, v)`` in [0, 1] with v up (OBJ
``vt`` convention); a texture image's row 0 is v = 1.

Each format has one writer in :data:`WRITERS`; every file is written atomically (temporary file
in the same folder, then renamed).
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tddfa.errors import InputError, unknown_name
from tddfa.io.atomic import atomic_write_bytes, atomic_write_text
from tddfa.render.rasterize import check_mesh

__all__ = [
    "WRITERS",
    "FRAMES",
    "MeshData",
    "export_mesh",
    "save_exports",
    "sample_vertex_colors",
    "to_frame",
]

log = logging.getLogger(__name__)

FRAMES = ("image", "centered_yup")


@dataclass(frozen=True)
class MeshData:
    """A mesh ready to write, already in its output frame.

    Attributes:
        vertices: ``(N, 3)`` float32.
        triangles: ``(M, 3)`` int32, wound towards +z.
        colors: ``(N, 3)`` uint8 RGB or ``None``.
        uv: ``(N, 2)`` float32 in [0, 1], v up, or ``None``.
        texture: ``(H, W, 3)`` uint8 BGR image or ``None`` (only with ``uv``).
        frame: ``"image"`` or ``"centered_yup"``.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray | None
    uv: np.ndarray | None
    texture: np.ndarray | None
    frame: str

    def describe_frame(self) -> str:
        if self.frame == "image":
            return "image pixels: x right, y down, z towards the camera"
        return "pixels centred on the face: x right, y up, z towards the camera"


# ---------------------------------------------------------------------------------------------
# helpers


def sample_vertex_colors(image: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Colour of the photo under each vertex, bilinear: ``(N, 3)`` uint8 **RGB**.

    Args:
        image: ``(H, W, 3)`` uint8 BGR.
        vertices: ``(N, 2+)`` float image pixels (x, y); points outside the image take the
            nearest border pixel, non-finite ones are black.
    """
    from tddfa.io.images import load_image

    img = load_image(image)
    v = np.asarray(vertices, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] < 2:
        raise InputError(f"vertices must be (N, 2) or (N, 3) image pixels, got shape {v.shape}")
    if not len(v):
        return np.zeros((0, 3), dtype=np.uint8)
    n = len(v)
    cols = 1024                     # OpenCV maps must stay below 32767 pixels a side
    rows = -(-n // cols)
    maps = np.zeros((2, rows * cols), dtype=np.float32)
    maps[:, :n] = np.clip(np.nan_to_num(v[:, :2], nan=-1e6, posinf=1e6, neginf=-1e6),
                          -1e6, 1e6).T
    maps = maps.reshape(2, rows, cols)
    bgr = cv2.remap(img, maps[0], maps[1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)[:n]
    rgb = bgr[:, ::-1].copy()
    rgb[~np.isfinite(v[:, :2]).all(axis=1)] = 0
    return rgb


def to_frame(vertices: np.ndarray, frame: str = "image") -> np.ndarray:
    """Vertices ``(N, 3)`` in image pixels → ``frame`` (see the module doc), float32."""
    if frame not in FRAMES:
        raise InputError(f"frame must be one of {FRAMES}, got {frame!r}")
    v = np.array(vertices, dtype=np.float32, copy=True)
    if frame == "centered_yup" and len(v):
        center = (v.min(axis=0) + v.max(axis=0)) / 2
        v -= center
        v[:, 1] *= -1.0
    return v


def _wind_towards_z(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Swap two corners of every triangle if the mesh's right-hand normals point mostly to -z."""
    if not len(triangles):
        return triangles
    p = vertices[:, :2].astype(np.float64)
    a, b, c = p[triangles[:, 0]], p[triangles[:, 1]], p[triangles[:, 2]]
    signed = ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1])
              - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])).sum()
    return triangles[:, [0, 2, 1]].copy() if signed < 0 else triangles


def _prepare(vertices, triangles, colors, uv, texture, frame) -> MeshData:
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3 or not len(v):
        raise InputError(f"vertices must be (N, 3) with N > 0, got shape {v.shape}")
    bad = int((~np.isfinite(v).all(axis=1)).sum())
    if bad:
        raise InputError(f"vertices must be finite; {bad} of {len(v)} hold NaN or inf")
    _, t = check_mesh(v, triangles)
    vf = to_frame(v, frame)
    t = _wind_towards_z(vf, t)
    col = None
    if colors is not None:
        col = np.asarray(colors)
        if col.shape not in ((len(v), 3), (len(v), 4)):
            raise InputError(f"colors must be ({len(v)}, 3) RGB, got shape {col.shape}")
        if np.issubdtype(col.dtype, np.floating):
            col = np.clip(np.rint(col * (255.0 if col.max() <= 1.0 else 1.0)), 0, 255)
        col = np.ascontiguousarray(col[:, :3], dtype=np.uint8)
    tex_uv = None
    if uv is not None:
        tex_uv = np.ascontiguousarray(uv, dtype=np.float32)
        if tex_uv.shape != (len(v), 2):
            raise InputError(f"uv must be ({len(v)}, 2), got shape {tex_uv.shape}")
    tex = None
    if texture is not None:
        if tex_uv is None:
            raise InputError("a texture needs uv coordinates (uv=...)")
        tex = np.asarray(texture)
        if tex.ndim != 3 or tex.shape[2] != 3 or tex.dtype != np.uint8:
            raise InputError(f"texture must be (H, W, 3) uint8 BGR, got {tex.shape} {tex.dtype}")
    return MeshData(np.ascontiguousarray(vf), t, col, tex_uv, tex, frame)


def _encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise InputError("OpenCV failed to encode the texture as PNG")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------------
# writers


def _rows(out: io.StringIO, line: str, data: np.ndarray, chunk: int = 8192) -> None:
    """Write ``line % row`` for every row of ``data`` (printf formatting, in chunks)."""
    for start in range(0, len(data), chunk):
        block = data[start:start + chunk]
        out.write((line * len(block)) % tuple(block.ravel().tolist()))


def _write_obj(path: Path, mesh: MeshData) -> list[Path]:
    """OBJ text: ``v x y z [r g b]`` (colours in [0, 1]), ``vt u v``, 1-based ``f`` lines; with a
    texture also ``<name>.mtl`` and ``<name>_texture.png`` beside it."""
    written = []
    out = io.StringIO()
    out.write(f"# tddfa mesh: {len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles\n")
    out.write(f"# frame: {mesh.describe_frame()}\n")
    if mesh.texture is not None:
        mtl_name = path.with_suffix(".mtl").name
        tex_name = f"{path.stem}_texture.png"
        out.write(f"mtllib {mtl_name}\n")
        atomic_write_bytes(path.parent / tex_name, _encode_png(mesh.texture))
        mtl = (f"# tddfa material\nnewmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
               f"map_Kd {tex_name}\n")
        atomic_write_text(path.parent / mtl_name, mtl)
        written += [path.parent / tex_name, path.parent / mtl_name]
    if mesh.colors is not None:
        data = np.hstack([mesh.vertices.astype(np.float64), mesh.colors / 255.0])
        _rows(out, "v %.4f %.4f %.4f %.4f %.4f %.4f\n", data)
    else:
        _rows(out, "v %.4f %.4f %.4f\n", mesh.vertices)
    tri = mesh.triangles.astype(np.int64) + 1
    if mesh.uv is not None:
        _rows(out, "vt %.6f %.6f\n", mesh.uv)
        if mesh.texture is not None:
            out.write("usemtl face\n")
        _rows(out, "f %d/%d %d/%d %d/%d\n", np.repeat(tri, 2, axis=1))
    else:
        _rows(out, "f %d %d %d\n", tri)
    atomic_write_text(path, out.getvalue())
    return [path] + written


def _write_ply(path: Path, mesh: MeshData) -> list[Path]:
    """Binary little-endian PLY: float x y z, optional uchar red green blue, optional float
    s t (uv); faces as ``list uchar int vertex_indices``."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    props = ["property float x", "property float y", "property float z"]
    if mesh.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        props += ["property uchar red", "property uchar green", "property uchar blue"]
    if mesh.uv is not None:
        fields += [("s", "<f4"), ("t", "<f4")]
        props += ["property float s", "property float t"]
    vert = np.empty(len(mesh.vertices), dtype=fields)
    vert["x"], vert["y"], vert["z"] = mesh.vertices.T
    if mesh.colors is not None:
        vert["red"], vert["green"], vert["blue"] = mesh.colors.T
    if mesh.uv is not None:
        vert["s"], vert["t"] = mesh.uv.T
    face = np.empty(len(mesh.triangles), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face["n"] = 3
    face["idx"] = mesh.triangles
    header = "\n".join(
        ["ply", "format binary_little_endian 1.0", "comment tddfa mesh",
         f"comment frame: {mesh.describe_frame()}", f"element vertex {len(vert)}", *props,
         f"element face {len(face)}", "property list uchar int vertex_indices", "end_header"]
    ) + "\n"
    atomic_write_bytes(path, header.encode("ascii") + vert.tobytes() + face.tobytes())
    return [path]


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = c.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _write_glb(path: Path, mesh: MeshData) -> list[Path]:
    """Binary glTF 2.0: POSITION, COLOR_0 (linear float RGB, from the sRGB colours) or
    TEXCOORD_0 + an embedded PNG texture (the texture wins when both are given, since glTF
    multiplies the two), uint32 indices; one double-sided, non-metallic material."""
    blobs: list[bytes] = []
    views: list[dict] = []
    accessors: list[dict] = []
    offset = 0

    def add_view(data: bytes, target: int | None) -> int:
        nonlocal offset
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        pad = (-len(data)) % 4
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
        views.append(view)
        return len(views) - 1

    def add_accessor(arr: np.ndarray, ctype: int, kind: str, target: int, minmax: bool = False):
        acc = {"bufferView": add_view(arr.tobytes(), target), "componentType": ctype,
               "count": int(len(arr)), "type": kind}
        if minmax:
            acc["min"] = [float(x) for x in arr.min(axis=0)]
            acc["max"] = [float(x) for x in arr.max(axis=0)]
        accessors.append(acc)
        return len(accessors) - 1

    FLOAT, UINT = 5126, 5125
    ARRAY, ELEMENTS = 34962, 34963
    attributes = {"POSITION": add_accessor(np.ascontiguousarray(mesh.vertices, "<f4"), FLOAT,
                                           "VEC3", ARRAY, minmax=True)}
    material: dict[str, Any] = {"name": "face", "doubleSided": True,
                                "pbrMetallicRoughness": {"metallicFactor": 0.0,
                                                         "roughnessFactor": 1.0}}
    gltf: dict[str, Any] = {}
    if mesh.texture is not None and mesh.uv is not None:
        st = mesh.uv.astype("<f4").copy()
        st[:, 1] = 1.0 - st[:, 1]               # glTF texture coordinates: origin top-left
        attributes["TEXCOORD_0"] = add_accessor(st, FLOAT, "VEC2", ARRAY)
        image_view = add_view(_encode_png(mesh.texture), None)
        gltf["images"] = [{"bufferView": image_view, "mimeType": "image/png"}]
        gltf["samplers"] = [{"magFilter": 9729, "minFilter": 9729}]
        gltf["textures"] = [{"source": 0, "sampler": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}
    elif mesh.colors is not None:
        attributes["COLOR_0"] = add_accessor(_srgb_to_linear(mesh.colors), FLOAT, "VEC3", ARRAY)
    indices = add_accessor(np.ascontiguousarray(mesh.triangles.reshape(-1), "<u4"), UINT,
                           "SCALAR", ELEMENTS)
    gltf.update({
        "asset": {"version": "2.0", "generator": "tddfa"},
        "extras": {"frame": mesh.describe_frame()},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "face"}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": indices,
                                    "material": 0, "mode": 4}]}],
        "materials": [material],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    })
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * ((-len(js)) % 4)
    binary = b"".join(blobs)
    total = 12 + 8 + len(js) + 8 + len(binary)
    out = b"".join([
        struct.pack("<III", 0x46546C67, 2, total),
        struct.pack("<II", len(js), 0x4E4F534A), js,
        struct.pack("<II", len(binary), 0x004E4942), binary,
    ])
    atomic_write_bytes(path, out)
    return [path]


#: format (file extension) -> writer(path, MeshData) -> list of files written.
WRITERS: dict[str, Callable[[Path, MeshData], list[Path]]] = {
    "obj": _write_obj,
    "ply": _write_ply,
    "glb": _write_glb,
}


def _writer(fmt: str) -> Callable[[Path, MeshData], list[Path]]:
    try:
        return WRITERS[fmt]
    except KeyError:
        raise unknown_name("mesh format", fmt, WRITERS) from None


def export_mesh(
    path: str | os.PathLike,
    vertices: np.ndarray,
    triangles: np.ndarray,
    *,
    colors: np.ndarray | None = None,
    uv: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    frame: str = "image",
    format: str | None = None,
) -> Path:
    """Write one mesh to ``path``; the format comes from ``format`` or the file extension.

    Args:
        path: output file (``.obj``, ``.ply`` or ``.glb``); folders are created.
        vertices: ``(N, 3)`` float image pixels (x right, y down, z towards the camera).
        triangles: ``(M, 3)`` int, 0-based.
        colors: ``(N, 3)`` RGB, uint8 or float in [0, 1] (see :func:`sample_vertex_colors`).
        uv: ``(N, 2)`` texture coordinates in [0, 1], v up. texture: ``(H, W, 3)`` uint8 BGR.
        frame: ``"image"`` or ``"centered_yup"`` (module doc).

    Returns:
        The path written (OBJ textures add ``<stem>.mtl`` and ``<stem>_texture.png``).

    Raises:
        InputError: unknown format, bad shapes, non-finite vertices.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    writer = _writer(fmt)
    mesh = _prepare(vertices, triangles, colors, uv, texture, frame)
    files = writer(path, mesh)
    log.debug("wrote %s", ", ".join(map(str, files)))
    return path


def save_exports(
    image: Any,
    faces: Sequence[Any],
    triangles: np.ndarray | None,
    formats: Sequence[str],
    out_dir: str | os.PathLike,
    stem: str,
    frame: str = "image",
    texture_size: int = 512,
) -> list[Path]:
    """Write ``<out_dir>/<stem>_face<i>.<ext>`` for each face and format; returns the paths.

    OBJ files carry per-vertex colours, UV coordinates and a ``texture_size`` UV texture (PNG,
    with its MTL); PLY per-vertex colours; GLB the UV texture embedded. Every format is checked
    before anything is written; dense vertices are reconstructed when a Face has none.
    """
    from tddfa.io.images import load_image
    from tddfa.render.common import face_vertices
    from tddfa.render.uv import uv_coordinates, uv_texture

    for f in formats:
        _writer(f)
    if frame not in FRAMES:
        raise InputError(f"frame must be one of {FRAMES}, got {frame!r}")
    if triangles is None:
        from tddfa.face.morphable_model import load_morphable_model

        triangles = load_morphable_model().tri
    img = load_image(image)
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for i, face in enumerate(faces):
        v = face_vertices(face)
        colors = sample_vertex_colors(img, v)
        textured = any(f in ("obj", "glb") for f in formats)
        uv = uv_coordinates() if textured and len(v) == len(uv_coordinates()) else None
        tex = uv_texture(img, v, texture_size, triangles=triangles) if uv is not None else None
        for fmt in formats:
            path = out_dir / f"{stem}_face{i}.{fmt}"
            if fmt == "ply":
                export_mesh(path, v, triangles, colors=colors, frame=frame)
            else:
                export_mesh(path, v, triangles, colors=colors, uv=uv, texture=tex, frame=frame)
            paths.append(path)
    return paths
