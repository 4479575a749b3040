"""PNG figures of evaluation and benchmark results (matplotlib, Agg backend, imported lazily).

* :func:`plot_ced` — cumulative error distribution curves, one per group (e.g. yaw bucket).
* :func:`plot_nme_vs_yaw` — per-face NME against |yaw|, with bucket means.
* :func:`plot_pose_hist` — histograms of the absolute pitch / yaw / roll errors.
* :func:`plot_bench` — per-stage latency medians as horizontal bars.
* :func:`plot_result` — the figures that fit one :class:`~tddfa.evaluation.EvalResult` or
  result dict (as written to JSON).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import InputError, require

__all__ = ["plot_ced", "plot_nme_vs_yaw", "plot_pose_hist", "plot_bench", "plot_result"]

log = logging.getLogger(__name__)


def _pyplot():
    mpl = require("matplotlib", "plot")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    log.info("wrote %s", path)
    return path


def plot_ced(
    curves: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    max_error: float | None = None,
    xlabel: str = "NME (%)",
    title: str = "Cumulative error distribution",
) -> Path:
    """CED curves: for each label, the fraction of faces with error ≤ x.

    Args:
        curves: label → per-face errors ``(N,)`` (NaN = miss, counted as failure).
        path: output PNG.
        max_error: x-axis limit (default: the 99th percentile over all curves).
    """
    from tddfa.evaluation.metrics import ced_curve

    if not curves:
        raise InputError("plot_ced needs at least one curve, got none")
    if max_error is None:
        allv = np.concatenate([np.asarray(v, float).reshape(-1) for v in curves.values()])
        allv = allv[np.isfinite(allv)]
        max_error = float(np.percentile(allv, 99)) if allv.size else 1.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, errs in curves.items():
        e = np.asarray(errs, float).reshape(-1)
        if e.size == 0:
            continue
        x, y = ced_curve(e, max_error)
        ok = e[np.isfinite(e)]
        mean = f"{ok.mean():.2f}" if ok.size else "n/a"
        miss = int((~np.isfinite(e)).sum())
        extra = f", {miss} missed" if miss else ""
        ax.plot(x, y * 100, label=f"{label} (n={e.size}{extra}, mean {mean})")
    ax.set_xlim(0, max_error)
    ax.set_ylim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("faces (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_nme_vs_yaw(nme: np.ndarray, yaw: np.ndarray, path: str | Path, *,
                    bucket_means: Mapping[str, float] | None = None,
                    title: str = "NME against |yaw|") -> Path:
    """Scatter of per-face NME ``(N,)`` percent against |yaw| ``(N,)`` degrees."""
    e = np.asarray(nme, float).reshape(-1)
    y = np.abs(np.asarray(yaw, float).reshape(-1))
    if e.shape != y.shape:
        raise InputError(f"nme {e.shape} and yaw {y.shape} must have the same length")
    ok = np.isfinite(e)
    xmax = 100.0
    far = y > xmax
    yd = np.minimum(y, xmax)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(yd[ok & ~far], e[ok & ~far], s=5, alpha=0.4, label="face")
    if (ok & far).any():
        ax.scatter(yd[ok & far], e[ok & far], s=14, marker=">", c="C1",
                   label=f"|yaw| > {xmax:g}° ({int((ok & far).sum())}), drawn at {xmax:g}")
    top = float(np.percentile(e[ok], 99.5)) * 1.05 if ok.any() else 1.0
    if (~ok).any():
        ax.scatter(yd[~ok], np.full((~ok).sum(), top * 0.97), marker="x", c="red", s=14,
                   label=f"miss ({int((~ok).sum())}), drawn at the top")
    if bucket_means:
        from tddfa.evaluation.metrics import BUCKET_NAMES, YAW_BUCKETS

        for (lo, hi), name in zip(YAW_BUCKETS, BUCKET_NAMES, strict=True):
            v = bucket_means.get(name)
            if v is not None and np.isfinite(v):
                hi_plot = min(hi, 90.0)
                ax.hlines(v, lo, hi_plot, colors="k", linewidth=2)
                ax.text((lo + hi_plot) / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top)
    ax.set_xlim(0, xmax + 2)
    ax.set_xlabel("|yaw| (degrees)")
    ax.set_ylabel("NME (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_pose_hist(errors: np.ndarray, path: str | Path, *,
                   names: Sequence[str] = ("pitch", "yaw", "roll"),
                   max_error: float = 30.0, title: str = "Head-pose absolute error") -> Path:
    """Histograms of absolute angle errors ``(N, 3)`` degrees (one panel per angle)."""
    err = np.asarray(errors, float)
    if err.ndim != 2 or err.shape[1] != len(names):
        raise InputError(f"errors must be (N, {len(names)}), got {err.shape}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), sharey=True)
    bins = np.linspace(0, max_error, 31)
    for i, (ax, n) in enumerate(zip(np.atleast_1d(axes), names, strict=True)):
        e = err[:, i]
        ax.hist(np.clip(e, 0, max_error), bins=bins, color=f"C{i}")
        ax.axvline(e.mean(), color="k", linestyle="--", linewidth=1)
        ax.set_title(f"{n}: MAE {e.mean():.2f}°, median {np.median(e):.2f}°", fontsize=9)
        ax.set_xlabel(f"absolute error (degrees; last bin ≥ {max_error:g})", fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("faces")
    fig.suptitle(f"{title} (n={len(err)})")
    return _save(fig, path)


def plot_bench(stages: Mapping[str, float], path: str | Path, *,
               title: str = "Latency per stage (median)") -> Path:
    """Horizontal bars of stage medians in milliseconds."""
    items = [(k, float(v)) for k, v in stages.items() if v is not None and np.isfinite(v)]
    if not items:
        raise InputError("plot_bench needs at least one finite stage timing")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(items) + 1.2))
    labels = [k for k, _ in items][::-1]
    vals = [v for _, v in items][::-1]
    ax.barh(labels, vals, color="C0")
    for yv, v in enumerate(vals):
        ax.text(v, yv, f" {v:.2f} ms", va="center", fontsize=8)
    ax.set_xlabel("milliseconds")
    ax.set_xlim(0, max(vals) * 1.3)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_result(result: Any, out_dir: str | Path, stem: str | None = None) -> list[Path]:
    """All figures for one result (an ``EvalResult`` or a result dict as written to JSON, with
    ``per_face`` arrays). Returns the written paths."""
    from tddfa.evaluation.metrics import BUCKET_NAMES, YAW_BUCKETS, _bucket_index
    from tddfa.evaluation.report import EvalResult

    if isinstance(result, EvalResult):
        summary, arrays = result.summary, result.arrays
    else:
        summary = dict(result)
        arrays = {k: np.asarray(v, float) for k, v in (summary.pop("per_face", None) or {}).items()}
    proto = summary.get("protocol", "result")
    stem = stem or proto
    out = Path(out_dir)
    written: list[Path] = []
    model = (summary.get("model") or {}).get("name") if isinstance(summary.get("model"), dict) else None
    tag = f"{summary.get('dataset', proto)} [{proto}]" + (f" {model}" if model else "")
    if proto == "bench":
        written.append(plot_bench(summary["stages_ms"], out / f"{stem}-stages.png",
                                  title="Latency per stage, median ms (threads: "
                                        f"{(summary.get('thread_info') or {}).get('onnxruntime_intra_op')})"))
        return written
    if "nme" in arrays and "yaw" in arrays:
        e, y = arrays["nme"], arrays["yaw"]
        idx = _bucket_index(y, YAW_BUCKETS)
        curves = {f"|yaw| {n}": e[idx == k] for k, n in enumerate(BUCKET_NAMES)}
        curves["all"] = e
        written.append(plot_ced(curves, out / f"{stem}-ced.png", title=f"CED, {tag}"))
        written.append(plot_nme_vs_yaw(e, y, out / f"{stem}-nme-vs-yaw.png",
                                       bucket_means=summary.get("nme"), title=f"NME vs |yaw|, {tag}"))
    elif proto == "300w":
        curves = {k.replace("nme_", ""): v for k, v in arrays.items()
                  if k in ("nme_inter-ocular", "nme_box")}
        if curves:
            written.append(plot_ced(curves, out / f"{stem}-ced.png", title=f"CED, {tag}"))
    if "pose_err" in arrays and len(arrays["pose_err"]):
        written.append(plot_pose_hist(arrays["pose_err"], out / f"{stem}-pose-hist.png",
                                      title=f"Head-pose error, {tag}"))
    return written
