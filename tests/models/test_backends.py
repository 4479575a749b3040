"""Backend and device selection (no GPU needed: available providers are faked) and the OpenVINO
backend's agreement with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_shared
from tddfa.errors import DependencyError, InputError
from tddfa.models.runtime import resolve_backend, select_providers


def test_cpu_providers():
    assert select_providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_cuda_uses_the_cuda_provider_with_cpu_fallback():
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("cuda", avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_without_onnxruntime_gpu_says_what_to_install():
    with pytest.raises(DependencyError, match="onnxruntime-gpu"):
        select_providers("cuda", ["CPUExecutionProvider"])


def test_unknown_device_and_backend():
    with pytest.raises(InputError):
        select_providers("tpu", ["CPUExecutionProvider"])
    with pytest.raises(InputError):
        resolve_backend("tensorrt", "detector")


def test_auto_picks_per_network_and_falls_back(monkeypatch):
    from tddfa.models import runtime

    # the table follows the measurements; check the selection logic with a table that names both
    monkeypatch.setitem(runtime.AUTO_BACKEND, "detector", "openvino")
    assert resolve_backend("auto", "detector", have_openvino=True) == "openvino"
    assert resolve_backend("auto", "regressor", have_openvino=True) == "onnxruntime"
    assert resolve_backend("auto", "detector", have_openvino=False) == "onnxruntime"
    assert resolve_backend("auto", "detector", device="cuda", have_openvino=True) == "onnxruntime"
    assert resolve_backend("onnxruntime", "detector", have_openvino=True) == "onnxruntime"


def test_openvino_requested_but_absent_or_on_cuda():
    with pytest.raises(DependencyError, match=r"tddfa\[openvino\]"):
        resolve_backend("openvino", "regressor", have_openvino=False)
    with pytest.raises(DependencyError):
        resolve_backend("openvino", "regressor", device="cuda", have_openvino=True)


@needs_shared
@pytest.mark.parametrize("name", ["emma.jpg", "trump_hillary.jpg", "JianzhuGuo.jpg", "0013.jpg"])
def test_openvino_landmarks_match_onnxruntime(shared, name):
    pytest.importorskip("openvino")
    from tddfa.io.images import read_image

    img = read_image(shared / "samples" / name)
    ort = _aligner("onnxruntime")
    ov = _aligner("openvino")
    assert ov.regressor.backend == "openvino" and ov.detector.backend == "openvino"
    a = ort.align(img).faces
    b = ov.align(img).faces
    assert len(a) == len(b) > 0
    for fa, fb in zip(a, b, strict=True):
        assert np.abs(fa.box - fb.box).max() < 0.05
        assert np.abs(fa.landmarks[:, :2] - fb.landmarks[:, :2]).max() < 0.05


_CACHE: dict = {}


def _aligner(backend: str):
    from tddfa.pipeline.aligner import FaceAligner

    if backend not in _CACHE:
        _CACHE[backend] = FaceAligner(backend=backend)
    return _CACHE[backend]


@needs_shared
@pytest.mark.slow
def test_openvino_aflw2000_mean_nme_matches_onnxruntime(shared):
    pytest.importorskip("openvino")
    from tddfa.evaluation.aflw2000 import eval_aflw2000_crop
    from tddfa.models.regressor import Regressor

    root = shared / "benchmarks" / "aflw2000-3d"
    nme = {}
    for backend in ("onnxruntime", "openvino"):
        res = eval_aflw2000_crop(Regressor(backend=backend), root, pose=False)
        nme[backend] = float(np.mean(res.arrays["nme"]))
    assert abs(nme["openvino"] - nme["onnxruntime"]) < 0.005, nme


def test_spin_modes(monkeypatch):
    from tddfa.errors import InputError
    from tddfa.models.runtime import DEFAULT_SPIN, SPIN_MODES, spin_config

    monkeypatch.delenv("TDDFA_ORT_SPIN", raising=False)
    assert spin_config() == SPIN_MODES[DEFAULT_SPIN] == SPIN_MODES["run"]
    assert spin_config("run") == {"session.intra_op.allow_spinning": "1",
                                  "session.force_spinning_stop": "1"}
    assert spin_config("off") == {"session.intra_op.allow_spinning": "0"}
    for raw, mode in (("0", "off"), ("1", "on"), ("off", "off"), (" ON ", "on"), ("junk", "run")):
        monkeypatch.setenv("TDDFA_ORT_SPIN", raw)
        assert spin_config() == SPIN_MODES[mode]
    assert spin_config("off") == SPIN_MODES["off"]  # an explicit mode beats the environment
    with pytest.raises(InputError, match="spin mode"):
        spin_config("fast")


def test_sessions_get_the_spin_mode(shared, ort_config_entries):
    from tddfa import FaceAligner
    from tddfa.errors import InputError

    seen = ort_config_entries
    al = FaceAligner(spin="off")
    al.detector  # noqa: B018 - builds the detector's session
    assert seen.count(("session.intra_op.allow_spinning", "0")) == 2
    assert ("session.force_spinning_stop", "1") not in seen
    with pytest.raises(InputError, match="did you mean"):
        FaceAligner(spin="of")
