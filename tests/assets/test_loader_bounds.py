"""Issue 15 defect 1: tensors rebuilt from a checkpoint must stay inside their storage.

Every crafted file is loaded in a subprocess too, so a segfault shows up as a failed test rather
than a dead test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from crafted import legacy_checkpoint, zip_checkpoint  # noqa: E402

from tddfa.assets.serialization import load_torch_checkpoint  # noqa: E402
from tddfa.errors import AssetError  # noqa: E402

BUILDERS = {"zip": zip_checkpoint, "legacy": legacy_checkpoint}

HOSTILE = {
    "negative stride": dict(size=(4,), stride=(-100_000_000,), offset=3),
    "small negative stride": dict(size=(2,), stride=(-1,), offset=1),
    "size past storage": dict(size=(1000,), stride=(1,)),
    "stride past storage": dict(size=(2, 2), stride=(1_000_000, 1)),
    "offset past storage": dict(size=(1,), stride=(1,), offset=1 << 40),
    "negative offset": dict(size=(2,), stride=(1,), offset=-2),
    "negative size": dict(size=(-3,), stride=(1,)),
    "huge zero-stride view": dict(size=(1 << 40,), stride=(0,)),
    "rank mismatch": dict(size=(2, 2), stride=(1,)),
    "absurd rank": dict(size=(1,) * 64, stride=(0,) * 64),
    "huge declared storage": dict(size=(1,), stride=(1,), numel=1 << 60),
    "negative declared storage": dict(size=(1,), stride=(1,), numel=-1),
    "non-integer size": dict(size=("a",), stride=(1,)),
}


def _load_in_subprocess(path: Path) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom tddfa.assets.serialization import load_torch_checkpoint\n"
            "from tddfa.errors import AssetError\n"
            "try:\n    load_torch_checkpoint(sys.argv[1])\nexcept AssetError as e:\n"
            "    print('ASSETERROR', e)\n    sys.exit(3)\n")
    import os

    import tddfa

    env = dict(os.environ, PYTHONPATH=str(Path(tddfa.__file__).parents[1]))  # this checkout's tddfa
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_tensor_is_refused_not_read(kind, case, tmp_path):
    p = tmp_path / "crafted.pth"
    p.write_bytes(BUILDERS[kind](**HOSTILE[case]))
    r = _load_in_subprocess(p)
    assert r.returncode == 3, f"exit {r.returncode}: {r.stdout}{r.stderr[-500:]}"
    assert "ASSETERROR" in r.stdout


@pytest.mark.parametrize("kind", BUILDERS)
def test_valid_views_still_load(kind, tmp_path):
    p = tmp_path / "ok.pth"
    p.write_bytes(BUILDERS[kind](size=(2, 2), stride=(1, 2), offset=0))  # a transposed view
    w = load_torch_checkpoint(p)["state_dict"]["w"]
    np.testing.assert_array_equal(w, [[1, 3], [2, 4]])
    p.write_bytes(BUILDERS[kind](size=(3,), stride=(0,), offset=3))  # broadcast of the last element
    np.testing.assert_array_equal(load_torch_checkpoint(p)["state_dict"]["w"], [4, 4, 4])
    p.write_bytes(BUILDERS[kind](size=(0, 5), stride=(5, 1), offset=0))  # empty tensor
    assert load_torch_checkpoint(p)["state_dict"]["w"].shape == (0, 5)


def _reference_view(values: np.ndarray, size, stride, offset) -> np.ndarray | None:
    """What a correct loader returns (pure Python index arithmetic), or None when out of bounds."""
    if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        return None
    n = int(np.prod(size)) if size else 1
    if n == 0:
        return np.zeros(size, values.dtype)
    out = np.empty(n, values.dtype)
    for flat in range(n):
        idx, rem = offset, flat
        for dim in reversed(range(len(size))):
            idx += (rem % size[dim]) * stride[dim]
            rem //= size[dim]
        if idx >= values.size:
            return None
        out[flat] = values[idx]
    return out.reshape(size)


_dims = st.integers(min_value=0, max_value=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rank=st.integers(0, 3), data=st.data(), kind=st.sampled_from(sorted(BUILDERS)))
def test_property_rebuilt_tensor_matches_reference_or_is_refused(rank, data, kind, tmp_path):
    size = tuple(data.draw(st.integers(-2, 4)) for _ in range(rank))
    stride = tuple(data.draw(st.integers(-3, 6) | st.sampled_from([-(1 << 62), 1 << 40]))
                   for _ in range(rank))
    offset = data.draw(st.integers(-2, 10) | st.sampled_from([1 << 62]))
    values = np.arange(1, 9, dtype=np.float32)
    p = tmp_path / f"{kind}.pth"
    p.write_bytes(BUILDERS[kind](size, stride, offset, values=values))
    expected = _reference_view(values, size, stride, offset)
    if expected is None:
        with pytest.raises(AssetError):
            load_torch_checkpoint(p)
    else:
        got = load_torch_checkpoint(p)["state_dict"]["w"]
        assert got.shape == tuple(size)
        np.testing.assert_array_equal(got, expected)


def test_object_arrays_are_refused(tmp_path):
    import pickle

    p = tmp_path / "obj.pkl"
    p.write_bytes(pickle.dumps({"mean": np.array([1, 2], dtype=object)}, protocol=4))
    from tddfa.assets.serialization import load_pickle

    with pytest.raises(AssetError, match="Python objects|not a plain numeric"):
        load_pickle(p)


def test_cli_align_with_a_crafted_checkpoint_is_one_line(tmp_path, shared):
    import os

    import tddfa

    p = tmp_path / "evil.pth"
    p.write_bytes(zip_checkpoint(size=(4,), stride=(-100_000_000,), offset=3))
    env = dict(os.environ, PYTHONPATH=str(Path(tddfa.__file__).parents[1]),
               TDDFA_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "tddfa", "align", str(shared / "samples" / "emma.jpg"),
                        "--checkpoint", str(p), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "negative values are not allowed" in r.stderr and "Traceback" not in r.stderr


def test_pickled_numpy_values_match_numpy_own_unpickling(tmp_path):
    import pickle

    from tddfa.assets.serialization import load_pickle

    data = {"f": np.arange(12, dtype=np.float32).reshape(3, 4), "fortran": np.asfortranarray(
        np.arange(6, dtype=">i8").reshape(2, 3)), "u": np.array(["ab", "c"]), "b": np.array([True]),
        "s": np.float64(2.5), "i": np.int16(-3), "empty": np.zeros((0, 3), np.uint8),
        "c": np.array([1 + 2j], np.complex64), "t": (np.ones(2), [np.zeros(1)])}
    for proto in (3, 4):  # (protocol 2 under Python 3 spells bytes via _codecs.encode: refused)
        p = tmp_path / f"d{proto}.pkl"
        p.write_bytes(pickle.dumps(data, protocol=proto))
        got = load_pickle(p)
        for k, v in data.items():
            if k == "t":
                np.testing.assert_array_equal(got[k][0], v[0])
                np.testing.assert_array_equal(got[k][1][0], v[1][0])
                continue
            assert np.asarray(got[k]).dtype == np.asarray(v).dtype, (proto, k)
            np.testing.assert_array_equal(got[k], v)


def test_short_dtype_state_is_refused_not_a_crash(tmp_path, shared):
    """Found by benchmarks/fuzz.py: a dtype state two items short segfaulted NumPy."""
    src = (shared / "assets" / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl").read_bytes()
    state = b"X\x01\x00\x00\x00<q\rNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
    assert state in src
    bad = src.replace(state, b"X\x01\x00\x00\x00<q\rNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t", 1)
    p = tmp_path / "short_state.pkl"
    p.write_bytes(bad)
    code = ("import sys\nfrom tddfa.assets.serialization import load_pickle\n"
            "from tddfa.errors import AssetError\n"
            "try:\n    load_pickle(sys.argv[1])\nexcept AssetError as e:\n"
            "    print('ASSETERROR', e)\n    sys.exit(3)\n")
    import os

    import tddfa

    env = dict(os.environ, PYTHONPATH=str(Path(tddfa.__file__).parents[1]))
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 3, (r.returncode, r.stderr[-300:])
