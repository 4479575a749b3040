"""Video and webcam: frame sources, a multi-face tracker with identities, smoothing, overlays and
per-frame JSON Lines.

Modes (as MediaPipe's): *image* mode is :class:`tddfa.pipeline.FaceAligner` (every image on its
own); *video* mode is :class:`VideoAligner`, whose calls carry timestamps in milliseconds and whose
faces carry a ``track_id``.

    >>> from tddfa.video import VideoAligner, open_video
    >>> va = VideoAligner(smoothing="centered")
    >>> with open_video("talk.mp4") as src:
    ...     for result in va.track(src):          # FrameResult per readable frame
    ...         for face in result.faces:
    ...             face.track_id, face.landmarks  # int, (68, 3) image pixels

Tracking (3DDFA_V2's landmark crop policy): faces are detected on the first frame; each tracked
face is cropped in the next frame from its previous landmarks (all faces of a frame in one
batch). A track is declared lost when its landmarks become implausible (not finite, face smaller
than ``min_face_size``, size jump beyond ``max_size_change``, or most landmarks outside the frame);
the frame is then re-detected, as it is every ``redetect_every`` frames to pick up new faces.
Identities follow box overlap (IoU of the square crop regions): detections overlapping a live
track are that track; detections overlapping a recently lost track revive its id; others open new
tracks. A crop region that moved less than ``roi_tolerance`` of its side is kept as it was, so a
still face gives bit-identical results frame after frame.

Decoding note: MP4/MOV edit lists are ignored (``ignore_editlist``), so every coded frame is
returned, including frames an edit list would hide from a player (the sample ``obama.mp4`` has
158 coded frames, of which its edit list shows the last 55).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .atomic import AtomicOutput
from .crop import roi_from_box, roi_from_landmarks
from .detection import box_iou
from .errors import InputError, TddfaError, require
from .results import Face
from .smoothing import CausalFaceSmoother, CenteredFaceSmoother, SmoothingConfig

if TYPE_CHECKING:
    from .morphable_model import MorphableModel
    from .pipeline import FaceAligner

__all__ = [
    "Frame",
    "FrameResult",
    "VideoSource",
    "OpenCVFileSource",
    "PyAVFileSource",
    "CameraSource",
    "ArraySource",
    "open_video",
    "open_camera",
    "VideoAligner",
    "draw_landmarks",
    "draw_overlay",
    "OVERLAYS",
    "VideoWriter",
    "JsonlWriter",
    "frame_record",
    "add_parser",
    "run",
]

log = logging.getLogger(__name__)

OVERLAYS = ("sparse", "mesh", "dense", "pose", "none")
_RECONSTRUCT_LOCK = threading.Lock()


# =============================================================================================
# Frame sources
# =============================================================================================


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` (0-based position in the stream), ``timestamp_ms`` and the
    ``(H, W, 3)`` uint8 BGR ``image``."""

    index: int
    timestamp_ms: float
    image: np.ndarray


class VideoSource:
    """Base of all frame sources: iterate to get :class:`Frame` objects; use as a context manager.

    Attributes:
        name: file path or ``"camera:N"``.
        fps: frames per second reported by the source (``25.0`` when unknown).
        width, height: frame size in pixels.
        frame_count: number of frames announced by the container (``None`` if unknown / live).
        live: ``True`` for cameras.
        skipped: indices of frames that could not be decoded and were skipped.
    """

    name: str = ""
    fps: float = 25.0
    width: int = 0
    height: int = 0
    frame_count: int | None = None
    live: bool = False

    def __init__(self) -> None:
        self.skipped: list[int] = []

    def frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def close(self) -> None:
        """Release the underlying decoder or device."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _timestamp(self, ms: float | None, index: int, last_ms: float | None) -> float:
        """The decoder's presentation time (ms) if usable, else ``index / fps``; kept increasing."""
        if ms is None or not math.isfinite(ms) or ms < 0:
            ms = index * 1000.0 / self.fps
        if last_ms is not None and ms <= last_ms:
            ms = last_ms + 1000.0 / self.fps
        return float(ms)

    def _skip(self, index: int, why: str) -> None:
        self.skipped.append(index)
        log.warning("%s: frame %d unreadable (%s), skipped", self.name, index, why)


