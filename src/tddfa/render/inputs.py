"""Inputs every render shares (images, faces or vertex arrays, triangles, the canvas), free of Numba so
the 2-D overlays (landmarks, pose) load without the raster engine."""

from __future__ import annotations

from typing import Any

import numpy as np

from tddfa.errors import InputError


def _as_image(image: Any) -> np.ndarray:
    from tddfa.io.images import load_image

    return load_image(image)


def face_vertices(face: Any) -> np.ndarray:
    """Dense vertices ``(38365, 3)`` float32, image pixels, of a :class:`~tddfa.results.Face`
    (reconstructed from its parameters and roi box when ``face.vertices`` is ``None``), or an
    ``(N, 3)`` array passed through."""
    verts = getattr(face, "vertices", face)
    if verts is None:
        from tddfa.face.morphable_model import load_morphable_model

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
        from tddfa.face.morphable_model import load_morphable_model

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
