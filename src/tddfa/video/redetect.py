"""Detector-driven steps of :class:`tddfa.video.tracker.VideoAligner`'s frame loop: the per-track
check on detector tiles, full-frame (re-)detection and its association with the tracks, and
starting (or reviving) tracks from detections."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

import cv2
import numpy as np

from tddfa.detection.faceboxes import box_iou, landmark_size
from tddfa.face.crop import roi_from_box, roi_from_landmarks
from tddfa.face.results import Face
from tddfa.video.tracks import (
    Track,
    association_cost,
    enlarge,
    face_size,
    lm_box,
    match,
)

if TYPE_CHECKING:
    from tddfa.pipeline.aligner import FaceAligner
    from tddfa.video.tracks import RegionDetector, TrackSet

log = logging.getLogger(__name__)


class EarlyCheck:
    """A track check's detector call started on a worker thread before the frame's regression.

    The check's tiles depend only on the crop rois and the lost tracks, both known before the
    regression, so the detector (one ONNX Runtime call, which releases the GIL) can run beside
    the regressor. The result is used only if the tiles are unchanged after the regression (no
    track was lost or merged), otherwise the check runs again: results never depend on it.
    """

    def __init__(self, pool: Executor, regions: RegionDetector, img: np.ndarray,
                 tiles: np.ndarray) -> None:
        self.tiles = tiles
        self._future: Future = pool.submit(regions, img, tiles)

    def result(self, tiles: np.ndarray) -> list[np.ndarray] | None:
        """The detections per tile if ``tiles`` are the ones started, else ``None`` (after the
        started call has finished, so no detector call outlives its frame)."""
        same = tiles.shape == self.tiles.shape and bool(np.all(tiles == self.tiles))
        if same:
            return self._future.result()
        self.discard()
        return None

    def discard(self) -> None:
        """Wait for the started call and drop its result (the check is re-run, and raises any
        error again)."""
        _drain(self._future, "early check")


class LateSearch:
    """A periodic search for new faces run on a worker thread while tracking goes on.

    The full-frame detector takes several frames' worth of time, and a search for faces that
    are not tracked yet does not need its answer at once. The frame (copied: a caller may reuse
    its buffer) is detected on the search thread and the detections are taken up ``ready``, a
    fixed frame number (so results never depend on timing), by
    :meth:`DetectionSteps._late_search`, which looks again on that frame before starting a track.
    """

    def __init__(self, pool: Executor, run, img: np.ndarray, coarse: bool, ready: int) -> None:
        self.ready = ready
        self._future: Future = pool.submit(run, img.copy(), coarse)

    def result(self) -> np.ndarray:
        """The detections ``(K, 5)`` (waits for them)."""
        return self._future.result()

    def discard(self) -> None:
        """Wait for the search and drop its result (a later search runs anyway)."""
        _drain(self._future, "late search")


def _drain(future: Future, what: str) -> None:
    """Wait for ``future`` and drop its result and any error it raised (logged)."""
    try:
        future.result()
    except Exception as exc:  # noqa: BLE001 - the caller does not want the result
        log.debug("%s discarded: %s", what, exc)


def f32(a: np.ndarray) -> np.ndarray:
    """float64 values exactly representable in float32."""
    return np.asarray(a, np.float32).astype(np.float64)


class DetectionSteps:
    """Mixin of :class:`~tddfa.video.tracker.VideoAligner`: uses its settings and state, and its
    ``_profile``, ``_hysteresis_roi`` and ``_dense_in_step``."""

    aligner: FaceAligner
    tracks: TrackSet
    stats: dict[str, int]
    last_skipped: np.ndarray
    _regions: RegionDetector
    _since_detect: int
    min_face_size: float
    iou_threshold: float
    max_drift: float
    max_faces: int | None
    validate: bool
    max_unconfirmed: int
    coarse_height: int
    init_iterations: int
    search_lag: int
    _search: LateSearch | None
    _worker: Callable[[str], Executor]

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

    def _check_regions(self, live_rois: list[np.ndarray], lost: list[Track], n: int) -> np.ndarray:
        """Detector tiles of a check ``(N, 4)``: every live track's crop roi enlarged 1.5×, then
        every lost track's predicted roi enlarged 2×."""
        return np.stack([enlarge(r, 1.5) for r in live_rois]
                        + [enlarge(t.predicted_roi(n), 2.0) for t in lost])

    def _check(self, img: np.ndarray, n: int, early: EarlyCheck | None = None) -> list[Track]:
        """Run the detector on tiles of every live track's enlarged roi (and of lost tracks'
        predicted rois). Confirmed tracks get their score and reference size refreshed; lost
        tracks with a face in their tile are revived. Returns the live tracks that failed.

        ``early``: the same detector call started before this frame's regression (see
        :class:`EarlyCheck`); used when its tiles are still this check's tiles."""
        ts_ = self.tracks
        live, lost = list(ts_.live), list(ts_.lost)
        regions = self._check_regions([t.roi for t in live], lost, n)
        found = early.result(regions) if early is not None else None
        if found is None:
            found = self._regions(img, regions)
        self.stats["checks"] += len(live)
        failing, redo = [], []
        for t, d in zip(live, found[: len(live)], strict=True):
            k, agree = self._agreement(d, t.box)
            drift = t.size / max(t.ref_size, 1e-9)
            if agree:
                t.confirm(float(d[k, 4]))
                continue
            t.unconfirmed += 1
            self.stats["failed_checks"] += 1
            if k >= 0:  # a face is there, but the landmarks disagree with it: re-align from it
                redo.append((t, d[k]))
            elif not self._profile(t) or not 1 / self.max_drift <= drift <= self.max_drift:
                failing.append(t)
        for t, det in redo:
            ts_.live.remove(t)
            if not self._start(img, det[None], n, [t.id]):
                ts_.lose(t, "re-alignment from the detector failed", n)
                self.stats["lost"] += 1
        revive = []
        for t, d in zip(lost, found[len(live):], strict=True):
            d = d[landmark_size(d) >= self.min_face_size]
            if len(d):
                k = self._matching(d, t.predicted_roi(n), loose=True)
                if k >= 0:
                    revive.append((t, d[k]))
        for t, det in revive:
            if t in ts_.lost:
                ts_.lost.remove(t)
                self._start(img, det[None], n, [t.id])
                self.stats["revived"] += 1
        return failing

    @staticmethod
    def _agreement(dets: np.ndarray, box: np.ndarray) -> tuple[int, bool]:
        """The detection that best overlaps a landmark box (-1 if none overlaps by IoU 0.1),
        and whether it agrees with it as a detector box of that face does (IoU >= 0.4, landmark
        box 0.6–1.25 × the detector box's size; measured on the sample faces: IoU 0.61–0.73,
        size ratio 0.83–0.93)."""
        if len(dets) == 0:
            return -1, False
        ov = box_iou(box[None], dets)[0]
        k = int(np.argmax(ov))
        if ov[k] < 0.1:
            return -1, False
        ratio = face_size(box) / max(face_size(dets[k]), 1e-9)
        return k, bool(ov[k] >= 0.4 and 0.6 <= ratio <= 1.25)

    def _matching(self, dets: np.ndarray, roi: np.ndarray, loose: bool = False) -> int:
        """Index of the detection that best matches a track's roi (-1 if none)."""
        if len(dets) == 0:
            return -1
        det_rois = np.array([roi_from_box(d) for d in dets])
        ov = box_iou(roi[None], det_rois)[0]
        k = int(np.argmax(ov))
        return k if ov[k] >= (0.5 * self.iou_threshold if loose else self.iou_threshold) else -1

    def _coarse(self, img: np.ndarray, coarse: bool) -> bool:
        """Whether a ``coarse`` detection of ``img`` really runs downscaled."""
        return coarse and self.coarse_height > 0 and img.shape[0] > self.coarse_height

    def _run_detector(self, img: np.ndarray, coarse: bool) -> np.ndarray:
        """Full-frame detections ``(K, 5)`` in image pixels, best first; ``coarse``: on the frame
        downscaled to ``coarse_height`` rows (when it is larger)."""
        if not self._coarse(img, coarse):
            return np.asarray(self.aligner.detect(img), np.float32).reshape(-1, 5)
        f = self.coarse_height / img.shape[0]
        small = cv2.resize(img, (max(int(round(img.shape[1] * f)), 1), self.coarse_height),
                           interpolation=cv2.INTER_AREA)
        dets = np.asarray(self.aligner.detect(small), np.float32).reshape(-1, 5)
        dets[:, :4] /= f
        return dets

    def _detect(self, img: np.ndarray, n: int, failing: list[Track], coarse: bool = False) -> None:
        """Full-frame detection, associated with the live tracks; new faces start tracks.
        ``coarse``: on the frame downscaled to ``coarse_height`` rows (when it is larger)."""
        self._since_detect = 0
        self.stats["detections"] += 1
        self.stats["coarse_detections"] += self._coarse(img, coarse)
        self._associate(img, n, failing, self._run_detector(img, coarse))

    def _launch_search(self, img: np.ndarray, n: int, coarse: bool) -> None:
        """Start a periodic search for new faces on the search thread (see :class:`LateSearch`)."""
        self._since_detect = 0
        self.stats["detections"] += 1
        self.stats["coarse_detections"] += self._coarse(img, coarse)
        self._search = LateSearch(self._worker("search"), self._run_detector, img, coarse,
                                  n + self.search_lag)

    def _drop_search(self) -> None:
        if self._search is not None:
            self._search.discard()
            self._search = None

    def _late_search(self, img: np.ndarray, n: int, dets: np.ndarray) -> None:
        """Take up a :class:`LateSearch`'s detections (of an earlier frame) on frame ``n``:
        detections away from every live track are looked for again with the detector on a tile
        of this frame around them, and the faces found there are associated as usual."""
        ts_ = self.tracks
        dets = dets[landmark_size(dets) >= self.min_face_size].reshape(-1, 5)
        if not len(dets):
            return
        rois = np.array([roi_from_box(d) for d in dets])
        if ts_.live:  # near a live track: that face (validation keeps it confirmed)
            rois = rois[box_iou(rois, np.stack([t.roi for t in ts_.live])).max(axis=1)
                        < self.iou_threshold]
        if self.max_faces is not None:
            rois = rois[: max(self.max_faces - len(ts_.live), 0)]
        if not len(rois):
            return
        found = self._regions(img, np.stack([enlarge(r, 1.5) for r in rois]))
        fresh = [d[k] for r, d in zip(rois, found, strict=True)
                 if (k := self._matching(d, r, loose=True)) >= 0]
        if fresh:
            self._associate(img, n, [], np.stack(fresh))

    def _associate(self, img: np.ndarray, n: int, failing: list[Track], dets: np.ndarray) -> None:
        """Associate full-frame detections ``(K, 5)`` of frame ``n`` with the live tracks: matched
        tracks are confirmed, failing unmatched ones end, the other detections revive a lost
        track or start a new one."""
        ts_ = self.tracks
        small = landmark_size(dets) < self.min_face_size
        self.last_skipped = dets[small]
        self.stats["skipped_small"] += int(small.sum())
        dets = dets[~small]
        det_rois = np.array([roi_from_box(d) for d in dets]).reshape(-1, 4)
        live = list(ts_.live)
        cost = association_cost(np.stack([t.roi for t in live]) if live else np.zeros((0, 4)),
                                det_rois)
        pairs = match(cost, 1.0 - self.iou_threshold + 0.1)
        hit = {i for i, _ in pairs}
        free = np.ones(len(dets), bool)
        for i, j in pairs:
            t = live[i]
            t.confirm(float(dets[j, 4]))
            free[j] = False
        for i, t in enumerate(live):
            if i in hit:
                continue
            if t in failing:
                if not self._profile(t):
                    self.stats["lost"] += 1
                    ts_.lose(t, "no face found by the detector", n)
                continue
            if not self.validate:
                t.unconfirmed += 1
                if (self.max_unconfirmed > 0 and t.unconfirmed >= self.max_unconfirmed
                        and not self._profile(t)):
                    self.stats["lost"] += 1
                    ts_.lose(t, "not confirmed by the detector", n)
        idx = np.flatnonzero(free)
        # a detection overlapping a live track (but not assigned to it) is that face again
        if len(idx) and ts_.live:
            ov = box_iou(det_rois[idx], np.stack([t.roi for t in ts_.live]))
            idx = idx[ov.max(axis=1) < self.iou_threshold]
        if self.max_faces is not None:
            idx = idx[: max(self.max_faces - len(ts_.live), 0)]
        if idx.size == 0:
            return
        ids: list[int | None] = []
        for j in idx:
            t = ts_.revive(det_rois[j], n, self.iou_threshold)
            ids.append(None if t is None else t.id)
        self._start(img, dets[idx], n, ids)

    def _start(self, img: np.ndarray, dets: np.ndarray, n: int, ids: list[int | None]) -> list[Track]:
        """Align new faces from detector boxes ``(K, 5)`` and start (or revive) their tracks;
        a face below the minimum size, or whose landmarks disagree with its box, is skipped."""
        al = self.aligner
        det_rois = np.array([roi_from_box(d) for d in dets]).reshape(-1, 4)
        first = al.align_rois(img, det_rois, dense=False, boxes=dets)
        # the landmark re-crop of the official tracker (as FaceAligner.refine), with float32-exact
        # rois so that a kept roi reproduces its face exactly
        rois = np.stack([f32(roi_from_landmarks(f.landmarks)) for f in first])
        faces = self._settle(img, al.align_rois(img, rois, dense=self._dense_in_step))
        started = []
        for d, f, tid in zip(dets, faces, ids, strict=True):
            if not np.all(np.isfinite(f.landmarks)):
                continue
            box = lm_box(f.landmarks)
            if face_size(box) < self.min_face_size:
                self.last_skipped = np.concatenate([self.last_skipped, d[None]])
                self.stats["skipped_small"] += 1
                continue
            if not self._agreement(d[None], box)[1]:
                log.debug("frame %d: landmarks disagree with the detection %s", n, d)
                self.stats["rejected"] += 1
                continue
            t = self.tracks.add(f, np.asarray(f.roi_box, np.float64), float(d[4]), n, tid)
            started.append(t)
            if tid is None:
                self.stats["new_tracks"] += 1
            log.debug("frame %d: track %d %s", n, t.id, "started" if tid is None else "revived")
        return started

