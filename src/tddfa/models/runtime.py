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

__all__ = ["create_session", "cached_onnx", "BUILDER_VERSION", "BACKENDS", "DEVICES",
           "select_providers", "resolve_backend", "OpenVINOSession", "SPIN_MODES", "DEFAULT_SPIN",
           "resolve_spin", "spin_config"]

BACKENDS = ("onnxruntime", "openvino", "auto")
DEVICES = ("cpu", "cuda")

#: The backend ``auto`` picks per network, from side-by-side timings on the sample photos
#: (benchmarks/bench_backends.py, docs/results/backends.json). OpenVINO ran the FaceBoxes graph
#: 1.9x faster until the graph's mean subtraction moved after its transpose and ONNX Runtime's
#: threads stopped spin-waiting; measured again after both (2026-12-04), ONNX Runtime is the
#: faster backend for both networks (ORT/OV time: detector 0.89-0.99, regressor 0.79-0.89).
AUTO_BACKEND = {"detector": "onnxruntime", "regressor": "onnxruntime"}

log = logging.getLogger(__name__)

BUILDER_VERSION = "3"


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


def select_providers(device: str = "cpu", available: list[str] | None = None) -> list[str]:
    """ONNX Runtime execution providers for ``device``.

    ``cuda`` needs the CUDA provider (package ``onnxruntime-gpu``) and keeps the CPU provider as
    the fallback for unsupported nodes. ``available`` defaults to
    ``onnxruntime.get_available_providers()``.

    Raises:
        DependencyError: ``cuda`` without the CUDA provider. InputError: unknown device.
    """
    from tddfa.errors import DependencyError, unknown_name

    if device not in DEVICES:
        raise unknown_name("device", device, DEVICES)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if available is None:
        import onnxruntime as ort

        available = list(ort.get_available_providers())
    if "CUDAExecutionProvider" not in available:
        raise DependencyError(
            "--device cuda needs ONNX Runtime's CUDA provider: pip install onnxruntime-gpu "
            f"(available providers: {', '.join(available)})")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _have_openvino() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: str, role: str, device: str = "cpu",
                    have_openvino: bool | None = None) -> str:
    """The concrete backend (``onnxruntime`` or ``openvino``) for network ``role``
    (``"detector"`` or ``"regressor"``). ``auto`` takes :data:`AUTO_BACKEND` when OpenVINO is
    installed and the device is the CPU, else ONNX Runtime.

    Raises:
        DependencyError: ``openvino`` requested but not installed, or with ``--device cuda``.
    """
    from tddfa.errors import DependencyError, unknown_name

    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS)
    have = _have_openvino() if have_openvino is None else have_openvino
    if backend == "auto":
        pick = AUTO_BACKEND.get(role, "onnxruntime")
        return pick if (pick != "openvino" or (have and device == "cpu")) else "onnxruntime"
    if backend == "openvino":
        if not have:
            raise DependencyError("--backend openvino needs OpenVINO: pip install 'tddfa[openvino]'")
        if device != "cpu":
            raise DependencyError("the OpenVINO backend runs on --device cpu here; use "
                                  "--backend onnxruntime for cuda")
    return backend


class _Output:
    def __init__(self, name: str):
        self.name = name


class _Meta:
    custom_metadata_map: dict = {}


class OpenVINOSession:
    """An OpenVINO compiled model behind the part of ONNX Runtime's session API tddfa uses
    (``run``, ``get_outputs``, ``get_modelmeta``)."""

    def __init__(self, model: Path | bytes, threads: int = 0):
        import openvino as ov

        core = ov.Core()
        cfg: dict = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        src = str(model) if isinstance(model, Path) else core.read_model(model, b"")
        try:
            self.compiled = core.compile_model(src, "CPU", cfg)
        except Exception as exc:  # openvino raises RuntimeError subclasses
            raise ModelError(f"OpenVINO could not compile the model: {exc}") from exc
        self.request = self.compiled.create_infer_request()
        self._outputs = [o.get_any_name() for o in self.compiled.outputs]

    def get_outputs(self) -> list[_Output]:
        return [_Output(n) for n in self._outputs]

    def get_modelmeta(self) -> _Meta:
        return _Meta()

    def run(self, names: list[str] | None, feeds: dict):
        res = self.request.infer(feeds)
        names = names or self._outputs
        return [res[self.compiled.output(n)] for n in names]


