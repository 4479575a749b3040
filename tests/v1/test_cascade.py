"""The cascade end to end at toy size: training (`tddfa train --config`), ONNX stages, inference
without PyTorch, non-finite fallback, FaceAligner / eval integration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tddfa.errors import AssetError

pytestmark = pytest.mark.usefixtures("shared")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_cascade(tmp_path_factory, shared):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from tddfa.cli.main import main

    out = tmp_path_factory.mktemp("cascade")
    argv = ["train", "--config", str(ROOT / "configs/cascade_tiny.yaml"), "--out-dir", str(out),
            "--set", f"data.train=[{{type: 300w, root: '{shared}/datasets/300w-crops', split: afw}}]",
            "--set", f"data.val={{type: 300w, root: '{shared}/datasets/300w-crops', split: helen_test}}"]
    assert main(argv) == 0
    return out


def test_training_writes_stages_and_table(tiny_cascade):
    from tddfa.v1.cascade import CascadeRegressor

    man = json.loads((tiny_cascade / "cascade.json").read_text())
    assert [e["file"] for e in man["stages"]] == ["stage1.onnx", "stage2.onnx"]
    assert man["loss"] == "owpdc" and man["start"] == "mb05"
    assert [r["stage"] for r in man["validation"]] == [0, 1, 2]
    for r in man["validation"]:
        assert np.isfinite(r["train_nme"]) and np.isfinite(r["val_nme"])
    assert CascadeRegressor(tiny_cascade, threads=1).n_stages == 2  # the folder loads as it is
    for k in (1, 2):
        assert (tiny_cascade / f"stage{k}.onnx").is_file()
        assert (tiny_cascade / f"stage{k}" / "done.json").is_file()


def test_resume_skips_finished_stages(tiny_cascade, shared, tmp_path):
    import shutil

    from tddfa.cli.main import main

    work = tmp_path / "again"
    shutil.copytree(tiny_cascade, work)
    before = (work / "stage1" / "model.pth").stat().st_mtime
    argv = ["train", "--config", str(ROOT / "configs/cascade_tiny.yaml"), "--out-dir", str(work),
            "--set", f"data.train=[{{type: 300w, root: '{shared}/datasets/300w-crops', split: afw}}]",
            "--set", "data.val=null", "--set", "cascade.stages=1"]
    assert main(argv) == 0
    assert (work / "stage1" / "model.pth").stat().st_mtime == before


def _crops(shared, n=4):
    from tddfa.face.crop import crop_roi, roi_from_landmarks
    from tddfa.io.images import read_image

    root = shared / "datasets/300w-crops"
    with np.load(root / "helen_test.npz") as z:
        names, lms = z["names"][:n], z["landmarks"][:n]
    return np.stack([crop_roi(read_image(root / "helen_test" / f"{nm}.jpg"), roi_from_landmarks(lm))
                     for nm, lm in zip(names, lms, strict=True)])


def test_inference_matches_training_side_and_falls_back(tiny_cascade, shared, monkeypatch):
    import torch

    from tddfa.v1.cascade import CascadeRegressor
    from tddfa.v1.cascade_train import _load_weights
    from tddfa.v1.features import render_features
    from tddfa.v1.net import CascadeStageNet

    reg = CascadeRegressor(tiny_cascade)
    crops = _crops(shared)
    stages, flags = reg.predict_stages(crops)
    assert len(stages) == 3 and not flags.any()
    # stage 1 by ONNX Runtime == the PyTorch network on the same features
    net = CascadeStageNet(reg.std, 3)
    net.load_state_dict(_load_weights(tiny_cascade / "stage1" / "model.pth"))
    net.eval()
    pn, pa = render_features(crops, stages[0], 3)
    with torch.no_grad():
        d = net(torch.from_numpy(crops), torch.from_numpy(pn), torch.from_numpy(pa)).numpy()
    np.testing.assert_allclose((stages[1] - stages[0]) / reg.std, d / reg.std, atol=1e-4)
    # a stage that returns NaN for one face: that face keeps the previous stage and is flagged
    real = reg.run_stage

    def broken(k, c, p):
        out = real(k, c, p)
        if k == 2:
            out[1] = np.nan
        return out

    monkeypatch.setattr(reg, "run_stage", broken)
    stages2, flags2 = reg.predict_stages(crops)
    assert flags2[:, 1].tolist() == [False, True, False, False] and not flags2[:, 0].any()
    np.testing.assert_array_equal(stages2[2][1], stages2[1][1])
    assert np.isfinite(reg.predict(crops)).all() and reg.last_fallbacks[1, 1]


def test_tampered_stage_graph_is_rejected(tiny_cascade, tmp_path):
    import shutil

    from tddfa.v1.cascade import CascadeRegressor

    folder = tmp_path / "c"
    shutil.copytree(tiny_cascade, folder, ignore=shutil.ignore_patterns("*.npy", "stage?"))
    data = bytearray((folder / "stage1.onnx").read_bytes())
    data[-10] ^= 0xFF
    (folder / "stage1.onnx").write_bytes(bytes(data))
    with pytest.raises(AssetError, match="SHA-256"):
        CascadeRegressor(folder)
    with pytest.raises(AssetError, match="no cascade manifest"):
        CascadeRegressor(tmp_path / "nowhere")


def test_face_aligner_and_eval_with_cascade(tiny_cascade, shared):
    from tddfa.evaluation.aflw2000 import eval_aflw2000_crop
    from tddfa.pipeline.aligner import FaceAligner
    from tddfa.v1.cascade import CascadeRegressor

    al = FaceAligner(model="cascade", checkpoint=tiny_cascade)
    res = al.align(shared / "samples/emma.jpg")
    assert len(res.faces) >= 1 and res.to_dict()["model"]["name"] == "cascade"
    assert all("cascade" not in f.extra for f in res.faces)
    real = al.regressor.run_stage

    def broken(k, c, p):
        out = real(k, c, p)
        out[0] = np.inf
        return out

    al.regressor.run_stage = broken
    flagged = al.align(shared / "samples/emma.jpg")
    assert flagged.faces[0].extra["cascade"] == {"fallback_stages": [1, 2]}
    assert np.isfinite(flagged.faces[0].params).all()
    # test-only benchmark data, 8 faces: checks the per-stage structure, not a figure
    ev = eval_aflw2000_crop(CascadeRegressor(tiny_cascade), shared / "benchmarks/aflw2000-3d",
                            limit=8, pose=False, model="cascade")
    st = ev.summary["stages"]
    assert [s["stage"] for s in st] == [0, 1, 2]
    assert all(len(s["buckets"]) == 3 and np.isfinite(s["mean"]) for s in st)
    assert st[-1]["all"] == pytest.approx(ev.summary["nme"]["all"])
    assert [s["skipped"] for s in st[1:]] == [0, 0]  # no yaw gate in this cascade


def test_cascade_inference_does_not_import_torch(tiny_cascade, shared):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from tddfa.pipeline.aligner import FaceAligner; "
        f"al = FaceAligner(model='cascade', checkpoint={str(tiny_cascade)!r}); "
        f"r = al.align({str(shared / 'samples/emma.jpg')!r}); "
        "print(len(r.faces) > 0, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True False", out.stderr


def test_v1_start_mean_face_and_config_checks(tiny_cascade, shared, tmp_path):
    import shutil

    from tddfa.errors import InputError
    from tddfa.models.regressor import load_param_stats
    from tddfa.v1.cascade import CascadeRegressor
    from tddfa.v1.cascade_train import cascade_config

    folder = tmp_path / "m"
    shutil.copytree(tiny_cascade, folder, ignore=shutil.ignore_patterns("*.npy", "stage?"))
    man = json.loads((folder / "cascade.json").read_text())
    man["start"] = "mean"  # V1's own start: the mean face in the box
    (folder / "cascade.json").write_text(json.dumps(man))
    reg = CascadeRegressor(folder)
    crops = _crops(shared, 2)
    stages, _ = reg.predict_stages(crops)
    mean, _ = load_param_stats()
    np.testing.assert_allclose(stages[0], np.tile(mean, (2, 1)))
    assert np.isfinite(stages[-1]).all()
    for bad in ({"cascade": {"start": "zero"}}, {"cascade": {"pose": "euler"}}, {"loss": {"main": "x"}}):
        with pytest.raises(InputError):
            cascade_config(bad)


def test_label_targets_are_the_annotations_in_the_crop_frame(shared):
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.v1.cascade_train import _label_targets, _load_set

    ss = _load_set({"type": "300w", "root": str(shared / "datasets/300w-crops"), "split": "afw"},
                   Path("/nonexistent"), 8)
    lab = _label_targets(ss)
    assert lab.shape == (8, 68, 2) and lab.dtype == np.float32
    own = load_morphable_model().reconstruct(ss.params.astype(np.float32))[..., :2]
    # the fitted parameters' landmarks are within a few crop pixels of the labels (fit NME ~2 %)
    assert float(np.median(np.linalg.norm(lab - own, axis=-1))) < 3.0


def test_training_with_labelled_landmark_target(shared, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from tddfa.cli.main import main

    argv = ["train", "--config", str(ROOT / "configs/cascade_tiny.yaml"), "--out-dir", str(tmp_path),
            "--set", f"data.train=[{{type: 300w, root: '{shared}/datasets/300w-crops', split: afw}}]",
            "--set", "data.val=null", "--set", "cascade.stages=1", "--set", "train.steps=4",
            "--set", "data.limit=16", "--set", "loss.landmark_weight=1.0",
            "--set", "loss.landmark_target=labels"]
    assert main(argv) == 0
    assert (tmp_path / "stage1.onnx").is_file()
    assert main(argv[:-1] + ["loss.landmark_target=label"]) != 0  # a clear error, not a crash


def _yawed(yaws_deg):
    """Mean-face parameters turned to the given yaws (degrees), scale and translation kept."""
    from tddfa.models.regressor import load_param_stats

    mean, _ = load_param_stats()
    out = np.tile(mean, (len(yaws_deg), 1)).astype(np.float64)
    P = mean[:12].reshape(3, 4).astype(np.float64)
    s = np.linalg.norm(P[0, :3])
    for i, y in enumerate(np.radians(yaws_deg)):
        R = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        out[i, :12] = np.c_[s * R, P[:, 3]].ravel()
    return out.astype(np.float32)


def test_yaw_within_reads_the_estimates_pose():
    from tddfa.v1.cascade import yaw_within

    p = _yawed([0, 20, 50, -50, 80, -89])
    p = np.vstack([p, np.full((1, 62), np.nan, np.float32)])
    np.testing.assert_array_equal(yaw_within(p, 60), [True, True, True, True, False, False, False])
    np.testing.assert_array_equal(yaw_within(p, 10), [True, False, False, False, False, False, False])


def test_yaw_gate_passes_faces_through_and_says_so(tiny_cascade, shared, tmp_path):
    import shutil

    from tddfa.pipeline.aligner import FaceAligner
    from tddfa.v1.cascade import CascadeRegressor

    folder = tmp_path / "g"
    shutil.copytree(tiny_cascade, folder, ignore=shutil.ignore_patterns("*.npy", "stage?"))
    man = json.loads((folder / "cascade.json").read_text())
    man["stages"][1]["max_yaw"] = 0.001  # stage 2 refines (almost) nothing
    (folder / "cascade.json").write_text(json.dumps(man))
    crops = _crops(shared, 3)
    full, _ = CascadeRegressor(tiny_cascade, threads=1).predict_stages(crops)
    reg = CascadeRegressor(folder, threads=1)
    gated, flags = reg.predict_stages(crops)
    assert reg.max_yaw == [None, 0.001] and not flags.any()
    np.testing.assert_array_equal(reg.last_skipped, [[False, True]] * 3)
    np.testing.assert_allclose(gated[1], full[1], rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(gated[2], gated[1])  # passed through unchanged
    al = FaceAligner(model="cascade", checkpoint=folder)
    res = al.align(shared / "samples/emma.jpg")
    assert res.faces and all(f.extra["cascade"] == {"skipped_stages": [2]} for f in res.faces)
    for bad in (0, -5, 200, "75", True):
        man["stages"][1]["max_yaw"] = bad
        (folder / "cascade.json").write_text(json.dumps(man))
        with pytest.raises(AssetError, match="max_yaw"):
            CascadeRegressor(folder, threads=1)


def test_gate_is_chosen_on_validation():
    from types import SimpleNamespace

    from tddfa.face.morphable_model import load_morphable_model, to_image_frame
    from tddfa.v1.cascade_train import _choose_gate, _gated

    truth = _yawed([5, 10, 15, 20, 70, 75, 80, 85])
    roi = np.tile(np.array([[0, 0, 120, 120]], np.float32), (8, 1))
    mm = load_morphable_model()
    val = SimpleNamespace(roi_boxes=roi, landmarks=to_image_frame(mm.reconstruct(truth), roi)[..., :2])
    off = truth.copy()
    off[:, 3] += 3.0  # 3 px off
    low = np.arange(8) < 4
    before = np.where(low[:, None], off, truth)  # the stage's input: wrong at low yaw
    after = np.where(low[:, None], truth, off)  # the stage fixes low yaw, breaks high yaw
    gate, ungated = _choose_gate(before, after, val)
    assert gate == 30 and ungated > 0  # the tightest candidate that keeps every fix
    np.testing.assert_array_equal(_gated(before, after, gate), truth)
    np.testing.assert_array_equal(_gated(before, after, None), after)


def test_training_chooses_and_writes_the_yaw_gate(tiny_cascade, shared, tmp_path):
    import shutil

    from tddfa.cli.main import main
    from tddfa.errors import InputError
    from tddfa.v1.cascade import CascadeRegressor
    from tddfa.v1.cascade_train import GATE_CANDIDATES, cascade_config

    work = tmp_path / "gate"
    shutil.copytree(tiny_cascade, work)  # finished stages are reused: only the gates are chosen
    argv = ["train", "--config", str(ROOT / "configs/cascade_tiny.yaml"), "--out-dir", str(work),
            "--set", f"data.train=[{{type: 300w, root: '{shared}/datasets/300w-crops', split: afw}}]",
            "--set", f"data.val={{type: 300w, root: '{shared}/datasets/300w-crops', split: helen_test}}",
            "--set", "cascade.yaw_gate=true"]
    assert main(argv) == 0
    man = json.loads((work / "cascade.json").read_text())
    rows = man["validation"][1:]
    assert all(r["max_yaw"] in GATE_CANDIDATES and "val_nme_ungated" in r for r in rows)
    assert [e.get("max_yaw") for e in man["stages"]] == [r["max_yaw"] for r in rows]
    assert all(r["val_nme"] <= r["val_nme_ungated"] + 1e-9 for r in rows[:1])  # stage 1: same input
    assert CascadeRegressor(work, threads=1).max_yaw == [r["max_yaw"] for r in rows]
    with pytest.raises(InputError, match="yaw_gate"):
        cascade_config({"cascade": {"yaw_gate": "yes"}})
