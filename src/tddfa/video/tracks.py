"""Tracker state: tracks and their identities, scene-cut detection, the cheap per-track detector
check, and the association of detections with live and recently lost tracks.

Nothing here runs the regressor; :mod:`tddfa.video.tracker` drives the frame loop.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from tddfa.detection.faceboxes import box_iou
from tddfa.face.results import Face

log = logging.getLogger(__name__)

__all__ = ["Track", "TrackSet", "SceneCutDetector", "RegionDetector", "face_size", "match",
           "lm_box"]


def lm_box(lm: np.ndarray) -> np.ndarray:
    """``(4,)`` float32 box (x1, y1, x2, y2) of landmarks ``(K, 2|3)``, image pixels."""
    xy = lm[:, :2]
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)]).astype(np.float32)


def face_size(box: np.ndarray) -> float:
    """``sqrt(w·h)`` of a box ``(x1, y1, x2, y2, ...)``, pixels (0 for an empty box)."""
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    return math.sqrt(w * h) if w > 0 and h > 0 else 0.0


@dataclass
class Track:
    """One tracked face.

    Attributes:
        id: identity, unique within a :class:`TrackSet` (never reused, even across cuts).
        face: last aligned face (landmarks in image pixels).
        roi: ``(4,)`` float64 roi used for the last crop, image pixels.
        score: score of the last detection that confirmed the track.
        last_frame: frame number of the last successful alignment.
        shot: shot number the track belongs to (cuts end every track).
        ref_size: landmark-box size (pixels) at the last detector confirmation.
        velocity: ``(2,)`` landmark-box centre motion, pixels per frame (smoothed).
        unconfirmed: consecutive checks that found no face where the track is.
        confirmed_yaw: yaw (degrees) at the last detector confirmation.
    """

    id: int
    face: Face
    roi: np.ndarray
    score: float
    last_frame: int
    shot: int
    ref_size: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    unconfirmed: int = 0
    confirmed_yaw: float = 0.0
    _box: np.ndarray = field(init=False, repr=False)
    _size: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.confirmed_yaw = float(self.face.pose.yaw)
        self._box = lm_box(self.face.landmarks)
        self._size = face_size(self._box)

    def confirm(self, score: float) -> None:
        """A detection agrees with the track: refresh its score, reference size and yaw."""
        self.unconfirmed, self.score = 0, score
        self.ref_size, self.confirmed_yaw = self.size, float(self.face.pose.yaw)

    @property
    def box(self) -> np.ndarray:
        """``(4,)`` float32 box of the current face's landmarks (:func:`lm_box`), image pixels."""
        return self._box

    @property
    def size(self) -> float:
        """:func:`face_size` of :attr:`box`, pixels."""
        return self._size

    def update(self, face: Face, roi: np.ndarray, frame: int, box: np.ndarray | None = None) -> None:
        """Take the next frame's alignment and update the centre velocity (``box``: the new
        face's :func:`lm_box`, when already computed)."""
        old, new = self._box, lm_box(face.landmarks) if box is None else box
        d = ((new[:2] + new[2:]) - (old[:2] + old[2:])) / 2.0
        self.velocity = 0.5 * self.velocity + 0.5 * d
        self.face, self.roi, self.last_frame = face, roi, frame
        self._box, self._size = new, face_size(new)

    def predicted_roi(self, frame: int) -> np.ndarray:
        """Roi moved by the velocity up to ``frame`` (for lost tracks)."""
        gap = max(frame - self.last_frame, 0)
        dx, dy = self.velocity * gap
        return self.roi + np.array([dx, dy, dx, dy])


