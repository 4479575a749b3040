"""OWPDC weights: the box-constrained solver against brute force, and the loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tddfa.v1.owpdc import OWPDCLoss, owpdc_objective, solve_weights  # noqa: E402


@pytest.mark.parametrize("n", [1, 2, 3])
def test_solver_matches_brute_force(n):
    rng = np.random.default_rng(n)
    grid = np.linspace(0, 1, {1: 2001, 2: 201, 3: 41}[n])
    for _ in range(6):
        JD = rng.normal(size=(1, 12, n)) * rng.uniform(0.05, 3, n)
        d = rng.normal(size=(1, n))
        lam = float(rng.uniform(0.1, 3))
        w = solve_weights(torch.tensor(JD), torch.tensor(d), lam, iters=500)[0].numpy()
        assert np.all((w >= 0) & (w <= 1))
        f = owpdc_objective(w, JD[0], d[0], lam)
        W = np.array(list(itertools.product(grid, repeat=n)))  # every grid point, vectorised
        R = (W - 1.0) @ JD[0].T
        brute = float(np.min((R * R).sum(1) / 4.0 + lam * ((W * d[0]) ** 2).sum(1)))
        assert owpdc_objective(W[7], JD[0], d[0], lam) == pytest.approx(
            (R[7] @ R[7]) / 4.0 + lam * np.sum((W[7] * d[0]) ** 2))
        assert f <= brute + 1e-9  # never worse than the best grid point
        # and a local check: no coordinate move improves it
        for i in range(n):
            for step in (-1e-3, 1e-3):
                w2 = w.copy()
                w2[i] = np.clip(w2[i] + step, 0, 1)
                assert owpdc_objective(w2, JD[0], d[0], lam) >= f - 1e-9


def test_single_parameter_closed_form():
    # one parameter alone: w = s² / (s² + λ), s² = ‖J_i‖² / N
    J = np.array([[[3.0], [0.0], [4.0]]])  # one vertex: ‖J‖² = 25, N = 1
    d = np.array([[0.7]])
    w = solve_weights(torch.tensor(J * d[:, None, :]), torch.tensor(d), 5.0, iters=500)
    assert float(w[0, 0]) == pytest.approx(25 / 30, abs=1e-6)


def test_loss_vanishes_at_target_and_weights_are_detached(shared):
    from tddfa.train.losses import TorchMorphable

    mm = TorchMorphable("sparse")
    g = torch.zeros(4, 62) + 0.2 * torch.randn(4, 62, generator=torch.Generator().manual_seed(0))
    start = g + 0.3 * torch.randn(4, 62, generator=torch.Generator().manual_seed(1))
    loss = OWPDCLoss(mm)
    w = loss.weights(start, g)
    assert w.shape == (4, 62) and float(w.min()) >= 0 and float(w.max()) <= 1
    assert float(loss(g.clone(), g, start)) == pytest.approx(0.0, abs=1e-12)
    pred = start.clone().requires_grad_(True)
    val = loss(pred, g, start)
    val.backward()
    # gradient = 2 w (p - g) / B: the weights do not carry gradient
    np.testing.assert_allclose(pred.grad.numpy(), (2 * w * (start - g) / 4).numpy(), rtol=1e-4, atol=1e-7)
