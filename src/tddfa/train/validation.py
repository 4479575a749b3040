"""Validation of a regressor during training: NME by yaw bucket on a profiled validation set, and
the video-stability metric on synthetic short videos.

The validation set is a manifest (``tddfa data profile --march`` of the held-out 300W
helen_test faces): each view is cropped with its roi (from its landmarks, the AFLW2000-3D
protocol), the model's 68 landmarks are compared with the view's labelled landmarks (2-D NME,
√(w·h) of the label box, percent), and faces are bucketed by the |yaw| of their label
parameters into [0, 30), [30, 60), [60, 90] degrees. ``nme`` (the selection metric) is the mean
of the three bucket means, as the AFLW2000-3D "mean" is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tddfa.errors import InputError, require

log = logging.getLogger(__name__)

torch = require("torch", "train")

#: |yaw| bucket edges, degrees (the AFLW2000-3D protocol)
BUCKETS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.01))


class ManifestValidator:
    """Crops of a validation manifest held in memory; call with a model to get the NMEs.

    Args:
        manifest: a manifest with ``landmarks`` (e.g. from ``tddfa data profile --march``).
        limit: only the first ``limit`` views (``None`` = all).
    """

    def __init__(self, manifest: str | Path, limit: int | None = None) -> None:
        from tddfa.face.crop import crop_roi
        from tddfa.face.pose import pose_from_params
        from tddfa.train.dataset import _read_image
        from tddfa.train.samples import load_manifest

        ss = load_manifest(manifest)
        if ss.landmarks is None:
            raise InputError(f"{manifest}: a validation manifest needs landmarks")
        if limit:
            ss = ss.subset(slice(0, int(limit)))
        self.names = ss.names
        self.rois = np.asarray(ss.roi_boxes, np.float64)
        self.gt = np.asarray(ss.landmarks, np.float64)[..., :2]
        self.yaw = np.abs(pose_from_params(np.asarray(ss.params, np.float64))[0][:, 0])
        self.crops = np.stack([crop_roi(_read_image(str(p)), r)
                               for p, r in zip(ss.images, self.rois, strict=True)])

    def __len__(self) -> int:
        return len(self.names)

    def predict(self, model, batch_size: int = 128) -> np.ndarray:
        """Model landmarks ``(N, 68, 2)`` float64, image pixels."""
        from tddfa.face.morphable_model import load_morphable_model, to_image_frame
        from tddfa.train.model import predict_params

        params = predict_params(model, self.crops, batch_size)
        lm = to_image_frame(load_morphable_model().reconstruct(params), self.rois)[..., :2]
        return np.asarray(lm, np.float64)

    def __call__(self, model) -> dict[str, float]:
        """``{"nme": mean of bucket means, "nme_all", "nme_b0".."nme_b2", "n"}`` (percent)."""
        from tddfa.face.fitting import nme

        e = nme(self.predict(model), self.gt) * 100
        return summarize(e, self.yaw)


def summarize(e: np.ndarray, yaw: np.ndarray) -> dict[str, float]:
    """Per-face NME ``e`` (percent) and |yaw| (degrees) → bucket means, their mean, overall."""
    out: dict[str, float] = {"nme_all": float(np.mean(e)), "nme_median": float(np.median(e)),
                             "n": int(len(e))}
    means = []
    for j, (lo, hi) in enumerate(BUCKETS):
        sel = (yaw >= lo) & (yaw < hi)
        out[f"nme_b{j}"] = float(e[sel].mean()) if sel.any() else float("nan")
        out[f"n_b{j}"] = int(sel.sum())
        if sel.any():
            means.append(out[f"nme_b{j}"])
    out["nme"] = float(np.mean(means))
    return out


def stability_eval(model, root: str | Path, split: str = "helen_test", n_faces: int = 8,
                   n_frames: int = 24, seed: int = 0) -> float:
    """3DDFA_V2's video stability (:func:`tddfa.video.stability.stability`, fraction of face
    size) of ``model`` on synthetic short videos: ``n_faces`` photos of a 300W-crops split, each
    moved by a smooth random in-plane trajectory (rotation ±3°, shift ±6 px, scale ±3 %) of
    ``n_frames`` frames; each frame is cropped with the roi of its true landmarks. Lower = steadier.
    """
    import cv2

    from tddfa.face.crop import crop_roi, roi_from_landmarks
    from tddfa.face.morphable_model import load_morphable_model, to_image_frame
    from tddfa.train.model import predict_params
    from tddfa.video.stability import (
        smooth_random_motion,
        stability,
        synthesize_video,
        transform_points,
    )

    root = Path(root)
    with np.load(root / f"{split}.npz", allow_pickle=False) as z:
        names = np.asarray(z["names"]).astype(str)[:n_faces]
        gts = np.asarray(z["landmarks"], np.float64)[:n_faces]
    mm = load_morphable_model()
    scores = []
    for k, (name, gt) in enumerate(zip(names, gts, strict=True)):
        img = cv2.imread(str(root / split / f"{name}.jpg"), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"cannot read {root / split / name}.jpg")
        motion = smooth_random_motion(n_frames, gt.mean(axis=0), seed=seed * 1000 + k)
        frames = synthesize_video(img, motion)
        truth = transform_points(gt, motion.matrices)
        rois = np.stack([roi_from_landmarks(t) for t in truth])
        crops = np.stack([crop_roi(f, r) for f, r in zip(frames, rois, strict=True)])
        p = predict_params(model, crops, batch_size=len(crops))  # one batch per video
        pred = to_image_frame(mm.reconstruct(p), rois)[..., :2]
        scores.append(stability(pred, truth))
    return float(np.mean(scores))


def draw_samples(model, validator: ManifestValidator, n: int = 8) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB grid of ``n`` validation crops (spread over the set) with the
    labelled landmarks (green) and the model's (red), for TensorBoard."""
    import cv2

    from tddfa.face.fitting import image_to_crop_frame

    idx = np.linspace(0, len(validator) - 1, min(n, len(validator))).astype(int)
    sub = ManifestValidator.__new__(ManifestValidator)
    sub.names, sub.rois, sub.gt = validator.names[idx], validator.rois[idx], validator.gt[idx]
    sub.yaw, sub.crops = validator.yaw[idx], validator.crops[idx]
    pred = sub.predict(model)
    tiles = []
    for crop, r, g, p in zip(sub.crops, sub.rois, sub.gt, pred, strict=True):
        t = cv2.resize(crop, (240, 240))
        for pts, col in ((g, (0, 255, 0)), (p, (0, 0, 255))):
            c = image_to_crop_frame(pts[None], r[None])[0]
            for x, y in c:
                cv2.circle(t, (int(round((x - 1) * 2)), int(round((120 - y) * 2))), 2, col, -1)
        tiles.append(t[:, :, ::-1])
    return np.concatenate(tiles, axis=1)


