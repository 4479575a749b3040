"""One image's work in a batch: align it, write its side files, return its record.

Shared by the in-process engine, the worker processes of :mod:`tddfa.batch.local` and the Ray
actors of :mod:`tddfa.batch.ray_engine`; each builds one :class:`ImageWorker` (one model load)
and feeds it ``(input path, output stem)`` items.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import TddfaError

__all__ = ["AlignOptions", "ImageWorker", "failure_record"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignOptions:
    """What ``tddfa align`` does per image (picklable, sent to every worker).

    ``out`` is the output folder; side files (overlay, renders, meshes, per-image JSON) go to
    ``out / stem`` + suffix. ``per_image_json`` writes ``<stem>.json`` (the ``json`` format).
    """

    out: str
    model: str = "mb05"
    checkpoint: str | None = None
    threshold: float = 0.5
    refine: bool = False
    dense: bool = False
    render: tuple[str, ...] = ()
    export: tuple[str, ...] = ()
    frame: str = "image"
    overlay: bool = True
    threads: int = 0
    backend: str = "onnxruntime"
    device: str = "cpu"
    max_pixels: int | None = None
    max_dense_faces: int = 32
    min_face: float = 0.0
    per_image_json: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_record(path: str, stem: str, exc: BaseException) -> dict[str, Any]:
    """The failures-file line of an input that could not be processed."""
    kind = "" if isinstance(exc, TddfaError) else f"unexpected {type(exc).__name__}: "
    return {"input": str(path), "stem": str(stem), "error": f"{kind}{exc}"}


class ImageWorker:
    """Holds one :class:`~tddfa.pipeline.aligner.FaceAligner` and processes images with it."""

    def __init__(self, options: AlignOptions):
        from tddfa.pipeline.aligner import FaceAligner

        self.options = options
        self.aligner = FaceAligner(options.model, options.checkpoint,
                                   score_threshold=options.threshold, threads=options.threads,
                                   backend=options.backend, device=options.device,
                                   max_pixels=options.max_pixels,
                                   max_dense_faces=options.max_dense_faces,
                                   min_face_size=options.min_face)

    def process(self, path: str, stem: str, image: np.ndarray | None = None) -> dict[str, Any]:
        """Align one image and write its side files; returns its record: ``input``, ``stem`` and
        :meth:`~tddfa.face.results.ImageResult.to_dict` fields (``faces`` etc.).

        ``image`` is the decoded ``(H, W, 3)`` uint8 BGR image when the caller decoded it ahead.

        Raises:
            TddfaError (or anything else) for a bad input; the caller records the failure.
        """
        from tddfa.io.images import read_image

        o = self.options
        img = read_image(path, max_pixels=o.max_pixels) if image is None else image
        al = self.aligner
        result = al.align(img)
        faces = result.faces
        if o.refine and faces:
            faces = al.refine(img, faces)
        if (o.render or o.export or o.dense) and faces:
            cap = o.max_dense_faces
            faces = [replace(f, vertices=v) for f, v in
                     zip(faces[:cap], al.vertices(faces[:cap]), strict=True)] + faces[cap:]
        result = replace(result, faces=faces, image=str(path))
        record = {"input": str(path), "stem": str(stem), **result.to_dict(include_vertices=o.dense)}
        base = Path(o.out) / stem
        if o.per_image_json:
            from tddfa.io.atomic import atomic_write_text

            atomic_write_text(base.with_name(base.name + ".json"),
                              json.dumps(result.to_dict(include_vertices=o.dense)))
        if o.overlay:
            from tddfa.io.images import write_image
            from tddfa.render.landmarks import draw_landmarks

            write_image(base.with_name(base.name + "_landmarks.jpg"), draw_landmarks(img, faces))
        if o.render:
            from tddfa.render.registry import save_renders

            save_renders(img, faces[:o.max_dense_faces], al.morphable_model.tri, list(o.render),
                         base.parent, base.name)
        if o.export:
            from tddfa.export.formats import save_exports

            save_exports(img, faces[:o.max_dense_faces], al.morphable_model.tri, list(o.export),
                         base.parent, base.name, frame=o.frame)
        return record

    def try_process(self, path: str, stem: str, image: np.ndarray | BaseException | None = None
                    ) -> tuple[bool, dict[str, Any]]:
        """:meth:`process` that never raises: ``(True, record)`` or ``(False, failure record)``.
        ``image`` may be the exception the decode-ahead thread met."""
        try:
            if isinstance(image, BaseException):
                raise image
            return True, self.process(path, stem, image)
        except Exception as exc:  # a batch never stops on one file
            log.debug("failed %s", path, exc_info=True)
            return False, failure_record(path, stem, exc)
