"""Bad and unusual image inputs: each gives a clear InputError or a normal BGR image."""

import cv2
import numpy as np
import pytest

from tddfa.errors import InputError
from tddfa.io.images import read_image, to_bgr_uint8


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        read_image(p)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "note.jpg"
    p.write_text("this is not an image\n")
    with pytest.raises(InputError, match="not a decodable image"):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "nope.png")


def test_truncated_jpeg_gives_error_or_image(tmp_path, shared):
    data = (shared / "samples" / "JianzhuGuo.jpg").read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 3])
    try:
        img = read_image(p)
    except InputError:
        return
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_header_only_jpeg(tmp_path, shared):
    data = (shared / "samples" / "JianzhuGuo.jpg").read_bytes()
    p = tmp_path / "header.jpg"
    p.write_bytes(data[:200])
    with pytest.raises(InputError):
        read_image(p)


def test_16bit_png(tmp_path):
    a = (np.arange(64 * 48 * 3, dtype=np.uint32) * 37 % 65536).astype(np.uint16).reshape(48, 64, 3)
    p = tmp_path / "deep.png"
    cv2.imwrite(str(p), a)
    img = read_image(p)
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3)
    np.testing.assert_array_equal(img, (a >> 8).astype(np.uint8))


def test_rgba_png_and_grayscale(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 10
    rgba[..., 3] = 255
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), rgba)
    assert read_image(p).shape == (10, 12, 3)
    g = tmp_path / "g.png"
    cv2.imwrite(str(g), np.full((9, 7), 33, np.uint8))
    img = read_image(g)
    assert img.shape == (9, 7, 3) and (img == 33).all()


def test_array_conversions():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # red in RGB
    assert (to_bgr_uint8(rgb, rgb=True)[..., 2] == 255).all()
    f = np.ones((4, 4, 3), np.float32) * 0.5
    assert to_bgr_uint8(f).max() == 128
    assert to_bgr_uint8(np.zeros((4, 4, 1), np.uint8)).shape == (4, 4, 3)
    with pytest.raises(InputError, match="expected"):
        to_bgr_uint8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match="empty"):
        to_bgr_uint8(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(InputError, match="pixel type"):
        to_bgr_uint8(np.zeros((4, 4, 3), np.int32))
