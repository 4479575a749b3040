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

from tddfa.render.common import TILE, face_vertices, vertex_normals
from tddfa.render.depth import render_depth
from tddfa.render.landmarks import draw_dense_points, draw_landmarks
from tddfa.render.mesh import render_mesh
from tddfa.render.normal import render_normal
from tddfa.render.pncc import render_pncc
from tddfa.render.pose import draw_pose, pose_box_points
from tddfa.render.registry import RENDERERS, render, save_renders
from tddfa.render.uv import uv_coordinates, uv_texture

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
