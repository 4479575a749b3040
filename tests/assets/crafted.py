"""Builders of hand-crafted PyTorch checkpoints (no torch needed) for the loader's hostile tests.

A tensor is pickled the way ``torch.save`` does it — ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, ...)`` with the storage as a persistent id — but every number is ours, so
tests can declare sizes, strides and offsets that do not fit the stored bytes.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

_FAKE = "tddfa_crafted_fake"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _fake_module() -> types.ModuleType:
    mod = sys.modules.get(_FAKE)
    if mod is None:
        mod = types.ModuleType(_FAKE)

        def _rebuild_tensor_v2(*args):  # pragma: no cover - only pickled by reference
            raise AssertionError

        class FloatStorage:  # noqa: D401 - only pickled by reference
            pass

        class LongStorage:
            pass

        class DoubleStorage:
            pass

        class ByteStorage:
            pass

        for obj in (_rebuild_tensor_v2, FloatStorage, LongStorage, DoubleStorage, ByteStorage):
            obj.__module__ = _FAKE
            obj.__qualname__ = obj.__name__
            setattr(mod, obj.__name__, obj)
        sys.modules[_FAKE] = mod
    return mod


class _Tensor:
    def __init__(self, key, storage, numel, offset, size, stride):
        self.key, self.storage, self.numel = key, storage, numel
        self.offset, self.size, self.stride = offset, tuple(size), tuple(stride)

    def __reduce__(self):
        mod = _fake_module()
        return (mod._rebuild_tensor_v2,
                (_StorageRef(self.key, self.storage, self.numel), self.offset, self.size,
                 self.stride, False, {}))


class _StorageRef:
    def __init__(self, key, storage, numel):
        self.key, self.storage, self.numel = key, storage, numel


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", getattr(_fake_module(), obj.storage), obj.key, "cpu", obj.numel)
        return None


def _dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    # protocol 2 names globals as "module\nname\n", so the module can be renamed in place
    data = buf.getvalue()
    data = data.replace(f"{_FAKE}\n_rebuild_tensor_v2".encode(), b"torch._utils\n_rebuild_tensor_v2")
    return data.replace(f"{_FAKE}\n".encode(), b"torch\n")


def zip_checkpoint(size, stride, offset=0, *, numel=None, values=None, storage="FloatStorage",
                   stored_numel=None) -> bytes:
    """A torch-zip checkpoint ``{"state_dict": {"w": tensor}}`` whose one tensor has the given
    ``size``/``stride``/``offset`` over a storage of ``values`` (default 4 float32 ones)."""
    dtype = {"FloatStorage": "<f4", "LongStorage": "<i8", "DoubleStorage": "<f8",
             "ByteStorage": "u1"}[storage]
    vals = np.arange(1, 5) if values is None else np.asarray(values)
    raw = vals.astype(dtype).tobytes()
    n = len(vals) if numel is None else numel
    pkl = _dumps({"state_dict": {"w": _Tensor("0", storage, n, offset, size, stride)}})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        cut = raw if stored_numel is None else raw[: stored_numel * np.dtype(dtype).itemsize]
        zf.writestr("archive/data/0", cut)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def legacy_checkpoint(size, stride, offset=0, *, numel=None, values=None, storage="FloatStorage",
                      stored_numel=None) -> bytes:
    """The same tensor in the legacy (PyTorch < 1.6) container."""
    dtype = {"FloatStorage": "<f4", "LongStorage": "<i8", "DoubleStorage": "<f8",
             "ByteStorage": "u1"}[storage]
    vals = np.arange(1, 5) if values is None else np.asarray(values)
    n = len(vals) if numel is None else numel
    out = io.BytesIO()
    for obj in (_LEGACY_MAGIC, 1001, {"little_endian": True, "protocol_version": 1001}):
        pickle.dump(obj, out, protocol=2)
    out.write(_dumps({"state_dict": {"w": _Tensor("0", storage, n, offset, size, stride)}}))
    pickle.dump(["0"], out, protocol=2)
    k = len(vals) if stored_numel is None else stored_numel
    out.write(struct.pack("<q", k))
    out.write(vals[:k].astype(dtype).tobytes())
    return out.getvalue()
