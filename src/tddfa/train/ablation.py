"""The seed papers' ablations in one command: ``tddfa train ablation --config configs/ablation.yaml``.

A config names a **base** training config (the common start and budget), the **seeds**, and the
**rows**: each row is a name plus ``--set``-style overrides of the base (dotted keys). Every
row × seed is one training run (``OUT_DIR/<row>/seed<k>``; a finished run keeps its
``result.json`` and is not redone, so an interrupted ablation resumes). Each run is evaluated
on:

* the profiled validation set (``eval.val_manifest``): NME by |yaw| bucket (held-out 300W
  helen_test faces, 300W-LP-style labels);
* AFLW2000-3D (``eval.aflw2000``, optional): the crop protocol, as the papers report — **only
  reported**, nothing is chosen on it;
* rows with ``stability: true``: the video-stability metric of
  :func:`tddfa.train.validation.stability_eval`;
* the validation curve (``train.val_every``) and seconds per step, for the convergence rows.

The result (mean ± spread over seeds per row; spread = half the range) goes to
``results`` (JSON) and ``plot`` (PNG).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import InputError, require

log = logging.getLogger(__name__)

#: the metrics aggregated over seeds (keys of a run's result)
METRICS = ("val_b0", "val_b1", "val_b2", "val_mean", "aflw_b0", "aflw_b1", "aflw_b2",
           "aflw_mean", "stability", "sec_per_step")


def _set(cfg: dict, key: str, value: Any) -> None:
    node = cfg
    parts = key.split(".")
    for k in parts[:-1]:
        node = node.setdefault(k, {})
    node[parts[-1]] = copy.deepcopy(value)


def load_ablation(path: str | Path) -> dict:
    """Read an ablation config (YAML): ``base`` (a training config path, relative to this file,
    or a mapping), ``seeds``, ``out_dir``, ``results``, ``plot``, ``eval``, ``rows``."""
    import os

    from tddfa.train.config import _expand

    yaml = require("yaml", "train")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"ablation config not found: {p}")
    os.environ.setdefault("TDDFA_SHARED", "../shared")
    os.environ.setdefault("TDDFA_TRAIN_DATA", "data")
    cfg = _expand(yaml.safe_load(p.read_text()) or {})
    for k in ("base", "rows"):
        if k not in cfg:
            raise InputError(f"{p}: an ablation config needs '{k}'")
    rows = cfg["rows"]
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{p}: 'rows' must be a non-empty list")
    names = [r.get("name") for r in rows]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise InputError(f"{p}: every row needs a unique 'name', got {names}")
    if isinstance(cfg["base"], str):
        cfg["base"] = str((p.parent / cfg["base"]).resolve()) if not Path(cfg["base"]).is_absolute() \
            else cfg["base"]
    cfg.setdefault("seeds", [0, 1])
    cfg.setdefault("out_dir", "runs/ablation")
    cfg.setdefault("results", "docs/results/ablation.json")
    cfg.setdefault("plot", "docs/results/ablation.png")
    cfg.setdefault("eval", {})
    return cfg


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def run_cell(base: dict, row: dict, seed: int, out_dir: Path, ev: dict) -> dict:
    """Train one row × seed (or read its finished ``result.json``) and evaluate it."""

    from tddfa.train.config import _merge
    from tddfa.train.trainer import Trainer

    res_path = out_dir / "result.json"
    if res_path.is_file():
        res = json.loads(res_path.read_text())
        if ev.get("aflw2000") and "aflw_mean" not in res and (out_dir / "model.pth").is_file():
            # a finished run evaluated before AFLW2000-3D was switched on: add it
            from tddfa.train.model import build_model

            res.update(_aflw(build_model(float(base["model"]["width"]),
                                         str(out_dir / "model.pth")).eval(), ev))
            res_path.write_text(json.dumps(res, indent=1))
        return res
    cfg = copy.deepcopy(base)
    for k, v in (row.get("set") or {}).items():
        _set(cfg, k, v)
    cfg = _merge(cfg, {"seed": int(seed), "out_dir": str(out_dir)})
    t0 = time.time()
    tr = Trainer(cfg, resume=True)
    summary = tr.run()
    res: dict[str, Any] = {"row": row["name"], "seed": int(seed), "steps": summary["steps"],
                           "train_seconds": time.time() - t0,
                           "sec_per_step": summary["seconds"] / max(1, summary["steps"]),
                           "meta_choices": summary.get("meta_choices"),
                           "curve": [{"step": v["step"], "nme": v["nme"]}
                                     for v in summary.get("val", []) if v]}
    model = tr.model
    model.eval()
    if ev.get("val_manifest"):
        last = (summary.get("val") or [None])[-1]
        vc = cfg["data"].get("val") or {}
        same = (last is not None and last.get("step") == summary["steps"]
                and str(vc.get("manifest")) == str(ev["val_manifest"])
                and vc.get("limit") == ev.get("val_limit"))
        v = last if same else _validator(ev["val_manifest"], ev.get("val_limit"))(model)
        res.update(val_b0=v["nme_b0"], val_b1=v["nme_b1"], val_b2=v["nme_b2"], val_mean=v["nme"])
    if ev.get("aflw2000"):
        res.update(_aflw(model, ev))
    if row.get("stability") and ev.get("stability"):
        from tddfa.train.validation import stability_eval

        st = ev["stability"]
        res["stability"] = stability_eval(model, st["root"], st.get("split", "helen_test"),
                                          int(st.get("n_faces", 8)), int(st.get("n_frames", 24)))
    res_path.write_text(json.dumps(res, indent=1))
    return res


def _aflw(model, ev: dict) -> dict[str, float]:
    """AFLW2000-3D crop-protocol NME by bucket of a torch model (reported, never chosen on)."""
    from tddfa.evaluation.aflw2000 import eval_aflw2000_crop
    from tddfa.train.model import predict_params
    from tddfa.train.validation import summarize

    def predict(crops: np.ndarray) -> np.ndarray:
        return predict_params(model, crops, batch_size=max(len(crops), 1))

    r = eval_aflw2000_crop(predict, ev["aflw2000"], pose=False, limit=ev.get("aflw_limit"))
    a = summarize(np.asarray(r.arrays["nme"]), np.asarray(r.arrays["yaw"]))
    return {"aflw_b0": a["nme_b0"], "aflw_b1": a["nme_b1"], "aflw_b2": a["nme_b2"],
            "aflw_mean": a["nme"]}


_VALIDATORS: dict = {}


def _validator(manifest: str, limit: int | None):
    """A :class:`~tddfa.train.validation.ManifestValidator`, read once per process."""
    from tddfa.train.validation import ManifestValidator

    key = (str(manifest), limit)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = ManifestValidator(manifest, limit)
    return _VALIDATORS[key]


def aggregate(results: list[dict]) -> dict[str, dict]:
    """Per metric: mean, spread (half the range) and the per-seed values."""
    out: dict[str, dict] = {}
    for m in METRICS:
        vals = [r[m] for r in results if r.get(m) is not None and np.isfinite(r[m])]
        if vals:
            a = np.asarray(vals, np.float64)
            out[m] = {"mean": float(a.mean()), "spread": float((a.max() - a.min()) / 2),
                      "values": [float(x) for x in a]}
    return out


def run_ablation(config: str | Path, *, only: list[str] | None = None) -> dict:
    """Run every row × seed of an ablation config; write and return the results JSON."""
    from tddfa.train.config import load_config

    cfg = load_ablation(config)
    base = cfg["base"] if isinstance(cfg["base"], dict) else load_config(cfg["base"])
    if isinstance(cfg["base"], dict):
        from tddfa.train.config import DEFAULTS, _merge

        base = _merge(DEFAULTS, base)
    out = Path(cfg["out_dir"])
    rows_out = []
    for row in cfg["rows"]:
        if only and row["name"] not in only:
            continue
        cells = []
        for seed in cfg["seeds"]:
            log.info("ablation: %s, seed %s", row["name"], seed)
            cells.append(run_cell(base, row, int(seed), out / _slug(row["name"]) / f"seed{seed}",
                                  cfg["eval"]))
        rows_out.append({"name": row["name"], "claim": row.get("claim", ""),
                         "set": row.get("set") or {}, "metrics": aggregate(cells),
                         "curves": [c.get("curve", []) for c in cells],
                         "meta_choices": [c.get("meta_choices") for c in cells]})
    result = {"config": str(config), "seeds": list(cfg["seeds"]),
              "budget": {"steps": base["train"]["steps"], "batch_size": base["train"]["batch_size"],
                         "init": base["model"]["init"], "reinit": base["model"].get("reinit"),
                         "trainable": base["model"].get("trainable"), "lr": base["optim"]["lr"]},
              "eval": cfg["eval"], "rows": rows_out}
    res_path = Path(cfg["results"])
    res_path.parent.mkdir(parents=True, exist_ok=True)
    res_path.write_text(json.dumps(result, indent=1))
    if cfg.get("plot"):
        plot_ablation(result, cfg["plot"])
    return result


def markdown_table(result: dict) -> str:
    """The ablation table (Markdown) from a results dict: mean ± spread per metric."""
    def cell(m: dict, k: str, digits: int = 3) -> str:
        if k not in m:
            return "–"
        return f"{m[k]['mean']:.{digits}f} ± {m[k]['spread']:.{digits}f}"

    lines = ["| row | val [0,30) | val [30,60) | val [60,90] | val mean | AFLW2000-3D mean "
             "| stability | s/step |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        m = r["metrics"]
        stab = cell(m, "stability", 5) if "stability" in m else "–"
        lines.append(f"| {r['name']} | {cell(m, 'val_b0')} | {cell(m, 'val_b1')} | "
                     f"{cell(m, 'val_b2')} | {cell(m, 'val_mean')} | {cell(m, 'aflw_mean')} | "
                     f"{stab} | {cell(m, 'sec_per_step', 2)} |")
    return "\n".join(lines)


def plot_ablation(result: dict, path: str | Path) -> Path:
    """Bar chart of validation and AFLW2000-3D NME by bucket per row (mean ± spread), the
    stability of the rows that have it, and the validation curves of fWPDC vs WPDC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [3, 1, 1.3]})
    ax = axes[0]
    keys = [("val_b0", "val [0,30)"), ("val_b1", "val [30,60)"), ("val_b2", "val [60,90]"),
            ("aflw_mean", "AFLW2000-3D mean")]
    x = np.arange(len(rows))
    wd = 0.8 / len(keys)
    for j, (k, lab) in enumerate(keys):
        mu = [r["metrics"].get(k, {}).get("mean", np.nan) for r in rows]
        sp = [r["metrics"].get(k, {}).get("spread", 0) for r in rows]
        ax.bar(x + (j - len(keys) / 2 + 0.5) * wd, mu, wd, yerr=sp, label=lab, capsize=2)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("NME %")
    ax.legend(fontsize=8)
    ax.set_title(f"ablation ({result['budget']['steps']} steps, seeds {result['seeds']})")
    lo = np.nanmin([r["metrics"].get(k, {}).get("mean", np.nan) for r in rows for k, _ in keys])
    ax.set_ylim(max(0, lo * 0.8), None)
    ax = axes[1]
    st = [(r["name"], r["metrics"]["stability"]) for r in rows if "stability" in r["metrics"]]
    if st:
        ax.bar(range(len(st)), [s["mean"] * 100 for _, s in st],
               yerr=[s["spread"] * 100 for _, s in st], capsize=3)
        ax.set_xticks(range(len(st)), [n for n, _ in st], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("stability (% of face size, lower = steadier)")
    ax = axes[2]
    for r in rows:
        if r["name"].lower() in ("wpdc", "fwpdc"):
            for i, c in enumerate(r["curves"]):
                if c:
                    ax.plot([p["step"] for p in c], [p["nme"] for p in c], marker="o",
                            label=f"{r['name']} seed {result['seeds'][i]}")
    ax.set_xlabel("step")
    ax.set_ylabel("validation NME % (mean of buckets)")
    ax.set_title("convergence")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