#: ``TDDFA_ORT_SPIN`` values: how ONNX Runtime's intra-op threads wait for work.
SPIN_MODES = {
    # sleep when idle, also between the operators of one run
    "off": {"session.intra_op.allow_spinning": "0"},
    # spin-wait between the operators of a run, sleep as soon as the run ends
    "run": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    # ONNX Runtime's default: keep spinning after a run, waiting for the next one
    "on": {"session.intra_op.allow_spinning": "1"},
}
DEFAULT_SPIN = "run"


def resolve_spin(spin: str | None = None) -> str:
    """The spin mode name (a key of :data:`SPIN_MODES`): ``spin`` itself (an unknown name is an
    :class:`~tddfa.errors.InputError`), or when ``None`` the one in ``TDDFA_ORT_SPIN`` (also
    ``0``/``1`` for off/on; unset or unknown: :data:`DEFAULT_SPIN`, the latter with a warning)."""
    if spin is not None:
        if spin not in SPIN_MODES:
            from tddfa.errors import unknown_name

            raise unknown_name("spin mode", spin, SPIN_MODES)
        return spin
    raw = os.environ.get("TDDFA_ORT_SPIN", "").strip().lower()
    mode = {"": DEFAULT_SPIN, "0": "off", "false": "off", "no": "off", "1": "on", "true": "on",
            "yes": "on"}.get(raw, raw)
    if mode not in SPIN_MODES:
        log.warning("TDDFA_ORT_SPIN=%r is not one of %s; using %r", raw, sorted(SPIN_MODES),
                    DEFAULT_SPIN)
        mode = DEFAULT_SPIN
    return mode


def spin_config(spin: str | None = None) -> dict[str, str]:
    """Session config entries for spin mode ``spin`` (see :func:`resolve_spin`).

    tddfa's pipelines alternate between two sessions (detector, regressor), so threads that keep
    spinning after a run take the cores the other session needs ("on" against "off" on 2 cores:
    photo align 1.1-1.5x slower). Spinning only within a run ("run") makes photo alignment
    0.70-0.91x the time of "off" (best of 3-6 rounds, three runs, 2026-12-04); but where two
    sessions run at the same time (video tracking with detector checks beside a regression on
    multi-threaded sessions) "off" was faster (0.79x and 0.84x the time of "run" in two of three
    runs), so :class:`~tddfa.video.VideoAligner` builds its sessions with "off".
    ``benchmarks/bench_spinning.py`` compares the modes."""
    return dict(SPIN_MODES[resolve_spin(spin)])


def create_session(model: Path | bytes, threads: int = 0, backend: str = "onnxruntime",
                   device: str = "cpu", spin: str | None = None):
    """An inference session with full graph optimisation.

    Args:
        model: path to an ``.onnx`` file or its bytes.
        threads: intra-op threads (0 = the runtime's default, one per physical core).
        backend: ``onnxruntime`` or ``openvino`` (see :func:`resolve_backend` for ``auto``).
        device: ``cpu`` or ``cuda`` (ONNX Runtime's CUDA provider).
        spin: how idle intra-op threads wait (:func:`spin_config`; ONNX Runtime only).
    """
    if backend == "openvino":
        return OpenVINOSession(model, threads)
    import onnxruntime as ort

    providers = select_providers(device)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    for key, value in spin_config(spin).items():
        so.add_session_config_entry(key, value)
    src = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(src, so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"ONNX Runtime could not load the model: {exc}") from exc