def validate_300w(model, root: str | Path, split: str = "helen_test", limit: int | None = None,
                  batch_size: int = 64) -> dict[str, float]:
    """2-D NME (percent, √(w·h) of the GT box) of ``model`` on a 300W-crops split, cropping each
    face with :func:`~tddfa.crop.roi_from_landmarks` of its annotation (the AFLW2000 protocol)."""
    from tddfa.face.crop import crop_roi, roi_from_landmarks
    from tddfa.face.fitting import nme
    from tddfa.face.morphable_model import load_morphable_model, to_image_frame
    from tddfa.train.dataset import _read_image
    from tddfa.train.model import predict_params

    root = Path(root)
    with np.load(root / f"{split}.npz", allow_pickle=False) as z:
        names = np.asarray(z["names"]).astype(str)
        gt = np.asarray(z["landmarks"], np.float32)
    if limit:
        names, gt = names[:limit], gt[:limit]
    rois = np.stack([roi_from_landmarks(p) for p in gt])
    crops = np.stack([crop_roi(_read_image(str(root / split / f"{n}.jpg")), r)
                      for n, r in zip(names, rois, strict=True)])
    params = predict_params(model, crops, batch_size)
    mm = load_morphable_model()
    lm = to_image_frame(mm.reconstruct(params), rois)[..., :2]
    e = nme(lm, gt) * 100
    return {"nme": float(e.mean()), "nme_median": float(np.median(e)), "n": int(len(e))}