@contextlib.contextmanager
def _ffmpeg_options(options: str):
    """Temporarily set ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (read by OpenCV when a file is opened)."""
    key = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
    old = os.environ.get(key)
    os.environ[key] = options if not old else f"{old}|{options}"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such video file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), expected a video")


class OpenCVFileSource(VideoSource):
    """Frames of a video file decoded by OpenCV's FFmpeg backend.

    Unreadable frames are skipped and logged (their indices land in :attr:`skipped` and are not
    reused, so later indices do not shift). Timestamps are the frames' presentation times.
    Raises :class:`InputError` when the file cannot be opened.
    """

    max_consecutive_failures = 50

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        _check_file(self.path)
        self.name = str(self.path)
        with _ffmpeg_options("ignore_editlist;1"):
            self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise InputError(
                f"{self.path}: OpenCV could not open it as a video "
                f"({self.path.stat().st_size} bytes; corrupt, truncated or not a video)"
            )
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 25.0
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = n if n > 0 else None

    def frames(self) -> Iterator[Frame]:
        cap = self._cap
        nxt, got_any, last_ms = 0, False, None
        failed: list[int] = []  # failed reads, confirmed as skipped frames by a later success
        while True:
            ok, img = cap.read()
            if not ok or img is None:
                more = self.frame_count is not None and nxt + len(failed) < self.frame_count
                if more and len(failed) < self.max_consecutive_failures:
                    failed.append(nxt + len(failed))
                    continue
                break  # trailing failures are the end of the stream, not lost frames
            got_any = True
            for k in failed:
                self._skip(k, "decoder returned no picture")
            nxt += len(failed)
            failed.clear()
            last_ms = self._timestamp(cap.get(cv2.CAP_PROP_POS_MSEC), nxt, last_ms)
            yield Frame(nxt, last_ms, img)
            nxt += 1
        if not got_any:
            raise InputError(f"{self.name}: opened, but no frame could be decoded")

    def close(self) -> None:
        self._cap.release()


