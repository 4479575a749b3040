"""Restricted loaders for pickled NumPy data and PyTorch checkpoints — no ``torch``, no arbitrary code.

Plain ``pickle.load`` (and ``torch.load`` before ``weights_only``) executes whatever callables a
file names. These loaders only admit the handful of globals that NumPy arrays and PyTorch tensors
are rebuilt from, and reconstruct tensors as NumPy arrays themselves. Anything else — a tampered
file, a truncated file, a file of another kind — raises :class:`~tddfa.errors.AssetError`.

Two checkpoint containers are understood:

* the **legacy** format (PyTorch < 1.6, used by the official 3DDFA_V2 weights): a sequence of
  pickles (magic number, protocol version, system info, the object, the storage keys) followed by
  each storage's raw bytes, prefixed by its element count;
* the **zip** format (PyTorch >= 1.6): ``<name>/data.pkl`` plus one ``<name>/data/<key>`` entry
  per storage.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import AssetError

__all__ = ["load_pickle", "load_torch_checkpoint", "state_dict_from_checkpoint", "load_npy",
           "load_npz", "load_mat"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# PyTorch storage class name -> NumPy dtype of one element.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# Globals a NumPy pickle may name (module, name). ``numpy._core`` is NumPy 2's spelling.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


# Limits on what a checkpoint may declare, checked before anything is allocated or viewed.
MAX_TENSOR_BYTES = 1 << 31  # 2 GiB: one storage or one rebuilt tensor
MAX_RANK = 8


class _Placeholder:
    """Storage stand-in of the legacy loader's first pass: knows its element count only."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.size = dtype, numel


def _as_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise AssetError(f"checkpoint tensor {what} is {type(v).__name__}, expected an integer: "
                         "the file is corrupt or tampered with")
    return int(v)


