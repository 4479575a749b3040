"""The 3DDFA V1 cascade at inference: stage 0 (the released V2 ``mb05`` estimate, or V1's mean
face) refined by K two-stream stages, each an ONNX graph fed with PNCC and PAF rendered in
NumPy/Numba from the previous estimate (:mod:`tddfa.v1.features`). No PyTorch.

A cascade is a folder with ``cascade.json`` —
``{"start": "mb05"|"mean", "kernel": k, "pose": "matrix"|"quaternion",
"stages": [{"file": "stage1.onnx", "sha256": "..."}, ...], ...}`` — and the stage graphs (as
:func:`tddfa.v1.cascade_train.train_cascade` writes them; :func:`write_manifest` adds the hashes).
The trained cascade shipped with tddfa lives in ``tddfa/v1/weights`` (see docs/training.md for
the command that made it); each graph is checked against its SHA-256 before use.

Yaw gate: a stage entry may carry ``"max_yaw"`` (degrees, chosen on validation by the
training, ``cascade.yaw_gate``); the stage then refines only faces whose current estimate has
``|yaw| <= max_yaw`` and passes the others through (:attr:`CascadeRegressor.last_skipped`;
``Face.extra["cascade"]["skipped_stages"]``).

Robustness: a stage whose output for a face is not finite keeps that face's previous estimate,
and the face is flagged (:attr:`CascadeRegressor.last_fallbacks`; ``Face.extra["cascade"]`` in
:class:`tddfa.pipeline.FaceAligner` results).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from tddfa.errors import AssetError, InputError
from tddfa.models.registry import ModelInfo

#: Scale of one network output unit for a scaled-quaternion component (the training side uses the
#: same constant, :data:`tddfa.v1.cascade_train.QUAT_STEP`).
QUAT_STEP = 0.01

__all__ = ["CascadeRegressor", "default_cascade_dir", "write_manifest", "yaw_within", "CASCADE_INFO"]

log = logging.getLogger(__name__)

CASCADE_INFO = ModelInfo(
    "cascade", "3ddfa_v1_cascade", 0.5, "packaged: tddfa/v1/weights",
    input_format="BGR uint8 crop; PNCC and PAF rendered from the previous estimate",
    licence="MIT (tddfa; trained here on 300W crops)",
    description="3DDFA V1 two-stream cascade (PNCC + PAF) refining the V2 mb05 estimate")


def default_cascade_dir() -> Path:
    """The cascade shipped with the package (``tddfa/v1/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(folder: str | Path, summary: dict) -> Path:
    """Write ``cascade.json`` for the stage graphs in ``folder`` (with their SHA-256) from a
    training summary or an earlier manifest (start, kernel, pose, validation table and the
    run's loss, time and set sizes are kept)."""
    folder = Path(folder)
    stages = []
    n = summary["stages"]
    n = len(n) if isinstance(n, list) else int(n)  # a training summary or a manifest
    for k in range(1, n + 1):
        f = folder / f"stage{k}.onnx"
        if not f.is_file():
            raise InputError(f"{f} is missing")
        entry = {"file": f.name, "sha256": _sha256(f), "bytes": f.stat().st_size}
        gate = _stage_gate(summary, k)
        if gate is not None:
            entry["max_yaw"] = gate
        stages.append(entry)
    man = {k: summary[k] for k in ("start", "kernel", "pose") if k in summary}
    man["stages"] = stages
    man["validation"] = summary.get("table", summary.get("validation"))
    man.update({k: summary[k] for k in ("loss", "seconds", "train_faces", "val_faces") if k in summary})
    out = folder / "cascade.json"
    out.write_text(json.dumps(man, indent=1))
    return out


def _stage_gate(summary: dict, k: int) -> float | None:
    """Stage ``k``'s ``max_yaw`` from a manifest's stage entries or a training summary's table."""
    if isinstance(summary.get("stages"), list) and len(summary["stages"]) >= k:
        return summary["stages"][k - 1].get("max_yaw")
    for row in summary.get("table") or summary.get("validation") or []:
        if row.get("stage") == k:
            return row.get("max_yaw")
    return None


class CascadeRegressor:
    """Regressor-compatible cascade (``predict(crops) -> (B, 62)``).

    Args:
        folder: cascade folder (default: the packaged one).
        threads: ONNX Runtime intra-op threads (0 = default); anything but 1 also renders PNCC
            and PAF side by side on two threads.
        stages: use only the first ``stages`` refinement stages (default all).
        spin: how ONNX Runtime's idle threads wait (:func:`tddfa.models.runtime.spin_config`).

    Raises:
        AssetError: missing manifest or graph, or a graph failing its SHA-256.
    """

    def __init__(self, folder: str | Path | None = None, threads: int = 0,
                 stages: int | None = None, spin: str | None = None) -> None:
        from tddfa.models.runtime import create_session

        self.folder = Path(folder) if folder is not None else default_cascade_dir()
        man_path = self.folder / "cascade.json"
        if not man_path.is_file():
            raise AssetError(f"no cascade manifest at {man_path}: train one with `tddfa train "
                             "--config configs/cascade.yaml` (docs/training.md)")
        try:
            man = json.loads(man_path.read_text())
            entries = list(man["stages"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AssetError(f"{man_path}: not a cascade manifest ({exc})") from exc
        if stages is not None:
            entries = entries[:stages]
        self.start = man.get("start", "mb05")
        self.kernel = int(man.get("kernel", 3))
        self.pose = man.get("pose", "matrix")
        self.sessions = []
        self.max_yaw: list[float | None] = []
        for e in entries:
            gate = e.get("max_yaw")
            if gate is not None and not (isinstance(gate, int | float) and not isinstance(gate, bool)
                                         and 0 < gate <= 180):
                raise AssetError(f"{man_path}: stage {e.get('file')}: max_yaw must be a number of "
                                 f"degrees in (0, 180], got {gate!r}")
            self.max_yaw.append(None if gate is None else float(gate))
            p = self.folder / e["file"]
            if not p.is_file():
                raise AssetError(f"cascade stage graph {p} is missing")
            if e.get("sha256") and _sha256(p) != e["sha256"]:
                raise AssetError(f"cascade stage graph {p}: SHA-256 mismatch; the file is corrupt "
                                 "or tampered with")
            self.sessions.append(create_session(p, threads, spin=spin))
        # the stage graph's declared inputs (tddfa.v1.stage_graph.fast_inputs): `image` (crop +
        # PNCC channels-first) + `paf_chw` (planes); from its previous version `image` + `paf`
        # (channels-last); or, as exported from PyTorch, `crop` + `pncc` + `paf`
        layouts = {frozenset({"image", "paf_chw"}): "planar", frozenset({"image", "paf"}): "image",
                   frozenset({"crop", "pncc", "paf"}): "export"}
        self._layouts = []
        for e, sess in zip(entries, self.sessions, strict=True):
            got = frozenset(i.name for i in sess.get_inputs())
            if got not in layouts:
                raise AssetError(f"cascade stage graph {e['file']}: inputs {sorted(got)}, expected "
                                 "image + paf_chw, image + paf or crop + pncc + paf")
            self._layouts.append(layouts[got])
        from tddfa.models.regressor import Regressor, load_param_stats

        self.base = Regressor("mb05", threads=threads, spin=spin) if self.start == "mb05" else None
        self.mean, self.std = load_param_stats()
        self.info = CASCADE_INFO
        self.source = man_path
        self.width = 0.5
        self.input_size = 120
        self.last_fallbacks = np.zeros((0, len(self.sessions)), bool)
        self.last_skipped = np.zeros((0, len(self.sessions)), bool)
        self.threads = threads
        self._pool = None

    def _feature_pool(self):
        """A one-thread executor that renders PNCC while the caller renders PAF (None with
        ``threads=1``: everything on the calling thread)."""
        if self.threads == 1:
            return None
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tddfa-pncc")
        return self._pool

    @property
    def n_stages(self) -> int:
        return len(self.sessions)

    def stage0(self, crops: np.ndarray) -> np.ndarray:
        """Stage-0 estimates ``(B, 62)``."""
        if self.base is not None:
            return self.base.predict(crops)
        return np.tile(self.mean, (len(crops), 1)).astype(np.float32)

    def run_stage(self, k: int, crops: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Stage ``k`` (1-based) applied to ``params`` ``(B, 62)`` → raw new estimates (may hold
        non-finite rows; :meth:`predict_stages` handles them)."""
        from tddfa.v1.features import render_features, stage_inputs

        sess = self.sessions[k - 1]
        layout = self._layouts[k - 1]
        if layout == "export":
            pncc, paf = render_features(crops, params, self.kernel, pool=self._feature_pool())
            feed = {"crop": crops, "pncc": pncc, "paf": paf}
        else:
            image, paf = stage_inputs(crops, params, self.kernel, pool=self._feature_pool())
            feed = {"image": image, "paf_chw": paf} if layout == "planar" else \
                {"image": image, "paf": np.ascontiguousarray(paf.transpose(0, 2, 3, 1))}
        return _apply_np(sess.run(["delta"], feed)[0], params, self.pose, self.std)

    def predict_stages(self, crops: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Estimates after every stage: list of K + 1 arrays ``(B, 62)`` (stage 0 first) and the
        fallback flags ``(B, K)`` (True where stage k's output was not finite and the previous
        estimate was kept). Faces a stage's yaw gate passed through are in
        :attr:`last_skipped` ``(B, K)``."""
        crops = np.ascontiguousarray(np.asarray(crops))
        if crops.ndim == 3:
            crops = crops[None]
        if crops.ndim != 4 or crops.shape[1:] != (120, 120, 3) or crops.dtype != np.uint8:
            raise InputError(f"crops must be (B, 120, 120, 3) uint8, got {crops.shape} {crops.dtype}")
        out = [self.stage0(crops).astype(np.float32)]
        flags = np.zeros((len(crops), self.n_stages), bool)
        self.last_skipped = np.zeros((len(crops), self.n_stages), bool)
        if len(crops) == 0:
            return out + [out[0]] * self.n_stages, flags
        for k in range(1, self.n_stages + 1):
            prev = out[-1]
            run = np.isfinite(prev).all(axis=1)
            if self.max_yaw[k - 1] is not None and run.any():
                inside = yaw_within(prev[run], self.max_yaw[k - 1])
                self.last_skipped[np.flatnonzero(run)[~inside], k - 1] = True
                run[run] = inside
            new = prev.copy()
            if run.any():
                new[run] = self.run_stage(k, crops[run], prev[run])
            bad = ~np.isfinite(new).all(axis=1)
            new[bad] = prev[bad]
            flags[:, k - 1] = bad
            if bad.any():
                log.warning("cascade stage %d: %d non-finite estimate(s); kept the previous stage's",
                            k, int(bad.sum()))
            out.append(new)
        return out, flags

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Final estimates ``(B, 62)`` float32; flags in :attr:`last_fallbacks`."""
        stages, flags = self.predict_stages(crops)
        self.last_fallbacks = flags
        return stages[-1]


def yaw_within(params: np.ndarray, max_yaw: float) -> np.ndarray:
    """``(B,)`` bool: the estimates ``(B, 62)`` whose head yaw is within ``±max_yaw`` degrees
    (:func:`tddfa.face.pose.pose_from_params`; False for an estimate without a defined pose)."""
    from tddfa.face.pose import pose_from_params

    with np.errstate(invalid="ignore", divide="ignore"):
        yaw = pose_from_params(np.asarray(params, np.float64))[0][:, 0]
    return np.abs(yaw) <= max_yaw


def _apply_np(delta: np.ndarray, params: np.ndarray, pose: str, std: np.ndarray) -> np.ndarray:
    delta = np.asarray(delta, np.float64)
    if pose != "quaternion":
        return (params.astype(np.float64) + delta).astype(np.float32)
    from tddfa.v1.quaternion import params_to_quaternion, quaternion_to_params

    scale = np.concatenate([np.full(4, QUAT_STEP), std[3:12:4], std[12:]])
    try:
        qp = params_to_quaternion(params)
    except InputError:
        return np.full(params.shape, np.nan, np.float32)
    return quaternion_to_params(qp + delta * scale).astype(np.float32)
