"""Video input and output: frame sources (files through OpenCV or PyAV, cameras, arrays), a read-ahead
prefetcher and an atomic video writer."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from tddfa.errors import InputError, TddfaError, require
from tddfa.io.atomic import AtomicOutput

if TYPE_CHECKING:
    from tddfa.face.results import Face
    pass


log = logging.getLogger(__name__)

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
    import stat

    if not path.exists():
        raise InputError(f"{path}: no such video file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a video file")
    if not stat.S_ISREG(path.stat().st_mode):
        raise InputError(f"{path}: not a regular file (a FIFO or device), expected a video file")
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
        ctx = self._stream.codec_context  # None when FFmpeg knows no decoder for the stream
        w, h = (ctx.width, ctx.height) if ctx is not None else (0, 0)
        if not w or not h:
            self._container.close()
            raise InputError(f"{self.path}: the video stream has no decoder or no frame size "
                             "(corrupt header or unsupported codec)")
        self.width, self.height = int(w), int(h)
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
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


def open_video(path: str | os.PathLike, backend: str = "auto", *,
               max_pixels: int | None = None) -> VideoSource:
    """Open a video file: OpenCV first, PyAV when OpenCV cannot (``backend="auto"``).

    Args:
        path: any file FFmpeg reads (mp4, avi, mkv, mov, webm, ...).
        backend: ``"auto"``, ``"opencv"`` or ``"pyav"``.
        max_pixels: refuse frames larger than this (width × height from the container, before
            any frame is decoded; default :data:`tddfa.io.images.MAX_PIXELS`, 0 = no limit).

    Raises:
        InputError: missing, empty, not a regular file, undecodable, or frames too large.
    """
    src = _open_video(path, backend)
    from tddfa.io.images import check_pixels

    try:
        check_pixels(src.width, src.height, max_pixels, src.name)
    except InputError:
        src.close()
        raise
    return src


def _open_video(path: str | os.PathLike, backend: str) -> VideoSource:
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


class Prefetch:
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
# Writers
# =============================================================================================


def temp_beside(path: Path) -> Path:
    """A fresh temporary file next to ``path`` (same extension, so codecs pick the container),
    with the permissions a plainly created file would get (mkstemp makes it owner-only)."""
    from tddfa.io.atomic import temp_file

    fd, tmp = temp_file(path, f".tmp{path.suffix}")
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
        self._tmp = temp_beside(self.path)
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
