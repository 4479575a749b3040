"""Head-pose render: a 3-D box turned with each face's rotation, drawn in the image."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.render.inputs import _as_image, _canvas
from tddfa.render.landmarks import _landmarks_of

log = logging.getLogger(__name__)


def pose_box_points(rotation: np.ndarray, center: np.ndarray, half_size: float) -> np.ndarray:
    """The 8 corners ``(8, 2)`` float64 (image pixels) of a cube of half-side ``half_size``
    pixels centred on ``center`` ``(2,)``, turned by the head rotation ``rotation`` ``(3, 3)``
    (crop frame, y up, as :attr:`tddfa.results.Pose.rotation`) and projected orthographically.

    Corners ``0-3`` are the back face (model z = -1), ``4-7`` the front face (towards the nose),
    each in the order (-x,-y), (+x,-y), (+x,+y), (-x,+y) of the model frame.
    """
    R = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    sq = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    cube = np.concatenate([np.c_[sq, -np.ones(4)], np.c_[sq, np.ones(4)]])
    rotated = cube @ R.T * half_size
    rotated[:, 1] *= -1.0            # crop frame y up -> image y down
    return rotated[:, :2] + np.asarray(center, dtype=np.float64)[:2]


def draw_pose(
    image: Any,
    faces: Sequence[Any],
    *,
    style: str = "both",
    background: bool = False,
) -> np.ndarray:
    """Head pose of each :class:`~tddfa.results.Face`: a 3-D box around the head (back face grey,
    front face — the direction the face looks — yellow) and/or axes (x red, y green, forward
    blue) from the landmarks' centre, drawn from ``face.pose.rotation``.

    Args:
        style: ``"box"``, ``"axes"`` or ``"both"``.

    Returns ``(H, W, 3)`` uint8 BGR.
    """
    if style not in ("box", "axes", "both"):
        raise InputError(f"style must be 'box', 'axes' or 'both', got {style!r}")
    img = _as_image(image)
    canvas = _canvas(img, background)
    for face in faces:
        pose = getattr(face, "pose", None)
        if pose is None:
            raise InputError(f"draw_pose needs Face objects with a pose, got {type(face).__name__}")
        lm = _landmarks_of(face)
        if not np.isfinite(lm).all():
            continue
        center = lm.mean(axis=0)
        spread = float(np.sqrt(((lm - center) ** 2).sum(axis=1)).max())
        half = 0.75 * spread
        thick = max(1, int(round(spread / 60)))
        R = np.asarray(pose.rotation, dtype=np.float64)
        if style in ("box", "both"):
            c = np.rint(pose_box_points(R, center[:2], half) * 4).astype(np.int32)
            back, front = c[:4], c[4:]
            cv2.polylines(canvas, [back], True, (200, 200, 200), thick, cv2.LINE_AA, shift=2)
            for i in range(4):
                cv2.line(canvas, tuple(back[i]), tuple(front[i]), (200, 200, 200), thick,
                         cv2.LINE_AA, shift=2)
            cv2.polylines(canvas, [front], True, (0, 230, 255), thick + 1, cv2.LINE_AA, shift=2)
        if style in ("axes", "both"):
            axes = R.T * half                          # rows: model x, y, z axes in crop frame
            axes[:, 1] *= -1.0
            o = center[:2]
            for vec, col in zip(axes, [(0, 0, 255), (0, 255, 0), (255, 80, 0)], strict=True):
                tip = o + vec[:2]
                cv2.arrowedLine(canvas, (int(round(o[0] * 4)), int(round(o[1] * 4))),
                                (int(round(tip[0] * 4)), int(round(tip[1] * 4))), col, thick + 1,
                                cv2.LINE_AA, shift=2, tipLength=0.12)
    return canvas
