"""Reading and normalising images: every accepted input becomes ``(H, W, 3)`` uint8 BGR.

Accepted: a path (any format OpenCV decodes; EXIF orientation applied) or an array that is
grayscale ``(H, W)`` / ``(H, W, 1)``, BGR(A) / RGB(A) ``(H, W, 3|4)``, of dtype uint8, uint16
(scaled down to 8 bits) or float (``[0, 1]``, or ``[0, 255]`` when larger values occur).
Anything else raises :class:`~tddfa.errors.InputError` with a one-line reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from tddfa.errors import InputError

__all__ = ["read_image", "to_bgr_uint8", "load_image", "IMAGE_EXTENSIONS", "write_image"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm",
                    ".ppm", ".pbm", ".pnm", ".exr", ".hdr"}


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode the image file at ``path`` → ``(H, W, 3)`` uint8 BGR.

    Raises:
        InputError: missing, empty, unreadable or not an image.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read file ({getattr(exc, 'strerror', None) or exc})") from exc
    if data.size == 0:
        raise InputError(f"{path}: empty file (0 bytes), expected an image")
    img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None:
        raise InputError(f"{path}: not a decodable image ({data.size} bytes; corrupt or another format)")
    return to_bgr_uint8(img, source=str(path))


def to_bgr_uint8(image: np.ndarray, *, rgb: bool = False, source: str = "image") -> np.ndarray:
    """Convert an array to ``(H, W, 3)`` uint8 BGR (``rgb=True``: the input's colour order is RGB).

    Raises:
        InputError: wrong rank, channel count, dtype or an empty array.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"{source}: expected (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{source}: empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        finite = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        a = np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{source}: unsupported pixel type {a.dtype}; expected uint8, uint16 or float")
    else:
        raise InputError(f"{source}: unsupported pixel type {a.dtype}")
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    if a.shape[2] == 4:
        return cv2.cvtColor(a, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    if rgb:
        return cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(a)


def load_image(image: str | os.PathLike | np.ndarray, *, rgb: bool = False) -> np.ndarray:
    """A path or an array → ``(H, W, 3)`` uint8 BGR."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_bgr_uint8(image, rgb=rgb)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Encode ``image`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    ext = path.suffix or ".png"
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise InputError(f"{path}: OpenCV cannot encode images as {ext}")
    from tddfa.io.atomic import atomic_write_bytes

    atomic_write_bytes(path, buf.tobytes())
    return path