def check_numel(numel, dtype: np.dtype, source: str = "checkpoint") -> int:
    """A declared storage element count, refused (:class:`AssetError`) when negative or larger than
    :data:`MAX_TENSOR_BYTES`."""
    n = _as_int(numel, "storage size")
    if n < 0 or n * dtype.itemsize > MAX_TENSOR_BYTES:
        raise AssetError(f"{source}: storage declares {n} elements of {dtype} (limit "
                         f"{MAX_TENSOR_BYTES // dtype.itemsize}): the file is corrupt or tampered with")
    return n


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """Rebuild a tensor view (offset, size, stride in elements) of a flat storage as a NumPy array.

    Every number is checked against the storage before a view exists: integer offset and sizes,
    non-negative strides, rank <= :data:`MAX_RANK`, and the highest element addressed inside the
    storage. Anything else raises :class:`AssetError`.
    """
    if not isinstance(storage, (np.ndarray, _Placeholder)) or (
        isinstance(storage, np.ndarray) and storage.ndim != 1
    ):
        raise AssetError(f"checkpoint tensor built on a {type(storage).__name__}, not a storage: "
                         "the file is corrupt or tampered with")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        raise AssetError("checkpoint tensor size/stride are not tuples: the file is corrupt")
    if len(size) != len(stride) or len(size) > MAX_RANK:
        raise AssetError(f"checkpoint tensor has {len(size)} sizes and {len(stride)} strides "
                         f"(rank limit {MAX_RANK}): the file is corrupt or tampered with")
    offset = _as_int(offset, "offset")
    size = tuple(_as_int(s, "size") for s in size)
    stride = tuple(_as_int(s, "stride") for s in stride)
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise AssetError(f"checkpoint tensor with offset {offset}, size {size}, stride {stride}: "
                         "negative values are not allowed (the file is corrupt or tampered with)")
    numel = 1
    for n in size:
        numel *= n
    if numel * storage.dtype.itemsize > MAX_TENSOR_BYTES:
        raise AssetError(f"checkpoint tensor of shape {size} exceeds the {MAX_TENSOR_BYTES >> 20} "
                         "MiB limit: the file is corrupt or tampered with")
    if numel == 0:
        return None if isinstance(storage, _Placeholder) else np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise AssetError(
            f"checkpoint tensor of shape {size} (stride {stride}, offset {offset}) needs "
            f"{last + 1} elements, its storage has {storage.size}: the file is corrupt"
        )
    if isinstance(storage, _Placeholder):
        return None
    if not size:
        return storage[offset : offset + 1].reshape(()).copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset : last + 1],
        shape=size,
        strides=tuple(s * itemsize for s in stride),
        writeable=False,
    )
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_ignored):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits NumPy arrays and (optionally) PyTorch tensors, nothing else."""

    def __init__(self, file, *, source: str, storages=None):
        super().__init__(file)
        self._file = file
        self._source = source
        self._storages = storages  # None: tensors not allowed; else callable(key, dtype, numel)

    def load(self):
        """Unpickle after a pre-scan of the opcodes: memo indices must be small and sequential,
        since CPython's unpickler allocates its memo table up to the largest index a file names
        (a 700-byte file could otherwise ask for gigabytes and minutes)."""
        f = self._file
        start = f.tell()
        ops = 0
        try:
            for op, arg, _pos in pickletools.genops(f):
                ops += 1
                if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"):
                    idx = int(arg)
                    if idx < 0 or idx > ops + 16:
                        raise AssetError(f"{self._source}: malformed pickle (memo index {idx} "
                                         f"after {ops} opcodes)")
        except AssetError:
            raise
        except Exception as exc:
            raise AssetError(f"{self._source}: truncated or malformed pickle ({exc})") from exc
        f.seek(start)
        return super().load()

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            from tddfa.assets import npstate

            # NumPy's own setstate trusts its input: stand-ins check every field first
            return {"_reconstruct": npstate.reconstruct, "scalar": npstate.scalar,
                    "ndarray": npstate.NDARRAY, "dtype": npstate.DType}.get(
                name, super().find_class(module, name) if name == "OrderedDict" else None)
        if self._storages is not None:
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(name)
            if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return _rebuild_tensor
            if module == "torch._utils" and name == "_rebuild_parameter":
                return _rebuild_parameter
        raise AssetError(
            f"{self._source}: refusing to load '{module}.{name}' — only NumPy arrays"
            + (" and PyTorch tensors" if self._storages is not None else "")
            + " are admitted; the file is not a plain data file (tampered, or of another kind)"
        )

    def persistent_load(self, pid):
        if self._storages is None:
            raise AssetError(f"{self._source}: unexpected persistent reference in a data pickle")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise AssetError(f"{self._source}: unsupported persistent reference {pid[:1]!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise AssetError(f"{self._source}: storage of unknown type {storage_type!r}")
        numel = check_numel(numel, storage_type.dtype, self._source)
        return self._storages(key, storage_type.dtype, numel)


def _check_loaded(obj: Any, source: str, depth: int = 0) -> Any:
    """Turn the NumPy stand-ins into arrays and refuse object arrays (their items are arbitrary
    Python objects, not data) anywhere in a loaded structure."""
    if depth == 0:
        from tddfa.assets.npstate import materialize

        try:
            obj = materialize(obj)
        except AssetError as exc:
            raise AssetError(f"{source}: {exc}") from exc
    if depth > 64:
        raise AssetError(f"{source}: nested more than 64 levels deep: not a plain data file")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise AssetError(f"{source}: holds an array of Python objects ({obj.dtype}), "
                             "expected numbers: not a plain data file")
    elif isinstance(obj, dict):
        for v in obj.values():
            _check_loaded(v, source, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_loaded(v, source, depth + 1)
    return obj


def load_pickle(path: str | Path) -> Any:
    """Load a pickle that may only hold NumPy arrays, scalars, dicts, lists and strings.

    Raises:
        AssetError: the file is missing, truncated, or names any other global.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return _check_loaded(_RestrictedUnpickler(io.BytesIO(data), source=str(path)).load(),
                             str(path))
    except AssetError:
        raise
    except Exception as exc:
        raise AssetError(f"{path}: not a readable data pickle ({type(exc).__name__}: {exc})") from exc


