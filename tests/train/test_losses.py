"""Losses: VDC against a direct NumPy computation, WPDC weights against their definition,
fWPDC and WPDC share their minimiser, meta-joint picks the loss whose look-ahead helps."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import needs_shared  # noqa: E402

pytestmark = needs_shared


@pytest.fixture(scope="module")
def setup():
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.train.losses import TorchMorphable, _load_mean_std

    mm = load_morphable_model()
    mean, std = _load_mean_std()
    tm = TorchMorphable(vertices=25, model=mm, mean=mean, std=std)
    return mm, mean, std, tm


def _random_params(rng, mean, std, b):
    return (mean + std * rng.normal(size=(b, 62)) * 0.5).astype(np.float64)


def test_vdc_equals_direct_mean_vertex_error(setup):
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.train.losses import TorchMorphable, VDCLoss

    _, mean, std, _ = setup
    mm = load_morphable_model()
    tm = TorchMorphable(vertices="dense", model=mm, mean=mean, std=std)
    rng = np.random.default_rng(0)
    gt = _random_params(rng, mean, std, 3)
    pred = gt + std * rng.normal(size=gt.shape) * 0.2
    vp = mm.reconstruct(pred, dense=True).astype(np.float64)
    vg = mm.reconstruct(gt, dense=True).astype(np.float64)
    direct_sq = np.mean(np.sum((vp - vg) ** 2, axis=-1))
    direct = np.mean(np.linalg.norm(vp - vg, axis=-1))
    pn = torch.tensor((pred - mean) / std, dtype=torch.float32)
    gn = torch.tensor((gt - mean) / std, dtype=torch.float32)
    assert float(VDCLoss(tm)(pn, gn)) == pytest.approx(direct_sq, rel=1e-3)
    assert float(VDCLoss(tm, squared=False)(pn, gn)) == pytest.approx(direct, rel=1e-3)
    assert float(VDCLoss(tm)(gn, gn)) == pytest.approx(0.0, abs=1e-6)


def test_wpdc_weights_match_definition(setup):
    from tddfa.train.losses import WPDCLoss

    mm, mean, std, tm = setup
    rng = np.random.default_rng(1)
    gt = _random_params(rng, mean, std, 2)
    pred = gt + std * rng.normal(size=gt.shape) * 0.3
    idx = tm_indices(mm, tm)
    w = WPDCLoss(tm).weights(torch.tensor((pred - mean) / std, dtype=torch.float32),
                             torch.tensor((gt - mean) / std, dtype=torch.float32)).numpy()
    base = mm.reconstruct(gt, dense=True).astype(np.float64)[:, idx]
    for i in range(62):
        pc = gt.copy()
        pc[:, i] = pred[:, i]
        moved = mm.reconstruct(pc, dense=True).astype(np.float64)[:, idx]
        expected = np.sqrt(((moved - base) ** 2).sum(axis=(1, 2)))
        np.testing.assert_allclose(w[:, i], expected, rtol=2e-3, atol=1e-4 * expected.max())


def tm_indices(mm, tm):
    n = mm.n_vertices
    return np.union1d(np.arange(0, n, tm.vertices), np.asarray(mm.keypoints))


def test_fwpdc_weights_are_squared_sensitivity(setup):
    from tddfa.train.losses import FWPDCLoss, WPDCLoss

    _, mean, std, tm = setup
    rng = np.random.default_rng(2)
    gt = torch.tensor((_random_params(rng, mean, std, 2) - mean) / std, dtype=torch.float32)
    delta = torch.zeros_like(gt)
    delta[:, 5] = 1.0
    # with a unit error on one parameter, WPDC's raw weight is that parameter's sensitivity
    w_wpdc = WPDCLoss(tm).weights(gt + delta, gt)[:, 5]
    w_f = FWPDCLoss(tm).weights(gt)[:, 5]
    np.testing.assert_allclose((w_wpdc**2 / tm.n).numpy(), w_f.numpy(), rtol=1e-4)


def test_fwpdc_and_wpdc_share_minimiser(setup):
    from tddfa.train.losses import FWPDCLoss, VDCLoss, WPDCLoss

    _, mean, std, tm = setup
    rng = np.random.default_rng(3)
    gt = torch.tensor((_random_params(rng, mean, std, 4) - mean) / std, dtype=torch.float32)
    start = gt + torch.tensor(rng.normal(size=gt.shape), dtype=torch.float32) * 0.5
    vdc = VDCLoss(tm)
    ends = {}
    for name, loss in {"wpdc": WPDCLoss(tm), "fwpdc": FWPDCLoss(tm)}.items():
        p = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([p], lr=0.02)
        for _ in range(600):
            opt.zero_grad()
            loss(p, gt).backward()
            opt.step()
        ends[name] = p.detach()
        assert float(loss(gt, gt)) == 0.0
        # the minimum is the target: every parameter moved (most of the way) back to it
        assert float((p.detach() - gt).abs().max()) < 0.1 * float((start - gt).abs().max())
        assert float(vdc(p.detach(), gt)) < 0.01 * float(vdc(start, gt))
    assert float((ends["wpdc"] - ends["fwpdc"]).abs().max()) < 0.1


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 62)
        torch.nn.init.zeros_(self.lin.weight)
        torch.nn.init.zeros_(self.lin.bias)

    def forward(self, x):
        return self.lin(x)


def test_meta_joint_picks_loss_whose_lookahead_helps(setup):
    from tddfa.train.losses import FWPDCLoss, LandmarkLoss, MetaJoint

    _, mean, std, tm = setup
    rng = np.random.default_rng(4)
    # one face seen with small variations: a step towards the training targets helps held-out
    g0 = _random_params(rng, mean, std, 1)
    gt = g0 + std * rng.normal(size=(8, 62)) * 0.05
    gt = torch.tensor((gt - mean) / std, dtype=torch.float32)
    x = torch.ones(8, 4) + 0.1 * torch.tensor(rng.normal(size=(8, 4)), dtype=torch.float32)
    model = _Toy()
    fw = FWPDCLoss(tm)
    lm = LandmarkLoss(tm)
    good = lambda out, t: fw(out, t)  # noqa: E731
    bad = lambda out, t: -fw(out, t)  # noqa: E731  (its step moves away from the target)
    for order in (("good", "bad"), ("bad", "good")):
        fns = {"good": good, "bad": bad}
        meta = MetaJoint({k: fns[k] for k in order}, metric=lambda o, t: lm(o, t), lr=1e-5)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        w = meta.weights(model, x[:4], gt[:4], x[4:], gt[4:])
        assert w == {"good": 1.0, "bad": 0.0}
        m = meta.last_metrics
        assert m["good"] < m["bad"]
        assert m["good"] < float(lm(model(x[4:]), gt[4:]).detach())  # the look-ahead did lower it
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k])  # look-ahead leaves the model unchanged
    soft = MetaJoint({"good": good, "bad": bad}, metric=lambda o, t: lm(o, t), lr=1e-5,
                     mode="soft", temperature=1e9)
    w = soft.weights(model, x[:4], gt[:4], x[4:], gt[4:])
    assert w["good"] == pytest.approx(0.5, abs=1e-3)


def test_landmark_losses(setup):
    from tddfa.train.losses import (
        LandmarkLoss,
        LandmarkRegressionLoss,
        landmarks_to_lm_target,
        lm_output_to_landmarks,
    )

    mm, mean, std, tm = setup
    rng = np.random.default_rng(5)
    gt = _random_params(rng, mean, std, 3)
    pts = mm.reconstruct(gt)[..., :2]
    gn = torch.tensor((gt - mean) / std, dtype=torch.float32)
    tp = torch.tensor(pts, dtype=torch.float32)
    assert float(LandmarkLoss(tm)(gn, tp)) < 1e-2
    shifted = tp + torch.tensor([3.0, 4.0])
    assert float(LandmarkLoss(tm)(gn, shifted)) == pytest.approx(5.0, rel=1e-3)
    t = landmarks_to_lm_target(tp)
    assert t.shape == (3, 136)
    assert torch.allclose(lm_output_to_landmarks(t), tp, atol=1e-4)
    assert float(LandmarkRegressionLoss()(t, tp)) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError):
        LandmarkRegressionLoss()(t[:, :100], tp)


def _loss_only_trainer(tm, **loss):
    """A Trainer with just what compute_loss needs (no data, no model)."""
    from tddfa.train.config import DEFAULTS
    from tddfa.train.losses import LandmarkLoss
    from tddfa.train.trainer import Trainer

    tr = Trainer.__new__(Trainer)
    tr.cfg = {"loss": {**DEFAULTS["loss"], **loss}}
    tr.mm, tr.lm_loss, tr.losses, tr.teacher = tm, LandmarkLoss(tm), {}, None
    return tr


@pytest.mark.parametrize("target_kind", ["labels", "params"])
def test_landmark_loss_uses_the_labelled_landmarks_when_asked(setup, target_kind):
    """Regression: ``landmark_target: labels`` used to be overwritten by the parameters'
    landmarks, so the marched labels never reached the loss. A sample with NaN labels falls
    back to its parameters' landmarks."""
    _, mean, std, tm = setup
    rng = np.random.default_rng(3)
    gt = torch.from_numpy((_random_params(rng, mean, std, 2) - mean) / std).float()
    pred = gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    own = tm.reconstruct(tm.denormalize(gt), landmarks=True)[..., :2]
    labels = own + 7.0  # labels 7 px off the parameters' own landmarks in x and y
    labels[1] = float("nan")
    tr = _loss_only_trainer(tm, landmark_weight=1.0, landmark_target=target_kind)
    _, parts = tr.compute_loss((pred, None), gt, {}, landmarks=labels)
    lp = tm.reconstruct(tm.denormalize(pred), landmarks=True)[..., :2]
    want_pts = own.clone()
    if target_kind == "labels":
        want_pts[0] = labels[0]
    want = float(torch.sqrt(((lp - want_pts) ** 2).sum(-1) + 1e-12).mean())
    assert parts["lmk"] == pytest.approx(want, rel=1e-5)
    if target_kind == "labels":
        assert parts["lmk"] > 3.0  # half the batch is ~9.9 px away
