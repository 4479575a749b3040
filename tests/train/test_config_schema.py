"""Issue 15 defect 6: the training config is validated (types, ranges, unknown keys) before any
file is written; every bad value is a one-line error naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("yaml")

from tddfa.errors import InputError  # noqa: E402
from tddfa.train.config import DEFAULTS, load_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


_TRAINING_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml")
                           if p.name != "ablation.yaml")  # ablation.yaml is a grid, not a config


@pytest.mark.parametrize("cfg", _TRAINING_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(cfg):
    import yaml

    if "cascade" in (yaml.safe_load(cfg.read_text()) or {}):  # V1 cascade: its own defaults
        from tddfa.v1.cascade_train import CASCADE_DEFAULTS

        load_config(cfg, defaults=CASCADE_DEFAULTS)
    else:
        load_config(cfg)


def test_defaults_are_valid():
    validate_config(DEFAULTS)


@pytest.mark.parametrize("over, message", [
    ({"optim": {"lr": "fast"}}, "optim.lr.*number.*'fast'"),
    ({"train": {"batch_size": "banana"}}, "train.batch_size.*whole number.*'banana'"),
    ({"train": {"steps": -5}}, "train.steps.*at least 1"),
    ({"train": {"batch_size": 0}}, "train.batch_size.*at least 1"),
    ({"train": {"steps": 2.5}}, "train.steps.*whole number"),
    ({"optim": {"lrr": 0.1}}, "unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    ({"optimm": {"lr": 0.1}}, "unknown config key 'optimm'; did you mean 'optim'"),
    ({"optim": 3}, "optim.*mapping"),
    ({"train": {"freeze_bn": "yes"}}, "train.freeze_bn.*true or false"),
    ({"optim": {"lr": float("nan")}}, "optim.lr.*finite"),
    ({"optim": {"momentum": -0.1}}, "optim.momentum.*0 or more"),
    ({"optim": {"milestones": "x"}}, "optim.milestones.*list"),
    ({"augment": {"p_flipp": 0.5}}, "augment.p_flipp.*did you mean 'augment.p_flip'"),
    ({"augment": {"rotate_deg": "ten"}}, "augment.rotate_deg.*number"),
])
def test_bad_values_are_refused(over, message):
    with pytest.raises(InputError, match=message):
        load_config(None, over)


def test_numeric_strings_are_read_as_numbers():
    cfg = load_config(None, {"optim": {"lr": "1e-4"}, "train": {"steps": 3}})
    assert cfg["optim"]["lr"] == 1e-4 and cfg["train"]["steps"] == 3


def test_yaml_syntax_error_is_input_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lr: [1, 2\n")
    with pytest.raises(InputError, match="bad.yaml.*YAML.*line"):
        load_config(p)


def _train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    import tddfa

    env = dict(os.environ, PYTHONPATH=str(Path(tddfa.__file__).parents[1]))
    cfg = tmp_path / "c.yaml"
    if not cfg.exists():
        cfg.write_text(f"out_dir: {tmp_path / 'run'}\n")
    return subprocess.run([sys.executable, "-m", "tddfa", "train", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("args", [["--set", "optim.lr=fast"], ["--set", "train.batch_size=banana"],
                                  ["--set", "optim.lrr=0.1"], ["--set", "optim.lr=[1,"],
                                  ["--set", "=3"], ["--set", "optim=3", "--set", "optim.lr=1"]])
def test_cli_bad_config_is_one_line_and_writes_nothing(tmp_path, args, capsys):
    from tddfa.cli.main import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"out_dir: {tmp_path / 'run'}\n")
    assert main(["train", "--config", str(cfg), *args]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err, err
    assert not (tmp_path / "run").exists()


def test_cli_negative_steps_in_a_fresh_process(tmp_path):
    r = _train(tmp_path, "--steps", "-5")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "train.steps" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()
