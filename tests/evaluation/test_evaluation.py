"""Evaluation metrics and protocols. Every protocol is run on a small fixture whose correct NME is
known by construction (ground truth = a prediction plus a known offset); the full AFLW2000-3D crop
protocol is checked against the official figures."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tddfa.cli import eval as cli_eval
from tddfa.errors import InputError
from tddfa.evaluation import aflw, aflw2000, headpose, ibug300w, metrics

# --------------------------------------------------------------------------------------------
# pure metrics


def _face(rng, n=5):
    """(n, 68, 2) random landmark sets with a clear box."""
    return rng.uniform(100, 300, size=(n, 68, 2))


def test_nme_known_offset_box_and_interocular():
    rng = np.random.default_rng(0)
    gt = _face(rng)
    pred = gt + np.array([3.0, 4.0])  # every point off by 5 px
    w = gt[..., 0].max(1) - gt[..., 0].min(1)
    h = gt[..., 1].max(1) - gt[..., 1].min(1)
    np.testing.assert_allclose(metrics.nme(pred, gt, "box"), 5.0 / np.sqrt(w * h) * 100)
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    np.testing.assert_allclose(metrics.nme(pred, gt, "inter-ocular"), 5.0 / iod * 100)
    np.testing.assert_allclose(metrics.nme(pred, gt, "diagonal"), 5.0 / np.hypot(w, h) * 100)
    np.testing.assert_allclose(metrics.nme(pred, gt, np.full(5, 50.0)), 10.0)


def test_nme_visibility_and_3d_depth_centering():
    rng = np.random.default_rng(1)
    gt = np.concatenate([_face(rng, 3), rng.normal(0, 20, (3, 68, 1))], axis=2)
    pred = gt.copy()
    pred[..., 2] += 37.0  # depth origin is arbitrary: ignored by 3-D NME
    np.testing.assert_allclose(metrics.nme(pred, gt, np.ones(3), dims=3), 0.0, atol=1e-9)
    pred[..., 0] += 2.0
    np.testing.assert_allclose(metrics.nme(pred, gt, np.ones(3), dims=3), 200.0)
    vis = np.ones((3, 68), bool)
    vis[:, 10:] = False
    pred2 = gt.copy()
    pred2[:, 10:, 0] += 100.0  # only invisible points are wrong
    np.testing.assert_allclose(metrics.nme(pred2, gt, np.ones(3), visible=vis), 0.0, atol=1e-9)
    with pytest.raises(InputError, match="no visible point"):
        metrics.nme(pred2, gt, np.ones(3), visible=np.zeros((3, 68), bool))
    with pytest.raises(InputError, match="dims"):
        metrics.nme(pred, gt, np.ones(3), dims=4)
    with pytest.raises(InputError, match="same"):
        metrics.nme(pred[:, :10], gt, np.ones(3))


def test_bucket_table_means_counts_and_nan():
    e = np.array([1.0, 3.0, 5.0, 7.0, 9.0, np.nan])
    yaw = np.array([10.0, -20.0, 45.0, 75.0, 120.0, 5.0])  # sign ignored; >90 in last bucket
    t = metrics.bucket_table(e, yaw)
    assert t["counts"] == {"0-30": 2, "30-60": 1, "60-90": 2}
    assert t["0-30"] == pytest.approx(2.0)
    assert t["30-60"] == pytest.approx(5.0)
    assert t["60-90"] == pytest.approx(8.0)
    assert t["mean"] == pytest.approx(5.0)
    assert t["all"] == pytest.approx(5.0)


def test_ced_and_auc():
    e = np.array([1.0, 2.0, 3.0, np.nan])
    x, y = metrics.ced_curve(e, 4.0, 5)
    np.testing.assert_allclose(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(y, [0, 0.25, 0.5, 0.75, 0.75])
    auc, fail = metrics.auc_and_failure(np.full(10, 2.0), 4.0)
    assert auc == pytest.approx(0.5, abs=2e-3)
    assert fail == 0.0
    assert metrics.auc_and_failure(np.array([5.0, 1.0]), 4.0)[1] == 0.5


def test_match_detection():
    gt = np.array([100, 100, 200, 200.0])
    boxes = np.array([[0, 0, 50, 50, 0.9], [110, 90, 210, 220, 0.8], [150, 150, 400, 400, 0.99]])
    assert metrics.match_detection(boxes, gt) == 1
    assert metrics.match_detection(boxes[:1], gt) == -1
    assert metrics.match_detection(np.zeros((0, 5)), gt) == -1
    # no overlap reaching min_iou, but a centre inside the ground-truth box
    tiny = np.array([[140, 140, 150, 150, 0.9]])
    assert metrics.match_detection(tiny, gt, min_iou=0.5) == 0
    # intersection 90 x 100, union 100*100 + 100*130 - 9000
    assert metrics.box_iou(boxes[:, :4], gt)[1] == pytest.approx(9000 / 14000)


def test_pose_convention_round_trip_and_yaw_sign():
    from tddfa.face.pose import rotation_to_angles

    rng = np.random.default_rng(2)
    pp = rng.uniform(-1.2, 1.2, (50, 3))  # pitch, yaw, roll radians
    R = headpose.pose_para_to_rotation(pp)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(headpose.rotation_to_aflw_angles(R), np.degrees(pp), atol=1e-9)
    # a pure yaw in the dataset is a yaw of the same sign in our convention
    R_yaw = headpose.pose_para_to_rotation(np.array([[0.0, 0.4, 0.0]]))
    assert np.degrees(rotation_to_angles(R_yaw))[0, 0] == pytest.approx(np.degrees(0.4))


def test_pose_mae_limit_and_wrap():
    gt = np.array([[10.0, 20.0, 30.0], [0.0, 0.0, 90.0], [120.0, 0.0, 0.0]])
    pred = gt + np.array([[1.0, -2.0, 3.0], [1.0, 2.0, 2.0], [50.0, 50.0, 50.0]])
    r = headpose.pose_mae(pred, gt)  # the third face has |pitch| > 99 and is excluded
    assert r["n"] == 2 and r["excluded"] == 1
    assert (r["pitch"], r["yaw"], r["roll"]) == pytest.approx((1.0, 2.0, 2.5))
    assert r["mean"] == pytest.approx((1 + 2 + 2.5) / 3)
    # differences are wrapped: 179 and -179 are 2 degrees apart
    e = headpose.pose_errors(np.array([[0.0, 0.0, -179.0]]), np.array([[0.0, 0.0, 179.0]]))
    np.testing.assert_allclose(e, [[0.0, 0.0, 2.0]])


def test_aflw21_mapping():
    pts = np.arange(68 * 2, dtype=float).reshape(1, 68, 2)
    p21 = metrics.aflw21_from_68(pts)
    assert p21.shape == (1, 21, 2)
    np.testing.assert_allclose(p21[0, 0], pts[0, 17])
    np.testing.assert_allclose(p21[0, 7], pts[0, 36:42].mean(0))  # left eye centre
    np.testing.assert_allclose(p21[0, 20], pts[0, 8])  # chin
    with pytest.raises(InputError):
        metrics.aflw21_from_68(pts[:, :60])


# --------------------------------------------------------------------------------------------
# fixtures built from the real benchmark


@pytest.fixture(scope="module")
def regressor(shared):
    from tddfa.models.regressor import Regressor

    return Regressor("mb05")


def _pick(yaw: np.ndarray, per_bucket: int = 4) -> np.ndarray:
    a = np.abs(yaw)
    out = []
    for lo, hi in metrics.YAW_BUCKETS:
        out += list(np.flatnonzero((a >= lo) & (a < hi) & (a < 90))[:per_bucket])
    return np.array(sorted(out))


def _aflw2000_fixture(shared: Path, tmp: Path, predictor, offset, angle_offset_deg):
    """A small AFLW2000-3D folder whose ground truth is mb05's prediction + known offsets."""
    import scipy.io

    from tddfa.face.pose import pose_from_params

    src = shared / "benchmarks" / "aflw2000-3d"
    names = (src / "AFLW2000-3D_crop.list").read_text().split()
    yaw = np.load(src / "AFLW2000-3D.pose.npy")
    idx = _pick(yaw)
    rois = np.load(src / "AFLW2000-3D_crop.roi_box.npy")[idx]
    (tmp / "AFLW2000-3D_crop").mkdir(parents=True)
    (tmp / "AFLW2000").mkdir()
    sel = [names[i] for i in idx]
    for n in sel:
        shutil.copy(src / "AFLW2000-3D_crop" / n, tmp / "AFLW2000-3D_crop" / n)
        shutil.copy(src / "AFLW2000" / n, tmp / "AFLW2000" / n)
    crops = aflw2000._read_crops(tmp / "AFLW2000-3D_crop", sel)
    params, lm = aflw2000.predict_landmarks(predictor, crops, rois)
    gt = lm.astype(np.float64) + np.asarray(offset, float)
    (tmp / "AFLW2000-3D_crop.list").write_text("\n".join(sel) + "\n")
    np.save(tmp / "AFLW2000-3D_crop.roi_box.npy", rois)
    np.save(tmp / "AFLW2000-3D.pose.npy", yaw[idx])
    np.save(tmp / "AFLW2000-3D.pts68.npy", gt.transpose(0, 2, 1).astype(np.float32))
    np.save(tmp / "AFLW2000-3D-Reannotated.pts68.npy", gt[..., :2].transpose(0, 2, 1).astype(np.float32))
    _, R, _, _ = pose_from_params(params)
    ang = headpose.rotation_to_aflw_angles(R) + np.asarray(angle_offset_deg, float)
    for n, a in zip(sel, ang, strict=True):
        pp = np.zeros((1, 7))
        pp[0, :3] = np.radians(a)
        scipy.io.savemat(str(tmp / "AFLW2000" / (Path(n).stem + ".mat")), {"Pose_Para": pp})
    return gt, yaw[idx], ang