class PyAVFileSource(VideoSource):
    """Frames of a video file decoded by PyAV (the ``video`` extra), for files OpenCV cannot read.

    Packets that fail to decode are skipped and logged.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        av = require("av", "video")
        self._av = av
        self.path = Path(path)
        _check_file(self.path)
        self.name = str(self.path)
        try:
            self._container = av.open(str(self.path), options={"ignore_editlist": "1"})
        except Exception as exc:  # av raises many FFmpeg error types
            raise InputError(f"{self.path}: PyAV could not open it as a video ({exc})") from exc
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.path}: no video stream (found "
                             f"{len(self._container.streams)} other streams)")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        self.width = int(self._stream.codec_context.width)
        self.height = int(self._stream.codec_context.height)
        self.frame_count = int(self._stream.frames) or None

    def frames(self) -> Iterator[Frame]:
        st = self._stream
        tb = float(st.time_base) if st.time_base else 1.0 / self.fps
        start = st.start_time
        base = start if start is not None else 0
        nxt, got_any, last_ms = 0, False, None
        for packet in self._container.demux(st):
            try:
                decoded = packet.decode()
            except self._av.error.FFmpegError as exc:
                if packet.size:
                    self._skip(nxt, f"{type(exc).__name__}")
                    nxt += 1
                continue
            for fr in decoded:
                ms = None if fr.pts is None else (fr.pts - base) * tb * 1000.0
                last_ms = self._timestamp(ms, nxt, last_ms)
                got_any = True
                yield Frame(nxt, last_ms, fr.to_ndarray(format="bgr24"))
                nxt += 1
        if not got_any:
            raise InputError(f"{self.name}: opened, but no frame could be decoded")

    def close(self) -> None:
        self._container.close()


class CameraSource(VideoSource):
    """Live frames from camera ``index`` (OpenCV). Timestamps are milliseconds since opening.

    Raises :class:`InputError` when the camera cannot be opened.
    """

    live = True
    max_consecutive_failures = 30

    def __init__(self, index: int = 0, width: int | None = None, height: int | None = None) -> None:
        super().__init__()
        self.index = int(index)
        self.name = f"camera:{self.index}"
        self._cap = cv2.VideoCapture(self.index)
        if not self._cap.isOpened():
            self._cap.release()
            raise InputError(
                f"camera {self.index} could not be opened (expected a connected, free video "
                f"device such as /dev/video{self.index}; none answered)"
            )
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 240 else 30.0
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def frames(self) -> Iterator[Frame]:
        t0 = time.monotonic()
        idx, fails = 0, 0
        while True:
            ok, img = self._cap.read()
            if not ok or img is None:
                fails += 1
                if fails > self.max_consecutive_failures:
                    log.error("%s: no picture for %d reads in a row (unplugged?), stopping",
                              self.name, fails)
                    return
                continue
            if fails:
                self.skipped.extend(range(idx, idx + fails))
                log.warning("%s: %d read(s) without a picture before frame %d, skipped",
                            self.name, fails, idx + fails)
                idx += fails
                fails = 0
            yield Frame(idx, (time.monotonic() - t0) * 1000.0, img)
            idx += 1

    def close(self) -> None:
        self._cap.release()


class ArraySource(VideoSource):
    """Frames from an in-memory sequence of ``(H, W, 3)`` uint8 BGR arrays (tests, synthesis)."""

    def __init__(self, images: Iterable[np.ndarray], fps: float = 25.0, name: str = "<arrays>") -> None:
        super().__init__()
        self._images = list(images)
        if not self._images:
            raise InputError("ArraySource needs at least one image, got none")
        self.name, self.fps = name, float(fps)
        self.height, self.width = self._images[0].shape[:2]
        self.frame_count = len(self._images)

    def frames(self) -> Iterator[Frame]:
        for i, img in enumerate(self._images):
            yield Frame(i, i * 1000.0 / self.fps, img)


def open_video(path: str | os.PathLike, backend: str = "auto") -> VideoSource:
    """Open a video file: OpenCV first, PyAV when OpenCV cannot (``backend="auto"``).

    Args:
        path: any file FFmpeg reads (mp4, avi, mkv, mov, webm, ...).
        backend: ``"auto"``, ``"opencv"`` or ``"pyav"``.

    Raises:
        InputError: missing, empty, or undecodable file (message names the reason).
    """
    if backend not in ("auto", "opencv", "pyav"):
        raise InputError(f"backend must be 'auto', 'opencv' or 'pyav', got {backend!r}")
    p = Path(path)
    _check_file(p)
    if backend == "pyav":
        return PyAVFileSource(p)
    try:
        return OpenCVFileSource(p)
    except InputError as exc:
        if backend == "opencv":
            raise
        try:
            return PyAVFileSource(p)
        except InputError as exc2:
            raise InputError(f"{exc}; {exc2}") from exc2
        except TddfaError:  # PyAV not installed: report OpenCV's reason
            raise exc from None


def open_camera(index: int = 0, width: int | None = None, height: int | None = None) -> CameraSource:
    """Open a live camera by index (``/dev/videoN`` on Linux)."""
    return CameraSource(index, width, height)


class _Prefetch:
    """Run a frame iterator in a background thread (decoding overlaps processing; OpenCV and
    PyAV release the GIL while decoding). Exceptions are re-raised in the consumer."""

    _END = object()

    def __init__(self, it: Iterator[Any], depth: int = 4) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(it,), daemon=True)
        self._thread.start()

    def _work(self, it: Iterator[Any]) -> None:
        try:
            for item in it:
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._q.put(self._END)
        except BaseException as exc:  # handed to the consumer
            self._q.put(exc)

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item = self._q.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=2.0)


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
            from .pipeline import FaceAligner

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
        return _add_vertices(faces, self.aligner.morphable_model)

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
        pre = _Prefetch(iter(source), depth) if prefetch else None
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
    try:
        from . import render as _render
    except ImportError as exc:
        raise TddfaError(f"overlay {kind!r} needs tddfa.render, which is not available ({exc})") from exc
    if kind in ("mesh", "dense"):
        if morphable_model is None and (triangles is None or any(f.vertices is None for f in faces)):
            from .morphable_model import load_morphable_model

            morphable_model = load_morphable_model()
        if triangles is None:
            triangles = morphable_model.tri
        faces = _add_vertices(faces, morphable_model)
    out = _render.render(kind, image, faces, triangles)
    if kind != "pose":
        # keep the identities visible on shaded overlays
        for f in faces:
            if f.track_id >= 0:
                pts = f.landmarks
                cv2.putText(out, f"#{f.track_id}", (int(pts[:, 0].min()), max(int(pts[:, 1].min()) - 8, 12)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.6 * max(out.shape[:2]) / 720.0, _color(f.track_id),
                            2, cv2.LINE_AA)
    return out


def _add_vertices(faces: list[Face], morphable_model: MorphableModel) -> list[Face]:
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


# =============================================================================================
# Writers
# =============================================================================================


def _temp_beside(path: Path) -> Path:
    """A fresh temporary file next to ``path`` (same extension, so codecs pick the container),
    with the permissions a plainly created file would get (mkstemp makes it owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


class VideoWriter(AtomicOutput):
    """Write BGR frames to a video file, atomically (temporary file renamed on :meth:`close`).

    Drawing (``render``) and encoding run in a background thread, overlapping the caller's work.
    The codec follows the extension: ``.mp4``/``.mov`` → MPEG-4 Part 2 (``mp4v``), ``.avi`` →
    MJPG, ``.mkv`` → XVID, else ``mp4v``.

    Args:
        path: output file.
        fps: frame rate to record (use the source's to keep its timing).
        size: ``(width, height)`` pixels.
        fourcc: four-character codec code overriding the default.
        render: optional ``render(image, faces) -> image`` applied (in the background thread) to
            frames written with faces, e.g. ``lambda im, f: draw_overlay("mesh", im, f)``. It must
            not modify ``image`` in place.
        render_workers: threads drawing frames concurrently (frames are still written in order;
            0 = draw in the encoding thread). The tddfa renderers release the GIL.
    """

    _FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int],
                 fourcc: str | None = None,
                 render: Callable[[np.ndarray, list[Face]], np.ndarray] | None = None,
                 render_workers: int = 2) -> None:
        self.path = Path(path)
        self.render = render
        self.size = (int(size[0]), int(size[1]))
        code = fourcc or self._FOURCC.get(self.path.suffix.lower(), "mp4v")
        self._tmp = _temp_beside(self.path)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*code), float(fps), self.size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"{self.path}: cannot write a video with codec {code!r} at {fps} fps, "
                             f"size {self.size} (try another extension: .mp4, .avi, .mkv)")
        self.frames = 0
        self._pool = None
        if render is not None and render_workers > 0:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(render_workers, thread_name_prefix="tddfa-render")
        self._q: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _draw(self, img: np.ndarray, faces: list[Face] | None) -> np.ndarray:
        return img if faces is None or self.render is None else self.render(img, faces)

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                img = item.result() if self._pool is not None else self._draw(*item)
                self._writer.write(img)
            except BaseException as exc:  # reported by write()/close()
                self._error = exc

    def write(self, image: np.ndarray, faces: list[Face] | None = None) -> None:
        """Queue one ``(H, W, 3)`` uint8 BGR frame of the writer's size (drawn with ``render``
        when ``faces`` are given)."""
        if self._error is not None:
            raise TddfaError(f"{self.path}: writing failed: {self._error}")
        if image.shape[1::-1] != self.size:
            raise InputError(f"{self.path}: frame size {image.shape[1::-1]} differs from the "
                             f"video's {self.size}")
        if self._pool is not None:
            self._q.put(self._pool.submit(self._draw, image, faces))
        else:
            self._q.put((image, faces))
        self.frames += 1

    def _finish(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._writer.release()

    def close(self) -> Path:
        """Finish encoding and move the file into place. Returns the final path."""
        self._finish()
        if self._error is not None:
            self._tmp.unlink(missing_ok=True)
            if isinstance(self._error, TddfaError):
                raise self._error
            raise TddfaError(f"{self.path}: writing failed: {self._error}")
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Stop and delete the partial output."""
        self._finish()
        self._tmp.unlink(missing_ok=True)



def _r(a: np.ndarray, nd: int) -> list:
    return np.round(np.asarray(a, np.float64), nd).tolist()


def frame_record(result: FrameResult) -> dict[str, Any]:
    """One JSON Lines record: ``frame``, ``timestamp_ms`` and per face ``id``, ``box`` (x1, y1, x2,
    y2 px), ``score``, ``roi_box``, ``landmarks`` (68 × [x, y, z] px), ``pose`` (yaw, pitch, roll
    degrees) and ``params`` (62, de-normalised, 7 significant digits)."""
    faces = []
    for f in result.faces:
        faces.append({
            "id": int(f.track_id),
            "box": _r(f.box, 2),
            "score": round(float(f.score), 4),
            "roi_box": _r(f.roi_box, 2),
            "landmarks": _r(f.landmarks, 2),
            "pose": {"yaw": round(f.pose.yaw, 3), "pitch": round(f.pose.pitch, 3),
                     "roll": round(f.pose.roll, 3)},
            "params": [float(f"{v:.7g}") for v in np.asarray(f.params, np.float64).tolist()],
        })
    return {"frame": int(result.index), "timestamp_ms": round(float(result.timestamp_ms), 3),
            "faces": faces}


class JsonlWriter(AtomicOutput):
    """Per-frame JSON Lines, written to a temporary file and renamed into place on :meth:`close`
    (a reader never sees a half-written file; :meth:`abort` deletes the partial file)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tmp = _temp_beside(self.path)
        self._f = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in close/abort
        self.records = 0

    def write(self, result: FrameResult | dict[str, Any]) -> None:
        rec = result if isinstance(result, dict) else frame_record(result)
        self._f.write(json.dumps(rec, separators=(",", ":")))
        self._f.write("\n")
        self.records += 1

    def close(self) -> Path:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)



