"""FaceBoxes face detector on ONNX Runtime: prior boxes, decoding and NMS as pure functions.

Pre-processing as the official 3DDFA_V2 code: the image is downscaled (never upscaled) so that it
is at most 720 high and 1080 wide, BGR means (104, 117, 123) are subtracted (inside the graph).
Post-processing: scores > 0.05, top 5000, NMS at IoU 0.3, top 750, report scores above the
threshold (0.5 by default), boxes scaled back to the input image.

A minimum face size (``min_face_size``, off by default) is also a cheaper input scale: faces
smaller than it are not reported, so the image only needs to be large enough for the smallest
wanted face to reach :data:`RELIABLE_FACE` pixels at the network's input. FaceBoxes' cost grows
with the pixel count, so ``min_face_size=128`` on a 720-row photo runs the network on a quarter
of the pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import product
from pathlib import Path

import cv2
import numpy as np

from tddfa.assets import registry as assets
from tddfa.assets.serialization import load_torch_checkpoint, state_dict_from_checkpoint
from tddfa.errors import InputError
from tddfa.models.networks import build_faceboxes_onnx
from tddfa.models.runtime import cached_onnx, create_session, resolve_backend

__all__ = ["FaceBoxesDetector", "prior_boxes", "decode_boxes", "nms", "box_iou", "landmark_size",
           "LANDMARK_BOX_RATIO", "RELIABLE_FACE"]

#: A face's 68-landmark box is about this times the size of its FaceBoxes box (sqrt(w·h); sample
#: faces 0.83-0.93), which converts a face size in landmark-box pixels to detector-box pixels.
LANDMARK_BOX_RATIO = 0.88
#: Face size (sqrt(w·h) of the landmark box, pixels at the network's input) from which FaceBoxes
#: finds nearly every face: recall 0.99 at 64 px, 0.95 at 56, 0.88 at 48, 0.66 at 32 on 100
#: helen_test faces (``python benchmarks/bench_min_face.py --sizes 32 48 56 64 80``).
RELIABLE_FACE = 64.0

_STEPS = (32, 64, 128)
_MIN_SIZES = ((32, 64, 128), (256,), (512,))
_VARIANCE = (0.1, 0.2)


@lru_cache(maxsize=16)
def prior_boxes(height: int, width: int) -> np.ndarray:
    """FaceBoxes priors ``(P, 4)`` float32 as (cx, cy, w, h), normalised by the image size.

    Small anchors are densified: 32-px anchors 4×4 per cell, 64-px anchors 2×2 per cell.
    """
    out = []
    for step, sizes in zip(_STEPS, _MIN_SIZES, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ii, jj = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        per_cell = []
        for size in sizes:
            dense = {32: 4, 64: 2}.get(size, 1)
            offs = (np.arange(dense) / dense) if dense > 1 else np.array([0.5])
            for oy, ox in product(offs, offs):
                cx = (jj + ox) * step / width
                cy = (ii + oy) * step / height
                per_cell.append(np.stack(
                    [cx, cy, np.full_like(cx, size / width), np.full_like(cy, size / height)], -1
                ))
        # (fh, fw, anchors, 4): cell-major, anchors in order within a cell
        out.append(np.stack(per_cell, axis=2).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Decode offsets ``(P, 4)`` against priors ``(P, 4)`` → boxes ``(P, 4)`` x1, y1, x2, y2 (normalised)."""
    v0, v1 = _VARIANCE
    centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union ``(A, B)`` of boxes ``(A, 4+)`` and ``(B, 4+)`` (x1, y1, x2, y2;
    extra columns such as a score are ignored); 0 where the union is empty."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a.reshape(-1, a.shape[-1] if a.ndim else 4)[:, :4]
    b = b.reshape(-1, b.shape[-1] if b.ndim else 4)[:, :4]
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def landmark_size(boxes: np.ndarray) -> np.ndarray:
    """The expected landmark-box size ``(K,)`` float64 (``LANDMARK_BOX_RATIO`` × sqrt(w·h),
    pixels) of the faces in detector boxes ``(K, 4+)``: the unit of ``min_face_size``; 0 for a
    box without a positive width and height (as :func:`tddfa.video.tracks.face_size`, whose
    arithmetic it repeats: width and height in the boxes' dtype, the rest in float64)."""
    b = np.asarray(boxes)
    b = b.reshape(-1, b.shape[-1] if b.ndim else 4)
    w = (b[:, 2] - b[:, 0]).astype(np.float64)
    h = (b[:, 3] - b[:, 1]).astype(np.float64)
    ok = (w > 0) & (h > 0)
    return np.where(ok, LANDMARK_BOX_RATIO * np.sqrt(np.where(ok, w * h, 0.0)), 0.0)