def load_torch_checkpoint(path: str | Path) -> Any:
    """Load a PyTorch checkpoint (legacy or zip container) with every tensor as a NumPy array.

    Returns the checkpoint's top-level object (usually a dict). No ``torch`` import happens.

    Raises:
        AssetError: missing, truncated, tampered or not a checkpoint.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not data:
        raise AssetError(f"{path}: empty file (0 bytes), expected a PyTorch checkpoint")
    try:
        if data[:4] == b"PK\x03\x04":
            return _check_loaded(_load_zip_checkpoint(data, str(path)), str(path))
        return _check_loaded(_load_legacy_checkpoint(data, str(path)), str(path))
    except AssetError:
        raise
    except Exception as exc:
        raise AssetError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}); "
            "the file may be truncated or of another kind"
        ) from exc


def _load_legacy_checkpoint(data: bytes, source: str) -> Any:
    buf = io.BytesIO(data)
    plain = _RestrictedUnpickler(buf, source=source)
    magic = plain.load()
    if magic != _LEGACY_MAGIC:
        raise AssetError(f"{source}: not a PyTorch checkpoint (bad magic number)")
    plain.load()  # protocol version
    sys_info = plain.load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise AssetError(f"{source}: big-endian checkpoints are not supported")

    # Pass 1 only walks the object pickle (tensors built on throw-away buffers) to learn each
    # storage's dtype and where the raw data starts; pass 2 rebuilds on the real bytes.
    dtypes: dict[str, np.dtype] = {}

    def placeholder(key: str, dtype: np.dtype, numel: int) -> _Placeholder:
        dtypes[key] = dtype
        return _Placeholder(dtype, numel)

    _RestrictedUnpickler(buf, source=source, storages=placeholder).load()
    keys = [str(k) for k in _RestrictedUnpickler(buf, source=source).load()]
    pos = buf.tell()
    filled: dict[str, np.ndarray] = {}
    for key in keys:
        if pos + 8 > len(data):
            raise AssetError(f"{source}: truncated (storage {key} missing)")
        (numel,) = struct.unpack_from("<q", data, pos)
        pos += 8
        dtype = dtypes.get(key, np.dtype("<f4"))
        numel = check_numel(numel, dtype, source)
        nbytes = numel * dtype.itemsize
        if numel < 0 or pos + nbytes > len(data):
            raise AssetError(
                f"{source}: truncated — storage {key} needs {nbytes} bytes, "
                f"{len(data) - pos} remain"
            )
        filled[key] = np.frombuffer(data, dtype=dtype, count=numel, offset=pos)
        pos += nbytes
    missing = set(dtypes) - set(filled)
    if missing:
        raise AssetError(f"{source}: truncated — {len(missing)} storages have no data")

    buf2 = io.BytesIO(data)
    for _ in range(3):
        _RestrictedUnpickler(buf2, source=source).load()
    return _RestrictedUnpickler(
        buf2, source=source, storages=lambda key, dtype, numel: filled[key]
    ).load()


def _load_zip_checkpoint(data: bytes, source: str) -> Any:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise AssetError(f"{source}: zip file without exactly one data.pkl (not a checkpoint)")
        prefix = pkl[0][: -len("data.pkl")]

        for info in zf.infolist():  # a zip bomb is refused before anything is inflated
            if info.file_size > MAX_TENSOR_BYTES:
                raise AssetError(f"{source}: entry {info.filename} declares {info.file_size} "
                                 f"bytes (limit {MAX_TENSOR_BYTES}): corrupt or tampered with")
        cache: dict[str, np.ndarray] = {}

        def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            name = f"{prefix}data/{key}"
            if name not in names:
                raise AssetError(f"{source}: storage {key} is missing from the archive")
            if name not in cache:
                cache[name] = np.frombuffer(zf.read(name), dtype=np.uint8)
            raw = cache[name]
            if raw.size < numel * dtype.itemsize:
                raise AssetError(f"{source}: truncated storage {key}")
            return raw[: numel * dtype.itemsize].view(dtype)

        return _RestrictedUnpickler(
            io.BytesIO(zf.read(pkl[0])), source=source, storages=storage
        ).load()


def state_dict_from_checkpoint(checkpoint: Any, *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Extract a flat ``name -> array`` state dict, dropping a ``module.`` (DataParallel) prefix.

    Accepts a bare state dict or a dict holding one under ``state_dict`` / ``model``.
    """
    sd = checkpoint
    if isinstance(sd, dict):
        for k in ("state_dict", "model"):
            if k in sd and isinstance(sd[k], dict):
                sd = sd[k]
                break
    if not isinstance(sd, dict) or not sd:
        raise AssetError(f"{source}: no state dict found in the checkpoint")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for k, v in sd.items():
        if not isinstance(v, np.ndarray):
            continue
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    if not out:
        raise AssetError(f"{source}: the checkpoint holds no tensors")
    return out


