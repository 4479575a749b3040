"""The ablation runner end to end on a tiny budget (the CI version of
``tddfa train ablation --config configs/ablation.yaml``): every row × seed trains, is evaluated
on a labelled validation manifest (NME by yaw bucket) and, where asked, for video stability;
the JSON has mean ± spread per row, the plot and the Markdown table are written, and a second
call reuses the finished runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

from conftest import needs_shared  # noqa: E402

pytestmark = needs_shared


def test_tiny_ablation(shared, tmp_path):
    from tddfa.face.crop import roi_from_landmarks
    from tddfa.face.fitting import fit_landmarks
    from tddfa.train.ablation import markdown_table, run_ablation
    from tddfa.train.samples import SampleSet, save_manifest

    root = shared / "datasets" / "300w-crops"

    def labels(split: str, n: int, out: str):
        z = np.load(root / f"{split}.npz")
        names = z["names"][:n].astype(str)
        lm = z["landmarks"][:n].astype(np.float32)
        rois = np.stack([roi_from_landmarks(p) for p in lm]).astype(np.float32)
        images = np.array([str(root / split / f"{nm}.jpg") for nm in names])
        ss = SampleSet(names, images, rois, fit_landmarks(lm, rois).params, lm)
        return save_manifest(tmp_path / out, ss)

    train_m = labels("helen_train", 24, "train.npz")
    val_m = labels("helen_test", 12, "val.npz")
    base = {
        "threads": 1,
        "model": {"width": 0.5, "init": "mb05", "reinit": ["fc_param"],
                  "trainable": ["fc_param", "fc_lm"]},
        "data": {"train": [{"type": "manifest", "path": str(train_m)}], "heldout": 4,
                 "val": {"manifest": str(val_m)}},
        "augment": {"enabled": True, "rotate_deg": 0, "scale": [1, 1], "shift": 0, "p_noise": 0,
                    "p_blur": 0, "color": 0, "p_gray": 0, "p_flip": 0.5},
        "loss": {"main": "fwpdc", "vertices": 50, "meta": {"every": 1, "lr": 1e-3}},
        "optim": {"lr": 1e-3},
        "train": {"steps": 3, "batch_size": 4, "log_every": 1, "val_every": 3, "ckpt_every": 3,
                  "progress": False},
    }
    cfg = {
        "base": base, "seeds": [0, 1], "out_dir": str(tmp_path / "runs"),
        "results": str(tmp_path / "ablation.json"), "plot": str(tmp_path / "ablation.png"),
        "eval": {"val_manifest": str(val_m),
                 "stability": {"root": str(root), "split": "helen_test", "n_faces": 1,
                               "n_frames": 3}},
        "rows": [
            {"name": "fWPDC", "set": {"loss.main": "fwpdc"}},
            {"name": "VDC from WPDC",
             "set": {"loss.phases": [{"main": "wpdc", "until": 0.5}, {"main": "vdc"}]}},
            {"name": "meta-joint + lm reg", "stability": True,
             "set": {"loss.main": "meta", "loss.lm_reg_weight": 0.1}},
        ],
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_ablation(path)
    assert [r["name"] for r in res["rows"]] == ["fWPDC", "VDC from WPDC", "meta-joint + lm reg"]
    for r in res["rows"]:
        m = r["metrics"]
        for k in ("val_b0", "val_mean", "sec_per_step"):
            assert len(m[k]["values"]) == 2 and np.isfinite(m[k]["mean"])
            assert m[k]["spread"] == pytest.approx(np.ptp(m[k]["values"]) / 2)
        assert ("stability" in m) == (r["name"] == "meta-joint + lm reg")
        assert len(r["curves"]) == 2 and r["curves"][0][-1]["step"] == 3
    # the two phases really used WPDC, then VDC
    log = (tmp_path / "runs" / "vdc_from_wpdc" / "seed0" / "log.csv").read_text().splitlines()
    assert log[1].split(",")[6] != "nan" and log[-1].split(",")[5] != "nan"  # wpdc, then vdc
    assert res["rows"][2]["meta_choices"][0]
    assert json.loads((tmp_path / "ablation.json").read_text())["rows"][0]["name"] == "fWPDC"
    assert (tmp_path / "ablation.png").stat().st_size > 1000
    table = markdown_table(res)
    assert len(table.splitlines()) == 2 + 3 and "±" in table
    # finished runs are reused, not redone
    again = run_ablation(path)
    assert again["rows"][0]["metrics"]["val_mean"] == res["rows"][0]["metrics"]["val_mean"]
