"""Video mode: :class:`VideoAligner` tracks faces frame by frame with identities and smoothing
(3DDFA_V2's landmark re-crop between detections)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tddfa.detection.faceboxes import box_iou
from tddfa.errors import InputError
from tddfa.face.crop import roi_from_box, roi_from_landmarks
from tddfa.face.results import Face
from tddfa.io.video import Frame, Prefetch, VideoSource
from tddfa.video.overlay import add_vertices
from tddfa.video.records import frame_record
from tddfa.video.smoothing import CausalFaceSmoother, CenteredFaceSmoother, SmoothingConfig

if TYPE_CHECKING:
    from tddfa.pipeline.aligner import FaceAligner


log = logging.getLogger(__name__)

# =============================================================================================
# Tracking
# =============================================================================================


@dataclass(frozen=True)
class FrameResult:
    """Faces of one video frame.

    Attributes:
        index: frame index in the stream (0-based).
        timestamp_ms: presentation time in milliseconds.
        faces: list of :class:`Face` with ``track_id`` set; for tracked faces ``box`` is the
            2-D box of the landmarks and ``score`` the score of the last matching detection.
        width, height: frame size, pixels.
        image: the ``(H, W, 3)`` uint8 BGR frame (``None`` when not kept).
    """

    index: int
    timestamp_ms: float
    faces: list[Face]
    width: int
    height: int
    image: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see :func:`frame_record`)."""
        return frame_record(self)


@dataclass
class _Track:
    id: int
    face: Face
    roi: np.ndarray  # (4,) float64 roi used for the last crop
    score: float
    last_frame: int
    unconfirmed: int = 0  # consecutive re-detections without an overlapping detection


def _f32(a: np.ndarray) -> np.ndarray:
    """float64 values exactly representable in float32."""
    return np.asarray(a, np.float32).astype(np.float64)


def _lm_box(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], np.float32)