# =============================================================================================
# Command line: tddfa video
# =============================================================================================


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``video`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "video", help="track faces in a video file or a live camera",
        description="Track and align faces in a video file or camera stream; write an overlay "
                    "video and/or per-frame JSON Lines.",
    )
    p.add_argument("input", nargs="?", help="video file (anything FFmpeg reads)")
    p.add_argument("--camera", type=int, metavar="N", help="read the live camera N instead of a file")
    p.add_argument("-o", "--output", help="overlay video to write (.mp4, .avi, .mkv)")
    p.add_argument("--jsonl", help="per-frame JSON Lines to write")
    p.add_argument("--overlay", choices=OVERLAYS, default="sparse", help="overlay drawn in -o (sparse)")
    p.add_argument("--model", default="mb05", help="regressor (mb05)")
    p.add_argument("--checkpoint", help="regressor checkpoint or .onnx to use instead")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detector threshold (0.5)")
    p.add_argument("--redetect-every", type=int, default=30, metavar="N",
                   help="run the detector every N frames to find new faces; 0 = only when lost (30)")
    p.add_argument("--max-faces", type=int, help="track at most this many faces")
    p.add_argument("--smooth", choices=("auto", "none", "causal", "centered"), default="auto",
                   help="smoothing: causal One-Euro, centred Gaussian window, or none; auto = "
                        "centred for files, causal for cameras")
    p.add_argument("--smooth-target", choices=("params", "landmarks"), default="params",
                   help="filter the 62 parameters in the image frame (landmarks, pose and mesh "
                        "stay consistent) or the landmarks only (params)")
    p.add_argument("--min-cutoff", type=float, default=1.0, help="One-Euro cut-off at rest, Hz (1.0)")
    p.add_argument("--beta", type=float, default=0.05, help="One-Euro speed coefficient, s/px (0.05)")
    p.add_argument("--window", type=int, default=7, help="centred window, frames, odd (7)")
    p.add_argument("--sigma", type=float, help="centred Gaussian sigma, frames (window/4)")
    p.add_argument("--backend", choices=("auto", "opencv", "pyav"), default="auto",
                   help="file decoder (auto: OpenCV, PyAV if OpenCV fails)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (1)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``tddfa video``; returns 0 on success. Bad inputs raise :class:`TddfaError` subclasses
    with a one-line message (``tddfa.cli.main`` prints it and exits with 1)."""
    if (args.input is None) == (args.camera is None):
        raise InputError("give either a video file or --camera N (exactly one)")
    live = args.camera is not None
    mode = args.smooth if args.smooth != "auto" else ("causal" if live else "centered")
    smoothing = SmoothingConfig(mode=mode, target=args.smooth_target, min_cutoff=args.min_cutoff,
                                beta=args.beta, window=args.window, sigma=args.sigma)
    src = open_camera(args.camera) if live else open_video(args.input, backend=args.backend)
    with src:
        va = VideoAligner(model=args.model, checkpoint=args.checkpoint,
                          score_threshold=args.score_threshold, redetect_every=args.redetect_every,
                          max_faces=args.max_faces, smoothing=smoothing, threads=args.threads)
        if args.output is None and args.jsonl is None:
            log.warning("no -o/--output or --jsonl given: results are computed but not saved")
        writer = None
        if args.output:
            mm = va.aligner.morphable_model
            kind = args.overlay
            writer = VideoWriter(args.output, src.fps, (src.width, src.height),
                                 render=lambda im, faces: draw_overlay(kind, im, faces, mm.tri, mm))
        jsonl = JsonlWriter(args.jsonl) if args.jsonl else None
        ok = False
        n = 0
        ids: set[int] = set()
        t0 = time.perf_counter()
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            total = src.frame_count
            if args.max_frames is not None:
                total = min(total or args.max_frames, args.max_frames)
            bar = tqdm(total=total, unit="frame", desc=Path(src.name).name, dynamic_ncols=True)
        try:
            for res in va.track(src, keep_images=writer is not None):
                if writer is not None:
                    writer.write(res.image, res.faces)
                if jsonl is not None:
                    jsonl.write(res)
                ids.update(f.track_id for f in res.faces)
                n += 1
                if bar is not None:
                    bar.update(1)
                if args.max_frames is not None and n >= args.max_frames:
                    break
            ok = True
        except KeyboardInterrupt:
            ok = live  # stopping a camera with Ctrl-C is the normal way out
            if not ok:
                raise
        finally:
            if bar is not None:
                bar.close()
            for w in (writer, jsonl):
                if w is None:
                    continue
                if ok:
                    w.close()
                else:
                    w.abort()
        dt = time.perf_counter() - t0
        log.info("%s: %d frames in %.2f s (%.1f frames/s), %d face id(s), %d frame(s) skipped",
                 src.name, n, dt, n / dt if dt > 0 else float("nan"), len(ids), len(src.skipped))
        if src.skipped:
            log.warning("%s: unreadable frames skipped: %s", src.name, src.skipped[:20])
        if n == 0:
            raise InputError(f"{src.name}: no frame could be read")
    return 0
