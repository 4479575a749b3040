"""OWPDC — 3DDFA V1's *optimised* weighted parameter distance cost (PyTorch, ``train`` extra).

For a sample with current estimate ``p⁰`` (the previous cascade stage), ground truth ``g`` and
residual ``d = g − p⁰`` (normalised units), V1 weighs each parameter by how much correcting it
helps the fit. Our reading of the paper's formulation: the weights ``w ∈ [0, 1]⁶²`` minimise

    f(w) = (1/N) ‖V(p⁰ + diag(w) d) − V(g)‖²  +  λ ‖diag(w) d‖²,

the vertex error left after correcting each parameter by the fraction ``w_i`` of its residual,
plus a penalty on the size of the correction. With ``V`` linearised at ``g`` (Jacobian ``J``,
``(3N, 62)``, crop pixels per normalised unit) this is the box-constrained quadratic programme

    f(w) = (1/N) ‖J D (w − 1)‖² + λ ‖D w‖²,   D = diag(d),   0 ≤ w ≤ 1,

solved per sample by :func:`solve_weights` (accelerated projected gradient, then an active-set
polish that solves the free coordinates exactly; checked against brute force in the tests).
The loss is then ``Σ_i w_i (p_i − g_i)²`` with ``w`` fixed (detached).
A parameter alone gets ``w_i = s_i² / (s_i² + λ)`` (``s_i`` its RMS vertex motion per unit), so
``λ`` (crop px², default 1) sets which parameters count as negligible; coupled parameters share
the correction as the least-squares fit prefers.
"""

from __future__ import annotations

import numpy as np

from tddfa.errors import InputError, require

torch = require("torch", "train")
nn = torch.nn

__all__ = ["owpdc_objective", "solve_weights", "vertex_jacobian", "OWPDCLoss"]


def owpdc_objective(w: np.ndarray, JD: np.ndarray, d: np.ndarray, lam: float) -> float:
    """``f(w)`` for one sample (NumPy, float64): ``JD`` = ``J · diag(d)`` ``(M, n)``, ``d`` ``(n,)``,
    ``M`` = 3 × the number of vertices."""
    n_vert = JD.shape[0] / 3.0
    r = JD @ (np.asarray(w, np.float64) - 1.0)
    return float(r @ r / n_vert + lam * np.sum((np.asarray(w) * d) ** 2))


def solve_weights(JD: torch.Tensor, d: torch.Tensor, lam: float = 1.0,
                  iters: int = 300) -> torch.Tensor:
    """Minimise ``f(w)`` over ``[0, 1]ⁿ`` for a batch.

    Args:
        JD: ``(B, M, n)`` the Jacobian times ``diag(d)`` (or ``(B, n, n)`` Gram ``(JD)ᵀJD / N`` when
            ``M == n`` is not intended — always pass the Jacobian form).
        d: ``(B, n)`` residuals, normalised units.
        lam: penalty weight ``λ``.

    Returns ``(B, n)`` float64 weights in [0, 1].
    """
    JD = JD.detach().to(torch.float64)
    d = d.detach().to(torch.float64)
    if JD.ndim != 3 or d.ndim != 2 or JD.shape[0] != d.shape[0] or JD.shape[2] != d.shape[1]:
        raise InputError(f"JD must be (B, M, n) and d (B, n); got {tuple(JD.shape)}, {tuple(d.shape)}")
    n_vert = JD.shape[1] / 3.0
    A = torch.matmul(JD.transpose(1, 2), JD) / n_vert
    H = A + lam * torch.diag_embed(d * d)  # f = wᵀHw − 2 bᵀw + const
    b = A.sum(dim=2)
    L = torch.linalg.eigvalsh(H)[:, -1].clamp_min(1e-12) * 2.0
    step = (1.0 / L)[:, None]
    w = torch.ones_like(d)
    y, t = w.clone(), 1.0
    for _ in range(iters):
        grad = 2.0 * (torch.matmul(H, y[:, :, None])[:, :, 0] - b)
        w_new = (y - step * grad).clamp(0.0, 1.0)
        t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        y = w_new + ((t - 1.0) / t_new) * (w_new - w)
        w, t = w_new, t_new
    return _polish(H, b, w)


def _objective_t(H, b, w):
    return (w[:, None, :] @ H @ w[:, :, None])[:, 0, 0] - 2.0 * (b * w).sum(1)


def _polish(H, b, w, rounds: int = 5, tol: float = 1e-9):
    """Active-set refinement: solve exactly for the coordinates strictly inside the box (the
    others fixed at their bound where the gradient pushes outwards), keep it when it stays
    feasible-after-clipping and lowers the objective."""
    n = w.shape[1]
    eye = torch.eye(n, dtype=w.dtype)
    for _ in range(rounds):
        grad = 2.0 * ((H @ w[:, :, None])[:, :, 0] - b)
        at_lo = (w <= tol) & (grad >= 0)
        at_hi = (w >= 1 - tol) & (grad <= 0)
        free = ~(at_lo | at_hi)
        fixed_w = torch.where(at_hi, torch.ones_like(w), torch.zeros_like(w))
        fm = free.to(w.dtype)
        A = H * fm[:, :, None] * fm[:, None, :] + eye * (1 - fm)[:, :, None]
        rhs = torch.where(free, b - (H @ (fixed_w * (1 - fm))[:, :, None])[:, :, 0], fixed_w)
        try:
            cand = torch.linalg.solve(A, rhs[:, :, None])[:, :, 0].clamp(0.0, 1.0)
        except RuntimeError:  # singular free block: keep the iterate
            break
        better = _objective_t(H, b, cand) < _objective_t(H, b, w)
        if not bool(better.any()):
            break
        w = torch.where(better[:, None], cand, w)
    return w


def vertex_jacobian(mm, params: torch.Tensor) -> torch.Tensor:
    """``∂V/∂p`` ``(B, 3N, 62)`` in crop pixels per **normalised** unit, for de-normalised
    ``params`` ``(B, 62)`` over the vertex set of ``mm`` (:class:`tddfa.train.losses.TorchMorphable`);
    rows are vertex-major ``(n, xyz)``."""
    p = params.detach()
    B = p.shape[0]
    s = mm.shapes(p)  # (B, N, 3)
    N = s.shape[1]
    S = torch.cat([s, torch.ones_like(s[:, :, :1])], dim=2)  # (B, N, 4)
    J = torch.zeros(B, N, 3, 62, dtype=p.dtype, device=p.device)
    for r in range(3):
        J[:, :, r, 4 * r:4 * r + 4] = S
    R = p[:, :12].reshape(-1, 3, 4)[:, :, :3]
    J[:, :, :, 12:] = torch.einsum("nck,brc->bnrk", mm.w, R)
    J = J * mm.std.reshape(1, 1, 1, 62)
    return J.reshape(B, 3 * N, 62)


class OWPDCLoss(nn.Module):
    """``mean_b Σ_i w_i (p_i − g_i)²`` (normalised units) with the OWPDC weights of the residual of
    the **stage input** ``start`` (the previous estimate), solved per batch and detached."""

    def __init__(self, morphable, lam: float = 1.0, iters: int = 200) -> None:
        super().__init__()
        self.mm = morphable
        self.lam = lam
        self.iters = iters

    def weights(self, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, 62)`` weights for normalised ``start`` and ``target``."""
        d = (target - start).detach()
        J = vertex_jacobian(self.mm, self.mm.denormalize(target.detach()))
        return solve_weights(J * d[:, None, :], d, self.lam, self.iters).to(target.dtype)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        w = self.weights(start, target)
        return (w * (pred - target) ** 2).sum(dim=1).mean()
