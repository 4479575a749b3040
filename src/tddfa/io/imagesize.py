"""Image dimensions from the file header, without decoding (for the pixel limit).

Understands PNG, JPEG, BMP, GIF, TIFF, WebP and PNM (PBM/PGM/PPM). Returns ``None`` for anything
else or a header too short to tell; callers then decode and check the decoded shape instead.
"""

from __future__ import annotations

import struct

__all__ = ["image_size"]


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels read from the first bytes of an encoded image, or ``None``."""
    try:
        for parse in (_png, _jpeg, _bmp, _gif, _tiff, _webp, _pnm):
            size = parse(data)
            if size is not None:
                return size
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _png(d: bytes):
    if d[:8] == b"\x89PNG\r\n\x1a\n" and d[12:16] == b"IHDR":
        return struct.unpack(">II", d[16:24])
    return None


def _jpeg(d: bytes):
    if d[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(d)
    while i + 4 <= n:
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:  # end of image before a frame header
            return None
        (length,) = struct.unpack(">H", d[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", d[i + 5 : i + 9])
            return w, h
        if length < 2:
            return None
        i += 2 + length
    return None


def _bmp(d: bytes):
    if d[:2] != b"BM":
        return None
    (hdr,) = struct.unpack("<I", d[14:18])
    if hdr == 12:
        w, h = struct.unpack("<HH", d[18:22])
    else:
        w, h = struct.unpack("<ii", d[18:26])
    return abs(w), abs(h)


def _gif(d: bytes):
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", d[6:10])
    return None


def _tiff(d: bytes):
    if d[:4] == b"II*\x00":
        e = "<"
    elif d[:4] == b"MM\x00*":
        e = ">"
    else:
        return None
    (ifd,) = struct.unpack(e + "I", d[4:8])
    (count,) = struct.unpack(e + "H", d[ifd : ifd + 2])
    w = h = None
    for k in range(count):
        off = ifd + 2 + 12 * k
        tag, typ = struct.unpack(e + "HH", d[off : off + 4])
        if tag in (256, 257):
            if typ == 3:
                (v,) = struct.unpack(e + "H", d[off + 8 : off + 10])
            elif typ == 4:
                (v,) = struct.unpack(e + "I", d[off + 8 : off + 12])
            else:
                return None
            if tag == 256:
                w = v
            else:
                h = v
    return (w, h) if w is not None and h is not None else None


def _webp(d: bytes):
    if d[:4] != b"RIFF" or d[8:12] != b"WEBP":
        return None
    kind = d[12:16]
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L":
        (bits,) = struct.unpack("<I", d[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        w = int.from_bytes(d[24:27], "little") + 1
        h = int.from_bytes(d[27:30], "little") + 1
        return w, h
    return None


def _pnm(d: bytes):
    if len(d) < 3 or d[0:1] != b"P" or d[1:2] not in b"123456" or not d[2:3].isspace():
        return None
    tokens: list[int] = []
    i, n = 2, min(len(d), 4096)
    while len(tokens) < 2 and i < n:
        c = d[i : i + 1]
        if c == b"#":
            while i < n and d[i : i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < n and d[j : j + 1].isdigit():
                j += 1
            if j == i:
                return None
            tokens.append(int(d[i:j]))
            i = j
    return (tokens[0], tokens[1]) if len(tokens) == 2 else None
