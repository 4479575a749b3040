"""Training: data readers and augmentation (labels stay exact), bad input is skipped, face
profiling reproduces the warped landmarks, a tiny training whose loss falls, resume, export into
FaceAligner, and a 2-process torchrun run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

from conftest import ROOT, needs_shared  # noqa: E402

pytestmark = needs_shared


@pytest.fixture(scope="module")
def helen(shared):
    from tddfa.train.samples import fit_300w_split

    ss, e = fit_300w_split(shared / "datasets" / "300w-crops", "helen_train")
    return ss


@pytest.fixture(scope="module")
def label_manifest(helen, tmp_path_factory):
    from tddfa.train.samples import save_manifest

    return save_manifest(tmp_path_factory.mktemp("labels") / "helen_train.npz", helen)


def test_flip_params_reproduce_flipped_landmarks(helen):
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.train.augment import FLIP_PERM, flip_params, flip_points

    mm = load_morphable_model()
    p = helen.params[:50]
    lm = mm.reconstruct(p)[..., :2]
    lf = mm.reconstruct(flip_params(p))[..., :2]
    d = np.linalg.norm(lf - flip_points(lm), axis=-1)
    assert d.mean() < 0.5 and d.max() < 2.0, (d.mean(), d.max())
    assert sorted(FLIP_PERM.tolist()) == list(range(68))
    assert np.array_equal(FLIP_PERM[FLIP_PERM], np.arange(68))


def test_augmentation_keeps_labels_on_the_face(helen):
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.train.augment import (
        Augmenter,
        _crop_frame_to_pixels,
        _roi_affine,
        similarity_params,
    )

    mm = load_morphable_model()
    img = cv2.imread(helen.images[3])
    roi, p, ann = helen.roi_boxes[3], helen.params[3], helen.landmarks[3]
    aug = Augmenter(rotate_deg=20, shift=0.08, p_noise=0, p_blur=0, color=0, p_gray=0, p_flip=0)
    for seed in range(3):
        crop, q = aug(img, roi, p, np.random.default_rng(seed))
        assert crop.shape == (120, 120, 3) and crop.dtype == np.uint8
        rng = np.random.default_rng(seed)  # replay the same draws
        ang = np.radians(rng.uniform(-20, 20))
        sc = rng.uniform(0.95, 1.05)
        sh = rng.uniform(-0.08, 0.08, 2) * 120
        _, T = similarity_params(p, ang, sc, sh)
        C = _crop_frame_to_pixels()
        full = C @ np.vstack([T, [0, 0, 1]]) @ np.linalg.inv(C) @ _roi_affine(roi)
        ann_px = np.c_[ann, np.ones(68)] @ full[:2].T
        lq = mm.reconstruct(q[None])[0]
        lq_px = np.c_[lq[:, 0] - 1, 120 - lq[:, 1]]
        # the label follows the image: within the landmark fit's own error (~1 px)
        assert np.linalg.norm(ann_px - lq_px, axis=1).mean() < 2.5
    # identity augmentation reproduces the inference crop
    from tddfa.face.crop import crop_roi

    ident = Augmenter(rotate_deg=0, scale=(1, 1), shift=0, p_noise=0, p_blur=0, color=0,
                      p_gray=0, p_flip=0)
    crop, q = ident(img, roi, p, np.random.default_rng(0))
    assert np.abs(crop.astype(int) - crop_roi(img, roi)).max() <= 1
    np.testing.assert_allclose(q, p, rtol=1e-5, atol=1e-4)


def test_augmented_landmarks_follow_the_image(helen):
    """Labelled landmarks go through the same warps and flips as the crop and its parameters:
    they stay within the fit's error of the augmented parameters' landmarks."""
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.train.augment import Augmenter
    from tddfa.train.dataset import FaceDataset

    mm = load_morphable_model()
    aug = Augmenter(rotate_deg=20, shift=0.08, p_noise=0, p_blur=0, color=0, p_gray=0, p_flip=0.5)
    img = cv2.imread(helen.images[5])
    for seed in range(6):
        crop, q, pts = aug(img, helen.roi_boxes[5], helen.params[5], np.random.default_rng(seed),
                           landmarks=helen.landmarks[5])
        lq = mm.reconstruct(q[None])[0][:, :2]
        assert pts.shape == (68, 2)
        assert np.linalg.norm(pts - lq, axis=1).mean() < 2.5
    # the dataset hands them out in the crop frame (NaN without labelled landmarks)
    from tddfa.face.fitting import param_prior

    mean, std = param_prior()
    ds = FaceDataset(helen.subset([5]), mean, std, aug)
    x, p, pts = ds[0]
    assert x.shape == (3, 120, 120) and np.isfinite(pts).all()
    from tddfa.train.samples import SampleSet

    bare = helen.subset([5])
    bare = SampleSet(bare.names, bare.images, bare.roi_boxes, bare.params)
    assert np.isnan(FaceDataset(bare, mean, std, aug)[0][2]).all()


def test_bad_images_and_mats_are_skipped_and_counted(helen, tmp_path, caplog):
    import scipy.io as sio

    from tddfa.face.fitting import param_prior
    from tddfa.face.morphable_model import load_morphable_model, to_image_frame
    from tddfa.train.dataset import FaceDataset, collate_skip
    from tddfa.train.samples import SampleSet, read_300wlp

    # a dataset with one corrupt image: the item is None, counted, and dropped by collate
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ss = helen.subset([0, 1])
    ss = SampleSet(ss.names, np.array([ss.images[0], str(bad)]), ss.roi_boxes, ss.params)
    mean, std = param_prior()
    ds = FaceDataset(ss, mean, std)
    items = [ds[0], ds[1]]
    assert items[1] is None and ds.skipped == 1
    x, p, lm, n_bad = collate_skip(items)
    assert x.shape == (1, 3, 120, 120) and n_bad == 1 and lm.shape == (1, 68, 2)
    assert collate_skip([None]) is None

    # 300W-LP reader: a good sample in the release's convention, one with landmarks only
    # (fitted), one without pt2d and one corrupt .mat (both skipped with a warning)
    root = tmp_path / "300wlp"
    root.mkdir()
    img = cv2.imread(helen.images[0])
    H = img.shape[0]
    mm = load_morphable_model()
    pitch, yaw, roll, s = 0.1, -0.3, 0.05, 6.5e-4
    shp = np.zeros((199, 1))
    shp[:40, 0] = mean[12:52]
    exp = np.zeros((29, 1))
    exp[:10, 0] = mean[52:]
    cx, sx, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    cz, sz = np.cos(roll), np.sin(roll)
    Rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    Ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    Rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    S = (mm.u_lm + mm.w_lm[:, :40] @ shp[:40, 0] + mm.w_lm[:, 40:] @ exp[:10, 0]).reshape(68, 3)
    t = np.array([128.0, 130.0, 0.0])
    v = s * S @ (Rx @ Ry @ Rz).T + t
    pt2d = np.stack([v[:, 0], H + 1 - v[:, 1]])
    for name in ("good", "fitonly", "nopts", "broken"):
        cv2.imwrite(str(root / f"{name}.jpg"), img)
    sio.savemat(root / "good.mat", {"Pose_Para": np.array([[pitch, yaw, roll, *t, s]]),
                                    "Shape_Para": shp, "Exp_Para": exp, "pt2d": pt2d})
    sio.savemat(root / "fitonly.mat", {"pt2d": pt2d})
    sio.savemat(root / "nopts.mat", {"Pose_Para": np.zeros((1, 7))})
    (root / "broken.mat").write_bytes(b"MATLAB 5.0 garbage")
    with caplog.at_level("WARNING"):
        lp = read_300wlp(root)
    assert lp.skipped == 2 and sorted(lp.names) == ["fitonly", "good"]
    assert "skipped" in caplog.text
    for i, n in enumerate(lp.names):
        lm = to_image_frame(mm.reconstruct(lp.params[i][None]), lp.roi_boxes[i][None])[0, :, :2]
        err = np.linalg.norm(lm - pt2d.T, axis=1).mean()
        assert err < (0.05 if n == "good" else 1.0), (n, err)


def test_profiling_reproduces_warped_landmarks(helen):
    from tddfa.face.morphable_model import load_morphable_model, to_image_frame
    from tddfa.train.profiling import rotate_face

    mm = load_morphable_model()
    for i in (0, 7):
        img = cv2.imread(helen.images[i])
        roi, p = helen.roi_boxes[i], helen.params[i]
        src_lm = to_image_frame(mm.reconstruct(p[None]), roi[None])[0, :, :2]
        for yaw in (30.0, 60.0, 90.0):
            v = rotate_face(img, roi, p, yaw, 0.0, delta=False)
            assert v is not None and v.image.shape == img.shape
            assert abs(abs(v.yaw) - yaw) < 0.5
            # the new parameters give the new landmarks in the new roi
            new_lm = to_image_frame(mm.reconstruct(v.params[None]), v.roi[None])[0, :, :2]
            np.testing.assert_allclose(new_lm, v.landmarks, atol=0.05)
            # and the warp really carried each visible landmark there: the output pixel at the
            # new landmark samples the source image at the old landmark (within 1 px)
            assert v.visible.sum() >= 12
            m = v.source_map
            got = np.stack([cv2.remap(m[..., k], v.landmarks[:, 0].reshape(1, -1),
                                      v.landmarks[:, 1].reshape(1, -1), cv2.INTER_LINEAR)[0]
                            for k in range(2)], axis=1)
            err = np.linalg.norm(got - src_lm, axis=1)[v.visible]
            assert np.median(err) < 0.5 and np.percentile(err, 90) < 1.0, (yaw, err)


def test_profiled_set_is_written_and_resumes(helen, tmp_path):
    from tddfa.train.profiling import build_profiled_set
    from tddfa.train.samples import load_manifest

    ss = helen.subset([0, 1, 2])
    out = build_profiled_set(ss, tmp_path / "prof", yaws=[45, 90], progress=False)
    first = load_manifest(out)
    assert len(first) >= 3 + 3  # originals plus at least one view per face
    assert all(Path(p).is_file() for p in first.images)
    before = (tmp_path / "prof" / "records.jsonl").read_text()
    out2 = build_profiled_set(ss, tmp_path / "prof", yaws=[45, 90], progress=False)
    assert (tmp_path / "prof" / "records.jsonl").read_text() == before  # nothing redone
    assert len(load_manifest(out2)) == len(first)


def _tiny_config(label_manifest: Path, out_dir: Path, **train) -> dict:
    from tddfa.train.config import load_config

    cfg = load_config(ROOT / "configs" / "train_tiny.yaml")
    cfg["out_dir"] = str(out_dir)
    cfg["data"]["train"] = [{"type": "manifest", "path": str(label_manifest)}]
    cfg["train"].update(train)
    return cfg


@pytest.fixture(scope="module")
def tiny_run(label_manifest, tmp_path_factory):
    from tddfa.train.trainer import train

    out = tmp_path_factory.mktemp("tiny")
    cfg = _tiny_config(label_manifest, out, steps=120, val_every=120, ckpt_every=60, tensorboard=True)
    return out, cfg, train(cfg)


def test_tiny_training_loss_falls(tiny_run):
    out, _, summary = tiny_run
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 12
    first = np.mean([float(r["loss"]) for r in rows[:2]])
    last = np.mean([float(r["loss"]) for r in rows[-2:]])
    assert last < 0.7 * first, (first, last)
    assert summary["skipped"] == 0
    assert set(summary["meta_choices"]) == {"fwpdc", "vdc"}
    assert summary["val"] and np.isfinite(summary["val"][-1]["nme"])
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:  # the optional 'tensorboard' extra
        assert list((out / "tb").glob("events.out.tfevents.*"))


def test_tiny_training_resumes(tiny_run):
    from tddfa.train.trainer import train

    out, cfg, _ = tiny_run
    cfg = dict(cfg)
    cfg["train"] = dict(cfg["train"], steps=130)
    summary = train(cfg)
    assert summary["steps"] == 130
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows][-2:] == [120, 130]  # continued, not restarted


def test_export_loads_into_face_aligner(tiny_run, shared):
    from tddfa.models.regressor import Regressor
    from tddfa.pipeline.aligner import FaceAligner
    from tddfa.train.model import MobileNetV1, to_input

    out, _, summary = tiny_run
    ckpt = Path(summary["checkpoint"])
    aligner = FaceAligner(checkpoint=ckpt)
    res = aligner.align(str(shared / "samples" / "JianzhuGuo.jpg"))
    assert len(res.faces) >= 1
    assert np.all(np.isfinite(res.faces[0].landmarks))
    # the ONNX export and the checkpoint give the torch model's parameters
    crops = np.stack([cv2.resize(cv2.imread(str(shared / "samples" / "JianzhuGuo.jpg")), (120, 120))])
    onnx_p = Regressor(checkpoint=Path(summary["onnx"])).predict(crops)
    ckpt_p = Regressor(checkpoint=ckpt).predict(crops)
    m = MobileNetV1(0.5)
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    m.load_state_dict({k[len("module."):]: v for k, v in sd.items()})
    m.eval()
    from tddfa.face.fitting import param_prior

    mean, std = param_prior()
    with torch.no_grad():
        tp = m(to_input(crops))[0].numpy() * std + mean
    scale = np.abs(tp).max(axis=0) + 1e-6
    assert np.max(np.abs(onnx_p - tp) / scale) < 1e-3
    assert np.max(np.abs(ckpt_p - tp) / scale) < 1e-3


def test_torchrun_two_processes(label_manifest, tmp_path):
    cfg = _tiny_config(label_manifest, tmp_path / "ddp", steps=4, batch_size=8, log_every=2,
                       ckpt_every=2)
    cfg["data"]["val"] = None
    cfg["data"]["limit"] = 48
    cfg["threads"] = 1
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tddfa.cli.train", "train", "--config", str(path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "ddp" / "model.pth").is_file()
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "log.csv")))
    assert int(rows[-1]["step"]) == 4
