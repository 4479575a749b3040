"""The work done on the inference pool for each endpoint: decode the upload (header checked
first), align, and turn the result into response bytes. Everything here runs off the event
loop; it raises :class:`~tddfa.serve.imagecheck.ImageRejected` or typed tddfa errors, which the
app maps to HTTP errors."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tddfa.serve.imagecheck import decode_upload

__all__ = ["align_job", "render_job", "export_job", "live_job", "MEDIA_TYPES"]

#: export format -> media type of the response.
MEDIA_TYPES = {"obj": "model/obj", "ply": "application/octet-stream", "glb": "model/gltf-binary"}


def _faces(engine: Any, img: np.ndarray, boxes: np.ndarray | None, refine: bool, dense: bool):
    aligner = engine.aligner
    result = aligner.align(img, boxes)
    faces = result.faces
    if refine and faces:
        faces = aligner.refine(img, faces)
    if dense and faces:
        faces = [replace(f, vertices=v) for f, v in zip(faces, aligner.vertices(faces), strict=True)]
    return replace(result, faces=faces)


def align_job(engine: Any, data: bytes, dense: bool, refine: bool, boxes: np.ndarray | None
              ) -> tuple[bytes, int]:
    """JSON bytes of the result (as ``tddfa align`` writes it) and the number of faces."""
    img = decode_upload(data, engine.config.max_pixels)
    result = _faces(engine, img, boxes, refine, dense)
    body = json.dumps(result.to_dict(include_vertices=dense)).encode()
    return body, len(result.faces)


def render_job(engine: Any, data: bytes, kind: str, refine: bool, boxes: np.ndarray | None
               ) -> tuple[bytes, int]:
    """PNG bytes of render ``kind`` and the number of faces."""
    from tddfa.render.registry import render

    img = decode_upload(data, engine.config.max_pixels)
    result = _faces(engine, img, boxes, refine, dense=kind not in ("landmarks", "pose"))
    out = render(kind, img, result.faces, engine.aligner.morphable_model.tri)
    ok, buf = cv2.imencode(".png", out)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes(), len(result.faces)


def export_job(engine: Any, data: bytes, fmt: str, face: int, frame: str, refine: bool,
               boxes: np.ndarray | None) -> tuple[bytes, int]:
    """Mesh file bytes of face ``face`` and the number of faces.

    OBJ and PLY carry per-vertex colours (one file, no MTL/texture side files); GLB embeds the
    UV texture. The file is written under a private temporary folder with a fixed name (the
    client's file name is never used) and read back.
    """
    from tddfa.errors import InputError
    from tddfa.export.formats import export_mesh, sample_vertex_colors

    img = decode_upload(data, engine.config.max_pixels)
    result = _faces(engine, img, boxes, refine, dense=True)
    n = len(result.faces)
    if n == 0:
        raise InputError("no face found in the image; nothing to export")
    if not 0 <= face < n:
        raise InputError(f"face={face} is out of range: the image has {n} face(s) (0..{n - 1})")
    v = result.faces[face].vertices
    tri = engine.aligner.morphable_model.tri
    colors = sample_vertex_colors(img, v)
    kwargs: dict[str, Any] = {"colors": colors, "frame": frame}
    if fmt == "glb":
        from tddfa.render.uv import uv_coordinates, uv_texture

        uv = uv_coordinates()
        if len(uv) == len(v):
            kwargs.update(uv=uv, texture=uv_texture(img, v, 512, triangles=tri))
    with tempfile.TemporaryDirectory(prefix="tddfa-serve-") as tmp:
        path = export_mesh(Path(tmp) / f"face.{fmt}", v, tri, format=fmt, **kwargs)
        return path.read_bytes(), n


def live_job(engine: Any, data: bytes, session: str, timestamp_ms: float) -> tuple[bytes, int]:
    """Track the faces of one live frame in ``session``'s VideoAligner → JSON bytes."""
    img = decode_upload(data, engine.config.max_pixels)
    s = engine.session(session)
    with s.lock:
        faces = s.tracker.process(img, timestamp_ms)
    body = {"session": session, "timestamp_ms": timestamp_ms, "width": int(img.shape[1]),
            "height": int(img.shape[0]), "faces": [f.to_dict() for f in faces]}
    return json.dumps(body).encode(), len(faces)
