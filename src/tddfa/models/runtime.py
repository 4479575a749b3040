"""ONNX Runtime sessions for the networks, with the converted graphs cached on disk.

A checkpoint is converted once (:mod:`tddfa.networks`) and the ``.onnx`` file is cached in the
per-user asset cache (``<cache>/onnx/``, see :func:`tddfa.assets.cache_dir`; ``TDDFA_CACHE``
overrides it). Converted graphs are never written into ``TDDFA_HOME``, which may be a shared,
read-only data folder. The cache key includes the checkpoint's SHA-256 and the builder version,
so a changed checkpoint or builder never reuses a stale graph.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from tddfa.assets import registry as assets
from tddfa.errors import ModelError

__all__ = ["create_session", "cached_onnx", "BUILDER_VERSION"]

log = logging.getLogger(__name__)

BUILDER_VERSION = "1"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


def cached_onnx(source: Path, tag: str, build: Callable[[], bytes]) -> Path:
    """Path of the ONNX graph built from ``source`` by ``build`` (built and cached if absent).

    Args:
        source: the checkpoint the graph is made from (its hash keys the cache).
        tag: short name distinguishing graphs built from one source (e.g. ``"mb05"``).
        build: returns the serialised ONNX model.
    """
    key = f"{tag}-{_file_digest(source)}-b{BUILDER_VERSION}.onnx"
    candidates = [assets.cache_dir() / "onnx", Path(tempfile.gettempdir()) / "tddfa-onnx"]
    for folder in candidates:
        if (folder / key).is_file():
            if _intact(folder / key):
                return folder / key
            log.warning("cached graph %s is corrupt: rebuilding it", folder / key)
            for f in (folder / key, _sidecar(folder / key)):
                f.unlink(missing_ok=True)
    data = build()
    for folder in candidates:
        if _writable(folder):
            target = folder / key
            _replace_bytes(target, data)
            _replace_bytes(_sidecar(target), hashlib.sha256(data).hexdigest().encode())
            log.info("converted %s to %s", source.name, target)
            return target
    raise ModelError(f"no writable folder to cache the converted model among {candidates}")


def _sidecar(graph: Path) -> Path:
    return graph.with_name(graph.name + ".sha256")


def _intact(graph: Path) -> bool:
    """A cached graph is used only when it matches the SHA-256 recorded when it was written (a
    truncated or damaged file, or one without its record, is rebuilt)."""
    try:
        want = _sidecar(graph).read_text().strip()
        h = hashlib.sha256()
        with open(graph, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return False
    return h.hexdigest() == want


def _replace_bytes(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".onnx-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_session(model: Path | bytes, threads: int = 0):
    """An ONNX Runtime CPU session with full graph optimisation.

    Args:
        model: path to an ``.onnx`` file or its bytes.
        threads: intra-op threads (0 = ONNX Runtime's default, one per physical core).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"ONNX Runtime could not load the model: {exc}") from exc
