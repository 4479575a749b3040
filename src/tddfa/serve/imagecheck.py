"""Checks of an uploaded image *before* it is decoded.

The format is sniffed from the first bytes and the declared width and height are read from the
header, so that a small file announcing a huge picture (a "decompression bomb") is refused
without allocating its pixels. Only formats whose header we parse are accepted: JPEG, PNG, BMP
and WebP; anything else is not an image for the server (HTTP 415).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

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


def _jpeg_size(d: bytes) -> tuple[int, int]:
    i = 2
    n = len(d)
    while i + 4 <= n:
        if d[i] != 0xFF:
            raise _corrupt("jpeg", f"expected a marker at byte {i}")
        marker = d[i + 1]
        if marker == 0xFF:          # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD9:   # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", d[i + 2:i + 4])
        if length < 2:
            raise _corrupt("jpeg", "segment length < 2")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", d[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise _corrupt("jpeg", "no frame header (SOF) found")


def _png_size(d: bytes) -> tuple[int, int]:
    if len(d) < 24 or d[12:16] != b"IHDR":
        raise _corrupt("png", "missing IHDR chunk")
    return struct.unpack(">II", d[16:24])


def _bmp_size(d: bytes) -> tuple[int, int]:
    if len(d) < 26:
        raise _corrupt("bmp", "file shorter than its header")
    (hsize,) = struct.unpack("<I", d[14:18])
    if hsize == 12:
        w, h = struct.unpack("<HH", d[18:22])
    else:
        w, h = struct.unpack("<ii", d[18:26])
    return abs(w), abs(h)


def _webp_size(d: bytes) -> tuple[int, int]:
    chunk = d[12:16]
    if chunk == b"VP8 " and len(d) >= 30:
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(d) >= 25:
        (bits,) = struct.unpack("<I", d[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(d) >= 30:
        w = int.from_bytes(d[24:27], "little") + 1
        h = int.from_bytes(d[27:30], "little") + 1
        return w, h
    raise _corrupt("webp", "unknown or truncated chunk")


_SIZES = {"jpeg": _jpeg_size, "png": _png_size, "bmp": _bmp_size, "webp": _webp_size}


def read_header(data: bytes) -> HeaderInfo:
    """Format and declared size of ``data`` without decoding the pixels.

    Raises:
        ImageRejected: 415 unknown format, 400 corrupt header.
    """
    fmt = _sniff(data)
    w, h = _SIZES[fmt](data)
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
