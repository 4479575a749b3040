"""Training configuration: defaults, YAML loading, ``--set`` overrides."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from tddfa.errors import InputError, require

torch = require("torch", "train")


DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "out_dir": "runs/train",
    "threads": 1,
    "model": {"width": 0.5, "init": "mb05", "trainable": None, "reinit": []},
    "data": {"train": [], "limit": None, "heldout": 32, "val": None, "workers": 0,
             "reload": False},
    "augment": {"enabled": True, "march": False},
    "loss": {"main": "fwpdc", "vertices": 25, "landmark_weight": 0.0, "lm_reg_weight": 0.0,
             "landmark_target": "params", "distill_weight": 0.0, "fix_tz": True, "phases": [],
             "joint": {"fwpdc": 1.0, "vdc": 1.0},
             "meta": {"every": 10, "lr": 1e-4, "mode": "select", "normalize": True}},
    "optim": {"name": "adamw", "lr": 1e-4, "weight_decay": 1e-4, "momentum": 0.9,
              "schedule": "cosine", "warmup_steps": 0, "milestones": [0.6, 0.85], "gamma": 0.2},
    "train": {"steps": 1000, "batch_size": 32, "log_every": 10, "val_every": 200,
              "ckpt_every": 200, "freeze_bn": False, "progress": True,
              "tensorboard": False, "export_onnx": True},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _expand(obj):
    if isinstance(obj, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), m.group(0)), obj)
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand(v) for v in obj]
    return obj


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Read a YAML config, merge it over :data:`DEFAULTS` and ``overrides``, expand ``${VAR}``."""
    yaml = require("yaml", "train")
    os.environ.setdefault("TDDFA_SHARED", "../shared")
    os.environ.setdefault("TDDFA_TRAIN_DATA", "data")
    cfg: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"config file not found: {p}")
        cfg = yaml.safe_load(p.read_text()) or {}
        if not isinstance(cfg, dict):
            raise InputError(f"{p}: a config must be a mapping, got {type(cfg).__name__}")
    cfg = _merge(DEFAULTS, cfg)
    if overrides:
        cfg = _merge(cfg, overrides)
    return _expand(cfg)
