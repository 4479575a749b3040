"""Protocol outcomes (:class:`EvalResult`), the predictor interface, JSON output, tables and machine facts."""

from __future__ import annotations

import json
import logging
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tddfa.evaluation.metrics import BUCKET_NAMES

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """Anything with ``predict(crops (B, 120, 120, 3) uint8 BGR) -> (B, 62) float32``."""

    def predict(self, crops: np.ndarray) -> np.ndarray: ...


@dataclass
class EvalResult:
    """Outcome of one protocol.

    Attributes:
        summary: JSON-ready dict (protocol, model, n, nme table, timings, ...).
        arrays: per-face arrays for plots, e.g. ``nme`` ``(N,)`` percent, ``yaw`` ``(N,)``
            degrees, ``pose_err`` ``(M, 3)`` degrees.
    """

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def to_json(self, *, per_face: bool = True) -> str:
        """The summary as JSON; with ``per_face`` the per-face arrays go under ``"per_face"``."""
        d = dict(self.summary)
        if per_face and self.arrays:
            d["per_face"] = {k: _jsonable(v) for k, v in self.arrays.items()}
        return json.dumps(d, indent=1)



# --------------------------------------------------------------------------------------------
# output


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()] if v.ndim else _jsonable(v.item())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if not math.isfinite(f) else round(f, 6)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def machine_info() -> dict[str, Any]:
    """Machine and library versions recorded with every result."""
    import os

    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor()
                            or platform.machine(), "cpu_count": os.cpu_count(),
                            "python": platform.python_version(), "numpy": np.__version__}
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not on every OS
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def write_json(result: EvalResult | dict, path: str | Path, *, per_face: bool = True) -> Path:
    """Write a result (summary plus, with ``per_face``, the per-face arrays) as JSON atomically."""
    from tddfa.io.atomic import atomic_write_text

    if isinstance(result, EvalResult):
        d = dict(result.summary)
        if per_face and result.arrays:
            d["per_face"] = dict(result.arrays)
    else:
        d = dict(result)
    return atomic_write_text(path, json.dumps(_jsonable(d), indent=1) + "\n")


def format_table(summary: dict[str, Any]) -> str:
    """Human-readable lines for a summary (the CLI prints them)."""
    lines = []
    proto = summary.get("protocol")
    if proto in ("crop", "detector", "aflw21"):
        nm = summary["nme"]
        counts = summary.get("counts", {})
        head = f"{summary.get('dataset')} [{proto}] model={summary['model'].get('name')} n={summary['n']}"
        if proto == "detector":
            head += f" detected={summary['detected']} misses={summary['misses']}"
        lines.append(head)
        for b in BUCKET_NAMES:
            lines.append(f"  NME |yaw| {b:>6}: {nm[b]:.3f} %  (n={counts.get(b, '?')})")
        lines.append(f"  NME mean of buckets: {nm['mean']:.3f} %   all faces: {nm['all']:.3f} %")
        if "pose_mae" in summary:
            p = summary["pose_mae"]
            lines.append(f"  pose MAE (deg, n={p['n']}): yaw {p['yaw']:.3f}  pitch {p['pitch']:.3f}  "
                         f"roll {p['roll']:.3f}  mean {p['mean']:.3f}")
    elif proto == "300w":
        lines.append(f"{summary['dataset']} roi={summary['roi']} model={summary['model'].get('name')} "
                     f"n={summary['n']} misses={summary['misses']}")
        for k, v in summary["nme"].items():
            line = f"  NME ({k}): mean {v['mean']:.3f} %  median {v['median']:.3f} %"
            if "auc" in v:
                line += f"  AUC@{v['threshold']:g} {v['auc']:.3f}  failure {v['failure_rate']:.3f}"
            lines.append(line)
    if "timing_s" in summary:
        lines.append(f"  time: {summary['timing_s'].get('total', float('nan')):.1f} s")
    return "\n".join(lines)
