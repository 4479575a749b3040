"""Multi-face, multi-shot tracking evaluation: synthetic clips with ground truth by construction
and MOT-style identity metrics.

**Clips** are built shot by shot from still photos: a face sprite (a photo cut around one face)
or a whole photo is warped into each frame by a known 2-D similarity (pans, zooms, faces entering
and leaving), or turned out of plane through its fitted dense mesh
(:func:`tddfa.video.stability.synthesize_video`), so the true landmarks of every face in every
frame follow from the photo's fitted landmarks by the same transform. Shots are joined by hard
cuts. A shot may also be real video frames with reference landmarks (not by construction).

**Metrics** (:func:`mot_metrics`): per frame, output faces (landmark boxes) are matched one to
one to true faces by IoU (>= ``min_iou``) of their boxes clipped to the frame. A true face is
*required* when its size (``sqrt(w·h)`` of its landmark box) is at least the minimum face size
and at least half its landmarks are in the frame; other true faces are *don't care* (not counted
as missed; outputs matched to them are not false). Reported: id switches (a true face matched to
a different track id than at its previous match), fragmentations (a required true face unmatched
between two matched frames), ids across cuts (track ids seen in more than one shot), false-track
face-frames (outputs matched to no true face), missed face-frames (required true faces
unmatched), tracked faces below the minimum size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from tddfa.detection.faceboxes import box_iou

log = logging.getLogger(__name__)

__all__ = ["TrueFace", "Clip", "Sprite", "place", "gradient_background", "mot_metrics",
           "landmark_box"]


def landmark_box(lm: np.ndarray) -> np.ndarray:
    """``(4,)`` float64 box of landmarks ``(K, 2|3)``."""
    lm = np.asarray(lm, np.float64)
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])


@dataclass
class TrueFace:
    """One face in one synthetic frame: ``id`` (unique over the clip, so a face in two shots has
    two ids), ``landmarks`` ``(68, 2)`` frame pixels, ``yaw`` degrees (when known)."""

    id: int
    landmarks: np.ndarray
    yaw: float = 0.0

    @property
    def box(self) -> np.ndarray:
        return landmark_box(self.landmarks)


@dataclass
class Clip:
    """Frames ``(H, W, 3)`` uint8 with their true faces and shot numbers."""

    frames: list[np.ndarray] = field(default_factory=list)
    truth: list[list[TrueFace]] = field(default_factory=list)
    shots: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add_shot(self, name: str, frames: Sequence[np.ndarray],
                 truth: Sequence[list[TrueFace]]) -> None:
        shot = len(self.names)
        self.names.append(name)
        self.frames.extend(frames)
        self.truth.extend(truth)
        self.shots.extend([shot] * len(frames))

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class Sprite:
    """A photo cut around faces: ``image`` ``(h, w, 3)`` uint8 and each face's ``landmarks``
    ``(68, 2)`` in sprite pixels (fitted once on the photo)."""

    image: np.ndarray
    landmarks: list[np.ndarray]
    yaws: list[float] = field(default_factory=list)


def gradient_background(size: tuple[int, int], colours: tuple, seed: int = 0) -> np.ndarray:
    """A face-free ``(H, W, 3)`` uint8 background: a diagonal blend of two BGR ``colours`` plus
    smooth low-frequency texture."""
    w, h = size
    rng = np.random.default_rng(seed)
    t = (np.arange(w)[None, :] / w + np.arange(h)[:, None] / h)[..., None] / 2
    a, b = np.array(colours[0], np.float64), np.array(colours[1], np.float64)
    img = a * (1 - t) + b * t
    noise = cv2.resize(rng.normal(0, 18, (h // 40 + 2, w // 40 + 2, 3)), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def similarity(scale: float, tx: float, ty: float, angle_deg: float = 0.0) -> np.ndarray:
    """``(2, 3)`` affine: rotate by ``angle_deg`` and scale about the origin, then shift."""
    a = np.radians(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, s, tx], [-s, c, ty]])


def place(canvas: np.ndarray, image: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Warp ``image`` by the affine ``A`` ``(2, 3)`` (source → canvas pixels) onto ``canvas``
    (in place, bilinear; canvas pixels outside the warped image are kept)."""
    h, w = canvas.shape[:2]
    cv2.warpAffine(image, A, (w, h), dst=canvas, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_TRANSPARENT)
    return canvas


