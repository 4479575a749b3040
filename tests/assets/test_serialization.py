import io
import pickle
import struct

import numpy as np
import pytest

from tddfa.assets import registry as assets
from tddfa.assets.serialization import load_pickle, load_torch_checkpoint, state_dict_from_checkpoint
from tddfa.errors import AssetError


def test_legacy_checkpoint_reads_official_weights(shared):
    sd = state_dict_from_checkpoint(load_torch_checkpoint(assets.resolve("mb05")))
    assert sd["conv1.weight"].shape == (16, 3, 3, 3)
    assert sd["conv1.weight"].dtype == np.float32
    assert sd["fc_param.weight"].shape == (62, 512)
    assert sd["bn1.num_batches_tracked"].dtype == np.int64
    # BatchNorm variances are positive: a sign the bytes landed in the right tensors
    assert (sd["bn1.running_var"] > 0).all()


def test_numpy_pickle(shared):
    tri = load_pickle(assets.resolve("tri"))
    assert tri.shape == (3, 76073)
    assert tri.min() == 0 and tri.max() == 38364


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"mean": _Evil()}))
    with pytest.raises(AssetError, match="refusing to load"):
        load_pickle(p)


def test_legacy_checkpoint_with_code_is_refused(tmp_path):
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump({"x": _Evil()}, buf, protocol=2)
    p = tmp_path / "evil.pth"
    p.write_bytes(buf.getvalue())
    with pytest.raises(AssetError, match="refusing to load 'posix.system'|refusing to load"):
        load_torch_checkpoint(p)


def test_truncated_checkpoint_is_rejected(shared, tmp_path):
    data = assets.resolve("mb05").read_bytes()
    p = tmp_path / "cut.pth"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AssetError, match="truncated"):
        load_torch_checkpoint(p)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", struct.pack("<q", 5) * 3])
def test_garbage_checkpoint_is_rejected(tmp_path, content):
    p = tmp_path / "bad.pth"
    p.write_bytes(content)
    with pytest.raises(AssetError):
        load_torch_checkpoint(p)


def test_zip_checkpoint_matches_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch (train extra) not installed")
    t = {"w": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4), "i": torch.tensor([1, 2, 3])}
    t["view"] = t["w"][:, 1]  # a strided view sharing storage
    p = tmp_path / "z.pth"
    torch.save({"state_dict": t, "width": 0.5}, p)
    ck = load_torch_checkpoint(p)
    assert ck["width"] == 0.5
    sd = state_dict_from_checkpoint(ck)
    for k, v in t.items():
        np.testing.assert_array_equal(sd[k], v.numpy())
