"""Result objects: one frozen :class:`Face` per face, never parallel lists.

Coordinate frame of every image-space array: pixels of the input image, x to the right, y down,
pixel centres at integer coordinates (as OpenCV and 3DDFA_V2); z grows towards the camera, in
the same pixel scale as x and y, shifted so that each face's smallest z is 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Pose", "Face", "ImageResult"]


@dataclass(frozen=True)
class Pose:
    """Head pose of one face.

    Attributes:
        yaw, pitch, roll: degrees (3DDFA_V2 convention, see :mod:`tddfa.pose`).
        rotation: ``(3, 3)`` float64 rotation matrix (rows r1, r2, r1×r2) in the crop frame.
        scale: crop pixels per model unit.
        translation: ``(3,)`` float64, crop pixels (120×120 frame).
    """

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray
    scale: float
    translation: np.ndarray

    def to_dict(self) -> dict[str, float]:
        return {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll}


@dataclass(frozen=True)
class Face:
    """Everything known about one face in one image.

    Attributes:
        box: ``(4,)`` float32 detector (or user) box x1, y1, x2, y2, image pixels.
        score: detector confidence in [0, 1] (1.0 for user-supplied boxes).
        roi_box: ``(4,)`` float32 square region that was cropped to 120×120, image pixels.
        params: ``(62,)`` float32 de-normalised 3DMM parameters (12 pose, 40 shape, 10 expression).
        landmarks: ``(68, 3)`` float32 3-D landmarks, image pixels (x, y) and relative depth z.
        pose: :class:`Pose`.
        vertices: ``(38365, 3)`` float32 dense mesh in image pixels, or ``None`` unless asked for.
        track_id: identity in a video (``-1`` for still images).
    """

    box: np.ndarray
    score: float
    roi_box: np.ndarray
    params: np.ndarray
    landmarks: np.ndarray
    pose: Pose
    vertices: np.ndarray | None = None
    track_id: int = -1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self, *, include_vertices: bool = False) -> dict[str, Any]:
        """JSON-ready dict: box, score, roi_box, param, landmarks, pose (and vertices on request)."""
        d: dict[str, Any] = {
            "box": _floats(self.box),
            "score": float(self.score),
            "roi_box": _floats(self.roi_box),
            "param": _floats(self.params),
            "landmarks": _rows(self.landmarks),
            "pose": self.pose.to_dict(),
        }
        if self.track_id >= 0:
            d["track_id"] = int(self.track_id)
        if include_vertices and self.vertices is not None:
            d["vertices"] = _rows(self.vertices)
        return d


@dataclass(frozen=True)
class ImageResult:
    """All faces of one image plus the image's size and the model used."""

    faces: list[Face]
    width: int
    height: int
    model: dict[str, Any]
    image: str | None = None

    def to_dict(self, *, include_vertices: bool = False) -> dict[str, Any]:
        return {
            "image": self.image,
            "width": int(self.width),
            "height": int(self.height),
            "model": self.model,
            "faces": [f.to_dict(include_vertices=include_vertices) for f in self.faces],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(**kwargs))

    def plot(self, image: np.ndarray, kind: str = "landmarks", triangles: np.ndarray | None = None
             ) -> np.ndarray:
        """Draw the faces on ``image`` (``(H, W, 3)`` uint8 BGR) → a new BGR image.

        ``kind`` is any of :data:`tddfa.render.RENDERERS` (``landmarks``, ``mesh``, ``depth``,
        ``pncc``, ``normal``, ``pose``, ``dense``, ``uv``); mesh kinds need ``face.vertices``.
        """
        from tddfa.render.registry import render

        return render(kind, image, self.faces, triangles)

    def save(self, path: str, *, include_vertices: bool = False) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        from tddfa.io.atomic import atomic_write_text

        atomic_write_text(path, self.to_json(include_vertices=include_vertices))

    def __len__(self) -> int:
        return len(self.faces)

    def __iter__(self):
        return iter(self.faces)


def _floats(a) -> list[float]:
    return np.asarray(a, dtype=np.float32).reshape(-1).tolist()


def _rows(a) -> list[list[float]]:
    """``(N, 3)`` points as nested lists of Python floats (one bulk conversion, no per-value Python)."""
    return np.asarray(a, dtype=np.float32).reshape(len(a), -1).tolist()