def apply(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``(K, 2)`` points moved by the affine ``A`` ``(2, 3)``."""
    p = np.asarray(pts, np.float64)[:, :2]
    return p @ A[:, :2].T + A[:, 2]


def _clip(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """Boxes ``(K, 4)`` clipped to the frame (the visible part of a face is what is matched)."""
    return np.clip(boxes, 0, [w, h, w, h])


def _required(tf: TrueFace, w: int, h: int, min_size: float) -> bool:
    b = tf.box
    size = np.sqrt(max(b[2] - b[0], 0) * max(b[3] - b[1], 0))
    lm = tf.landmarks
    inside = (lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)
    return bool(size >= min_size and inside.mean() >= 0.5)


def mot_metrics(outputs: Sequence[Sequence[tuple[int, np.ndarray]]], clip: Clip,
                min_size: float, min_iou: float = 0.3,
                profile_yaw: float = 50.0) -> dict[str, float | int | dict]:
    """Identity and detection figures of a tracker's outputs on a clip.

    Args:
        outputs: per frame, ``(track_id, box)`` of every output face (box x1, y1, x2, y2 of its
            landmarks, frame pixels).
        clip: the clip with its true faces and shots.
        min_size: the tracker's minimum face size, pixels (true faces below it are don't care).
        min_iou: IoU for an output to match a true face.
        profile_yaw: |yaw| from which a missed true face is counted as a profile miss.

    Returns:
        dict of counts (see the module docstring) and ``missed_profile`` /
        ``missed_frontal``, ``outputs``, ``required``, ``false_rate`` (false / outputs),
        ``ids`` (number of distinct track ids), ``true_ids``.
    """
    from tddfa.video.tracks import match

    h, w = clip.frames[0].shape[:2]
    last: dict[int, int] = {}        # true id -> track id at its last match
    gap: dict[int, bool] = {}        # true id -> unmatched (required) since its last match
    shots_of: dict[int, set[int]] = {}
    r = dict(id_switches=0, fragmentations=0, false=0, missed=0, missed_profile=0,
             missed_frontal=0, below_min=0, outputs=0, required=0)
    for outs, truth, shot in zip(outputs, clip.truth, clip.shots, strict=True):
        r["outputs"] += len(outs)
        for tid, box in outs:
            shots_of.setdefault(int(tid), set()).add(shot)
            b = np.asarray(box, np.float64)
            if np.sqrt(max(b[2] - b[0], 0) * max(b[3] - b[1], 0)) < min_size:
                r["below_min"] += 1
        req = [_required(tf, w, h, min_size) for tf in truth]
        r["required"] += sum(req)
        pairs = []
        if outs and truth:
            iou = box_iou(_clip(np.stack([np.asarray(b, np.float64)[:4] for _, b in outs]), w, h),
                          _clip(np.stack([tf.box for tf in truth]), w, h))
            pairs = match(1.0 - iou, 1.0 - min_iou)
        got = {k: i for i, k in pairs}
        r["false"] += len(outs) - len(pairs)
        for k, tf in enumerate(truth):
            if k in got:
                tid = int(outs[got[k]][0])
                if tf.id in last and last[tf.id] != tid:
                    r["id_switches"] += 1
                if gap.get(tf.id):
                    r["fragmentations"] += 1
                last[tf.id], gap[tf.id] = tid, False
            elif req[k]:
                r["missed"] += 1
                r["missed_profile" if abs(tf.yaw) >= profile_yaw else "missed_frontal"] += 1
                if tf.id in last:
                    gap[tf.id] = True
    r["ids_across_cuts"] = sum(len(s) > 1 for s in shots_of.values())
    r["ids"] = len(shots_of)
    r["true_ids"] = len({tf.id for t in clip.truth for tf in t})
    r["false_rate"] = r["false"] / max(r["outputs"], 1)
    r["missed_rate"] = r["missed"] / max(r["required"], 1)
    return r


# ---------------------------------------------------------------------------------------------
# The benchmark clip
# ---------------------------------------------------------------------------------------------


def sprite_from_photo(aligner, image: np.ndarray, which: int = 0, margin: float = 0.6,
                      dense: bool = False) -> tuple[Sprite, object]:
    """Cut face ``which`` (detector order) out of a photo with ``margin`` × its box around it;
    returns the sprite and the fitted face (re-fitted on the sprite; with vertices if ``dense``)."""
    boxes = aligner.detect(image)
    x1, y1, x2, y2 = boxes[which, :4]
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    top, left = max(int(y1 - my), 0), max(int(x1 - mx), 0)
    img = np.ascontiguousarray(image[top: int(y2 + my), left: int(x2 + mx)])
    faces = aligner.refine(img, aligner.align(img).faces, dense=dense)
    centre = np.array([img.shape[1] / 2, img.shape[0] / 2])
    face = min(faces, key=lambda f: np.linalg.norm(f.landmarks[:, :2].mean(0) - centre))
    return Sprite(img, [face.landmarks[:, :2].astype(np.float64)], [face.pose.yaw]), face


def _ramp(n: int, a: float, b: float) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return a + (b - a) * (3 * t ** 2 - 2 * t ** 3)  # smooth start and stop


def build_benchmark_clip(aligner, samples, size: tuple[int, int] = (640, 360),
                         obama_frames: Sequence[np.ndarray] | None = None) -> Clip:
    """The multi-shot benchmark clip (25 frames/s, ``size`` = (W, H)) from the sample photos
    (``samples``: folder with trump_hillary.jpg, emma.jpg, 0013.jpg, 5.png, JianzhuGuo.jpg) and,
    when given, real video frames (obama.mp4; their truth is the reference alignment of each
    frame, not by construction). Shots, joined by hard cuts:

    0. two faces, slow zoom-in and pan over a photo; one is covered for 6 frames;
    1. (with ``obama_frames``) 50 frames of a talking head;
    2. a large face entering from the left, a 32 px face leaving to the right, a 14 px face
       (below the minimum size) standing still, over a textured background;
    3. a face turning from frontal to 70° yaw through its dense mesh, with a slow zoom;
    4. the photo of shot 0 again, closer and panning the other way (same people, new shot).
    """
    from pathlib import Path

    from tddfa.io.images import read_image
    from tddfa.video.stability import Motion, synthesize_video, transform_points_3d

    W, H = size
    root = Path(samples)
    clip = Clip()
    next_id = [0]

    def ids(k: int) -> list[int]:
        next_id[0] += k
        return list(range(next_id[0] - k, next_id[0]))

    # 0/4: a whole photo panned and zoomed
    photo = read_image(root / "trump_hillary.jpg")
    ph_faces = aligner.refine(photo, aligner.align(photo).faces)
    ph_lm = [f.landmarks[:, :2].astype(np.float64) for f in ph_faces]
    ph_yaw = [f.pose.yaw for f in ph_faces]

    def pan_shot(name: str, n: int, s0: float, s1: float, x0: float, x1: float, y: float,
                 hidden: range = range(0)) -> None:
        gid = ids(len(ph_lm))
        frames, truth = [], []
        base = W / photo.shape[1]
        for k, (s, x) in enumerate(zip(_ramp(n, s0, s1), _ramp(n, x0, x1), strict=True)):
            A = similarity(base * s, x, y)
            frame = place(np.zeros((H, W, 3), np.uint8), photo, A)
            faces = [TrueFace(g, apply(A, lm), yw) for g, lm, yw
                     in zip(gid, ph_lm, ph_yaw, strict=True)]
            if k in hidden:  # the first face is covered (an occlusion of a few frames)
                b = faces[0].box
                m = 0.35 * (b[2] - b[0])
                x1_, y1_, x2_, y2_ = (int(v) for v in (b[0] - m, b[1] - 2 * m, b[2] + m, b[3] + m))
                frame[max(y1_, 0):max(y2_, 0), max(x1_, 0):max(x2_, 0)] = (90, 100, 110)
                faces = faces[1:]
            frames.append(frame)
            truth.append(faces)
        clip.add_shot(name, frames, truth)

    pan_shot("two faces, zoom and pan, one hidden for 6 frames", 50, 1.0, 1.3, 0.0, -110.0,
             -20.0, hidden=range(20, 26))

    if obama_frames is not None:
        gid = ids(1)[0]
        frames, truth = [], []
        for f in obama_frames:
            small = cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA)
            ref = aligner.refine(small, aligner.align(small).faces)
            frames.append(small)
            truth.append([TrueFace(gid, ref[0].landmarks[:, :2].astype(np.float64),
                                   ref[0].pose.yaw)] if ref else [])
        clip.add_shot("talking head (reference alignment)", frames, truth)

    # 2: faces entering / leaving / too small, on a face-free background
    emma, _ = sprite_from_photo(aligner, read_image(root / "emma.jpg"), 0)
    five, _ = sprite_from_photo(aligner, read_image(root / "5.png"), 1)
    tiny, _ = sprite_from_photo(aligner, read_image(root / "0013.jpg"), 0)
    bg = gradient_background((W, H), ((40, 90, 160), (150, 110, 60)), seed=2)
    n = 60
    gid = ids(3)

    def fit(sp: Sprite, face_px: float) -> float:
        b = landmark_box(sp.landmarks[0])
        return face_px / np.sqrt((b[2] - b[0]) * (b[3] - b[1]))

    se, sf, st = fit(emma, 110.0), fit(five, 32.0), fit(tiny, 14.0)
    ex = np.r_[_ramp(25, -emma.image.shape[1] * se, W * 0.30), np.full(n - 25, W * 0.30)]
    fx = np.r_[np.full(30, W * 0.80), _ramp(n - 30, W * 0.80, W + 10.0)]
    frames, truth = [], []
    for k in range(n):
        canvas = bg.copy()
        faces = []
        for g, sp, s, x, y in ((gid[0], emma, se, ex[k], 60.0), (gid[1], five, sf, fx[k], 220.0),
                               (gid[2], tiny, st, W * 0.85, 40.0)):
            A = similarity(s, x, y)
            place(canvas, sp.image, A)
            faces.append(TrueFace(g, apply(A, sp.landmarks[0]), sp.yaws[0]))
        frames.append(canvas)
        truth.append(faces)
    clip.add_shot("entering, leaving and a too-small face", frames, truth)

    # 3: a face turning to profile through its dense mesh
    guo, gface = sprite_from_photo(aligner, read_image(root / "JianzhuGuo.jpg"), 0, margin=0.8,
                                   dense=True)
    mm = aligner.morphable_model
    n = 50
    v = gface.vertices
    centre = v[:, :2].mean(axis=0)
    motion = Motion(np.zeros(n), np.ones(n), np.zeros((n, 2)), centre,
                    yaw_deg=_ramp(n, 0.0, 70.0), pitch_deg=np.zeros(n))
    turned = synthesize_video(guo.image, motion, v, mm.tri)
    lm3 = transform_points_3d(v[mm.keypoints], motion, pivot=v.mean(axis=0))
    bg = gradient_background((W, H), ((120, 160, 90), (60, 60, 140)), seed=3)
    gid = ids(1)[0]
    frames, truth = [], []
    for k in range(n):
        s = (H * 0.9 / guo.image.shape[0]) * (1.0 + 0.15 * k / n)
        A = similarity(s, W * 0.5 - s * guo.image.shape[1] / 2, H * 0.05)
        frames.append(place(bg.copy(), turned[k], A))
        truth.append([TrueFace(gid, apply(A, lm3[k]), float(motion.yaw_deg[k]))])
    clip.add_shot("turning to profile (through the mesh)", frames, truth)

    pan_shot("same photo, new shot", 40, 1.5, 1.6, -120.0, -40.0, -80.0)
    return clip
