"""Header checks of uploads: the declared size is read without decoding, bombs are refused."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from tddfa.serve.imagecheck import ImageRejected, decode_upload, read_header


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize("ext,params", [(".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                        (".png", []), (".bmp", []), (".webp", []),
                                        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])])
def test_header_size_matches_the_decoder(ext, params):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img, params)
    assert ok
    info = read_header(buf.tobytes())
    assert (info.width, info.height) == (53, 37)
    out = decode_upload(buf.tobytes(), max_pixels=53 * 37)
    assert out.shape == (37, 53, 3) and out.dtype == np.uint8


def test_declared_bomb_is_refused_before_decoding():
    data = _png_header(100_000, 100_000) + b"\0" * 64      # 10 gigapixels declared, 100 bytes sent
    with pytest.raises(ImageRejected) as e:
        decode_upload(data, max_pixels=40_000_000)
    assert e.value.status == 413 and "100000x100000" in str(e.value)
    # a JPEG whose frame header (SOF0) declares 65500 x 65500
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65500, 65500, 1) + b"\x01\x11\x00"
    with pytest.raises(ImageRejected) as e:
        decode_upload(b"\xff\xd8" + b"\xff\xe0\x00\x04ab" + sof + b"\xff\xd9", max_pixels=40_000_000)
    assert e.value.status == 413


@pytest.mark.parametrize("data,status", [
    (b"", 415), (b"hello, not an image", 415), (b"GIF89a" + b"\0" * 20, 415),
    (b"%PDF-1.4 whatever", 415), (b"\xff\xd8\xff\xe0\x00\x10JFIF", 400),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, 400),
])
def test_non_images_and_corrupt_headers(data, status):
    with pytest.raises(ImageRejected) as e:
        decode_upload(data, max_pixels=10**7)
    assert e.value.status == status


def test_truncated_body_with_a_valid_header_is_a_400():
    img = np.full((40, 40, 3), 128, np.uint8)
    ok, buf = cv2.imencode(".png", img)
    with pytest.raises(ImageRejected) as e:
        decode_upload(buf.tobytes()[:40], max_pixels=10**7)
    assert e.value.status == 400
