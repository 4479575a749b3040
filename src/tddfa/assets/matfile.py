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


def _walk(buf: memoryview, e: str, source: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise AssetError(f"{source}: MAT data nested more than {_MAX_DEPTH} levels")
    pos, n = 0, len(buf)
    while pos < n:
        if n - pos < 8:
            if depth == 0 and not any(buf[pos:]):
                return  # zero padding at the end of the file
            raise AssetError(f"{source}: truncated MAT data element at byte {pos}")
        mdtype, nbytes = struct.unpack_from(e + "II", buf, pos)
        small = mdtype >> 16
        if small:  # small data element: size in the upper half, data in the next 4 bytes
            mdtype &= 0xFFFF
            if small > 4:
                raise AssetError(f"{source}: malformed small MAT data element at byte {pos}")
            if mdtype not in _VALID or mdtype in (14, 15):
                raise AssetError(f"{source}: unknown MAT data type {mdtype} at byte {pos}")
            pos += 8
            continue
        if mdtype not in _VALID:
            raise AssetError(f"{source}: unknown MAT data type {mdtype} at byte {pos}")
        start, end = pos + 8, pos + 8 + nbytes
        if end > n:
            raise AssetError(f"{source}: MAT data element at byte {pos} declares {nbytes} bytes, "
                             f"{n - start} remain")
        body = buf[start:end]
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
        elif mdtype == 14:  # miMATRIX: flags, dims, name, then parts / fields / cells
            _walk(body, e, source, depth + 1)
        pos = end if mdtype == 15 else start + ((nbytes + 7) // 8) * 8
        if depth == 0 and mdtype != 15:
            pos = min(pos, n)