@pytest.mark.parametrize("dims", [2, 3])
def test_aflw2000_crop_protocol_known_offset(shared, regressor, tmp_path, dims):
    offset = np.array([1.5, -2.0, 6.0])
    gt, yaw, gt_ang = _aflw2000_fixture(shared, tmp_path, regressor, offset, [2.0, -3.0, 1.0])
    r = aflw2000.eval_aflw2000_crop(regressor, tmp_path, dims=dims, model="mb05")
    box = metrics.landmark_box(gt)
    norm = np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
    # 3-D: the depth offset disappears with depth centring, so the error is the 2-D one
    expected = np.hypot(1.5, 2.0) / norm * 100
    np.testing.assert_allclose(r.arrays["nme"], expected, rtol=1e-4)
    s = r.summary
    assert s["protocol"] == "crop" and s["n"] == len(gt) and s["dims"] == dims
    assert set(["0-30", "30-60", "60-90", "mean", "all"]) <= set(s["nme"])
    for k, (lo, hi) in zip(metrics.BUCKET_NAMES, metrics.YAW_BUCKETS, strict=True):
        sel = (np.abs(yaw) >= lo) & (np.abs(yaw) < hi)
        assert s["nme"][k] == pytest.approx(expected[sel].mean(), rel=1e-4)
    assert s["nme"]["all"] == pytest.approx(expected.mean(), rel=1e-4)
    p = s["pose_mae"]
    assert (p["pitch"], p["yaw"], p["roll"]) == pytest.approx((2.0, 3.0, 1.0), abs=1e-3)
    assert p["n"] == len(gt)


