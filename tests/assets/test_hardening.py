"""Issue 15 defect 7: smaller reliability defects, each with its regression test — FIFOs, corrupt
caches and model files, garbage evaluation arrays, downloads into TDDFA_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from tddfa.assets import registry as assets
from tddfa.assets.serialization import load_npy, load_npz
from tddfa.errors import AssetError, InputError, ModelError, TddfaError


def _env(**extra) -> dict:
    import tddfa

    return dict(os.environ, PYTHONPATH=str(Path(tddfa.__file__).parents[1]), **extra)


def test_fifo_named_jpg_is_refused_not_waited_on(tmp_path, shared):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "tddfa", "align", str(fifo), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 1 and "not a regular file" in r.stderr and "Traceback" not in r.stderr


def test_fifo_video_is_refused(tmp_path):
    from tddfa.io.video import open_video

    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(InputError, open_video, fifo)))
    t.start()
    t.join(20)
    if t.is_alive():  # unblock the reader so the test run can end
        with open(fifo, "wb"):
            pass
        t.join(5)
        pytest.fail("open_video blocked on a FIFO")
    assert "not a regular file" in str(done[0].value)


def test_corrupt_cached_onnx_graph_is_rebuilt(tmp_path, monkeypatch, shared):
    from tddfa.models.regressor import Regressor
    from tddfa.models.runtime import cached_onnx

    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    Regressor("mb05")
    graph = next((tmp_path / "cache" / "onnx").glob("mb05-*.onnx"))
    graph.write_bytes(graph.read_bytes()[:5000])  # truncated by a full disk or a crash
    reg = Regressor("mb05")  # rebuilt, not "ONNX Runtime could not load the model" forever
    assert reg.predict(np.zeros((1, 120, 120, 3), np.uint8)).shape == (1, 62)
    assert graph.stat().st_size > 5000
    calls = []
    cached_onnx(assets.resolve("mb05"), "mb05", lambda: calls.append(1) or b"")
    assert not calls  # an intact cache is reused


def test_corrupt_dense_model_is_reported_as_corrupt(tmp_path, monkeypatch, shared):
    from tddfa.face.morphable_model import load_morphable_model

    home = tmp_path / "home"
    (home / "derived").mkdir(parents=True)
    for d in ("3ddfa_v1", "3ddfa_v2"):
        (home / d).symlink_to(shared / "assets" / d)
    src = shared / "assets" / "derived" / "bfm_noneck_approx.npz"
    (home / "derived" / "bfm_noneck_approx.npz").write_bytes(src.read_bytes()[:200_000])
    monkeypatch.setenv("TDDFA_HOME", str(home))
    monkeypatch.setattr(assets, "_verified", {})
    load_morphable_model.cache_clear()
    try:
        mm = load_morphable_model("auto")
        with pytest.raises(AssetError, match="bfm_noneck_approx is present but unusable.*truncated"):
            mm.reconstruct_image(np.zeros((1, 62), np.float32), np.array([[0, 0, 120, 120]]),
                                 dense=True)
        # the same file with the right size but garbage inside (verification bypassed)
        monkeypatch.setattr(assets, "verify_file", lambda spec, path: None)
        load_morphable_model.cache_clear()
        (home / "derived" / "bfm_noneck_approx.npz").write_bytes(b"PK\x03\x04" + bytes(5000))
        with pytest.raises(AssetError, match="corrupt dense model file"):
            load_morphable_model("approx")
    finally:
        load_morphable_model.cache_clear()


def test_downloads_never_write_into_tddfa_home(tmp_path, monkeypatch):
    import urllib.request

    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    monkeypatch.setenv("TDDFA_HOME", str(home))
    monkeypatch.setenv("TDDFA_CACHE", str(cache))
    monkeypatch.delenv("TDDFA_OFFLINE", raising=False)
    created = []
    real = tempfile.mkstemp

    def spy(*a, **k):
        fd, p = real(*a, **k)
        created.append(p)
        return fd, p

    monkeypatch.setattr(tempfile, "mkstemp", spy)

    def no_network(*a, **k):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(AssetError, match="download failed"):
        assets.resolve("bfm_noneck")
    assert created and not [p for p in created if str(home) in p]
    assert list(home.rglob("*")) == []


@pytest.mark.parametrize("content", [b"", b"garbage, not numpy", b"\x93NUMPY\x01\x00" + b"x" * 50,
                                     None])
def test_garbage_npy_is_an_asset_error(tmp_path, content):
    p = tmp_path / "a.npy"
    if content is None:  # a header declaring far more data than the file holds
        np.save(p, np.zeros((10, 4), np.float32))
        data = p.read_bytes().replace(b"(10, 4)", b"(9999999999, 4)"[:7], 1)
        content = data[:-100]
    p.write_bytes(content)
    with pytest.raises(AssetError, match="a.npy"):
        load_npy(p)


def test_npy_and_npz_round_trip(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), a)
    np.savez_compressed(tmp_path / "b.npz", x=a, names=np.array(["p", "q"]))
    z = load_npz(tmp_path / "b.npz")
    np.testing.assert_array_equal(z["x"], a)
    assert list(z["names"]) == ["p", "q"]
    np.save(tmp_path / "o.npy", np.array([1, None], dtype=object), allow_pickle=True)
    with pytest.raises(AssetError, match="objects"):
        load_npy(tmp_path / "o.npy")


def test_eval_with_a_garbage_array_is_one_line(tmp_path, shared, capsys):
    from tddfa.cli.main import main

    bench = shared / "benchmarks" / "aflw2000-3d"
    data = tmp_path / "bench"
    data.mkdir()
    for f in bench.iterdir():
        (data / f.name).symlink_to(f)
    (data / "AFLW2000-3D_crop.roi_box.npy").unlink()
    (data / "AFLW2000-3D_crop.roi_box.npy").write_bytes(b"\x93NUMPY garbage" * 10)
    assert main(["eval", "aflw2000", "--data", str(data), "--limit", "2"]) == 1
    err = capsys.readouterr().err
    assert "roi_box.npy" in err and len(err.strip().splitlines()) == 1, err


def test_errors_are_typed():
    assert issubclass(AssetError, TddfaError) and issubclass(ModelError, TddfaError)
