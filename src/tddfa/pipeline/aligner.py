"""The still-image pipeline: detect → crop → regress (one batch per image) → reconstruct → pose.

    >>> from tddfa import FaceAligner
    >>> aligner = FaceAligner()                       # mb05 + FaceBoxes, no PyTorch
    >>> result = aligner.align("photo.jpg")           # ImageResult
    >>> for face in result.faces:
    ...     face.landmarks, face.pose.yaw             # (68, 3) image pixels, degrees
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from tddfa.errors import InputError
from tddfa.face.crop import crop_batch, roi_from_box, roi_from_landmarks
from tddfa.face.morphable_model import MorphableModel, load_morphable_model
from tddfa.face.pose import pose_from_params
from tddfa.face.results import Face, ImageResult, Pose
from tddfa.io.images import load_image
from tddfa.models.regressor import Regressor

__all__ = ["FaceAligner", "faces_from_params", "create_regressor"]

log = logging.getLogger(__name__)

ImageLike = str | os.PathLike | np.ndarray


def create_regressor(model: str = "mb05", checkpoint: str | Path | None = None, threads: int = 0,
                     backend: str = "onnxruntime", device: str = "cpu", spin: str | None = None):
    """The regressor for a model name: ``"cascade"`` is the 3DDFA V1 cascade
    (:class:`tddfa.v1.cascade.CascadeRegressor`; ``checkpoint`` may name a cascade folder),
    anything else a registered single network (:class:`~tddfa.models.regressor.Regressor`)."""
    if model == "cascade":
        from tddfa.v1.cascade import CascadeRegressor

        return CascadeRegressor(checkpoint, threads=threads, spin=spin)  # ONNX Runtime, CPU
    return Regressor(model, checkpoint, threads=threads, backend=backend, device=device, spin=spin)


class FaceAligner:
    """3D dense face alignment of still images.

    Args:
        model: regressor name from :func:`tddfa.models.list_models` (``"mb05"`` default), or
            ``"cascade"`` for the 3DDFA V1 cascade (faces whose estimate a stage could not refine
            carry ``extra["cascade"] = {"fallback_stages": [...]}``, and faces a stage's yaw gate
            passed through ``"skipped_stages"``).
        checkpoint: optional regressor checkpoint / ``.onnx`` to use instead of the registered one.
        score_threshold: detector score above which a face is reported (0.5).
        dense_model: ``"auto"`` (official BFM if present, else the approximate one, else
            sparse-only), ``"official"``, ``"approx"`` or ``"sparse"``.
        threads: ONNX Runtime intra-op threads (0 = one per physical core).
        detector_weights: optional FaceBoxes checkpoint path.
        backend: ``onnxruntime`` (default), ``openvino`` or ``auto`` (the faster measured
            backend per network); device: ``cpu`` or ``cuda`` (ONNX Runtime's CUDA provider).
        max_pixels: images larger than this (width × height) raise :class:`InputError`; files
            are checked from their header before decoding (default
            :data:`tddfa.io.images.MAX_PIXELS` ≈ 179 MP; 0 = no limit).
        max_dense_faces: ``align(..., dense=True)`` reconstructs the dense mesh of at most this
            many faces (the best scoring; the others keep ``vertices=None``, with a warning).
        min_face_size: smallest face the detector reports, sqrt(w·h) of the landmark box in
            image pixels (0 = no limit, the default). Larger values let FaceBoxes run on a
            smaller image, which is faster (:class:`tddfa.detection.FaceBoxesDetector`); faces
            given as ``boxes`` are not filtered.
        spin: how ONNX Runtime's idle threads wait: ``"run"`` (spin between the operators of a
            run only), ``"off"`` or ``"on"``; ``None`` = ``TDDFA_ORT_SPIN`` or ``"run"``
            (:func:`tddfa.models.runtime.spin_config`). ``"off"`` suits sessions that run at
            the same time as others (:class:`~tddfa.video.VideoAligner` uses it).
    """

    def __init__(
        self,
        model: str = "mb05",
        checkpoint: str | Path | None = None,
        score_threshold: float = 0.5,
        dense_model: str = "auto",
        threads: int = 0,
        detector_weights: str | Path | None = None,
        backend: str = "onnxruntime",
        device: str = "cpu",
        max_pixels: int | None = None,
        max_dense_faces: int = 32,
        min_face_size: float = 0.0,
        spin: str | None = None,
    ):
        from tddfa.detection.faceboxes import check_min_face_size

        self.min_face_size = check_min_face_size(min_face_size)
        self.max_pixels = max_pixels
        self.max_dense_faces = int(max_dense_faces)
        self.model_name = model
        self.backend, self.device = backend, device
        from tddfa.models.runtime import spin_config

        spin_config(spin)  # an unknown mode fails here, before any model is loaded
        self._spin = spin
        self.regressor = create_regressor(model, checkpoint, threads=threads, backend=backend,
                                          device=device, spin=spin)
        self.score_threshold = float(score_threshold)
        self._dense_model = dense_model
        self._threads = threads
        self._detector_weights = detector_weights
        self._detector = None
        self._mm: MorphableModel | None = None

    # -- lazily built parts -----------------------------------------------------------------
    @property
    def detector(self):
        """The FaceBoxes detector (built on first use)."""
        if self._detector is None:
            from tddfa.detection.faceboxes import FaceBoxesDetector

            self._detector = FaceBoxesDetector(
                self._detector_weights, self.score_threshold, threads=self._threads,
                backend=self.backend, device=self.device, min_face_size=self.min_face_size,
                spin=self._spin,
            )
        return self._detector

    @property
    def morphable_model(self) -> MorphableModel:
        if self._mm is None:
            self._mm = load_morphable_model(self._dense_model)
        return self._mm

    def describe(self) -> dict:
        """Model metadata recorded in every result."""
        return {
            "name": self.model_name,
            "arch": self.regressor.info.arch,
            "width": self.regressor.width,
            "weights": self.regressor.source.name,
            "detector": "faceboxes",
            "score_threshold": self.score_threshold,
            "min_face_size": self.min_face_size,
            "morphable_model": self.morphable_model.describe(),
        }

    # -- stages ------------------------------------------------------------------------------
    def detect(self, image: ImageLike, *, rgb: bool = False) -> np.ndarray:
        """Face boxes ``(K, 5)`` float32 (x1, y1, x2, y2, score), image pixels, best first."""
        return self.detector(load_image(image, rgb=rgb, max_pixels=self.max_pixels))

    def align(
        self,
        image: ImageLike,
        boxes: np.ndarray | None = None,
        *,
        rgb: bool = False,
        dense: bool = False,
    ) -> ImageResult:
        """All faces of an image.

        Args:
            image: path, or array (BGR by default; ``rgb=True`` for RGB; gray/RGBA/16-bit accepted).
            boxes: optional ``(K, 4|5)`` user boxes (x1, y1, x2, y2[, score]) — skips detection.
                Non-numeric, non-finite, inverted or absurdly large (beyond ±2**20 px) boxes raise
                :class:`InputError`; a box entirely outside the image yields no face and a
                logged warning.
            dense: also reconstruct the 38,365-vertex mesh of each face (at most
                ``max_dense_faces`` of them).

        Returns:
            :class:`ImageResult`; ``faces`` is empty when no face is found.
        """
        img = load_image(image, rgb=rgb, max_pixels=self.max_pixels)
        if boxes is None:
            dets = self.detector(img)
        else:
            dets = _inside(_as_boxes(boxes), img.shape[1], img.shape[0])
        rois = np.array([roi_from_box(b) for b in dets]).reshape(-1, 4)
        cap = max(self.max_dense_faces, 0)
        faces = self.align_rois(img, rois[:cap], dense=dense, boxes=dets[:cap])
        if len(rois) > cap:
            if dense:
                log.warning("%d faces: only the first max_dense_faces=%d get a dense mesh",
                            len(rois), cap)
            faces += self.align_rois(img, rois[cap:], dense=False, boxes=dets[cap:])
        name = str(image) if isinstance(image, (str, os.PathLike)) else None
        return ImageResult(faces, img.shape[1], img.shape[0], self.describe(), name)

    def align_rois(
        self,
        image: np.ndarray,
        rois: np.ndarray,
        *,
        dense: bool = False,
        boxes: np.ndarray | None = None,
    ) -> list[Face]:
        """Faces regressed from given roi boxes ``(K, 4)`` (the tracking / re-crop path).

        ``image`` must already be ``(H, W, 3)`` uint8 BGR (see :func:`tddfa.image_io.load_image`).
        ``boxes`` ``(K, 4|5)`` are recorded as each face's box (default: the rois, score 1).
        """
        rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4)
        if len(rois) == 0:
            return []
        crops = crop_batch(image, rois, self.regressor.input_size)
        params = self.regressor.predict(crops)
        faces = self.faces_from_params(params, rois, boxes=boxes, dense=dense)
        flags = getattr(self.regressor, "last_fallbacks", None)
        skipped = getattr(self.regressor, "last_skipped", None)
        if flags is not None and (skipped is None or skipped.shape != flags.shape):
            skipped = np.zeros_like(flags)
        if flags is not None and len(flags) == len(faces) and (flags.any() or skipped.any()):
            from dataclasses import replace

            def note(i: int) -> dict:
                out = {}
                if flags[i].any():
                    out["fallback_stages"] = [int(k) + 1 for k in np.flatnonzero(flags[i])]
                if skipped[i].any():
                    out["skipped_stages"] = [int(k) + 1 for k in np.flatnonzero(skipped[i])]
                return out

            faces = [replace(f, extra={**f.extra, "cascade": note(i)})
                     if flags[i].any() or skipped[i].any() else f for i, f in enumerate(faces)]
        return faces

    def refine(self, image: np.ndarray, faces: list[Face], *, dense: bool = False) -> list[Face]:
        """Second pass: re-crop each face from its landmarks and regress again (as the official
        video tracker does). Boxes, scores and track ids are kept."""
        if not faces:
            return []
        rois = np.array([roi_from_landmarks(f.landmarks) for f in faces])
        boxes = np.array([np.r_[f.box, f.score] for f in faces])
        out = self.align_rois(image, rois, dense=dense, boxes=boxes)
        return [_with_track(o, f.track_id) for o, f in zip(out, faces, strict=True)]

    def faces_from_params(
        self,
        params: np.ndarray,
        rois: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        dense: bool = False,
    ) -> list[Face]:
        """Build :class:`Face` results from parameters ``(K, 62)`` and their rois ``(K, 4)``."""
        return faces_from_params(self.morphable_model, params, rois, boxes=boxes, dense=dense)

    def vertices(self, faces: list[Face]) -> list[np.ndarray]:
        """Dense meshes ``(38365, 3)`` float32 image pixels for faces (computed if absent)."""
        todo = [i for i, f in enumerate(faces) if f.vertices is None]
        out = [f.vertices for f in faces]
        if todo:
            p = np.stack([faces[i].params for i in todo])
            r = np.stack([faces[i].roi_box for i in todo])
            v = self.morphable_model.reconstruct_image(p, r, dense=True)
            for k, i in enumerate(todo):
                out[i] = v[k]
        return out


def faces_from_params(
    mm: MorphableModel,
    params: np.ndarray,
    rois: np.ndarray,
    *,
    boxes: np.ndarray | None = None,
    dense: bool = False,
) -> list[Face]:
    """:class:`Face` results from de-normalised parameters ``(K, 62)`` and their roi boxes
    ``(K, 4)`` (image pixels), using morphable model ``mm``. ``boxes`` ``(K, 4|5)`` default to
    the rois with score 1; ``dense`` also fills ``vertices``."""
    params = np.asarray(params, np.float32).reshape(-1, 62)
    # geometry is computed from the float32 roi each Face stores, so it can be recomputed exactly
    rois = np.asarray(rois, np.float32).reshape(-1, 4).astype(np.float64)
    if boxes is None:  # the rois themselves, score 1 (already checked: no validation needed)
        boxes = np.ones((len(rois), 5), np.float32)
        boxes[:, :4] = rois
    else:
        boxes = _as_boxes(boxes)
    lms = mm.reconstruct_image(params, rois, dense=False)
    verts = mm.reconstruct_image(params, rois, dense=True) if dense else None
    angles, R, scale, t = pose_from_params(params)
    return [
        Face(
            box=boxes[i, :4].astype(np.float32),
            score=float(boxes[i, 4]),
            roi_box=rois[i].astype(np.float32),
            params=params[i],
            landmarks=lms[i],
            pose=Pose(float(angles[i, 0]), float(angles[i, 1]), float(angles[i, 2]),
                      R[i], float(scale[i]), t[i]),
            vertices=None if verts is None else verts[i],
        )
        for i in range(len(params))
    ]


_MAX_COORD = float(1 << 20)


def _inside(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Drop (with a warning) boxes that do not overlap the ``width × height`` image."""
    keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < width) & (boxes[:, 1] < height)
    if not keep.all():
        log.warning("%d box(es) entirely outside the %dx%d image ignored: %s", int((~keep).sum()),
                    width, height, np.round(boxes[~keep, :4], 1).tolist()[:5])
    return boxes[keep]


def _as_boxes(boxes) -> np.ndarray:
    if isinstance(boxes, (str, bytes)):
        raise InputError(f"boxes must be numbers (K, 4) or (K, 5), got a string {boxes[:40]!r}")
    try:
        b = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"boxes must be numbers (K, 4) or (K, 5) x1, y1, x2, y2[, score] ({exc})") from exc
    if b.size == 0:
        return np.zeros((0, 5), np.float32)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] not in (4, 5):
        raise InputError(f"boxes must be (K, 4) or (K, 5) x1, y1, x2, y2[, score]; got {b.shape}")
    if b.shape[1] == 4:
        b = np.hstack([b, np.ones((len(b), 1), np.float32)])
    if not np.all(np.isfinite(b)) or np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
        raise InputError("boxes must be finite with x2 > x1 and y2 > y1")
    if np.abs(b[:, :4]).max() > _MAX_COORD:
        raise InputError(f"box coordinates beyond ±{_MAX_COORD:.0f} px: {b[:, :4].tolist()[:3]}")
    return b.astype(np.float32)


def _with_track(face: Face, track_id: int) -> Face:
    if track_id < 0:
        return face
    from dataclasses import replace

    return replace(face, track_id=track_id)