def match(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Optimal one-to-one assignment (Hungarian) of rows to columns of ``cost`` ``(A, B)``,
    keeping only pairs with cost <= ``max_cost``."""
    if cost.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    big = max_cost + 1e6
    c = np.where(cost <= max_cost, cost, big)
    rows, cols = linear_sum_assignment(c)
    return [(int(r), int(k)) for r, k in zip(rows, cols, strict=True) if c[r, k] <= max_cost]


def association_cost(track_boxes: np.ndarray, det_boxes: np.ndarray) -> np.ndarray:
    """``1 − IoU`` of boxes ``(A, 4)`` vs ``(B, 4)``, plus a penalty for centre distance
    (in units of the larger box side) and size ratio, so nearby same-size boxes win ties."""
    if len(track_boxes) == 0 or len(det_boxes) == 0:
        return np.zeros((len(track_boxes), len(det_boxes)))
    a = np.asarray(track_boxes, np.float64)[:, :4]
    b = np.asarray(det_boxes, np.float64)[:, :4]
    iou = box_iou(a, b)
    ca, cb = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    sa, sb = np.sqrt(np.prod(a[:, 2:] - a[:, :2], 1)), np.sqrt(np.prod(b[:, 2:] - b[:, :2], 1))
    dist = np.linalg.norm(ca[:, None] - cb[None], axis=2) / np.maximum(sa[:, None], sb[None])
    ratio = np.abs(np.log(np.maximum(sa[:, None], 1e-6) / np.maximum(sb[None], 1e-6)))
    return (1.0 - iou) + 0.1 * dist + 0.1 * ratio


class TrackSet:
    """Live and recently lost tracks with identities.

    Identities are never reused: a cut ends every live and lost track of the shot, so no id can
    continue into the next shot. A lost track can be revived (same id) within ``keep_lost``
    frames of the same shot.
    """

    def __init__(self, keep_lost: int = 25) -> None:
        self.keep_lost = int(keep_lost)
        self.live: list[Track] = []
        self.lost: list[Track] = []
        self.shot = 0
        self._next_id = 0
        self.ended = 0

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def add(self, face: Face, roi: np.ndarray, score: float, frame: int,
            track_id: int | None = None) -> Track:
        t = Track(self.new_id() if track_id is None else track_id, face, roi, score, frame,
                  self.shot, face_size(lm_box(face.landmarks)))
        self.live.append(t)
        return t

    def lose(self, t: Track, why: str, frame: int) -> None:
        log.debug("frame %d: track %d lost (%s)", frame, t.id, why)
        if t in self.live:
            self.live.remove(t)
        t.unconfirmed = 0
        self.lost.append(t)

    def cut(self, frame: int) -> None:
        """A new shot starts: every track ends; their ids are never used again."""
        if self.live or self.lost:
            log.debug("frame %d: scene cut ends tracks %s", frame, [t.id for t in self.live])
        self.ended += len(self.live)
        self.live, self.lost = [], []
        self.shot += 1

    def expire(self, frame: int) -> None:
        self.lost = [t for t in self.lost if frame - t.last_frame <= self.keep_lost]

    def revive(self, det_roi: np.ndarray, frame: int, iou_threshold: float) -> Track | None:
        """The lost track of this shot that best fits a detection's roi ``det_roi`` (removed
        from the lost list), or nothing. It fits when its roi predicted by its motion overlaps
        by ``iou_threshold``, or when its centre lies inside ``det_roi`` at a size within 2x."""
        if not self.lost:
            return None
        pred = np.stack([t.predicted_roi(frame) for t in self.lost])
        ov = box_iou(det_roi[None], pred)[0]
        c = (pred[:, :2] + pred[:, 2:]) / 2
        inside = np.all((c >= det_roi[:2]) & (c <= det_roi[2:]), axis=1)
        ratio = (pred[:, 2] - pred[:, 0]) / max(det_roi[2] - det_roi[0], 1e-9)
        ok = (ov >= iou_threshold) | (inside & (ratio >= 0.5) & (ratio <= 2.0))
        if not ok.any():
            return None
        k = int(np.argmax(np.where(ok, ov + inside, -1.0)))
        return self.lost.pop(k)


class SceneCutDetector:
    """Shot changes from the colour histogram of a downscaled frame.

    Each frame is subsampled to about ``width`` pixels across, converted to HSV and histogrammed
    (``bins`` hue × saturation × value bins); the Bhattacharyya distance (0 = same distribution,
    1 = disjoint) to the previous frame's histogram above ``threshold`` is a cut.
    """

    def __init__(self, threshold: float = 0.35, width: int = 96,
                 bins: tuple[int, int, int] = (12, 4, 4)) -> None:
        self.threshold = float(threshold)
        self.width = int(width)
        self.bins = bins
        self.last_distance = 0.0
        self.reset()

    def reset(self) -> None:
        self._prev: np.ndarray | None = None

    def histogram(self, image: np.ndarray) -> np.ndarray:
        """Normalised ``bins`` HSV histogram (float32) of a ``(H, W, 3)`` uint8 BGR frame."""
        step = max(1, image.shape[1] // self.width)
        small = np.ascontiguousarray(image[::step, ::step])
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
        h = cv2.calcHist([hsv], [0, 1, 2], None, list(self.bins), [0, 180, 0, 256, 0, 256])
        return (h / max(float(h.sum()), 1.0)).astype(np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))

    def __call__(self, image: np.ndarray) -> bool:
        """True when ``image`` starts a new shot (never for the first frame)."""
        h = self.histogram(image)
        prev, self._prev = self._prev, h
        if prev is None:
            self.last_distance = 0.0
            return False
        self.last_distance = self.distance(prev, h)
        return self.last_distance > self.threshold


class RegionDetector:
    """The face detector run on several small square regions at once: each region is resized
    to ``size`` × ``size`` and the tiles are laid side by side in one image, so one detector call
    checks every track.

    Args:
        detector: callable ``(H, W, 3) uint8 → (K, 5)`` boxes + score (FaceBoxes).
        size: tile side, pixels (a multiple of 32).
    """

    def __init__(self, detector, size: int = 96) -> None:
        self.detector = detector
        self.size = int(size)

    def __call__(self, image: np.ndarray, regions: np.ndarray) -> list[np.ndarray]:
        """Detections ``(K_i, 5)`` per region ``(N, 4)``, in image pixels."""
        from tddfa.face.crop import sample_rois

        regions = np.asarray(regions, np.float64).reshape(-1, 4)
        n, s = len(regions), self.size
        if n == 0:
            return []
        tiles = sample_rois(image, regions, s)  # (N, s, s, 3)
        canvas = np.ascontiguousarray(tiles.transpose(1, 0, 2, 3).reshape(s, n * s, 3))
        dets = np.asarray(self.detector(canvas), np.float32).reshape(-1, 5)
        out: list[list[np.ndarray]] = [[] for _ in range(n)]
        for d in dets:
            cx = 0.5 * (d[0] + d[2])
            k = min(max(int(cx // s), 0), n - 1)
            x0, y0, x1, y1 = regions[k]
            # regions are rounded to whole pixels by the crop
            x0, y0, x1, y1 = (float(round(v)) for v in (x0, y0, x1, y1))
            fx, fy = (x1 - x0) / s, (y1 - y0) / s
            box = np.array([x0 + (d[0] - k * s) * fx, y0 + d[1] * fy,
                            x0 + (d[2] - k * s) * fx, y0 + d[3] * fy, d[4]], np.float32)
            out[k].append(box)
        return [np.stack(o) if o else np.zeros((0, 5), np.float32) for o in out]


def enlarge(roi: np.ndarray, factor: float) -> np.ndarray:
    """Square roi ``(4,)`` scaled by ``factor`` about its centre."""
    c = (roi[:2] + roi[2:]) / 2
    half = (roi[2:] - roi[:2]) * factor / 2
    return np.r_[c - half, c + half]
