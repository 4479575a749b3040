"""Video mode: :class:`VideoAligner` runs the frame loop — scene cuts, landmark re-crop tracking
(3DDFA_V2), per-frame track validation, re-detection and association — over the tracker state
of :mod:`tddfa.video.tracks`, with optional smoothing."""

from __future__ import annotations

import dataclasses
import logging
import os
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tddfa.detection.faceboxes import box_iou
from tddfa.errors import InputError
from tddfa.face.crop import roi_from_landmarks
from tddfa.face.results import Face
from tddfa.io.video import Frame, Prefetch, VideoSource
from tddfa.video.overlay import add_vertices
from tddfa.video.records import frame_record
from tddfa.video.redetect import DetectionSteps, EarlyCheck, LateSearch, f32
from tddfa.video.smoothing import CausalFaceSmoother, CenteredFaceSmoother, SmoothingConfig
from tddfa.video.tracks import (
    RegionDetector,
    SceneCutDetector,
    Track,
    TrackSet,
    face_size,
    lm_box,
)

if TYPE_CHECKING:
    from tddfa.pipeline.aligner import FaceAligner


log = logging.getLogger(__name__)


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
        cut: this frame starts a new shot (every earlier track ended here).
        skipped: ``(K, 5)`` float32 detections (x1, y1, x2, y2, score) not tracked because the
            face is smaller than the minimum size (only on frames where the detector ran).
    """

    index: int
    timestamp_ms: float
    faces: list[Face]
    width: int
    height: int
    image: np.ndarray | None = None
    cut: bool = False
    skipped: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 5), np.float32))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see :func:`frame_record`)."""
        return frame_record(self)


