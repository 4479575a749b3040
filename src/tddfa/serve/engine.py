"""The model side of the server: one :class:`~tddfa.pipeline.FaceAligner` per process, a
bounded thread pool for inference (off the event loop) and live-mode sessions.

Admission is bounded: at most ``workers`` jobs run and ``queue`` more wait. A request that finds
every slot taken is refused at once (:class:`Busy`, HTTP 503 with ``Retry-After``) instead of
piling up bodies and decoded images in memory.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["ServeConfig", "Engine", "Busy", "Slot"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ServeConfig:
    """Server settings (the ``tddfa serve`` options).

    Attributes:
        model: regressor name (``mb05``). threshold: detector score threshold.
        min_face: smallest face the detector reports, sqrt(w·h) of the landmark box, pixels
            (0 = no limit; larger is faster on large images: ``FaceAligner(min_face_size=)``).
        spin: how ONNX Runtime's idle threads wait (:func:`tddfa.models.runtime.spin_config`):
            ``"off"`` by default, because a loaded server decodes uploads and runs requests side
            by side: with 2 workers and 8 clients it served 64.0-68.2 images/s against
            50.1-56.2 with ``"run"`` (``python benchmarks/bench_serve.py --requests 400
            --workers 2 --spin off|run``, four runs each way, 2026-12-04; with one worker the
            two runs each way were mixed). ``tddfa serve --spin``.
        threads: ONNX Runtime threads per session (0 = auto).
        workers: inference threads. queue: requests allowed to wait for a worker.
        token: bearer token every ``/v1`` call must carry (``None`` = no authentication).
        max_upload_mb: largest request body, MiB. max_pixels: largest declared image, pixels.
        cors: allowed browser origins (empty = CORS off).
        max_sessions: live-mode sessions kept (least recently used dropped first).
        session_ttl_s: a live session idle for this long is dropped.
    """

    model: str = "mb05"
    threshold: float = 0.5
    min_face: float = 0.0
    spin: str = "off"
    threads: int = 0
    workers: int = 1
    queue: int = 16
    token: str | None = None
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    cors: tuple[str, ...] = ()
    max_sessions: int = 16
    session_ttl_s: float = 120.0

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class Busy(Exception):
    """Every worker and queue slot is taken; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"server busy, retry after {retry_after} s")
        self.retry_after = retry_after


class Slot:
    """One admitted request's place (running or waiting); release it exactly once."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._open = True
        self.handed_off = False        # True once a job owns the slot (it releases it when done)

    def release(self) -> None:
        if self._open:
            self._open = False
            self._engine._release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class _Session:
    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.lock = threading.Lock()
        self.used = time.monotonic()


class Engine:
    """Models, the inference pool and live sessions of one server process.

    Args:
        config: :class:`ServeConfig`.
        aligner: an existing FaceAligner (tests); built from ``config`` when ``None``.
    """

    def __init__(self, config: ServeConfig, aligner: Any = None):
        if config.workers < 1 or config.queue < 0:
            raise ValueError(f"workers must be >= 1 and queue >= 0, got {config.workers}, {config.queue}")
        self.config = config
        if aligner is None:
            from tddfa.pipeline.aligner import FaceAligner

            aligner = FaceAligner(config.model, score_threshold=config.threshold,
                                  threads=config.threads, min_face_size=config.min_face,
                                  spin=config.spin)
        self.aligner = aligner
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="tddfa-infer")
        self._admitted = 0             # running + waiting (guarded by _lock)
        self._lock = threading.Lock()
        self._mean_s = 0.2             # running mean job time, for Retry-After
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._sessions_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Build the detector and the morphable model now, not on the first request."""
        import numpy as np

        t = time.perf_counter()
        self.aligner.align(np.zeros((64, 64, 3), np.uint8))
        _ = self.aligner.morphable_model.tri
        log.info("models ready in %.1f s", time.perf_counter() - t)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- admission ----------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.config.workers + self.config.queue

    @property
    def admitted(self) -> int:
        """Requests running or waiting now."""
        return self._admitted

    def admit(self) -> Slot:
        """Reserve a place, or raise :class:`Busy` when all ``workers + queue`` are taken."""
        with self._lock:
            if self._admitted >= self.capacity:
                waiting = max(self._admitted - self.config.workers + 1, 1)
                raise Busy(max(1, math.ceil(waiting * self._mean_s / self.config.workers)))
            self._admitted += 1
        return Slot(self)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    async def run(self, slot: Slot, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the inference pool. The job takes over ``slot`` and releases it
        when it ends, so a client that disconnects cannot free a place its job still uses."""

        def timed() -> T:
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self._mean_s = 0.9 * self._mean_s + 0.1 * (time.perf_counter() - t)

        slot.handed_off = True
        try:
            fut = self._pool.submit(timed)
        except RuntimeError:            # pool shut down
            slot.release()
            raise
        fut.add_done_callback(lambda _: slot.release())
        return await asyncio.wrap_future(fut)

    # -- live mode ----------------------------------------------------------------------------
    def session(self, key: str) -> _Session:
        """The live-mode tracker of ``key`` (created on first use; idle ones expire)."""
        from tddfa.video.tracker import VideoAligner

        now = time.monotonic()
        with self._sessions_lock:
            for k in [k for k, s in self._sessions.items() if now - s.used > self.config.session_ttl_s]:
                del self._sessions[k]
            s = self._sessions.get(key)
            if s is None:
                while len(self._sessions) >= self.config.max_sessions:
                    self._sessions.popitem(last=False)
                # overlap=False: no worker threads per session; the server's own pool bounds
                # how much runs at once
                s = _Session(VideoAligner(self.aligner, smoothing="causal", overlap=False))
                self._sessions[key] = s
            self._sessions.move_to_end(key)
            s.used = now
            return s

    @property
    def n_sessions(self) -> int:
        return len(self._sessions)
