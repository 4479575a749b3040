"""Safe rebuilding of NumPy arrays, dtypes and scalars from pickles.

NumPy's own ``dtype.__setstate__`` trusts its input: a pickle whose dtype state tuple is a few
items short crashes the interpreter (found by ``benchmarks/fuzz.py``). So the restricted
unpickler never hands a state to NumPy: it builds :class:`DType` and :class:`Array` stand-ins,
checks every field, and :func:`materialize` turns them into real dtypes and arrays (copies of
the pickled bytes) once loading is done.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from tddfa.errors import AssetError

__all__ = ["DType", "Array", "reconstruct", "scalar", "materialize", "NDARRAY"]

_KINDS = set("biufcUS")  # bool, integers, floats, complex, fixed-width strings
_MAX_BYTES = 1 << 31
NDARRAY = np.ndarray  # the class object itself is harmless; only passed back to reconstruct()


class DType:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` + ``__setstate__``."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = False):
        if not isinstance(spec, str) or len(spec) > 8:
            raise AssetError(f"pickled dtype {spec!r} is not a plain type code")
        try:
            base = np.dtype(spec)
        except TypeError as exc:
            raise AssetError(f"pickled dtype {spec!r} is not a NumPy type code") from exc
        if base.kind not in _KINDS or base.fields is not None or base.subdtype is not None:
            raise AssetError(f"pickled dtype {spec!r} is not a plain numeric or string type")
        self.dtype = base

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise AssetError(f"malformed pickled dtype state {str(state)[:80]}")
        _, endian, subarray, names, fields, elsize, alignment, _flags = state[:8]
        if endian not in ("<", ">", "|", "=") or subarray is not None or names is not None \
                or fields is not None:
            raise AssetError(f"pickled dtype with unsupported state {str(state)[:80]}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (elsize, alignment)):
            raise AssetError(f"malformed pickled dtype state {str(state)[:80]}")
        dt = self.dtype
        if dt.kind in "US" and dt.itemsize == 0:
            unit = 4 if dt.kind == "U" else 1
            if elsize <= 0 or elsize % unit or elsize > (1 << 20):
                raise AssetError(f"pickled string dtype with element size {elsize}")
            dt = np.dtype(f"{dt.kind}{elsize // unit}")
        if endian in "<>" and dt.itemsize > 1 and dt.kind != "b":
            dt = dt.newbyteorder(endian)
        self.dtype = dt


class Array:
    """Stand-in for ``numpy.ndarray`` rebuilt by ``_reconstruct`` + ``__setstate__``."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise AssetError(f"malformed pickled array state ({type(state).__name__})")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, DType):
            raise AssetError("pickled array without a plain dtype")
        if not isinstance(shape, tuple) or len(shape) > 32 or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise AssetError(f"pickled array with invalid shape {str(shape)[:80]}")
        if not isinstance(raw, (bytes, bytearray)):
            raise AssetError(f"pickled array data is {type(raw).__name__}, expected bytes")
        n = 1
        for d in shape:
            n *= d
        if n * dtype.dtype.itemsize > _MAX_BYTES or len(raw) != n * dtype.dtype.itemsize:
            raise AssetError(f"pickled array {shape} {dtype.dtype} needs "
                             f"{n * dtype.dtype.itemsize} bytes, holds {len(raw)}")
        a = np.frombuffer(bytes(raw), dtype=dtype.dtype, count=n)
        self.array = a.reshape(shape, order="F" if fortran else "C").copy(order="K")


def reconstruct(cls: Any, shape: Any = (0,), code: Any = b"b") -> Array:
    """``numpy.core.multiarray._reconstruct``: only plain ``ndarray`` is admitted."""
    if cls is not NDARRAY:
        raise AssetError(f"pickled array of class {getattr(cls, '__name__', cls)!r} refused")
    return Array()


def scalar(dtype: Any, data: Any = b"") -> Any:
    """``numpy.core.multiarray.scalar``: a NumPy scalar from its dtype and bytes."""
    if not isinstance(dtype, DType) or not isinstance(data, (bytes, bytearray)) \
            or len(data) != dtype.dtype.itemsize:
        raise AssetError("malformed pickled NumPy scalar")
    return np.frombuffer(bytes(data), dtype=dtype.dtype)[0]


def materialize(obj: Any, depth: int = 0) -> Any:
    """Replace the stand-ins in a loaded structure by real arrays and dtypes."""
    if depth > 64:
        raise AssetError("pickle nested more than 64 levels deep")
    if isinstance(obj, Array):
        if obj.array is None:
            raise AssetError("pickled array without its data")
        return obj.array
    if isinstance(obj, DType):
        return obj.dtype
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, materialize(v, depth + 1)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: materialize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [materialize(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(materialize(v, depth + 1) for v in obj)
    return obj
