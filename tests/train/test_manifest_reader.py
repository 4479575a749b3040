"""The training-data manifest reader gives typed errors on damaged files (issue 15, fuzzing) and
reads what save_manifest writes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tddfa.errors import TddfaError  # noqa: E402
from tddfa.train.samples import SampleSet, load_manifest, save_manifest  # noqa: E402


def _set(n=3):
    rng = np.random.default_rng(0)
    return SampleSet(np.array([f"f{i}" for i in range(n)]), np.array([f"/x/f{i}.jpg" for i in range(n)]),
                     np.tile(np.array([0, 0, 120, 120], np.float32), (n, 1)),
                     rng.random((n, 62)).astype(np.float32), rng.random((n, 68, 2)).astype(np.float32))


def test_round_trip(tmp_path):
    p = save_manifest(tmp_path / "m.npz", _set())
    ss = load_manifest(p)
    assert len(ss) == 3 and ss.params.shape == (3, 62) and ss.landmarks.shape == (3, 68, 2)


@pytest.mark.parametrize("arrays", [
    dict(names=np.array(["a"]), images=np.array(["a.jpg"]), params=np.zeros((1, 61))),
    dict(names=np.array(["a", "b"]), images=np.array(["a.jpg"]), params=np.zeros((2, 62))),
    dict(names=np.array(["a"]), images=np.array(["a.jpg"]), params=np.array([["x"] * 62])),
    dict(names=np.array(["a"]), images=np.array(["a.jpg"]), params=np.zeros((1, 62)),
         roi_boxes=np.zeros((1, 3))),
    dict(names=np.array(["a"]), params=np.zeros((1, 62))),
])
def test_malformed_manifests_are_typed_errors(tmp_path, arrays):
    p = tmp_path / "m.npz"
    np.savez(p, **arrays)
    with pytest.raises(TddfaError):
        load_manifest(p)


def test_garbage_file_is_typed_error(tmp_path):
    p = tmp_path / "m.npz"
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(TddfaError):
        load_manifest(p)