class VideoAligner:
    """Face alignment of video frames with tracking, identities and optional smoothing.

    Args:
        aligner: a :class:`tddfa.pipeline.FaceAligner` to use (built from ``model``,
            ``checkpoint``, ``score_threshold``, ``dense_model``, ``threads`` when ``None``).
        threads: ONNX Runtime threads of that aligner. 1 (default) suits video: a frame's batch
            is tiny, and a multi-threaded pool spin-waits between frames, taking the CPU that
            decoding and drawing (in their own threads) need — measured about half the CPU time
            per frame with 1 thread on the 2-core test machine.
        dense: also reconstruct the dense mesh of each face (needed by mesh / dense overlays).
        redetect_every: run the detector every N frames to pick up new faces (0 = only when a
            track is lost or no face is tracked).
        max_faces: track at most this many faces (highest detector scores first); ``None`` = all.
        iou_threshold: overlap (IoU of crop regions) that links a detection to a track.
        min_face_size: a face whose landmark box is smaller (sqrt(w·h), pixels) is lost.
        max_size_change: a face whose size changes by more than this factor between adjacent
            frames is lost.
        min_inside: a face with fewer than this fraction of landmarks inside the frame is lost.
        roi_tolerance: keep the previous crop region while the new one differs by less than this
            fraction of its side (0 disables).
        init_iterations: extra landmark re-crops of a new face on its first frame, until its crop
            region is within ``roi_tolerance`` of the previous one (0 = the official single
            re-crop).
        max_unconfirmed: drop a track not overlapped by any detection at this many consecutive
            re-detections (0 disables; profile faces are not always detected).
        keep_lost: frames during which a lost track's id can be revived by an overlapping
            detection.
        smoothing: :class:`SmoothingConfig`, or a mode string (``"none"``, ``"causal"``,
            ``"centered"``), or ``None`` (no smoothing).
    """

    def __init__(
        self,
        aligner: FaceAligner | None = None,
        *,
        model: str = "mb05",
        checkpoint: str | os.PathLike | None = None,
        score_threshold: float = 0.5,
        dense_model: str = "auto",
        threads: int = 1,
        dense: bool = False,
        redetect_every: int = 30,
        max_faces: int | None = None,
        iou_threshold: float = 0.3,
        min_face_size: float = 16.0,
        max_size_change: float = 1.6,
        min_inside: float = 0.5,
        roi_tolerance: float = 0.02,
        init_iterations: int = 4,
        max_unconfirmed: int = 3,
        keep_lost: int = 25,
        smoothing: SmoothingConfig | str | None = None,
    ) -> None:
        if aligner is None:
            from tddfa.pipeline.aligner import FaceAligner

            aligner = FaceAligner(model, checkpoint, score_threshold=score_threshold,
                                  dense_model=dense_model, threads=threads)
        self.aligner = aligner
        self.dense = bool(dense)
        if redetect_every < 0:
            raise InputError(f"redetect_every must be >= 0 frames, got {redetect_every}")
        if max_faces is not None and max_faces < 1:
            raise InputError(f"max_faces must be >= 1 or None, got {max_faces}")
        self.redetect_every = int(redetect_every)
        self.max_faces = max_faces
        self.iou_threshold = float(iou_threshold)
        self.min_face_size = float(min_face_size)
        self.max_size_change = float(max_size_change)
        self.min_inside = float(min_inside)
        self.roi_tolerance = float(roi_tolerance)
        self.init_iterations = int(init_iterations)
        self.max_unconfirmed = int(max_unconfirmed)
        self.keep_lost = int(keep_lost)
        if smoothing is None:
            smoothing = SmoothingConfig()
        elif isinstance(smoothing, str):
            smoothing = SmoothingConfig(mode=smoothing)
        self.smoothing: SmoothingConfig = smoothing
        self.stats = {"frames": 0, "detections": 0, "lost": 0, "new_tracks": 0}
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every track (e.g. before a new video)."""
        self._tracks: list[_Track] = []
        self._lost: list[_Track] = []
        self._next_id = 0
        self._frame_no = 0
        self._since_detect = 0
        self._last_ts: float | None = None
        self._causal = (CausalFaceSmoother(self.smoothing, self.aligner.morphable_model)
                        if self.smoothing.mode == "causal" else None)

    # -- video mode: one frame at a time -------------------------------------------------------
    def process(self, image: np.ndarray, timestamp_ms: float) -> list[Face]:
        """Track faces in the next frame (video / live mode).

        Args:
            image: ``(H, W, 3)`` uint8 BGR frame.
            timestamp_ms: presentation time in ms; must increase from call to call.

        Returns:
            faces with ``track_id`` set (raw, or One-Euro smoothed when ``smoothing.mode`` is
            ``"causal"``).

        Raises:
            InputError: bad image, non-increasing timestamp, or centred smoothing (which needs
                look-ahead: use :meth:`track`).
        """
        if self.smoothing.mode == "centered":
            raise InputError("centred smoothing needs future frames; use VideoAligner.track(source) "
                             "or smoothing='causal' for frame-by-frame calls")
        faces = self._step(image, timestamp_ms)
        if self._causal is not None:
            faces = self._causal(faces, timestamp_ms / 1000.0)
        return self._with_vertices(faces)

    @property
    def _dense_in_step(self) -> bool:
        # The dense mesh is normally built once per output face, from the final (smoothed)
        # parameters; only landmark-target smoothing filters the vertices themselves.
        return self.dense and self.smoothing.mode != "none" and self.smoothing.target == "landmarks"

    def _with_vertices(self, faces: list[Face]) -> list[Face]:
        """Add dense vertices (one batched reconstruction) when ``dense`` and not done yet."""
        if not self.dense:
            return faces
        return add_vertices(faces, self.aligner.morphable_model)

    def track(self, source: VideoSource | Iterable[Frame], *, keep_images: bool = True,
              prefetch: bool = True) -> Iterator[FrameResult]:
        """Iterate over a source, yielding one :class:`FrameResult` per readable frame, in order.

        With centred smoothing, results come out ``window // 2`` frames after their input
        (the last ones when the source ends). ``keep_images=False`` drops the frame arrays from
        the results; ``prefetch`` decodes in a background thread.
        """
        self.reset()
        frames: Iterable[Frame] = source
        # live input: at most one frame read ahead, so latency does not build up
        depth = 1 if getattr(source, "live", False) else 4
        pre = Prefetch(iter(source), depth) if prefetch else None
        if pre is not None:
            frames = pre
        centred = (CenteredFaceSmoother(self.smoothing, self.aligner.morphable_model)
                   if self.smoothing.mode == "centered" else None)
        waiting: dict[int, Frame] = {}
        try:
            for fr in frames:
                faces = self._step(fr.image, fr.timestamp_ms)
                if self._causal is not None:
                    faces = self._causal(faces, fr.timestamp_ms / 1000.0)
                if centred is None:
                    yield self._result(fr, faces, keep_images)
                    continue
                waiting[fr.index] = fr
                for key, sm in centred.push(fr.index, faces):
                    yield self._result(waiting.pop(key), sm, keep_images)
            if centred is not None:
                for key, sm in centred.flush():
                    yield self._result(waiting.pop(key), sm, keep_images)
        finally:
            if pre is not None:
                pre.close()

    def _result(self, fr: Frame, faces: list[Face], keep: bool) -> FrameResult:
        h, w = fr.image.shape[:2]
        return FrameResult(fr.index, fr.timestamp_ms, self._with_vertices(faces), w, h,
                           fr.image if keep else None)

    # -- one tracking step -------------------------------------------------------------------
    def _step(self, image: np.ndarray, timestamp_ms: float) -> list[Face]:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"frame must be (H, W, 3) uint8 BGR, got {img.shape} {img.dtype}")
        ts = float(timestamp_ms)
        if self._last_ts is not None and not ts > self._last_ts:
            raise InputError(f"timestamps must increase: got {ts} ms after {self._last_ts} ms")
        self._last_ts = ts
        h, w = img.shape[:2]
        n = self._frame_no
        self._frame_no += 1
        self.stats["frames"] += 1
        al = self.aligner

        lost_any = False
        if self._tracks:
            rois = np.stack([self._next_roi(t) for t in self._tracks])
            faces = al.align_rois(img, rois, dense=self._dense_in_step)
            alive = []
            for t, f, r in zip(self._tracks, faces, rois, strict=True):
                if self._plausible(f, t.face, w, h):
                    t.face, t.roi, t.last_frame = f, r, n
                    alive.append(t)
                else:
                    lost_any = True
                    self.stats["lost"] += 1
                    log.debug("frame %d: track %d lost", n, t.id)
                    self._lost.append(t)
            self._tracks = self._dedupe(alive, n)
        self._lost = [t for t in self._lost if n - t.last_frame <= self.keep_lost]

        self._since_detect += 1
        due = self.redetect_every > 0 and self._since_detect >= self.redetect_every
        room = self.max_faces is None or len(self._tracks) < self.max_faces
        if not self._tracks or lost_any or (due and (room or self.max_unconfirmed > 0)):
            self._detect(img, n)

        out = []
        for t in self._tracks:
            f = t.face
            out.append(dataclasses.replace(f, box=_lm_box(f.landmarks), score=t.score,
                                           track_id=t.id))
        return out

    def _dedupe(self, tracks: list[_Track], n: int) -> list[_Track]:
        """Two tracks that converged on one face (crop regions overlapping by IoU > 0.6): keep
        the older identity."""
        if len(tracks) < 2:
            return tracks
        ov = box_iou(np.stack([t.roi for t in tracks]), np.stack([t.roi for t in tracks]))
        order = sorted(range(len(tracks)), key=lambda i: tracks[i].id)
        keep: list[int] = []
        for i in order:
            if all(ov[i, k] <= 0.6 for k in keep):
                keep.append(i)
            else:
                log.debug("frame %d: track %d merged into an older track", n, tracks[i].id)
        return [tracks[i] for i in sorted(keep)]

    def _next_roi(self, t: _Track) -> np.ndarray:
        return self._hysteresis_roi(t.face.landmarks, t.roi)

    def _hysteresis_roi(self, landmarks: np.ndarray, prev_roi: np.ndarray) -> np.ndarray:
        """Landmark crop policy, keeping ``prev_roi`` while the new roi is within tolerance."""
        # float32-exact, like Face.roi_box, so a kept roi reproduces its face bit for bit
        roi = _f32(roi_from_landmarks(landmarks))
        if self.roi_tolerance > 0:
            side = prev_roi[2] - prev_roi[0]
            if side > 0 and np.abs(roi - prev_roi).max() <= self.roi_tolerance * side:
                return prev_roi
        return roi

    def _settle(self, img: np.ndarray, faces: list[Face]) -> list[Face]:
        """Re-crop new faces from their landmarks until the crop region stops moving (at most
        ``init_iterations`` passes), so that tracking starts at its fixed point: a still face
        then gives identical results from its first frame on."""
        faces = list(faces)
        rois = [np.asarray(f.roi_box, np.float64) for f in faces]
        for _ in range(self.init_iterations):
            new = [self._hysteresis_roi(f.landmarks, r) for f, r in zip(faces, rois, strict=True)]
            todo = [i for i in range(len(faces)) if new[i] is not rois[i]]
            if not todo:
                break
            redo = self.aligner.align_rois(img, np.stack([new[i] for i in todo]),
                                           dense=self._dense_in_step)
            for i, f in zip(todo, redo, strict=True):
                faces[i], rois[i] = f, new[i]
        return faces

    def _plausible(self, f: Face, prev: Face, w: int, h: int) -> bool:
        lm = f.landmarks
        if not np.all(np.isfinite(lm)):
            return False
        bw, bh = float(np.ptp(lm[:, 0])), float(np.ptp(lm[:, 1]))
        size = math.sqrt(max(bw * bh, 0.0))
        if size < self.min_face_size:
            return False
        pl = prev.landmarks
        psize = math.sqrt(max(float(np.ptp(pl[:, 0]) * np.ptp(pl[:, 1])), 1e-9))
        if not (1.0 / self.max_size_change <= size / psize <= self.max_size_change):
            return False
        inside = (lm[:, 0] >= 0) & (lm[:, 0] <= w - 1) & (lm[:, 1] >= 0) & (lm[:, 1] <= h - 1)
        return float(inside.mean()) >= self.min_inside

    def _detect(self, img: np.ndarray, n: int) -> None:
        self._since_detect = 0
        self.stats["detections"] += 1
        dets = np.asarray(self.aligner.detect(img), np.float32).reshape(-1, 5)
        det_rois = np.array([roi_from_box(d) for d in dets]).reshape(-1, 4)
        free = np.ones(len(dets), bool)
        if self._tracks and len(dets):
            ov = box_iou(np.stack([t.roi for t in self._tracks]), det_rois)
            for i, t in enumerate(self._tracks):
                hit = ov[i] >= self.iou_threshold
                if hit.any():
                    t.unconfirmed = 0
                    t.score = float(dets[hit, 4].max())
                else:
                    t.unconfirmed += 1
                free &= ~hit
        else:
            for t in self._tracks:
                t.unconfirmed += 1
        if self.max_unconfirmed > 0:
            keep = [t for t in self._tracks if t.unconfirmed < self.max_unconfirmed]
            for t in self._tracks:
                if t.unconfirmed >= self.max_unconfirmed:
                    log.debug("frame %d: track %d not confirmed by the detector, dropped", n, t.id)
                    self._lost.append(t)
            self._tracks = keep
        idx = np.flatnonzero(free)
        if self.max_faces is not None:
            idx = idx[: max(self.max_faces - len(self._tracks), 0)]
        if idx.size == 0:
            return
        al = self.aligner
        first = al.align_rois(img, det_rois[idx], dense=False, boxes=dets[idx])
        # the landmark re-crop of the official tracker (as FaceAligner.refine), with float32-exact
        # rois so that a kept roi reproduces its face exactly
        rois = np.stack([_f32(roi_from_landmarks(f.landmarks)) for f in first])
        faces = self._settle(img, al.align_rois(img, rois, dense=self._dense_in_step))
        lost_rois = np.stack([t.roi for t in self._lost]) if self._lost else np.zeros((0, 4))
        for j, f in zip(idx, faces, strict=True):
            tid = None
            if len(lost_rois):
                ov = box_iou(det_rois[j][None], lost_rois)[0]
                k = int(np.argmax(ov))
                if ov[k] >= self.iou_threshold:
                    tid = self._lost[k].id
                    self._lost.pop(k)
                    lost_rois = np.delete(lost_rois, k, axis=0)
            if tid is None:
                tid = self._next_id
                self._next_id += 1
                self.stats["new_tracks"] += 1
            roi = np.asarray(f.roi_box, np.float64)
            self._tracks.append(_Track(tid, f, roi, float(dets[j, 4]), n))


# =============================================================================================
# Overlays
# =============================================================================================

# iBUG 68-point groups drawn as polylines: (start, end, closed)
