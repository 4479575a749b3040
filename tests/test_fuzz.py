"""Fuzzing (issue 15, item 5), the short CI run: every reader of untrusted files, fed mutated
copies of real files (byte-mutation fuzzer in a crash-isolating worker) and Hypothesis-generated
bytes, raises only tddfa's typed errors — no other exception, no crash, no hang. The long run is
``python benchmarks/fuzz.py --minutes 20`` (figures in docs/reliability.md)."""

from __future__ import annotations

import importlib.util
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tddfa.errors import TddfaError

ROOT = Path(__file__).resolve().parents[1]


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("tddfa_bench_fuzz", ROOT / "benchmarks" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_byte_mutation_fuzz_short_run(shared, tmp_path):
    pytest.importorskip("torch")  # the config target reads the training config
    fuzz = _fuzz_module()
    summary = fuzz.run(seconds_per_target=3.0, seed=1, work=tmp_path, log=lambda *_: None,
                       min_cases=10)
    for target, stats in summary["targets"].items():
        assert stats["cases"] >= 10, (target, stats)
        assert stats["defects"] == 0, (target, stats["defect_examples"])
    assert set(summary["targets"]) == set(fuzz.TARGETS)


def _only_typed(fn, path: Path) -> None:
    try:
        fn(path)
    except TddfaError:
        pass


_settings = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _loaders():
    from tddfa.assets.serialization import load_mat, load_npy, load_npz, load_pickle, load_torch_checkpoint
    from tddfa.io.images import read_image

    return {".jpg": read_image, ".pth": load_torch_checkpoint, ".pkl": load_pickle,
            ".npy": load_npy, ".npz": load_npz, ".mat": load_mat}


@_settings
@given(data=st.binary(max_size=2048), ext=st.sampled_from([".jpg", ".pth", ".pkl", ".npy", ".npz", ".mat"]))
def test_random_bytes_give_typed_errors(tmp_path, data, ext):
    p = tmp_path / f"x{ext}"
    p.write_bytes(data)
    _only_typed(_loaders()[ext], p)


@_settings
@given(magic=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*",
                              b"RIFF\x00\x00\x00\x00WEBP", b"P5\n", b"\x93NUMPY", b"PK\x03\x04",
                              b"MATLAB 5.0 MAT-file" + b" " * 105 + b"\x00\x01IM", b"\x80\x02"]),
       tail=st.binary(max_size=512), ext=st.sampled_from([".jpg", ".pth", ".pkl", ".npy", ".npz", ".mat"]))
def test_plausible_headers_with_random_bodies(tmp_path, magic, tail, ext):
    p = tmp_path / f"x{ext}"
    p.write_bytes(magic + tail)
    _only_typed(_loaders()[ext], p)


@_settings
@given(w=st.integers(0, 1 << 32), h=st.integers(0, 1 << 32), depth=st.sampled_from([1, 8, 16]),
       color=st.sampled_from([0, 2, 3, 4, 6]), body=st.binary(max_size=256))
def test_png_headers_with_any_size(tmp_path, w, h, depth, color, body):
    from tddfa.io.images import read_image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w % (1 << 32), h % (1 << 32), depth, color, 0, 0, 0)
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(body))
                  + chunk(b"IEND", b""))
    try:
        img = read_image(p)
    except TddfaError:
        return
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


@_settings
@given(shape=st.lists(st.integers(-3, 1 << 40), min_size=0, max_size=5),
       descr=st.sampled_from(["<f4", "<i8", "|O", "<U5", "|b1", "<c16", "V8"]),
       payload=st.binary(max_size=256))
def test_npy_headers_with_any_shape(tmp_path, shape, descr, payload):
    from tddfa.assets.serialization import load_npy

    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    p = tmp_path / "x.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload)
    _only_typed(load_npy, p)


@_settings
@given(text=st.text(max_size=300))
def test_random_yaml_configs(tmp_path, text):
    pytest.importorskip("torch")
    from tddfa.train.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    _only_typed(load_config, p)


def test_npz_round_trip_is_unchanged(tmp_path):
    from tddfa.assets.serialization import load_npz

    buf = io.BytesIO()
    np.savez(buf, a=np.eye(3))
    (tmp_path / "a.npz").write_bytes(buf.getvalue())
    np.testing.assert_array_equal(load_npz(tmp_path / "a.npz")["a"], np.eye(3))
