"""Temporal smoothing of tracked faces: causal One-Euro filtering and centred-window averaging.

Why One-Euro rather than Kalman: face motion in ordinary video has no reliable dynamic model
(a talking head stops, starts and turns at will), and a Kalman filter needs a process model plus
process/measurement covariances for each of the 62 parameters. The One-Euro filter
(Casiez et al., CHI 2012) is a first-order low-pass whose cut-off frequency rises with the
measured speed: at rest it removes jitter strongly, during fast motion it lags little. It has two
intuitive knobs (``min_cutoff`` in Hz: smoothing at rest; ``beta`` in s/px: how quickly the cut-off
opens with speed), needs only the timestamps, and works online, which is what live input needs.

For files, where future frames are available, a centred (zero-phase) Gaussian window removes
jitter without lag; it is run with a bounded delay of ``window // 2`` frames.

Both filters work on one vector per face. Two targets are offered:

* ``"params"`` (default): the 62 parameters expressed in the *image* frame (see
  :func:`params_to_image`), so that the frame-to-frame changes of the crop box do not show up as
  motion; landmarks, pose and the dense mesh are then recomputed from the smoothed parameters and
  stay mutually consistent.
* ``"landmarks"``: the ``(68, 3)`` image-space landmarks (and the dense vertices if present);
  parameters and pose are left as measured.

All faces of one track share one cut-off (driven by the mean 2-D landmark speed in px/s), so a
face is smoothed as a whole rather than each number on its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tddfa.errors import InputError
from tddfa.face.crop import INPUT_SIZE
from tddfa.face.pose import pose_from_params
from tddfa.face.results import Face, Pose

if TYPE_CHECKING:
    from tddfa.face.morphable_model import MorphableModel

__all__ = [
    "SmoothingConfig",
    "OneEuroFilter",
    "centered_smooth",
    "gaussian_weights",
    "params_to_image",
    "params_from_image",
    "CausalFaceSmoother",
    "CenteredFaceSmoother",
    "make_face_smoother",
]

MODES = ("none", "causal", "centered")
TARGETS = ("params", "landmarks")


@dataclass(frozen=True)
class SmoothingConfig:
    """How tracked faces are smoothed.

    Attributes:
        mode: ``"none"``, ``"causal"`` (One-Euro, online, no delay) or ``"centered"`` (Gaussian
            window centred on each frame, output delayed by ``window // 2`` frames).
        target: ``"params"`` or ``"landmarks"`` (see the module docstring).
        min_cutoff: One-Euro cut-off at rest, Hz. Lower = smoother and more lag.
        beta: One-Euro speed coefficient, s/px: the cut-off grows by ``beta`` Hz per px/s of mean
            landmark speed.
        d_cutoff: cut-off of the speed estimate, Hz.
        window: centred window length in frames (odd, >= 1; 1 = no smoothing).
        sigma: Gaussian standard deviation in frames; ``None`` = ``window / 4``.
    """

    mode: str = "none"
    target: str = "params"
    min_cutoff: float = 1.0
    beta: float = 0.05
    d_cutoff: float = 1.0
    window: int = 7
    sigma: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"smoothing mode must be one of {MODES}, got {self.mode!r}")
        if self.target not in TARGETS:
            raise InputError(f"smoothing target must be one of {TARGETS}, got {self.target!r}")
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise InputError(
                "One-Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got "
                f"min_cutoff={self.min_cutoff}, d_cutoff={self.d_cutoff}, beta={self.beta}"
            )
        if self.window < 1 or self.window % 2 == 0:
            raise InputError(f"centred window must be an odd number >= 1, got {self.window}")
        if self.sigma is not None and self.sigma <= 0:
            raise InputError(f"sigma must be > 0 frames, got {self.sigma}")

    @property
    def half_window(self) -> int:
        """Frames of look-ahead (and delay) of the centred filter."""
        return self.window // 2

    @property
    def effective_sigma(self) -> float:
        return float(self.sigma) if self.sigma is not None else max(self.window / 4.0, 1e-6)


# ---------------------------------------------------------------------------------------------
# Generic filters on arrays
# ---------------------------------------------------------------------------------------------


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass with ``cutoff`` Hz sampled every ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over an array of any fixed shape, element-wise and vectorised.

    Args:
        min_cutoff: cut-off at rest, Hz.
        beta: cut-off increase per unit of speed (units of ``x`` per second), s/unit.
        d_cutoff: cut-off used to low-pass the speed estimate, Hz.
        speed_fn: maps the filtered derivative (same shape as ``x``, units/s) to the speed that
            drives the cut-off (anything broadcastable to ``x``). Default: ``abs`` element-wise.

    Call with ``(x, t)``, ``t`` in seconds (strictly increasing). Identical inputs give bitwise
    identical outputs (the update is ``x̂ + a·(x − x̂)``).
    """

    def __init__(
        self,
        min_cutoff: float = 1.0,
        beta: float = 0.05,
        d_cutoff: float = 1.0,
        speed_fn: Callable[[np.ndarray], np.ndarray | float] | None = None,
    ) -> None:
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.speed_fn = speed_fn
        self.reset()

    def reset(self) -> None:
        """Forget the state; the next sample is passed through unchanged."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter one sample ``x`` (any shape, float) taken at time ``t`` seconds."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        if x.shape != self._x.shape:
            raise InputError(f"OneEuroFilter: sample shape changed from {self._x.shape} to {x.shape}")
        dt = float(t) - self._t
        if not dt > 0:
            raise InputError(f"OneEuroFilter: timestamps must increase, got {t} after {self._t}")
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        speed = np.abs(self._dx) if self.speed_fn is None else self.speed_fn(self._dx)
        a = _alpha(self.min_cutoff + self.beta * np.asarray(speed, dtype=np.float64), dt)
        self._x = self._x + a * (x - self._x)
        self._t = float(t)
        return self._x.copy()


def gaussian_weights(offsets: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian weights for integer frame ``offsets`` ``(K,)`` → ``(K,)`` float64."""
    off = np.asarray(offsets, dtype=np.float64)
    w = np.exp(-0.5 * (off / sigma) ** 2)
    return w / w.sum()


def centered_smooth(
    values: np.ndarray,
    window: int = 7,
    sigma: float | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Zero-phase Gaussian smoothing along axis 0 of a whole sequence (offline).

    Args:
        values: ``(T, ...)`` float array, one sample per frame.
        window: odd window length in frames.
        sigma: Gaussian std in frames (default ``window / 4``).
        valid: optional ``(T,)`` bool; invalid frames neither contribute nor are changed.

    Returns:
        ``(T, ...)`` float64. Near the ends (and gaps) the weights are renormalised over the frames
        that exist. Each output is ``x_t + Σ w_k (x_{t+k} − x_t)``, so a constant sequence is
        returned bitwise unchanged.
    """
    x = np.asarray(values, dtype=np.float64)
    if window < 1 or window % 2 == 0:
        raise InputError(f"window must be an odd number >= 1, got {window}")
    T = x.shape[0]
    ok = np.ones(T, bool) if valid is None else np.asarray(valid, bool).reshape(T)
    half = window // 2
    sig = sigma if sigma is not None else max(window / 4.0, 1e-6)
    flat = x.reshape(T, -1)
    acc = np.zeros_like(flat)
    wsum = np.zeros(T)
    for k in range(-half, half + 1):
        w = math.exp(-0.5 * (k / sig) ** 2)
        lo, hi = max(0, -k), min(T, T - k)  # frames t with t + k inside [0, T)
        if lo >= hi:
            continue
        m = ok[lo:hi] & ok[lo + k : hi + k]
        acc[lo:hi] += (w * m)[:, None] * (flat[lo + k : hi + k] - flat[lo:hi])
        wsum[lo:hi] += w * m
    wsum[wsum == 0] = 1.0
    out = flat + acc / wsum[:, None]
    out[~ok] = flat[~ok]
    return out.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# Parameters in the image frame
# ---------------------------------------------------------------------------------------------


def _crop_to_image_affine(roi_boxes: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal ``D`` ``(B, 3)`` and offset ``o`` ``(B, 3)`` with ``v_img = D·v_crop + o``."""
    rois = np.asarray(roi_boxes, dtype=np.float64).reshape(-1, 4)
    sx = (rois[:, 2] - rois[:, 0]) / size
    sy = (rois[:, 3] - rois[:, 1]) / size
    sz = (sx + sy) / 2.0
    D = np.stack([sx, -sy, sz], axis=1)
    o = np.stack([rois[:, 0] - sx, size * sy + rois[:, 1], -sz], axis=1)
    return D, o


def params_to_image(params: np.ndarray, roi_boxes: np.ndarray) -> np.ndarray:
    """Re-express parameters ``(B, 62)`` (crop frame of ``roi_boxes`` ``(B, 4)``) in image pixels.

    The 3×4 pose block becomes the projection straight into image pixels (x right, y down,
    z scaled like x/y, *before* the per-face min-z shift of :func:`to_image_frame`); shape and
    expression coefficients are unchanged. Returns ``(B, 62)`` float64.
    """
    p = np.array(params, dtype=np.float64).reshape(-1, 62)
    D, o = _crop_to_image_affine(roi_boxes)
    P = p[:, :12].reshape(-1, 3, 4)
    P = P * D[:, :, None]
    P[:, :, 3] += o
    p[:, :12] = P.reshape(-1, 12)
    return p


def params_from_image(params_img: np.ndarray, roi_boxes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`params_to_image` for the given ``roi_boxes`` → ``(B, 62)`` float64."""
    p = np.array(params_img, dtype=np.float64).reshape(-1, 62)
    D, o = _crop_to_image_affine(roi_boxes)
    P = p[:, :12].reshape(-1, 3, 4).copy()
    P[:, :, 3] -= o
    P = P / D[:, :, None]
    p[:, :12] = P.reshape(-1, 12)
    return p


# ---------------------------------------------------------------------------------------------
# Face-level smoothers
# ---------------------------------------------------------------------------------------------

_N_LM = 68 * 3


def _landmark_speed(d: np.ndarray) -> float:
    """Mean 2-D landmark speed (px/s) from the derivative of a face vector (landmarks first)."""
    v = d[:_N_LM].reshape(68, 3)
    return float(np.sqrt(v[:, 0] ** 2 + v[:, 1] ** 2).mean())


class _FaceCodec:
    """Turns a face into the vector that is filtered, and a filtered vector back into a face."""

    def __init__(self, target: str, morphable_model: MorphableModel | None = None) -> None:
        if target == "params" and morphable_model is None:
            raise InputError("smoothing target 'params' needs the morphable model; got None")
        self.target = target
        self.mm = morphable_model

    def encode(self, face: Face) -> np.ndarray:
        lm = np.asarray(face.landmarks, np.float64).reshape(-1)
        if self.target == "params":
            p = params_to_image(face.params[None], face.roi_box[None])[0]
            return np.concatenate([lm, p])
        if face.vertices is not None:
            return np.concatenate([lm, np.asarray(face.vertices, np.float64).reshape(-1)])
        return lm

    def decode(self, face: Face, vec: np.ndarray) -> Face:
        if self.target == "landmarks":
            lm = vec[:_N_LM].reshape(68, 3).astype(np.float32)
            verts = face.vertices
            if verts is not None and vec.size > _N_LM:
                verts = vec[_N_LM:].reshape(-1, 3).astype(np.float32)
            return dataclasses.replace(face, landmarks=lm, vertices=verts)
        params = params_from_image(vec[_N_LM:][None], face.roi_box[None]).astype(np.float32)
        roi = face.roi_box[None]
        lm = self.mm.reconstruct_image(params, roi, dense=False)[0]
        verts = None
        if face.vertices is not None:
            verts = self.mm.reconstruct_image(params, roi, dense=True)[0]
        angles, R, scale, t = pose_from_params(params[0])
        pose = Pose(yaw=float(angles[0]), pitch=float(angles[1]), roll=float(angles[2]),
                    rotation=R, scale=float(scale), translation=t)
        return dataclasses.replace(face, params=params[0], landmarks=lm, vertices=verts, pose=pose)


class CausalFaceSmoother:
    """Online One-Euro smoothing of faces, one filter per ``track_id``.

    Args:
        config: :class:`SmoothingConfig` (``min_cutoff``, ``beta``, ``d_cutoff``, ``target``).
        morphable_model: needed for ``target="params"`` (recomputes landmarks/pose/mesh).
    """

    def __init__(self, config: SmoothingConfig, morphable_model: MorphableModel | None = None) -> None:
        self.config = config
        self._codec = _FaceCodec(config.target, morphable_model)
        self._filters: dict[int, OneEuroFilter] = {}

    def __call__(self, faces: list[Face], timestamp_s: float) -> list[Face]:
        """Smooth the faces of one frame taken at ``timestamp_s`` seconds; forgets absent tracks."""
        out = []
        alive = set()
        for f in faces:
            alive.add(f.track_id)
            filt = self._filters.get(f.track_id)
            if filt is None:
                c = self.config
                filt = OneEuroFilter(c.min_cutoff, c.beta, c.d_cutoff, speed_fn=_landmark_speed)
                self._filters[f.track_id] = filt
            out.append(self._codec.decode(f, filt(self._codec.encode(f), timestamp_s)))
        for tid in list(self._filters):
            if tid not in alive:
                del self._filters[tid]
        return out


class CenteredFaceSmoother:
    """Centred Gaussian-window smoothing with a bounded delay of ``window // 2`` frames.

    ``push(key, faces)`` one frame at a time (in order); completed frames come out of ``push``
    (and of :meth:`flush` at the end) as ``(key, smoothed_faces)`` in the same order. A track
    contributes only the frames where it is present; weights are renormalised over them.
    """

    def __init__(self, config: SmoothingConfig, morphable_model: MorphableModel | None = None) -> None:
        self.config = config
        self._codec = _FaceCodec(config.target, morphable_model)
        self._half = config.half_window
        self._sigma = config.effective_sigma
        self._n = 0  # frames pushed
        self._pending: deque[tuple[int, Hashable, list[Face]]] = deque()
        # per track: deque of (frame number, vector), kept for 2·half + 1 frames
        self._hist: dict[int, deque[tuple[int, np.ndarray]]] = {}

    def push(self, key: Hashable, faces: list[Face]) -> Iterator[tuple[Hashable, list[Face]]]:
        """Add the faces of the next frame; returns the frames now complete, oldest first."""
        n = self._n
        self._n += 1
        for f in faces:
            self._hist.setdefault(f.track_id, deque()).append((n, self._codec.encode(f)))
        self._pending.append((n, key, faces))
        ready = []
        while self._pending and self._pending[0][0] + self._half < self._n:
            ready.append(self._emit())
        return iter(ready)

    def flush(self) -> Iterator[tuple[Hashable, list[Face]]]:
        """Emit every frame still waiting (at the end of the stream)."""
        ready = []
        while self._pending:
            ready.append(self._emit())
        return iter(ready)

    def _emit(self) -> tuple[Hashable, list[Face]]:
        n, key, faces = self._pending.popleft()
        out = []
        for f in faces:
            hist = self._hist[f.track_id]
            frames = [m for m, _ in hist if abs(m - n) <= self._half]
            vecs = [v for m, v in hist if abs(m - n) <= self._half]
            centre = next(v for m, v in hist if m == n)
            w = gaussian_weights(np.asarray(frames) - n, self._sigma)
            diff = np.stack(vecs) - centre
            out.append(self._codec.decode(f, centre + w @ diff))
        # drop history no later frame can use
        oldest_needed = (self._pending[0][0] if self._pending else self._n) - self._half
        for tid in list(self._hist):
            h = self._hist[tid]
            while h and h[0][0] < oldest_needed:
                h.popleft()
            if not h:
                del self._hist[tid]
        return key, out


def make_face_smoother(
    config: SmoothingConfig, morphable_model: MorphableModel | None = None
) -> CausalFaceSmoother | CenteredFaceSmoother | None:
    """The smoother for ``config.mode`` (``None`` when the mode is ``"none"``)."""
    if config.mode == "causal":
        return CausalFaceSmoother(config, morphable_model)
    if config.mode == "centered":
        return CenteredFaceSmoother(config, morphable_model)
    return None