def test_aflw2000_reannotated_option(shared, regressor, tmp_path):
    gt, _, _ = _aflw2000_fixture(shared, tmp_path, regressor, [0.0, 3.0, 0.0], [0, 0, 0])
    r = aflw2000.eval_aflw2000_crop(regressor, tmp_path, gt="reannotated", pose=False)
    norm = metrics.normaliser(gt, "box")
    np.testing.assert_allclose(r.arrays["nme"], 3.0 / norm * 100, rtol=1e-4)
    assert r.summary["gt"] == "reannotated"
    with pytest.raises(InputError, match="3-D"):
        aflw2000.eval_aflw2000_crop(regressor, tmp_path, gt="reannotated", dims=3)


def test_aflw2000_detector_protocol_known_offset_and_miss(shared, tmp_path):
    import cv2

    from tddfa.pipeline.aligner import FaceAligner

    aligner = FaceAligner("mb05")
    src = shared / "benchmarks" / "aflw2000-3d"
    names = (src / "AFLW2000-3D_crop.list").read_text().split()[:5]
    (tmp_path / "AFLW2000").mkdir()
    gts, yaws = [], np.load(src / "AFLW2000-3D.pose.npy")[:5]
    for k, n in enumerate(names):
        img = cv2.imread(str(src / "AFLW2000" / n))
        if k == 2:
            img[:] = 0  # nothing to detect: must be counted as a miss
        cv2.imwrite(str(tmp_path / "AFLW2000" / n), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
        img = cv2.imread(str(tmp_path / "AFLW2000" / n))  # the exact pixels the protocol reads
        dets = aligner.detect(img)
        if k == 2:
            assert len(dets) == 0
            gts.append(np.asarray(gts[0]))  # any ground truth: the face is missed
            continue
        from tddfa.face.crop import roi_from_box

        # the detection the protocol will pick is the one matching the ground truth box
        best = dets[0]
        face = aligner.align_rois(img, roi_from_box(best)[None], boxes=best[None])[0]
        gts.append(np.asarray(face.landmarks, np.float64) + [2.0, 0.0, 0.0])
    gt = np.stack(gts)
    (tmp_path / "AFLW2000-3D_crop.list").write_text("\n".join(names) + "\n")
    np.save(tmp_path / "AFLW2000-3D_crop.roi_box.npy", np.zeros((5, 4), np.float32))
    np.save(tmp_path / "AFLW2000-3D.pose.npy", yaws)
    np.save(tmp_path / "AFLW2000-3D.pts68.npy", gt.transpose(0, 2, 1).astype(np.float32))
    r = aflw2000.eval_aflw2000_detector(aligner, tmp_path, pose=False, model="mb05")
    s = r.summary
    assert s["misses"] == 1 and s["detected"] == 4 and s["images_without_detection"] == 1
    assert sum(s["misses_by_bucket"].values()) == 1
    hit = np.arange(5) != 2
    expected = 2.0 / metrics.normaliser(gt[hit], "box") * 100
    np.testing.assert_allclose(r.arrays["nme"][hit], expected, rtol=1e-3)
    assert np.isnan(r.arrays["nme"][2])
    assert s["nme"]["all"] == pytest.approx(expected.mean(), rel=1e-3)


class _ConstPredictor:
    """Returns the same parameters for every crop: chosen so that the landmark re-crop roi of
    the predicted landmarks is the roi they were predicted from (a fixed point)."""

    def __init__(self):
        from tddfa.face.morphable_model import load_morphable_model
        from tddfa.models.regressor import load_param_stats

        mean, _ = load_param_stats()
        p = mean.astype(np.float64).copy()
        p[[3, 7, 11]] = 0.0
        q = load_morphable_model("sparse").reconstruct(p[None])[0].astype(np.float64)
        w, h = np.ptp(q[:, 0]), np.ptp(q[:, 1])
        k = 120.0 / np.sqrt(2.0) / max(w, h)
        cx, cy = (q[:, 0].max() + q[:, 0].min()) / 2, (q[:, 1].max() + q[:, 1].min()) / 2
        P = p[:12].reshape(3, 4)
        P[:, :3] *= k
        P[0, 3] = 61.0 - k * cx  # crop-frame x − 1 centred at 60
        P[1, 3] = 60.0 - k * cy  # 120 − y centred at 60
        p[:12] = P.reshape(-1)
        self.params = p.astype(np.float32)

    def predict(self, crops):
        return np.repeat(self.params[None], len(crops), axis=0)


def test_300w_landmark_roi_known_offset(shared, tmp_path):
    import cv2

    from tddfa.face.crop import roi_from_landmarks
    from tddfa.face.morphable_model import load_morphable_model, to_image_frame

    pred = _ConstPredictor()
    mm = load_morphable_model("sparse")
    split = tmp_path / "mini"
    split.mkdir()
    rois = np.array([[20.0, 30.0, 180.0, 190.0], [5.0, 0.0, 105.0, 100.0], [40.0, 10.0, 240.0, 210.0]])
    lm = to_image_frame(mm.reconstruct(np.repeat(pred.params[None], 3, 0)), rois)[..., :2].astype(np.float64)
    gt = lm.copy()
    moved, moved_inner = [], []
    for i in range(3):  # move only interior points so the landmark box (hence the roi) is unchanged
        ext = {lm[i, :, 0].argmin(), lm[i, :, 0].argmax(), lm[i, :, 1].argmin(), lm[i, :, 1].argmax()}
        m = np.array([j not in ext for j in range(68)])
        gt[i, m, 0] += 0.5
        moved.append(m.sum())
        moved_inner.append(m[17:].sum())
        np.testing.assert_allclose(roi_from_landmarks(gt[i]), rois[i], atol=1e-4)
        cv2.imwrite(str(split / f"f{i}.jpg"), np.full((256, 256, 3), 80 * i, np.uint8))
    np.savez(tmp_path / "mini.npz", names=np.array([f"f{i}" for i in range(3)]),
             landmarks=gt.astype(np.float32))
    r = ibug300w.eval_300w(pred, tmp_path, split="mini")
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    expected = 0.5 * np.array(moved) / 68 / iod * 100
    np.testing.assert_allclose(r.arrays["nme_inter-ocular"], expected, rtol=1e-3)
    np.testing.assert_allclose(r.arrays["nme_box"], 0.5 * np.array(moved) / 68 / metrics.normaliser(gt) * 100,
                               rtol=1e-3)
    assert r.summary["nme"]["inter-ocular"]["mean"] == pytest.approx(expected.mean(), rel=1e-3)
    np.testing.assert_allclose(r.arrays["nme_inner51_inter-ocular"],
                               0.5 * np.array(moved_inner) / 51 / iod * 100, rtol=1e-3)
    # the split folder itself is accepted too
    r2 = ibug300w.eval_300w(pred, split, split="ignored")
    assert r2.summary["n"] == 3


class _StubAligner:
    """Detects one box and returns fixed landmarks per image (by image brightness)."""

    def __init__(self, landmarks, boxes):
        self.lm, self.boxes = landmarks, boxes

    def detect(self, image):
        k = int(image[0, 0, 0]) // 80
        return np.array([np.r_[self.boxes[k], 0.99]], np.float32) if k < len(self.boxes) else np.zeros((0, 5))

    def align_rois(self, image, rois, *, dense=False, boxes=None):
        k = int(image[0, 0, 0]) // 80
        return [SimpleNamespace(landmarks=np.c_[self.lm[k], np.zeros(68)], params=np.zeros(62))]


def test_300w_detector_roi_known_offset_and_miss(tmp_path):
    import cv2

    rng = np.random.default_rng(3)
    gt = rng.uniform(50, 200, (3, 68, 2))
    pred = gt - np.array([0.0, 1.5])
    boxes = metrics.landmark_box(gt)
    al = _StubAligner(pred[:2], boxes[:2])  # the third image has no detection
    split = tmp_path / "s"
    split.mkdir()
    for i in range(3):
        cv2.imwrite(str(split / f"f{i}.png"), np.full((256, 256, 3), 80 * i, np.uint8))
    np.savez(tmp_path / "s.npz", names=np.array([f"f{i}" for i in range(3)]), landmarks=gt.astype(np.float32))
    r = ibug300w.eval_300w(None, tmp_path, split="s", roi="detector", aligner=al)
    iod = np.linalg.norm(gt[:2, 36] - gt[:2, 45], axis=1)
    np.testing.assert_allclose(r.arrays["nme_inter-ocular"][:2], 1.5 / iod * 100, rtol=1e-5)
    assert r.summary["misses"] == 1 and np.isnan(r.arrays["nme_inter-ocular"][2])


def _aflw21_standin(shared: Path, tmp: Path, predictor, offset, n=12, with_pts68=False):
    """AFLW 21-point layout built from AFLW2000-3D crops: ground truth = prediction + offset, a
    few points marked invisible (-1)."""
    src = shared / "benchmarks" / "aflw2000-3d"
    names = (src / "AFLW2000-3D_crop.list").read_text().split()
    yaw = np.load(src / "AFLW2000-3D.pose.npy")
    idx = _pick(yaw, n // 3)
    rois = np.load(src / "AFLW2000-3D_crop.roi_box.npy")[idx]
    crop_dir = tmp / "AFLW_GT_crop"
    crop_dir.mkdir(parents=True)
    sel = [f"face{i:05d}.jpg" for i in range(len(idx))]
    for i, s in zip(idx, sel, strict=True):
        shutil.copy(src / "AFLW2000-3D_crop" / names[i], crop_dir / s)
    crops = aflw2000._read_crops(crop_dir, sel)
    _, lm = aflw2000.predict_landmarks(predictor, crops, rois)
    p21 = metrics.aflw21_from_68(lm[..., :2].astype(np.float64)) + np.asarray(offset, float)
    vis = np.ones(p21.shape[:2], bool)
    vis[::2, 16] = False  # the ear on every other face
    vis[1::3, 0:3] = False
    gt21 = np.where(vis[..., None], p21, -1.0)
    (tmp / "AFLW_GT_crop.list").write_text("\n".join(sel) + "\n")
    np.save(tmp / "AFLW_GT_pts21.npy", gt21.transpose(0, 2, 1).astype(np.float32))
    np.save(tmp / "AFLW_GT_crop_roi_box.npy", rois.astype(np.float32))
    np.save(tmp / "AFLW_GT_crop_yaws.npy", yaw[idx])
    if with_pts68:
        np.save(tmp / "AFLW_GT_pts68.npy", (lm[..., :2] + offset).transpose(0, 2, 1).astype(np.float32))
    return gt21, vis, lm, yaw[idx]


def test_aflw21_standin_known_offset(shared, regressor, tmp_path):
    off = np.array([-1.0, 2.5])
    gt21, vis, lm, yaw = _aflw21_standin(shared, tmp_path, regressor, off)
    r = aflw.eval_aflw21(regressor, tmp_path, model="mb05")
    n21 = metrics.normaliser(gt21, "box", vis)
    expected = np.hypot(*off) / n21 * 100
    np.testing.assert_allclose(r.arrays["nme"], expected, rtol=1e-4)
    s = r.summary
    assert s["normaliser"] == "pts21" and s["comparable_with_published"] is False
    assert s["visible_points"] == int(vis.sum())
    assert s["nme"]["all"] == pytest.approx(expected.mean(), rel=1e-4)


def test_aflw21_standin_pts68_normaliser(shared, regressor, tmp_path):
    off = np.array([2.0, 0.0])
    _, _, lm, _ = _aflw21_standin(shared, tmp_path, regressor, off, with_pts68=True)
    r = aflw.eval_aflw21(regressor, tmp_path)
    n68 = metrics.normaliser(lm[..., :2].astype(np.float64) + off, "box")
    np.testing.assert_allclose(r.arrays["nme"], 2.0 / n68 * 100, rtol=1e-4)
    assert r.summary["normaliser"] == "pts68" and r.summary["comparable_with_published"]


def test_aflw21_real_ground_truth_without_images(shared, regressor, tmp_path):
    with pytest.raises(InputError, match="AFLW_GT_crop"):
        aflw.eval_aflw21(regressor, tmp_path, gt_dir=shared / "benchmarks" / "aflw")
    with pytest.raises(InputError, match="ground truth"):
        aflw.eval_aflw21(regressor, tmp_path)


# --------------------------------------------------------------------------------------------
# the real benchmark and the CLI


def test_aflw2000_crop_reproduces_official_mb05(shared, regressor):
    r = aflw2000.eval_aflw2000_crop(regressor, shared / "benchmarks" / "aflw2000-3d", model="mb05")
    nm = r.summary["nme"]
    assert r.summary["n"] == 2000
    assert r.summary["counts"] == {"0-30": 1312, "30-60": 383, "60-90": 305}
    for k, v in {"0-30": 2.925, "30-60": 3.667, "60-90": 4.784, "mean": 3.792, "all": 3.350}.items():
        assert nm[k] == pytest.approx(v, abs=0.02), k
    assert r.summary["pose_mae"]["n"] == 1969
    assert r.summary["pose_mae"]["mean"] < 5.0
    assert r.summary["timing_s"]["total"] < 60


def _parse(argv):
    p = argparse.ArgumentParser(prog="tddfa")
    cli_eval.add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


def test_cli_aflw2000_json_plots_and_card(shared, tmp_path, capsys):
    plt = pytest.importorskip("matplotlib.pyplot")
    out = tmp_path / "res" / "aflw2000.json"
    args = _parse(["eval", "aflw2000", "--data", str(shared / "benchmarks" / "aflw2000-3d"),
                   "--limit", "300", "--json", str(out), "--plot", "--plot-dir", str(tmp_path / "plots")])
    assert cli_eval.run(args) == 0
    text = capsys.readouterr().out
    assert "0-30" in text and "mean of buckets" in text
    d = json.loads(out.read_text())
    assert d["protocol"] == "crop" and d["n"] == 300 and d["model"]["name"] == "mb05"
    assert set(d["nme"]) == {"0-30", "30-60", "60-90", "mean", "all"}
    assert len(d["per_face"]["nme"]) == 300
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["aflw2000-crop-ced.png", "aflw2000-crop-nme-vs-yaw.png",
                                      "aflw2000-crop-pose-hist.png"]
    for p in pngs:
        img = plt.imread(p)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
        assert img[..., :3].std() > 0.05  # not a blank canvas
    card = tmp_path / "card.md"
    assert cli_eval.run(_parse(["eval", "card", "--results", str(tmp_path / "res"), "--out", str(card)])) == 0
    md = card.read_text()
    assert "| mb05 | crop | original | 2-D |" in md
    assert f"{d['nme']['mean']:.3f}" in md
    assert "## Data and licences" in md and "AFLW (21 points)" in md


def test_card_without_results_is_a_clear_error(tmp_path):
    from tddfa.evaluation.model_card import write_model_card

    with pytest.raises(InputError, match="no result JSON"):
        write_model_card(tmp_path, tmp_path / "card.md")
