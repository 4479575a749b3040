"""Checks of an uploaded image *before* it is decoded.

The format is sniffed from the first bytes and the declared width and height are read from the
header (:func:`tddfa.io.imagesize.image_size`, the parser the file reader uses for its pixel
limit), so that a small file announcing a huge picture (a "decompression bomb") is refused
without allocating its pixels. Only JPEG, PNG, BMP and WebP are accepted; anything else is not
an image for the server (HTTP 415)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tddfa.io.imagesize import image_size

__all__ = ["ImageRejected", "HeaderInfo", "read_header", "decode_upload", "FORMATS"]

FORMATS = ("jpeg", "png", "bmp", "webp")


class ImageRejected(Exception):
    """An upload refused before or while decoding.

    Attributes:
        status: HTTP status (400 corrupt, 413 too many pixels, 415 not a supported image).
        code: short machine-readable code.
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class HeaderInfo:
    """Format and declared size of an image file: ``format`` in :data:`FORMATS`, pixels."""

    format: str
    width: int
    height: int


def _sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise ImageRejected(415, "unsupported_media_type",
                        f"not a supported image ({len(data)} bytes); send JPEG, PNG, BMP or WebP")


def _corrupt(fmt: str, why: str) -> ImageRejected:
    return ImageRejected(400, "bad_image", f"corrupt {fmt.upper()} header: {why}")


def read_header(data: bytes) -> HeaderInfo:
    """Format and declared size of ``data`` without decoding the pixels.

    Raises:
        ImageRejected: 415 unknown format, 400 corrupt header.
    """
    fmt = _sniff(data)
    size = image_size(data)
    if size is None:
        raise _corrupt(fmt, "no frame size could be read (truncated or malformed)")
    w, h = size
    if w <= 0 or h <= 0:
        raise _corrupt(fmt, f"declared size {w}x{h}")
    return HeaderInfo(fmt, int(w), int(h))


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Check the header of an uploaded image, then decode it → ``(H, W, 3)`` uint8 BGR.

    Args:
        data: the file's bytes.
        max_pixels: largest accepted width × height (declared in the header).

    Raises:
        ImageRejected: 415 not a supported image, 413 too many pixels, 400 corrupt.
    """
    from tddfa.errors import InputError
    from tddfa.io.images import to_bgr_uint8

    info = read_header(data)
    if info.width * info.height > max_pixels:
        raise ImageRejected(413, "image_too_large",
                            f"{info.format.upper()} declares {info.width}x{info.height} = "
                            f"{info.width * info.height:,} pixels; the limit is {max_pixels:,}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None:
        raise ImageRejected(400, "bad_image", f"corrupt {info.format.upper()} image "
                            f"({len(data)} bytes) could not be decoded")
    if img.shape[0] * img.shape[1] > max_pixels:   # header and stream disagree
        raise ImageRejected(413, "image_too_large", f"decoded image exceeds {max_pixels:,} pixels")
    try:
        return to_bgr_uint8(img, source="upload")
    except InputError as exc:
        raise ImageRejected(400, "bad_image", str(exc)) from None
