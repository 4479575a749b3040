"""Drawing on video frames: landmarks with per-identity colours and the sparse / mesh / dense / pose
overlays."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.face.results import Face

if TYPE_CHECKING:
    from tddfa.face.morphable_model import MorphableModel


log = logging.getLogger(__name__)

OVERLAYS = ("sparse", "mesh", "dense", "pose", "none")
_RECONSTRUCT_LOCK = threading.Lock()

_LM_GROUPS = ((0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
              (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True))
_COLORS = ((80, 220, 80), (60, 160, 255), (255, 160, 60), (200, 80, 255), (80, 240, 240),
           (255, 90, 160))


def _color(track_id: int) -> tuple[int, int, int]:
    return _COLORS[track_id % len(_COLORS)] if track_id >= 0 else _COLORS[0]


def draw_landmarks(image: np.ndarray, faces: Iterable[Face], *, copy: bool = True,
                   ids: bool = True) -> np.ndarray:
    """Draw each face's 68 landmarks (contours and points) and its track id on ``image``.

    Args:
        image: ``(H, W, 3)`` uint8 BGR.
        faces: faces with landmarks in image pixels.
        copy: draw on a copy (``False`` draws in place).
        ids: write ``#track_id`` above each face.

    Returns:
        The drawn ``(H, W, 3)`` uint8 BGR image.
    """
    out = image.copy() if copy else image
    scale_px = max(out.shape[0], out.shape[1]) / 720.0
    thick = max(1, int(round(scale_px)))
    for f in faces:
        col = _color(f.track_id)
        pts = np.round(f.landmarks[:, :2]).astype(np.int32)
        cv2.polylines(out, [pts[a:b] for a, b, c in _LM_GROUPS if not c], False, col, thick, cv2.LINE_AA)
        cv2.polylines(out, [pts[a:b] for a, b, c in _LM_GROUPS if c], True, col, thick, cv2.LINE_AA)
        r = max(1, int(round(1.5 * scale_px)))
        for x, y in pts:
            cv2.circle(out, (int(x), int(y)), r, (255, 255, 255), -1, cv2.LINE_AA)
        if ids and f.track_id >= 0:
            x1, y1 = int(pts[:, 0].min()), int(pts[:, 1].min())
            cv2.putText(out, f"#{f.track_id}", (x1, max(y1 - 8, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6 * scale_px, col, thick, cv2.LINE_AA)
    return out


def draw_overlay(kind: str, image: np.ndarray, faces: list[Face], triangles: np.ndarray | None = None,
                 morphable_model: MorphableModel | None = None) -> np.ndarray:
    """Overlay of ``kind`` (one of :data:`OVERLAYS`) on a copy of ``image`` ``(H, W, 3)`` uint8 BGR.

    ``"sparse"`` draws landmarks here; ``"mesh"``, ``"dense"`` and ``"pose"`` use
    :func:`tddfa.render.render`. Mesh and dense need each face's dense vertices: faces without
    them are reconstructed from their parameters with ``morphable_model`` (default: the best
    available, as :func:`tddfa.morphable_model.load_morphable_model`), whose triangles are used
    when ``triangles`` ``(M, 3)`` is ``None``. ``"none"`` returns the frame itself.
    """
    if kind not in OVERLAYS:
        raise InputError(f"overlay must be one of {OVERLAYS}, got {kind!r}")
    if kind == "none":
        return image
    if kind == "sparse":
        return draw_landmarks(image, faces)
    from tddfa.render.registry import render
    if kind in ("mesh", "dense"):
        if morphable_model is None and (triangles is None or any(f.vertices is None for f in faces)):
            from tddfa.face.morphable_model import load_morphable_model

            morphable_model = load_morphable_model()
        if triangles is None:
            triangles = morphable_model.tri
        faces = add_vertices(faces, morphable_model)
    out = render(kind, image, faces, triangles)
    if kind != "pose":
        # keep the identities visible on shaded overlays
        for f in faces:
            if f.track_id >= 0:
                pts = f.landmarks
                cv2.putText(out, f"#{f.track_id}", (int(pts[:, 0].min()), max(int(pts[:, 1].min()) - 8, 12)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.6 * max(out.shape[:2]) / 720.0, _color(f.track_id),
                            2, cv2.LINE_AA)
    return out


def add_vertices(faces: list[Face], morphable_model: MorphableModel) -> list[Face]:
    """Faces with dense vertices ``(38365, 3)`` image pixels (one batched reconstruction for the
    faces that lack them)."""
    todo = [i for i, f in enumerate(faces) if f.vertices is None]
    if not todo:
        return faces
    # one parallel (Numba) reconstruction at a time: Numba's fallback "workqueue" threading
    # layer must not be entered from several threads at once (drawing runs in a thread pool)
    with _RECONSTRUCT_LOCK:
        v = morphable_model.reconstruct_image(np.stack([faces[i].params for i in todo]),
                                              np.stack([faces[i].roi_box for i in todo]), dense=True)
    out = list(faces)
    for k, i in enumerate(todo):
        out[i] = dataclasses.replace(faces[i], vertices=v[k])
    return out
