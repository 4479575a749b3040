"""Issue 15 defects 3 and 4: pixel limits from the header before decoding; thin images."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from tddfa.errors import InputError
from tddfa.io.images import image_size, read_image


def big_png(path: Path, width: int, height: int) -> Path:
    """A valid gray PNG of zeros, built in well under a second: after a full flush zlib's output
    for identical input repeats, so one compressed band of rows is written ``height / band`` times."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    band = max(1, min(height, (8 << 20) // (width + 1)))
    while height % band:
        band -= 1
    raw = bytes((width + 1) * band)
    comp = zlib.compressobj(9)
    first = comp.compress(raw) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(raw) + comp.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // band):
        adler = zlib.adler32(raw, adler)
    idat = first + again * (height // band - 1) + b"\x03\x00" + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def test_big_png_builder_makes_valid_files(tmp_path):
    img = cv2.imread(str(big_png(tmp_path / "b.png", 3001, 200)), cv2.IMREAD_UNCHANGED)
    assert img.shape == (200, 3001) and not img.any()


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm", ".pgm"])
@pytest.mark.parametrize("shape", [(23, 37, 3), (5, 1, 3), (1, 300, 3), (23, 37)])
def test_header_size_matches_decoded_size(tmp_path, ext, shape):
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    if ext == ".ppm" and img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if ext == ".pgm" and img.ndim == 3:
        img = img[:, :, 0]
    p = tmp_path / f"x{ext}"
    assert cv2.imwrite(str(p), img)
    assert image_size(p.read_bytes()) == (shape[1], shape[0])


def test_unknown_header_gives_none():
    assert image_size(b"hello world, not an image at all") is None
    assert image_size(b"") is None
    assert image_size(b"\x89PNG\r\n\x1a\n\x00") is None  # truncated


def test_max_pixels_refuses_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "x.png"
    cv2.imwrite(str(p), np.zeros((40, 40, 3), np.uint8))
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    with pytest.raises(InputError, match="1600 pixels.*limit of 1000"):
        read_image(p, max_pixels=1000)
    assert not calls  # refused from the header: nothing decoded
    assert read_image(p, max_pixels=0).shape == (40, 40, 3)  # 0 = no limit
    assert read_image(p, max_pixels=1600).shape == (40, 40, 3)


def test_half_the_limit_warns(tmp_path, caplog):
    p = tmp_path / "x.png"
    cv2.imwrite(str(p), np.zeros((30, 30, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="tddfa"):
        read_image(p, max_pixels=1000)
    assert "900 pixels" in caplog.text


def test_array_over_the_limit_is_refused():
    from tddfa.io.images import load_image

    with pytest.raises(InputError, match="limit"):
        load_image(np.zeros((40, 40, 3), np.uint8), max_pixels=1000)


def test_default_limit_refuses_a_900_megapixel_png(tmp_path):
    p = big_png(tmp_path / "huge.png", 30000, 30000)
    assert p.stat().st_size < 2_000_000
    with pytest.raises(InputError, match="900000000 pixels"):
        read_image(p)


def test_cli_refuses_huge_png_with_exit_1(tmp_path):
    import tddfa

    p = big_png(tmp_path / "huge.png", 20000, 10000)
    env = {"PYTHONPATH": str(Path(tddfa.__file__).parents[1])}
    import os

    r = subprocess.run([sys.executable, "-m", "tddfa", "align", str(p), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert r.returncode == 1
    assert "200000000 pixels" in r.stderr and "--max-pixels" in r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr


@pytest.mark.parametrize("shape", [(1, 10000, 3), (10000, 1, 3), (1, 1, 3), (2, 5000), (3000, 2)])
def test_thin_images_give_no_face_not_an_opencv_error(shape, shared):
    from tddfa.pipeline.aligner import FaceAligner

    res = FaceAligner().align(np.full(shape, 128, np.uint8))
    assert res.faces == []