def nms(dets: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on ``(K, 5)`` boxes+score (areas with the +1 pixel convention); kept indices."""
    x1, y1, x2, y2, s = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-s, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class FaceBoxesDetector:
    """FaceBoxes with the official weights.

    Args:
        weights: explicit checkpoint path (default: the ``faceboxes`` asset).
        score_threshold: report boxes scoring above this (0.5 as the official code).
        threads: intra-op threads (0 = default).
        backend: ``onnxruntime``, ``openvino`` or ``auto``; device: ``cpu`` or ``cuda``.
        min_face_size: smallest face to report, sqrt(w·h) of its landmark box in input-image
            pixels (0 = no limit, the default). Above 0 it also sets the input scale (see
            :meth:`scale_for`): the larger it is, the faster the detector.
        spin: how ONNX Runtime's idle threads wait (:func:`tddfa.models.runtime.spin_config`).
    """

    max_height, max_width = 720, 1080
    pre_threshold, top_k, nms_threshold, keep_top_k = 0.05, 5000, 0.3, 750

    def __init__(self, weights: str | Path | None = None, score_threshold: float = 0.5,
                 threads: int = 0, backend: str = "onnxruntime", device: str = "cpu",
                 min_face_size: float = 0.0, spin: str | None = None):
        path = assets.resolve("faceboxes", weights)
        self.score_threshold = float(score_threshold)
        self.min_face_size = check_min_face_size(min_face_size)

        def build() -> bytes:
            return build_faceboxes_onnx(state_dict_from_checkpoint(load_torch_checkpoint(path)))

        self.backend = resolve_backend(backend, "detector", device)
        self.session = create_session(cached_onnx(path, "faceboxes", build), threads, self.backend,
                                      device, spin)

    def scale_for(self, height: int, width: int) -> float:
        """Downscale factor of the network's input: the image fits 720×1080, and with a
        ``min_face_size`` it is no larger than needed for such a face to reach
        :data:`RELIABLE_FACE` pixels (1.0 when the image is already small enough; never > 1)."""
        scale = 1.0
        if height > self.max_height:
            scale = self.max_height / height
        if width * scale > self.max_width:
            scale *= self.max_width / (width * scale)
        if self.min_face_size > 0:
            scale = min(scale, RELIABLE_FACE / self.min_face_size)
        return scale

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Face boxes ``(K, 5)`` float32: x1, y1, x2, y2 (image pixels), score; best first."""
        h, w = image.shape[:2]
        scale = self.scale_for(h, w)
        small = image
        if scale != 1.0:
            # a very thin image (e.g. 1 x 10000) would round a side to 0 pixels: keep at least 1
            size = (max(1, int(scale * w)), max(1, int(scale * h)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        sh, sw = small.shape[:2]
        if sh < 1 or sw < 1:
            return np.zeros((0, 5), np.float32)
        loc, conf = self.session.run(["loc", "conf"], {"input": np.ascontiguousarray(small)[None]})
        scores = conf[0, :, 1]
        # Candidates below the final threshold are dropped before decoding and NMS: NMS only
        # lets a box suppress lower-scored ones, which the final threshold removes anyway, so
        # the result is the official two-threshold one at a fraction of the NMS work.
        idx = np.flatnonzero(scores > max(self.pre_threshold, self.score_threshold))
        if idx.size == 0:
            return np.zeros((0, 5), np.float32)
        priors = prior_boxes(sh, sw)
        if priors.shape[0] != loc.shape[1]:  # pragma: no cover - architecture invariant
            raise RuntimeError(f"{priors.shape[0]} priors for {loc.shape[1]} network outputs")
        boxes = decode_boxes(loc[0, idx], priors[idx])
        boxes *= np.array([sw, sh, sw, sh], np.float32) / scale
        scores = scores[idx]
        order = np.argsort(-scores, kind="stable")[: self.top_k]
        dets = np.hstack([boxes[order], scores[order, None]]).astype(np.float32)
        dets = dets[nms(dets, self.nms_threshold)][: self.keep_top_k]
        dets = dets[dets[:, 4] > self.score_threshold]
        if self.min_face_size > 0:
            dets = dets[landmark_size(dets) >= self.min_face_size]
        return dets


def check_min_face_size(value: float) -> float:
    """``value`` as a float if it is a finite size >= 0 pixels, else :class:`InputError`."""
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise InputError(f"min_face_size must be a finite size >= 0 pixels, got {value!r}")
    return v
