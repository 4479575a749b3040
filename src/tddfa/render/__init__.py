"""Renders of aligned faces, all built on the one Numba engine of :mod:`tddfa.render.rasterize`.

Every render takes the input image (``(H, W, 3)`` uint8 BGR) and returns a new uint8 BGR image
of the same size — drawn over the photo, or on black with ``background=True`` — except
:func:`uv_texture`, which returns the unwrapped ``size × size`` texture.

Meshes are ``(N, 3)`` float32 vertices in image pixels (x right, y down, z larger = nearer, as
:attr:`tddfa.face.results.Face.vertices`); several faces in one image share a z-buffer, so the nearer
surface wins where they overlap. Rasterisation runs only over the faces' bounding window (in
tiles of at most :data:`TILE` pixels a side), so faces partly outside the image and very large
images cost memory in proportion to the faces, not the image.

Kinds of :func:`render` (the :data:`RENDERERS` registry): ``mesh`` (shaded, alpha-blended mesh),
``depth`` (grey, brighter = nearer), ``pncc`` (projected normalised coordinate code: array
channel k holds the k-th NCC coordinate x, y, z, i.e. BGR = xyz, as the official renderer),
``normal`` (normal map, RGB = x right, y up, z towards the camera, mapped from [-1, 1] to
[0, 255]), ``uv`` (UV texture of each face, side by side), ``pose`` (3-D box and axes),
``dense`` (dense 2-D landmarks) and ``landmarks`` (the 68 points and their contours).

One module per kind (:mod:`.mesh`, :mod:`.depth`, :mod:`.pncc`, :mod:`.normal`, :mod:`.uv`,
:mod:`.pose`, :mod:`.landmarks`); :mod:`.common` holds the shared raster pass and
:mod:`.registry` the names. A new kind is a module here plus one entry in ``RENDERERS``.
"""

# Names load on first use (module ``__getattr__``): ``import tddfa.render.landmarks`` for a 2-D
# overlay then costs no Numba start-up.
_SOURCES = {
    "TILE": "common", "face_vertices": "common", "vertex_normals": "common",
    "render_depth": "depth", "draw_dense_points": "landmarks", "draw_landmarks": "landmarks",
    "render_mesh": "mesh", "render_normal": "normal", "render_pncc": "pncc",
    "draw_pose": "pose", "pose_box_points": "pose",
    "RENDERERS": "registry", "render": "registry", "save_renders": "registry",
    "uv_coordinates": "uv", "uv_texture": "uv",
}

__all__ = [
    "RENDERERS",
    "TILE",
    "render",
    "save_renders",
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
    "face_vertices",
    "vertex_normals",
]


def __getattr__(name: str):
    if name in _SOURCES:
        import importlib

        return getattr(importlib.import_module(f"tddfa.render.{_SOURCES[name]}"), name)
    raise AttributeError(f"module 'tddfa.render' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
