"""The PyTorch-facing dataset: reads images, crops, augments, and skips unreadable items."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.train.augment import Augmenter
from tddfa.train.samples import SampleSet

log = logging.getLogger(__name__)


class SkipCounter:
    """Counts samples skipped for bad input (within one process)."""

    def __init__(self) -> None:
        self.count = 0


def _read_image(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read image {path!r} (missing or corrupt)")
    return img


class FaceDataset:
    """A map-style dataset (usable by ``torch.utils.data.DataLoader``).

    Item ``i`` is ``(crop (3, 120, 120) float32 network input, params (62,) float32 normalised,
    landmarks (68, 2) float32 crop frame)`` (the landmarks are the sample's labelled landmarks
    moved with the augmentation — e.g. 300W-LP-style marched ones — or NaN when the sample set
    has none) or ``None`` for a sample whose image cannot be read (a warning is logged, :attr:`skipped`
    counts it, and :func:`collate_skip` drops it from the batch).

    Args:
        samples: the :class:`SampleSet`.
        mean, std: ``(62,)`` parameter normalisation.
        augment: an :class:`Augmenter`, or ``None`` for the plain crop.
        seed: base seed; each item uses ``seed + epoch * N + index`` (call :meth:`set_epoch`).
    """

    def __init__(self, samples: SampleSet, mean: np.ndarray, std: np.ndarray,
                 augment: Augmenter | None = None, seed: int = 0) -> None:
        self.samples = samples
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def crop(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(120, 120, 3)`` uint8 crop, ``(62,)`` de-normalised parameters and ``(68, 2)``
        crop-frame landmarks (NaN without labelled landmarks) of sample ``i``."""
        from tddfa.face.crop import crop_roi
        from tddfa.face.fitting import image_to_crop_frame

        img = _read_image(self.samples.images[i])
        roi = self.samples.roi_boxes[i]
        p = self.samples.params[i]
        lm = None if self.samples.landmarks is None else self.samples.landmarks[i]
        if self.augment is None:
            pts = (np.full((68, 2), np.nan, np.float32) if lm is None else
                   image_to_crop_frame(lm[None, :, :2], np.asarray(roi)[None])[0].astype(np.float32))
            return crop_roi(img, roi), p, pts
        rng = np.random.default_rng(self.seed + self.epoch * 1_000_003 + i)
        if lm is None:
            c, q = self.augment(img, roi, p, rng)
            return c, q, np.full((68, 2), np.nan, np.float32)
        return self.augment(img, roi, p, rng, landmarks=lm)

    def __getitem__(self, i: int):
        try:
            crop, p, pts = self.crop(int(i))
        except Exception as exc:  # noqa: BLE001 - one bad sample must never stop training
            self.skipped += 1
            log.warning("sample %d (%s) skipped: %s", i, self.samples.names[i], exc)
            return None
        x = (crop.transpose(2, 0, 1).astype(np.float32) - 127.5) / 128.0
        return x, ((p - self.mean) / self.std).astype(np.float32), pts


def collate_skip(batch: list):
    """Collate ``(x, p, landmarks)`` items into tensors, dropping ``None`` items.

    Returns ``(x (B, 3, 120, 120), p (B, 62), landmarks (B, 68, 2), n_skipped)``, or ``None``
    if every item was bad.
    """
    import torch

    good = [b for b in batch if b is not None]
    n_bad = len(batch) - len(good)
    if not good:
        return None
    x = torch.from_numpy(np.stack([g[0] for g in good]))
    p = torch.from_numpy(np.stack([g[1] for g in good]))
    lm = torch.from_numpy(np.stack([g[2] for g in good]).astype(np.float32))
    return x, p, lm, n_bad
