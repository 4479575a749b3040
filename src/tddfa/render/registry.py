"""Render kinds by name (:data:`RENDERERS`), :func:`render` and :func:`save_renders`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import unknown_name
from tddfa.render.common import _as_image
from tddfa.render.depth import render_depth
from tddfa.render.landmarks import draw_dense_points, draw_landmarks
from tddfa.render.mesh import render_mesh
from tddfa.render.normal import render_normal
from tddfa.render.paf import render_paf
from tddfa.render.pncc import render_pncc
from tddfa.render.pose import draw_pose
from tddfa.render.uv import _render_uv

log = logging.getLogger(__name__)


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
    "paf": lambda image, faces, triangles=None, **opts: render_paf(image, faces, **opts),
}


_TARGETS: dict[str, Callable] = {
    "mesh": render_mesh, "depth": render_depth, "pncc": render_pncc, "normal": render_normal,
    "uv": _render_uv, "pose": draw_pose, "dense": draw_dense_points, "landmarks": draw_landmarks,
    "paf": render_paf,
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
        kind: ``mesh``, ``depth``, ``pncc``, ``normal``, ``uv``, ``pose``, ``dense``,
            ``landmarks`` or ``paf`` (3DDFA V1's pose-adaptive feature map over each roi).
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
    from tddfa.io.images import write_image

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
