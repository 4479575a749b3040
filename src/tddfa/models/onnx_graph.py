"""A tiny ONNX graph builder that serialises straight to protobuf bytes.

ONNX Runtime needs a serialised ``ModelProto``; building one needs neither the ``onnx`` package nor
``torch``. Only the message fields used here are encoded (field numbers from ``onnx.proto``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Graph"]

# TensorProto.DataType
_DTYPES = {np.dtype("float32"): 1, np.dtype("uint8"): 2, np.dtype("int32"): 6, np.dtype("int64"): 7}
# AttributeProto.AttributeType
_A_FLOAT, _A_INT, _A_STRING, _A_FLOATS, _A_INTS = 1, 2, 3, 6, 7


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field_no: int, wire: int) -> bytes:
    return _varint((field_no << 3) | wire)


def _int(field_no: int, value: int) -> bytes:
    return _key(field_no, 0) + _varint(int(value))


def _bytes(field_no: int, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return _key(field_no, 2) + _varint(len(value)) + value


def _float(field_no: int, value: float) -> bytes:
    return _key(field_no, 5) + struct.pack("<f", float(value))


def _attribute(name: str, value) -> bytes:
    msg = _bytes(1, name)
    if isinstance(value, float):
        msg += _float(2, value) + _int(20, _A_FLOAT)
    elif isinstance(value, (bool, int, np.integer)):
        msg += _int(3, int(value)) + _int(20, _A_INT)
    elif isinstance(value, str):
        msg += _bytes(4, value) + _int(20, _A_STRING)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value):
        msg += b"".join(_float(7, v) for v in value) + _int(20, _A_FLOATS)
    elif isinstance(value, (list, tuple)):
        msg += b"".join(_int(8, int(v)) for v in value) + _int(20, _A_INTS)
    else:  # pragma: no cover - programming error
        raise TypeError(f"unsupported attribute {name}={value!r}")
    return msg


def _tensor(name: str, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    dtype = _DTYPES[array.dtype]
    msg = b"".join(_int(1, d) for d in array.shape)
    msg += _int(2, dtype) + _bytes(8, name) + _bytes(9, array.astype(array.dtype.newbyteorder("<")).tobytes())
    return msg


def _value_info(name: str, shape: tuple, elem_type: int = 1) -> bytes:
    dims = b""
    for d in shape:
        dims += _bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, str(d)))
    tensor_type = _int(1, elem_type) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


@dataclass
class Graph:
    """Accumulates nodes and initialisers; :meth:`serialize` returns ModelProto bytes.

    Example::

        g = Graph("net")
        x = g.input("x", ("batch", 3, 120, 120))
        y = g.node("Relu", [x])
        g.output(y, ("batch", 3, 120, 120))
        onnx_bytes = g.serialize()
    """

    name: str
    opset: int = 13
    _nodes: list[bytes] = field(default_factory=list)
    _inits: list[bytes] = field(default_factory=list)
    _inputs: list[bytes] = field(default_factory=list)
    _outputs: list[bytes] = field(default_factory=list)
    _count: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def _fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def input(self, name: str, shape: tuple, dtype=np.float32) -> str:
        """Declare a graph input; ``shape`` entries are ints or symbolic names."""
        self._inputs.append(_value_info(name, shape, _DTYPES[np.dtype(dtype)]))
        return name

    def output(self, name: str, shape: tuple) -> str:
        self._outputs.append(_value_info(name, shape))
        return name

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        """Add an initialiser (float32 / int64 array) and return its name."""
        name = name or self._fresh("c")
        self._inits.append(_tensor(name, np.asarray(array)))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, name: str | None = None,
             outputs: list[str] | None = None, **attrs) -> str | list[str]:
        """Add a node; returns its output name (or names when ``n_out > 1``)."""
        outs = outputs or [self._fresh(op.lower()) for _ in range(n_out)]
        msg = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outs)
        msg += _bytes(3, name or self._fresh(f"n_{op}")) + _bytes(4, op)
        msg += b"".join(_bytes(5, _attribute(k, v)) for k, v in attrs.items())
        self._nodes.append(msg)
        return outs[0] if n_out == 1 else outs

    def serialize(self) -> bytes:
        graph = b"".join(_bytes(1, n) for n in self._nodes) + _bytes(2, self.name)
        graph += b"".join(_bytes(5, t) for t in self._inits)
        graph += b"".join(_bytes(11, v) for v in self._inputs)
        graph += b"".join(_bytes(12, v) for v in self._outputs)
        model = _int(1, 8) + _bytes(2, "tddfa") + _bytes(3, "0.1")
        model += _bytes(7, graph)
        model += _bytes(8, _bytes(1, "") + _int(2, self.opset))
        for k, v in self.metadata.items():
            model += _bytes(14, _bytes(1, k) + _bytes(2, v))
        return model
