"""Reading and normalising images: every accepted input becomes ``(H, W, 3)`` uint8 BGR.

Accepted: a path (any format OpenCV decodes; EXIF orientation applied) or an array that is
grayscale ``(H, W)`` / ``(H, W, 1)``, BGR(A) / RGB(A) ``(H, W, 3|4)``, of dtype uint8, uint16
(scaled down to 8 bits) or float (``[0, 1]``, or ``[0, 255]`` when larger values occur).
Anything else raises :class:`~tddfa.errors.InputError` with a one-line reason.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.io.imagesize import image_size

__all__ = ["read_image", "to_bgr_uint8", "load_image", "IMAGE_EXTENSIONS", "write_image",
           "image_size", "check_pixels", "MAX_PIXELS"]

log = logging.getLogger("tddfa")

#: Default pixel limit (width × height) of an input image or video frame, as Pillow's
#: decompression-bomb guard: refused above this, a warning above half of it. 0 = no limit.
MAX_PIXELS = 178_956_970

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm",
                    ".ppm", ".pbm", ".pnm", ".exr", ".hdr"}


def check_pixels(width: int, height: int, max_pixels: int | None, source: str) -> None:
    """Refuse (:class:`InputError`) an image of ``width × height`` pixels above ``max_pixels``
    (``None``: :data:`MAX_PIXELS`; 0: no limit); log a warning above half the limit."""
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit <= 0:
        return
    n = int(width) * int(height)
    if n > limit:
        raise InputError(f"{source}: {width}x{height} = {n} pixels exceeds the limit of {limit} "
                         "(a decompression bomb or a huge scan; raise it with --max-pixels / "
                         "max_pixels=, 0 = no limit)")
    if 2 * n > limit:
        log.warning("%s: %dx%d = %d pixels is large (limit %d); decoding needs about %d MB",
                    source, width, height, n, limit, 3 * n >> 20)


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode the image file at ``path`` → ``(H, W, 3)`` uint8 BGR.

    The size is read from the file header first (PNG, JPEG, BMP, GIF, TIFF, WebP, PNM): images
    over ``max_pixels`` (default :data:`MAX_PIXELS`, 0 = no limit) are refused before decoding.

    Raises:
        InputError: missing, empty, not a regular file, unreadable, not an image, or too large.
    """
    path = Path(path)
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
        if regular:  # a FIFO or device would block or never end
            data = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read file ({getattr(exc, 'strerror', None) or exc})") from exc
    if not regular:
        raise InputError(f"{path}: not a regular file (a folder, FIFO or device), expected an image")
    if data.size == 0:
        raise InputError(f"{path}: empty file (0 bytes), expected an image")
    size = image_size(data[: 1 << 20].tobytes())
    if size is not None:
        check_pixels(size[0], size[1], max_pixels, str(path))
    try:
        img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # e.g. above OpenCV's own pixel limit for formats parsed by it only
        raise InputError(f"{path}: OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from exc
    if img is None:
        raise InputError(f"{path}: not a decodable image ({data.size} bytes; corrupt or another format)")
    if size is None:
        check_pixels(img.shape[1], img.shape[0], max_pixels, str(path))
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


def load_image(image: str | os.PathLike | np.ndarray, *, rgb: bool = False,
               max_pixels: int | None = None) -> np.ndarray:
    """A path or an array → ``(H, W, 3)`` uint8 BGR; images over ``max_pixels`` (default
    :data:`MAX_PIXELS`, 0 = no limit) raise :class:`InputError`."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, max_pixels=max_pixels)
    a = np.asarray(image) if not isinstance(image, np.ndarray) else image
    if a.ndim >= 2:
        check_pixels(a.shape[1], a.shape[0], max_pixels, "image array")
    return to_bgr_uint8(a, rgb=rgb)


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
