"""Structural check of MATLAB v5 files before SciPy reads them.

SciPy's compiled MAT-5 reader trusts the data-type codes inside a file: a single byte changed to
an unknown code makes it read out of bounds and crash the process (found by
``benchmarks/fuzz.py``). :func:`check_mat5` walks every data element (descending into compressed
elements, matrices, cells and structs) and refuses unknown type codes and sizes that overrun their
container before any SciPy code runs.
"""

from __future__ import annotations

import struct
import zlib

from tddfa.errors import AssetError

__all__ = ["check_mat5"]

# miINT8 .. miUINT64, miMATRIX, miCOMPRESSED, miUTF8/16/32
_VALID = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 14, 15, 16, 17, 18}
_MAX_INFLATED = 1 << 31
_MAX_DEPTH = 32


def check_mat5(data: bytes, source: str) -> None:
    """Raise :class:`AssetError` unless ``data`` (a whole v5 MAT file; v4 and v7.3 files are
    left to SciPy) is made of well-formed data elements."""
    if len(data) < 128 or data[124:126] not in (b"\x00\x01", b"\x01\x00"):
        return  # not a v5 header: v4 (SciPy's pure-Python reader) or something SciPy refuses
    endian = "<" if data[126:128] == b"IM" else ">"
    if data[126:128] not in (b"IM", b"MI"):
        raise AssetError(f"{source}: MAT file with an invalid byte-order mark")
    _walk(memoryview(data)[128:], endian, source, 0)


def _elements(buf: memoryview, e: str, source: str, top: bool):
    """Yield ``(type, body)`` of the data elements in ``buf``, checking codes and sizes."""
    pos, n = 0, len(buf)
    while pos < n:
        if n - pos < 8:
            if top and not any(buf[pos:]):
                return  # zero padding at the end of the file
            raise AssetError(f"{source}: truncated MAT data element at byte {pos}")
        mdtype, nbytes = struct.unpack_from(e + "II", buf, pos)
        small = mdtype >> 16
        if small:  # small data element: size in the upper half, data in the next 4 bytes
            mdtype &= 0xFFFF
            if small > 4 or mdtype not in _VALID or mdtype in (14, 15):
                raise AssetError(f"{source}: malformed small MAT data element at byte {pos}")
            yield mdtype, buf[pos + 4 : pos + 4 + small]
            pos += 8
            continue
        if mdtype not in _VALID:
            raise AssetError(f"{source}: unknown MAT data type {mdtype} at byte {pos}")
        start, end = pos + 8, pos + 8 + nbytes
        if end > n:
            raise AssetError(f"{source}: MAT data element at byte {pos} declares {nbytes} bytes, "
                             f"{n - start} remain")
        yield mdtype, buf[start:end]
        pos = end if mdtype == 15 else min(n, start + ((nbytes + 7) // 8) * 8)


def _walk(buf: memoryview, e: str, source: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise AssetError(f"{source}: MAT data nested more than {_MAX_DEPTH} levels")
    for mdtype, body in _elements(buf, e, source, depth == 0):
        if mdtype == 15:  # miCOMPRESSED: one zlib stream holding further elements
            d = zlib.decompressobj()
            try:
                inner = d.decompress(bytes(body), _MAX_INFLATED)
            except zlib.error as exc:
                raise AssetError(f"{source}: corrupt compressed MAT element ({exc})") from exc
            if d.unconsumed_tail:
                raise AssetError(f"{source}: compressed MAT element inflates beyond "
                                 f"{_MAX_INFLATED} bytes")
            _walk(memoryview(inner), e, source, depth + 1)
        elif mdtype == 14 and len(body):
            _matrix(body, e, source, depth + 1)


# mxCLASS codes: 1 cell, 2 struct, 3 object, 4 char, 5 sparse, 6..15 numeric, 16 function,
# 17 opaque; array-flag bits 0x08 complex, 0x04 global, 0x02 logical
_NUMERIC = set(range(6, 16))


def _matrix(body: memoryview, e: str, source: str, depth: int) -> None:
    """An miMATRIX: array flags, dimensions, name, then the parts its class needs."""
    if depth > _MAX_DEPTH:
        raise AssetError(f"{source}: MAT data nested more than {_MAX_DEPTH} levels")
    subs = list(_elements(body, e, source, False))
    if len(subs) < 3 or subs[0][0] != 6 or len(subs[0][1]) != 8 or subs[1][0] != 5 \
            or len(subs[1][1]) < 8 or len(subs[1][1]) % 4:
        raise AssetError(f"{source}: malformed MAT matrix header")
    (flags,) = struct.unpack_from(e + "I", subs[0][1], 0)
    cls, bits = flags & 0xFF, (flags >> 8) & 0xFF
    if not 1 <= cls <= 15 or bits & ~0x0E:
        raise AssetError(f"{source}: MAT matrix with invalid class {cls} or flags {bits:#x}")
    dims = struct.unpack_from(e + f"{len(subs[1][1]) // 4}i", subs[1][1], 0)
    if any(d < 0 for d in dims):
        raise AssetError(f"{source}: MAT matrix with negative dimensions {dims}")
    rest = subs[3:]  # after flags, dims and name
    complex_ = bool(bits & 0x08)
    need = {4: 1, 5: 3}.get(cls, 1 if cls in _NUMERIC else 0) + (complex_ and cls in _NUMERIC | {5})
    if len(rest) < need:
        raise AssetError(f"{source}: MAT matrix of class {cls} lacks data parts "
                         f"({len(rest)} of {need})")
    if cls in (4, 5) or cls in _NUMERIC:
        if any(t == 14 for t, _ in rest[:need]):
            raise AssetError(f"{source}: MAT matrix data part is itself a matrix")
        return
    for t, b in rest:  # cells, structs, objects: further matrices (struct: field names first)
        if t == 14 and len(b):
            _matrix(b, e, source, depth + 1)