class VideoAligner(DetectionSteps):
    """Face alignment of video frames with tracking, identities and optional smoothing.

    Per frame: (1) a scene cut (colour-histogram change) ends every track; (2) each track is
    re-cropped from its previous landmarks and regressed (all faces in one batch) and checked
    geometrically (finite, not below ``min_face_size``, no size jump or drift, inside the
    frame); (3) with ``validate``, the detector is run once on small tiles of every track's
    enlarged roi (and of recently lost tracks, to revive them): a track with no face in its
    tile triggers (4) a full-frame detection, whose boxes are associated with the tracks (overlap
    and motion, optimal assignment): unmatched tracks end, unmatched boxes revive a lost track
    of the same shot or start a new id. Full-frame detection also runs after a cut, when nothing
    is tracked, and every ``redetect_every`` frames. Faces whose last check failed are not output
    (no mesh where no face is), except in profile (|yaw| >= ``profile_yaw``), where the detector
    is unreliable: such tracks follow the landmark re-crop for up to ``max_profile_unconfirmed``
    frames under the geometric checks.

    Args:
        aligner: a :class:`tddfa.pipeline.FaceAligner` to use (built from ``model``,
            ``checkpoint``, ``score_threshold``, ``dense_model``, ``threads`` when ``None``,
            with ONNX Runtime's idle threads sleeping: ``FaceAligner(spin="off")``, which also
            suits an aligner passed in with more than one thread).
        threads: ONNX Runtime threads of that aligner (1 suits video: see the README).
        dense: also reconstruct the dense mesh of each face (needed by mesh / dense overlays).
        redetect_every: full-frame detection every N frames to pick up new faces (0 = only when
            needed; skipped while ``max_faces`` validated tracks are live).
        full_every: every this-many-th periodic detection runs at full resolution; the others
            run on the frame downscaled to ``coarse_height`` rows (finding only faces larger
            than about ``30 × height / coarse_height`` pixels, at a fraction of the cost).
            1 = always full resolution.
        coarse_height: rows of the downscaled frame for coarse periodic detection (0 = never
            downscale).
        max_faces: track at most this many faces (highest detector scores first); ``None`` = all.
        iou_threshold: overlap (IoU of crop regions) needed to link a detection to a track.
        min_face_size: minimum face size, ``sqrt(w·h)`` of the landmark box, pixels: smaller
            detections are not tracked (reported in ``FrameResult.skipped``), smaller tracks end.
        max_size_change: a face whose size changes by more than this factor between adjacent
            frames is lost.
        max_pose_change: a face whose yaw or pitch changes by more than this (degrees) between
            adjacent frames is lost.
        max_drift: a face whose size differs from its size at the last detector confirmation by
            more than this factor is re-detected.
        min_inside: a face with fewer than this fraction of landmarks inside the frame is lost.
        cut_threshold: Bhattacharyya distance of HSV histograms of consecutive frames above
            which a scene cut is declared (<= 0 disables cut detection).
        validate: check every track with the detector on its enlarged roi every
            ``validate_every`` frames.
        validate_size: detector tile side for the check, pixels (multiple of 32).
        roi_tolerance: keep the previous crop region while the new one differs by less than this
            fraction of its side (0 disables).
        init_iterations: extra landmark re-crops of a new face on its first frame, until its crop
            region is within ``roi_tolerance`` of the previous one.
        max_unconfirmed: without ``validate``: drop a track not overlapped by any detection at
            this many consecutive full-frame detections (0 disables).
        profile_yaw: |yaw| (degrees) from which a track may go unconfirmed by the detector.
        max_profile_unconfirmed: frames a profile track may go unconfirmed.
        keep_lost: frames during which a lost track's id can be revived in the same shot.
        smoothing: :class:`SmoothingConfig`, or a mode string (``"none"``, ``"causal"``,
            ``"centered"``), or ``None`` (no smoothing).
        overlap: run detector work beside the regression on worker threads: on frames with a
            check, its detector call starts before the regression (the tiles are known then;
            results are identical either way); with ``validate``, the periodic search for new
            faces runs on its own thread and is taken up ``search_lag`` frames later (see
            :class:`~tddfa.video.redetect.LateSearch`). ``False``: everything on the calling
            thread, the periodic search included.
        search_lag: frames between the start of a periodic search on its thread and the frame
            whose tracks take it up (with ``overlap`` and ``validate``).
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
        full_every: int = 4,
        coarse_height: int = 360,
        max_faces: int | None = None,
        iou_threshold: float = 0.3,
        min_face_size: float = 24.0,
        max_size_change: float = 1.6,
        max_drift: float = 1.5,
        max_pose_change: float = 25.0,
        min_inside: float = 0.5,
        cut_threshold: float = 0.35,
        validate: bool = True,
        validate_every: int = 3,
        validate_size: int = 96,
        roi_tolerance: float = 0.02,
        init_iterations: int = 4,
        max_unconfirmed: int = 3,
        profile_yaw: float = 50.0,
        max_profile_unconfirmed: int = 60,
        keep_lost: int = 25,
        smoothing: SmoothingConfig | str | None = None,
        overlap: bool = True,
        search_lag: int = 4,
    ) -> None:
        if aligner is None:
            from tddfa.pipeline.aligner import FaceAligner

            # spin "off": with ``overlap`` the detector's checks run beside the regression, and
            # threads spinning within one session's run take the cores the other needs
            aligner = FaceAligner(model, checkpoint, score_threshold=score_threshold,
                                  dense_model=dense_model, threads=threads, spin="off")
        self.aligner = aligner
        self.dense = bool(dense)
        if redetect_every < 0:
            raise InputError(f"redetect_every must be >= 0 frames, got {redetect_every}")
        if max_faces is not None and max_faces < 1:
            raise InputError(f"max_faces must be >= 1 or None, got {max_faces}")
        if min_face_size < 0:
            raise InputError(f"min_face_size must be >= 0 pixels, got {min_face_size}")
        if validate_every < 1:
            raise InputError(f"validate_every must be >= 1 frame, got {validate_every}")
        if search_lag < 1:
            raise InputError(f"search_lag must be >= 1 frame, got {search_lag}")
        if validate_size < 32 or validate_size % 32:
            raise InputError(f"validate_size must be a multiple of 32 pixels, got {validate_size}")
        self.redetect_every = int(redetect_every)
        self.full_every = int(full_every)
        self.coarse_height = int(coarse_height)
        self.max_faces = max_faces
        self.iou_threshold = float(iou_threshold)
        self.min_face_size = float(min_face_size)
        self.max_size_change = float(max_size_change)
        self.max_drift = float(max_drift)
        self.max_pose_change = float(max_pose_change)
        self.min_inside = float(min_inside)
        self.cut_threshold = float(cut_threshold)
        self.validate = bool(validate)
        self.validate_every = int(validate_every)
        self.validate_size = int(validate_size)
        self.roi_tolerance = float(roi_tolerance)
        self.init_iterations = int(init_iterations)
        self.max_unconfirmed = int(max_unconfirmed)
        self.profile_yaw = float(profile_yaw)
        self.max_profile_unconfirmed = int(max_profile_unconfirmed)
        self.keep_lost = int(keep_lost)
        if smoothing is None:
            smoothing = SmoothingConfig()
        elif isinstance(smoothing, str):
            smoothing = SmoothingConfig(mode=smoothing)
        self.smoothing: SmoothingConfig = smoothing
        self.stats = {"frames": 0, "detections": 0, "lost": 0, "new_tracks": 0, "cuts": 0,
                      "checks": 0, "failed_checks": 0, "revived": 0, "skipped_small": 0, "rejected": 0,
                      "coarse_detections": 0}
        self._regions = RegionDetector(self.aligner.detect, self.validate_size)
        self.overlap = bool(overlap)
        self.search_lag = int(search_lag)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._search: LateSearch | None = None
        self.reset()

    def close(self) -> None:
        """Stop the worker threads of ``overlap`` (a later frame starts new ones)."""
        self._drop_search()
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()

    def _worker(self, name: str) -> ThreadPoolExecutor:
        """The one-thread executor ``name`` (``check`` or ``search``), started on first use."""
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = ThreadPoolExecutor(1, thread_name_prefix=f"tddfa-{name}")
            weakref.finalize(self, pool.shutdown, wait=False)
        return pool

    def _early_check(self, img: np.ndarray, n: int, rois: np.ndarray) -> EarlyCheck | None:
        """Start this frame's check beside the regression when one is due (``overlap``)."""
        if not (self.overlap and self.validate and n % self.validate_every == 0):
            return None
        tiles = self._check_regions(list(rois), list(self.tracks.lost), n)
        return EarlyCheck(self._worker("check"), self._regions, img, tiles)

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every track (e.g. before a new video). Ids restart at 0."""
        self._drop_search()
        self.tracks = TrackSet(self.keep_lost)
        self.cuts = SceneCutDetector(self.cut_threshold) if self.cut_threshold > 0 else None
        self._frame_no = 0
        self._since_detect = 0
        self._periodic = 0
        self._last_ts: float | None = None
        self.last_cut = False
        self.last_skipped = np.zeros((0, 5), np.float32)
        self._causal = (CausalFaceSmoother(self.smoothing, self.aligner.morphable_model)
                        if self.smoothing.mode == "causal" else None)

    @property
    def _tracks(self) -> list[Track]:
        return self.tracks.live

    # -- video mode: one frame at a time -------------------------------------------------------
    def process(self, image: np.ndarray, timestamp_ms: float) -> list[Face]:
        """Track faces in the next frame (video / live mode).

        Args:
            image: ``(H, W, 3)`` uint8 BGR frame.
            timestamp_ms: presentation time in ms; must increase from call to call.

        Returns:
            faces with ``track_id`` set (raw, or One-Euro smoothed when ``smoothing.mode`` is
            ``"causal"``). ``last_cut`` / ``last_skipped`` tell whether this frame started a new
            shot and which detections were too small.

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
        waiting: dict[int, tuple[Frame, bool, np.ndarray]] = {}
        try:
            for fr in frames:
                faces = self._step(fr.image, fr.timestamp_ms)
                info = (fr, self.last_cut, self.last_skipped)
                if self._causal is not None:
                    faces = self._causal(faces, fr.timestamp_ms / 1000.0)
                if centred is None:
                    yield self._result(info, faces, keep_images)
                    continue
                waiting[fr.index] = info
                for key, sm in centred.push(fr.index, faces):
                    yield self._result(waiting.pop(key), sm, keep_images)
            if centred is not None:
                for key, sm in centred.flush():
                    yield self._result(waiting.pop(key), sm, keep_images)
        finally:
            if pre is not None:
                pre.close()

    def _result(self, info: tuple[Frame, bool, np.ndarray], faces: list[Face],
                keep: bool) -> FrameResult:
        fr, cut, skipped = info
        h, w = fr.image.shape[:2]
        return FrameResult(fr.index, fr.timestamp_ms, self._with_vertices(faces), w, h,
                           fr.image if keep else None, cut, skipped)

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
        self.last_skipped = np.zeros((0, 5), np.float32)
        ts_ = self.tracks

        need = False
        early: EarlyCheck | None = None
        # with tracks to regress (and `overlap`), the cut test (colour histograms in OpenCV)
        # runs on the check thread beside the regression, whose results a cut then drops
        cut_test = None
        if self.cuts is not None and self.overlap and ts_.live:
            cut_test = self._worker("check").submit(self.cuts, img)
            self.last_cut = False
        else:
            self.last_cut = self.cuts is not None and self.cuts(img)
        if self.last_cut:
            self._new_shot(n)
            need = True
        ts_.expire(n)

        if ts_.live:
            rois = np.stack([self._hysteresis_roi(t.face.landmarks, t.roi) for t in ts_.live])
            early = self._early_check(img, n, rois)
            try:
                faces = self.aligner.align_rois(img, rois, dense=self._dense_in_step)
            except BaseException:
                # no worker may still read the frame once this call is over
                if cut_test is not None:
                    wait([cut_test])
                if early is not None:
                    early.discard()
                raise
            if cut_test is not None and cut_test.result():  # the regression is dropped
                self.last_cut, need = True, True
                self._new_shot(n)
                if early is not None:
                    early.discard()
                    early = None
            else:
                for t, f, r in zip(list(ts_.live), faces, rois, strict=True):
                    box = lm_box(f.landmarks)
                    why = self._implausible(f, t, w, h, box)
                    if why:
                        self.stats["lost"] += 1
                        ts_.lose(t, why, n)
                        need = True
                    else:
                        t.update(f, r, n, box)
                ts_.live[:] = self._dedupe(ts_.live, n)

        failing: list[Track] = []
        if self.validate and (ts_.live or ts_.lost) and n % self.validate_every == 0:
            failing = self._check(img, n, early)
            need = need or bool(failing)
        elif early is not None:
            early.discard()

        self._since_detect += 1
        due = self.redetect_every > 0 and self._since_detect >= self.redetect_every
        if due and self.validate and self.max_faces is not None and len(ts_.live) >= self.max_faces:
            due = False  # no room for a new face, and the tracks are checked by validation
        if not ts_.live or need:
            self._drop_search()  # this frame's full detection supersedes it
            self._detect(img, n, failing)
        else:
            if self._search is not None and n >= self._search.ready:
                search, self._search = self._search, None
                self._late_search(img, n, search.result())
            if due and self._search is None:
                # periodic search for new faces: at full resolution every `full_every`-th time,
                # on the frame downscaled to `coarse_height` rows otherwise (large faces only)
                self._periodic += 1
                full = self.full_every <= 1 or self._periodic % self.full_every == 0
                if self.overlap and self.validate:
                    self._launch_search(img, n, coarse=not full)
                else:
                    self._detect(img, n, failing, coarse=not full)

        out = []
        for t in ts_.live:
            if t.unconfirmed and not self._profile(t):
                continue  # the detector did not find this face: draw nothing
            f = t.face
            out.append(dataclasses.replace(f, box=t.box, score=t.score,
                                           track_id=t.id))
        return out

    def _new_shot(self, n: int) -> None:
        """A scene cut at frame ``n``: every track ends (ids are never reused)."""
        self.stats["cuts"] += 1
        self.tracks.cut(n)

    def _profile(self, t: Track) -> bool:
        """A track in profile that the detector may miss: |yaw| >= ``profile_yaw`` now, turned
        gradually from a pose confirmed at |yaw| >= ``profile_yaw`` − 25°, not too long ago."""
        return (abs(t.face.pose.yaw) >= self.profile_yaw
                and abs(t.confirmed_yaw) >= self.profile_yaw - 25.0
                and t.unconfirmed <= self.max_profile_unconfirmed)

    def _dedupe(self, tracks: list[Track], n: int) -> list[Track]:
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

    def _hysteresis_roi(self, landmarks: np.ndarray, prev_roi: np.ndarray) -> np.ndarray:
        """Landmark crop policy, keeping ``prev_roi`` while the new roi is within tolerance."""
        # float32-exact, like Face.roi_box, so a kept roi reproduces its face bit for bit
        roi = f32(roi_from_landmarks(landmarks))
        if self.roi_tolerance > 0:
            side = prev_roi[2] - prev_roi[0]
            if side > 0 and np.abs(roi - prev_roi).max() <= self.roi_tolerance * side:
                return prev_roi
        return roi

    def _implausible(self, f: Face, t: Track, w: int, h: int, box: np.ndarray) -> str:
        """Why the new alignment ``f`` (landmark box ``box``) of track ``t`` cannot be right
        ('' when plausible)."""
        lm = f.landmarks
        if not np.all(np.isfinite(lm)):
            return "landmarks not finite"
        size = face_size(box)
        if size < self.min_face_size:
            return f"face {size:.1f} px below the minimum size"
        ratio = size / max(t.size, 1e-9)
        if not 1.0 / self.max_size_change <= ratio <= self.max_size_change:
            return f"size jump x{ratio:.2f}"
        dyaw = abs(f.pose.yaw - t.face.pose.yaw)
        dpitch = abs(f.pose.pitch - t.face.pose.pitch)
        if max(dyaw, dpitch) > self.max_pose_change:
            return f"pose jump of {max(dyaw, dpitch):.0f} degrees"
        inside = (lm[:, 0] >= 0) & (lm[:, 0] <= w - 1) & (lm[:, 1] >= 0) & (lm[:, 1] <= h - 1)
        if float(inside.mean()) < self.min_inside:
            return "face left the frame"
        return ""
