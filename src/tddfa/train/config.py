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

# Validation schema (see :func:`validate_config`): derived from DEFAULTS, so a new key is checked
# by the type of its default. Keys whose default is None take any value; these need at least 1.
_AT_LEAST_ONE = {"threads", "train.steps", "train.batch_size", "train.log_every",
                 "train.val_every", "train.ckpt_every", "loss.vertices", "loss.meta.every"}
_POSITIVE = {"optim.lr", "loss.meta.lr", "optim.gamma", "model.width"}


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


def load_config(path: str | Path | None = None, overrides: dict | None = None,
                defaults: dict | None = None) -> dict:
    """Read a YAML config, merge it over ``defaults`` (:data:`DEFAULTS`) and ``overrides``, expand
    ``${VAR}`` and validate it against the defaults' schema (:func:`validate_config`)."""
    yaml = require("yaml", "train")
    os.environ.setdefault("TDDFA_SHARED", "../shared")
    os.environ.setdefault("TDDFA_TRAIN_DATA", "data")
    cfg: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"config file not found: {p}")
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise InputError(f"{p}: invalid YAML{where}: {problem}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{p}: cannot read the config ({exc})") from exc
        if not isinstance(cfg, dict):
            raise InputError(f"{p}: a config must be a mapping, got {type(cfg).__name__}")
    cfg = _merge(DEFAULTS if defaults is None else defaults, cfg)
    if overrides:
        cfg = _merge(cfg, overrides)
    return validate_config(_expand(cfg), None if defaults is None else defaults)


def _schema() -> dict:
    """DEFAULTS plus the augmentation options (fields of :class:`~tddfa.train.augment.Augmenter`)."""
    import dataclasses

    from tddfa.train.augment import Augmenter

    schema = copy.deepcopy(DEFAULTS)
    for f in dataclasses.fields(Augmenter):
        schema["augment"].setdefault(f.name, f.default)
    return schema


def validate_config(cfg: dict, schema: dict | None = None) -> dict:
    """Check a merged config against the schema derived from :data:`DEFAULTS` and return it
    (numeric strings such as ``"1e-4"`` become numbers).

    Every key must be known (a misspelt one gets a did-you-mean suggestion); a value must have
    its default's type (bool, whole number, number, string, list, mapping; a None default accepts
    anything), numbers must be finite, non-negative where the default is, and at least 1 (or
    above 0) for counts and rates that cannot be zero.

    Raises:
        InputError: one line naming the key, the expected and the found value.
    """
    if not isinstance(cfg, dict):
        raise InputError(f"a config must be a mapping, got {type(cfg).__name__}")
    _check_section(cfg, _schema() if schema is None else schema, "")
    return cfg


def _check_section(cfg: dict, schema: dict, prefix: str) -> None:
    from tddfa.errors import unknown_name

    for key in list(cfg):
        name = f"{prefix}{key}"
        if key not in schema:
            raise unknown_name("config key", name, [f"{prefix}{k}" for k in schema])
        cfg[key] = _check_value(cfg[key], schema[key], name)


def _check_value(value: Any, default: Any, name: str) -> Any:
    import math

    def bad(expected: str) -> InputError:
        return InputError(f"config key {name}: expected {expected}, got {value!r}")

    if default is None:
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad("a mapping of keys")
        _check_section(value, default, name + ".")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value) if isinstance(default, float) else int(value)
            except ValueError:
                raise bad("a number" if isinstance(default, float) else "a whole number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number" if isinstance(default, float) else "a whole number")
        if isinstance(default, int) and isinstance(value, float):
            if not value.is_integer():
                raise bad("a whole number")
            value = int(value)
        if not math.isfinite(value):
            raise bad("a finite number")
        if name in _AT_LEAST_ONE and value < 1:
            raise bad("a number at least 1")
        if name in _POSITIVE and value <= 0:
            raise bad("a number above 0")
        if default >= 0 and value < 0:
            raise bad("0 or more")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if default and isinstance(default[0], (int, float)) and not isinstance(default[0], bool):
            return [_check_value(v, default[0], f"{name}[{i}]") for i, v in enumerate(value)]
        return value
    return value
