"""MAT files that crashed SciPy's compiled reader (found by benchmarks/fuzz.py) are refused with an
AssetError; valid files still load. Each case runs in a subprocess so a crash fails the test."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io


def _seed() -> bytearray:
    """The fuzzer's seed: two numeric variables."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"UV": np.random.default_rng(0).random((20, 2)),
                           "Pose_Para": np.zeros((1, 7))})
    return bytearray(buf.getvalue())


def _load(path: Path) -> subprocess.CompletedProcess:
    import tddfa

    code = ("import sys\nfrom tddfa.assets.serialization import load_mat\n"
            "from tddfa.errors import AssetError\n"
            "try:\n    d = load_mat(sys.argv[1])\n    print('LOADED', sorted(d))\n"
            "except AssetError as e:\n    print('ASSETERROR', e)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(tddfa.__file__).parents[1]))
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          timeout=60, env=env)


# (offset, new byte) mutations of the seed that made SciPy 1.17 segfault (benchmarks/fuzz.py)
CRASHES = {
    "unknown type code 0": [(176, 0)],
    "unknown type code 243": [(176, 243), (421, 122)],
    "second variable type code 192": [(195, 80), (568, 192)],
    "flag bits 0x5c": [(145, 0x5C), (440, 10)],
    "flag bits 0xff": [(145, 0xFF), (233, 140), (402, 108)],
}


@pytest.mark.parametrize("case", sorted(CRASHES))
def test_crashing_mat_files_are_refused(tmp_path, case):
    data = _seed()
    for pos, value in CRASHES[case]:
        data[pos] = value
    p = tmp_path / "x.mat"
    p.write_bytes(bytes(data))
    r = _load(p)
    assert r.returncode == 0, f"crashed with {r.returncode}: {r.stderr[-300:]}"
    assert "ASSETERROR" in r.stdout, r.stdout


def test_valid_mat_files_load(tmp_path):
    p = tmp_path / "ok.mat"
    scipy.io.savemat(p, {"a": np.eye(3), "s": {"f": np.ones(2)}, "c": np.array([[1 + 2j]]),
                         "t": "text"}, do_compression=True)
    from tddfa.assets.serialization import load_mat

    d = load_mat(p)
    np.testing.assert_array_equal(d["a"], np.eye(3))
    assert d["c"][0, 0] == 1 + 2j
