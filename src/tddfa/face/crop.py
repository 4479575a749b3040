"""Crop policies and the 120×120 crop itself (3DDFA_V2 conventions).

A *roi box* is ``(x1, y1, x2, y2)`` float, image pixels: the square region that is resized to
the network's 120×120 input.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["roi_from_box", "roi_from_landmarks", "crop_roi", "crop_batch", "sample_rois", "INPUT_SIZE"]

INPUT_SIZE = 120


def roi_from_box(box: np.ndarray) -> np.ndarray:
    """Roi for a detector box ``(x1, y1, x2, y2[, score])`` → ``(4,)`` float64, image pixels.

    base = (w + h) / 2; centre = box centre moved down by 0.14·base; side = int(1.58·base).
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64)[:4])
    base = (x2 - x1 + y2 - y1) / 2.0
    cx = x2 - (x2 - x1) / 2.0
    cy = y2 - (y2 - y1) / 2.0 + base * 0.14
    side = float(int(base * 1.58))
    return np.array([cx - side / 2, cy - side / 2, cx - side / 2 + side, cy - side / 2 + side])


def roi_from_landmarks(points: np.ndarray) -> np.ndarray:
    """Roi for the re-crop / tracking pass from landmarks ``(K, 2|3)`` image pixels → ``(4,)``.

    The landmarks' box is made square (side max(w, h)) about its centre; the roi is the square of
    side √2·max(w, h) (that square's diagonal) about the same centre.
    """
    pts = np.asarray(points, dtype=np.float64)
    x0, y0 = pts[:, 0].min(), pts[:, 1].min()
    x1, y1 = pts[:, 0].max(), pts[:, 1].max()
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    radius = max(x1 - x0, y1 - y0) / 2.0
    side = np.sqrt(2.0) * 2.0 * radius
    return np.array([cx - side / 2, cy - side / 2, cx - side / 2 + side, cy - side / 2 + side])


def crop_roi(image: np.ndarray, roi: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Cut ``roi`` (rounded to whole pixels) out of ``image`` ``(H, W, 3)`` uint8 with zero fill
    outside the image, and resize it bilinearly to ``(size, size, 3)`` uint8."""
    h, w = image.shape[:2]
    sx, sy, ex, ey = (int(round(float(v))) for v in roi[:4])
    dw, dh = ex - sx, ey - sy
    if dw <= 0 or dh <= 0:
        return np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    if sx >= 0 and sy >= 0 and ex <= w and ey <= h:
        patch = image[sy:ey, sx:ex]
    else:
        patch = np.zeros((dh, dw) + image.shape[2:], dtype=image.dtype)
        csx, csy, cex, cey = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
        if cex > csx and cey > csy:
            patch[csy - sy : cey - sy, csx - sx : cex - sx] = image[csy:cey, csx:cex]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)


def crop_batch(image: np.ndarray, rois: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Crops for several rois ``(B, 4)`` → ``(B, size, size, 3)`` uint8."""
    rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4)
    out = np.empty((len(rois), size, size) + image.shape[2:], dtype=image.dtype)
    for i, roi in enumerate(rois):
        out[i] = crop_roi(image, roi, size)
    return out


def sample_rois(image: np.ndarray, rois: np.ndarray, size: int) -> np.ndarray:
    """Like :func:`crop_batch` (rois rounded to whole pixels, zero outside the image, bilinear
    sampling at the same source positions as ``cv2.resize``), but sampled straight from the
    image by one affine warp per roi: no copy of the region, cost proportional to ``size``².
    Results can differ from :func:`crop_batch` by OpenCV's fixed-point rounding (a few levels);
    for detector tiles, not for the regressor's crops (which must match the official ones)."""
    rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(rois), size, size) + image.shape[2:], dtype=image.dtype)
    for i, roi in enumerate(rois):
        sx, sy, ex, ey = (int(round(float(v))) for v in roi[:4])
        dw, dh = ex - sx, ey - sy
        if dw <= 0 or dh <= 0:
            continue
        fx, fy = dw / size, dh / size
        m = np.array([[fx, 0.0, sx + 0.5 * fx - 0.5], [0.0, fy, sy + 0.5 * fy - 0.5]])
        cv2.warpAffine(image, m, (size, size), dst=out[i],
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out