def _npy_header(f, source: str, available: int) -> tuple[tuple[int, ...], np.dtype]:
    """Read and check a .npy header: known magic, no object dtype, rank <= 32, data that fits in
    ``available`` bytes and under :data:`MAX_TENSOR_BYTES`."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _fortran, dtype = fmt.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, _fortran, dtype = fmt.read_array_header_2_0(f)
    else:
        raise AssetError(f"{source}: unsupported .npy version {version}")
    if dtype.hasobject:
        raise AssetError(f"{source}: holds Python objects ({dtype}), expected numbers")
    n = 1
    for d in shape:
        n *= int(d)
    nbytes = n * dtype.itemsize
    if nbytes > min(available, MAX_TENSOR_BYTES):
        raise AssetError(f"{source}: declares {shape} {dtype} ({nbytes} bytes) but holds "
                         f"{available} bytes: truncated or corrupt")
    return shape, dtype


@contextmanager
def _reading(path: Path, kind: str):
    """Turn anything but an :class:`AssetError` raised while reading ``path`` into one:
    ``"<path>: no such file"`` or ``"<path>: not a <kind> (<exception>)"``."""
    try:
        yield
    except AssetError:
        raise
    except FileNotFoundError as exc:
        raise AssetError(f"{path}: no such file") from exc
    except Exception as exc:  # readers raise many types on malformed files
        raise AssetError(f"{path}: not a {kind} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc


def load_npy(path: str | Path) -> np.ndarray:
    """Load a ``.npy`` array (no pickles), checking its header against the file first.

    Raises:
        AssetError: missing, not a regular file, not a .npy file, truncated, or object dtype.
    """
    import stat

    path = Path(path)
    with _reading(path, "valid .npy array file"):
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise AssetError(f"{path}: not a regular file, expected a .npy array")
        with open(path, "rb") as f:
            _npy_header(f, str(path), st.st_size - f.tell())
            f.seek(0)
            return np.load(f, allow_pickle=False)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of a ``.npz`` archive (no pickles), each header checked first.

    Raises:
        AssetError: missing, not a regular file, not a .npz archive, truncated or corrupt members.
    """
    import stat

    path = Path(path)
    with _reading(path, "valid .npz archive"):
        if not stat.S_ISREG(path.stat().st_mode):
            raise AssetError(f"{path}: not a regular file, expected a .npz archive")
        out: dict[str, np.ndarray] = {}
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    _npy_header(f, f"{path}:{info.filename}", info.file_size)
                with zf.open(info) as f:
                    out[info.filename[:-4]] = np.load(io.BytesIO(f.read()), allow_pickle=False)
        return out


def load_mat(path: str | Path, variable_names: list[str] | None = None) -> dict[str, Any]:
    """Load a MATLAB ``.mat`` file (SciPy, v4–v7.2) as ``name -> array``.

    Raises:
        AssetError: missing, not a regular file, or not a readable MAT file.
    """
    import stat

    import scipy.io

    path = Path(path)
    with _reading(path, "readable MAT file"):
        if not stat.S_ISREG(path.stat().st_mode):
            raise AssetError(f"{path}: not a regular file, expected a .mat file")
        from tddfa.assets.matfile import check_mat5

        data = path.read_bytes()
        check_mat5(data, str(path))  # SciPy's compiled reader crashes on unknown type codes
        return scipy.io.loadmat(io.BytesIO(data), variable_names=variable_names)
