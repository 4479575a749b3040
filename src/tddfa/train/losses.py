"""Training losses for the 62-parameter regressor (PyTorch).

Every loss takes the network's **normalised** parameters ``(B, 62)`` (``(p − mean) / std`` with
the ``param_mean_std`` asset) and a normalised target of the same shape, unless stated otherwise.
Vertices are in the 120×120 crop frame (crop pixels, x right, y up), as
:meth:`tddfa.morphable_model.MorphableModel.reconstruct` gives them.

* :class:`VDCLoss` — vertex distance: mean over faces and vertices of the squared (or plain)
  Euclidean distance between the meshes of the prediction and of the target.
* :class:`WPDCLoss` — weighted parameter distance (3DDFA): parameter ``i``'s weight is how far
  the mesh moves when only parameter ``i`` of the target is replaced by the prediction's,
  ``w_i = ||V(g with p_i) − V(g)||``; weights are divided by their maximum and detached.
* :class:`FWPDCLoss` — the fast form: weights depend on the target only, ``w_i = ||∂V/∂p_i||² / N``
  (the vertex error per unit of normalised parameter ``i`` acting alone), so the loss is the
  diagonal Gauss-Newton approximation of the squared VDC. Both WPDC and fWPDC are sums of
  non-negative weights times ``(p_i − g_i)²``: they vanish exactly at ``p = g`` and share that
  minimiser.
* :class:`LandmarkLoss` — mean 2-D distance of the 68 landmarks (crop pixels).
* :class:`LandmarkRegressionLoss` — the regulariser on the ``fc_lm`` head (68×2 landmarks).
* :class:`MetaJoint` — meta-joint optimisation (3DDFA_V2): every few steps, take a look-ahead SGD
  step with each candidate loss on the training batch and keep (or weight) the one whose
  look-ahead gives the lower landmark error on a held-out mini-batch.

The dense bases of the approximate model (see :mod:`tddfa.morphable_model`) are approximate; the
landmark bases are exact. ``vertices="sparse"`` uses the 68 landmarks only; ``"dense"`` every
vertex; an integer ``k`` every k-th dense vertex (plus the landmarks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from tddfa.errors import InputError, require

torch = require("torch", "train")
nn = torch.nn

__all__ = [
    "TorchMorphable",
    "VDCLoss",
    "WPDCLoss",
    "FWPDCLoss",
    "LandmarkLoss",
    "LandmarkRegressionLoss",
    "landmark_targets",
    "MetaJoint",
    "landmarks_to_lm_target",
    "lm_output_to_landmarks",
]

log = logging.getLogger(__name__)


def _load_mean_std() -> tuple[np.ndarray, np.ndarray]:
    from tddfa.assets import registry as assets
    from tddfa.assets.serialization import load_pickle

    d = load_pickle(assets.resolve("param_mean_std"))
    return np.asarray(d["mean"], np.float64).reshape(62), np.asarray(d["std"], np.float64).reshape(62)


class TorchMorphable(nn.Module):
    """The morphable model as torch buffers, for a chosen vertex set.

    Args:
        vertices: ``"sparse"`` (68 landmarks), ``"dense"`` (every vertex) or an int stride ``k``
            (every k-th dense vertex plus the 68 landmarks).
        model: a :class:`~tddfa.morphable_model.MorphableModel` (default: the best available).
        mean, std: ``(62,)`` parameter normalisation (default: the ``param_mean_std`` asset).

    Buffers: ``u`` ``(N, 3)``, ``w`` ``(N, 3, 50)`` (model units), ``u_lm``/``w_lm`` for the 68
    landmarks, ``mean``/``std`` ``(62,)``, ``gram`` ``(50, 3, 3)`` = ``Σ_v W_vk W_vkᵀ``.
    """

    def __init__(self, vertices: str | int = "sparse", model=None, mean=None, std=None) -> None:
        super().__init__()
        from tddfa.face.morphable_model import load_morphable_model

        if model is None:
            model = load_morphable_model("sparse" if vertices == "sparse" else "auto")
        if mean is None or std is None:
            mean, std = _load_mean_std()
        u_lm = np.asarray(model.u_lm, np.float64).reshape(68, 3)
        w_lm = np.asarray(model.w_lm, np.float64).reshape(68, 3, 50)
        if vertices == "sparse":
            u, w = u_lm, w_lm
        else:
            if not model.has_dense:
                raise InputError(f"vertices={vertices!r} needs a dense model; only sparse found")
            n = model.n_vertices
            if vertices == "dense":
                idx = np.arange(n)
            elif isinstance(vertices, int) and vertices >= 1:
                idx = np.union1d(np.arange(0, n, vertices), np.asarray(model.keypoints))
            else:
                raise InputError(f"vertices must be 'sparse', 'dense' or a stride >= 1, got {vertices!r}")
            u = np.asarray(model.u, np.float64).reshape(n, 3)[idx]
            w = np.asarray(model.w, np.float64).reshape(n, 3, 50)[idx]
        self.vertices = vertices
        self.n = u.shape[0]
        self.register_buffer("u", torch.tensor(u, dtype=torch.float32))
        self.register_buffer("w", torch.tensor(w, dtype=torch.float32))
        self.register_buffer("u_lm", torch.tensor(u_lm, dtype=torch.float32))
        self.register_buffer("w_lm", torch.tensor(w_lm, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(np.asarray(mean, np.float64), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(np.asarray(std, np.float64), dtype=torch.float32))
        gram = np.einsum("nik,njk->kij", w, w)
        self.register_buffer("gram", torch.tensor(gram, dtype=torch.float64))

    def denormalize(self, p: torch.Tensor) -> torch.Tensor:
        """``(B, 62)`` normalised → de-normalised parameters."""
        return p * self.std + self.mean

    def normalize(self, p: torch.Tensor) -> torch.Tensor:
        """``(B, 62)`` de-normalised → normalised parameters."""
        return (p - self.mean) / self.std

    def shapes(self, params: torch.Tensor, landmarks: bool = False) -> torch.Tensor:
        """Model-space shapes ``(B, N, 3)`` (before pose) of de-normalised ``params`` ``(B, 62)``."""
        u, w = (self.u_lm, self.w_lm) if landmarks else (self.u, self.w)
        return u + torch.einsum("nck,bk->bnc", w, params[:, 12:])

    def reconstruct(self, params: torch.Tensor, landmarks: bool = False) -> torch.Tensor:
        """Vertices ``(B, N, 3)`` in the crop frame (crop pixels) of de-normalised ``params``."""
        if params.ndim != 2 or params.shape[1] != 62:
            raise InputError(f"params must be (B, 62), got {tuple(params.shape)}")
        P = params[:, :12].reshape(-1, 3, 4)
        s = self.shapes(params, landmarks)
        return torch.matmul(s, P[:, :, :3].transpose(1, 2)) + P[:, None, :, 3]

    def sensitivity(self, params: torch.Tensor) -> torch.Tensor:
        """``||∂V/∂p_i||`` ``(B, 62)`` over this vertex set, per unit of **normalised** ``p_i``.

        ``params`` de-normalised ``(B, 62)``. For ``P[r, c]`` the mesh row ``r`` moves by the
        shape's column ``c`` (1 for the offset); for coefficient ``k`` it moves by ``R W_k``, whose
        squared norm is ``trace(RᵀR · Σ_v W_vk W_vkᵀ)``.
        """
        p = params.detach().to(torch.float64)
        s = self.shapes(params.detach()).to(torch.float64)  # (B, N, 3)
        col = torch.sqrt((s * s).sum(dim=1))  # (B, 3)
        ones = torch.full_like(col[:, :1], float(np.sqrt(self.n)))
        per_c = torch.cat([col, ones], dim=1)  # (B, 4)
        pose = per_c.repeat(1, 3)  # index 4r + c
        R = p[:, :12].reshape(-1, 3, 4)[:, :, :3]
        RtR = torch.matmul(R.transpose(1, 2), R)  # (B, 3, 3)
        coef = torch.sqrt(torch.einsum("bij,kij->bk", RtR, self.gram).clamp_min(0))
        sens = torch.cat([pose, coef], dim=1) * self.std.to(torch.float64)
        return sens.to(params.dtype)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != 62:
        raise InputError(
            f"prediction and target must both be (B, 62); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


class PDCLoss(nn.Module):
    """Plain parameter distance (3DDFA's PDC baseline): ``Σ_i (p_i − g_i)²`` on the normalised
    parameters, averaged over the batch."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        return ((pred - target) ** 2).sum(dim=1).mean()


class VDCLoss(nn.Module):
    """Vertex distance: mean over faces and vertices of ``||V(pred) − V(target)||²`` (crop px²),
    or of the plain distance (crop px) with ``squared=False``."""

    def __init__(self, morphable: TorchMorphable, squared: bool = True) -> None:
        super().__init__()
        self.mm = morphable
        self.squared = squared

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        vp = self.mm.reconstruct(self.mm.denormalize(pred))
        vg = self.mm.reconstruct(self.mm.denormalize(target))
        d2 = ((vp - vg) ** 2).sum(-1)
        return d2.mean() if self.squared else torch.sqrt(d2 + 1e-12).mean()


class WPDCLoss(nn.Module):
    """3DDFA's weighted parameter distance ``mean_b Σ_i (w_i / max_j w_j) (p_i − g_i)²`` in
    normalised units, ``w_i = ||V(g with p_i) − V(g)|| = |p_i − g_i| · ||∂V/∂p_i||`` (detached)."""

    def __init__(self, morphable: TorchMorphable) -> None:
        super().__init__()
        self.mm = morphable

    def weights(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Un-normalised weights ``(B, 62)``: crop pixels (root of the summed squared vertex shift)."""
        _check_pair(pred, target)
        sens = self.mm.sensitivity(self.mm.denormalize(target))
        return (pred.detach() - target).abs() * sens

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = self.weights(pred, target)
        w = w / w.max(dim=1, keepdim=True).values.clamp_min(1e-12)
        return (w * (pred - target) ** 2).sum(dim=1).mean()


class FWPDCLoss(nn.Module):
    """Fast WPDC: ``mean_b Σ_i w_i (p_i − g_i)²`` with fixed ``w_i = ||∂V/∂p_i||² / N`` at the target
    (crop px² per squared normalised unit). Same minimiser as WPDC (``p = g``); its value is the
    diagonal approximation of :class:`VDCLoss`."""

    def __init__(self, morphable: TorchMorphable) -> None:
        super().__init__()
        self.mm = morphable

    def weights(self, target: torch.Tensor) -> torch.Tensor:
        """``(B, 62)`` weights from the normalised target."""
        sens = self.mm.sensitivity(self.mm.denormalize(target))
        return sens**2 / self.mm.n

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        return (self.weights(target) * (pred - target) ** 2).sum(dim=1).mean()


def landmark_targets(mm: TorchMorphable, target: torch.Tensor,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """Targets ``(B, 68, 2)`` (crop frame, x right, y up) of a landmark loss: the 68 landmarks
    of the normalised target parameters ``(B, 62)``, replaced by ``labels`` ``(B, 68, 2)`` for
    every sample whose labels are all finite (e.g. 300W-LP-style marched labels)."""
    pts = mm.reconstruct(mm.denormalize(target), landmarks=True)[..., :2]
    if labels is None:
        return pts
    ok = torch.isfinite(labels).flatten(1).all(dim=1)
    return torch.where(ok[:, None, None], labels.to(pts.dtype), pts)


class LandmarkLoss(nn.Module):
    """Mean 2-D Euclidean distance (crop pixels) between the 68 landmarks of the predicted
    parameters and target landmarks ``(B, 68, 2)`` in the crop frame (x right, y up), or the
    landmarks of normalised target parameters ``(B, 62)``."""

    def __init__(self, morphable: TorchMorphable) -> None:
        super().__init__()
        self.mm = morphable

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lp = self.mm.reconstruct(self.mm.denormalize(pred), landmarks=True)[..., :2]
        if target.ndim == 2 and target.shape[1] == 62:
            target = self.mm.reconstruct(self.mm.denormalize(target), landmarks=True)[..., :2]
        if target.shape[1:] != (68, 2):
            raise InputError(f"target landmarks must be (B, 68, 2) or (B, 62), got {tuple(target.shape)}")
        return torch.sqrt(((lp - target) ** 2).sum(-1) + 1e-12).mean()


def landmarks_to_lm_target(points: torch.Tensor, size: int = 120) -> torch.Tensor:
    """Crop-frame landmarks ``(B, 68, 2)`` (x right, y up) → ``fc_lm`` target ``(B, 136)``.

    The layout of the official head (checked against ``mb05``'s outputs): ``[x_0 … x_67,
    y_0 … y_67]`` in crop-image pixels (y down, 0-based) divided by ``size / 2``, minus 1, so the
    crop spans ``[-1, 1]``.
    """
    half = size / 2.0
    x = (points[..., 0] - 1.0) / half - 1.0
    y = (size - points[..., 1]) / half - 1.0
    return torch.cat([x, y], dim=1)


def lm_output_to_landmarks(out: torch.Tensor, size: int = 120) -> torch.Tensor:
    """Inverse of :func:`landmarks_to_lm_target`: ``(B, 136)`` → ``(B, 68, 2)`` crop frame."""
    half = size / 2.0
    x = (out[:, :68] + 1.0) * half + 1.0
    y = size - (out[:, 68:] + 1.0) * half
    return torch.stack([x, y], dim=-1)


class LandmarkRegressionLoss(nn.Module):
    """The landmark-regression regulariser: mean squared error between the ``fc_lm`` output
    ``(B, 136)`` and crop-frame landmarks ``(B, 68, 2)`` in :func:`landmarks_to_lm_target` units
    (summed over the 136 values, averaged over faces)."""

    def forward(self, lm_out: torch.Tensor, target_points: torch.Tensor) -> torch.Tensor:
        if lm_out.ndim != 2 or lm_out.shape[1] != 136:
            raise InputError(f"fc_lm output must be (B, 136), got {tuple(lm_out.shape)}")
        return ((lm_out - landmarks_to_lm_target(target_points)) ** 2).sum(dim=1).mean()


LossFn = Callable[..., "torch.Tensor"]


class MetaJoint:
    """Meta-joint optimisation: choose (or weight) between candidate losses by a look-ahead.

    Every ``every`` calls to :meth:`weights`, for each candidate loss ``L_j`` the parameters take a
    trial SGD step ``θ_j = θ − lr ∇L_j(θ; batch)``, and the held-out metric (lower is better, e.g.
    the landmark error on a held-out mini-batch) is measured at ``θ_j``. ``mode="select"`` puts
    weight 1 on the best candidate; ``mode="soft"`` uses ``softmax(−metric / temperature)``. The
    model's parameters and buffers (BatchNorm statistics) are left unchanged.

    Args:
        losses: name → ``fn(outputs, targets) -> scalar`` where ``outputs`` is what the model
            returns for the inputs.
        metric: ``fn(outputs, targets) -> scalar`` on the held-out batch.
        lr: look-ahead step size.
        normalize: scale each trial step so that its root-mean-square per parameter element is
            ``lr`` (compares the losses' *directions* with equal step lengths).
        reduce: optional function applied to the look-ahead metrics before choosing (e.g. an
            all-reduce mean across DDP processes so that every process chooses alike).
    """

    def __init__(self, losses: Mapping[str, LossFn], metric: LossFn, lr: float = 1e-3,
                 every: int = 1, mode: str = "select", temperature: float = 1.0,
                 normalize: bool = False,
                 reduce: Callable[[dict[str, float]], dict[str, float]] | None = None) -> None:
        if not losses:
            raise InputError("MetaJoint needs at least one candidate loss")
        if mode not in ("select", "soft"):
            raise InputError(f"mode must be 'select' or 'soft', got {mode!r}")
        self.losses = dict(losses)
        self.metric = metric
        self.lr = float(lr)
        self.every = max(1, int(every))
        self.mode = mode
        self.temperature = float(temperature)
        self.normalize = bool(normalize)
        self.reduce = reduce
        self._calls = 0
        self.current = {k: 1.0 / len(self.losses) for k in self.losses}
        self.last_metrics: dict[str, float] = {}
        self.counts = {k: 0 for k in self.losses}

    def lookahead(self, model: nn.Module, inputs, targets, held_inputs, held_targets) -> dict[str, float]:
        """Held-out metric after one trial step with each loss → ``{name: value}``."""
        from torch.func import functional_call

        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = [p for n, p in model.named_parameters() if p.requires_grad]
        saved = {k: v.detach().clone() for k, v in model.named_buffers()}
        was_training = model.training
        out: dict[str, float] = {}
        try:
            for key, fn in self.losses.items():
                model.train(was_training)
                loss = fn(model(inputs), targets)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                step = self.lr
                if self.normalize:
                    sq = sum(float((g.detach() ** 2).sum()) for g in grads if g is not None)
                    numel = sum(g.numel() for g in grads if g is not None)
                    step = self.lr / max(np.sqrt(sq / max(numel, 1)), 1e-30)
                trial = {n: (p.detach() - step * g if g is not None else p.detach())
                         for n, p, g in zip(names, params, grads, strict=True)}
                model.eval()
                with torch.no_grad():
                    held_out = functional_call(model, trial, (held_inputs,), strict=False)
                    out[key] = float(self.metric(held_out, held_targets))
                with torch.no_grad():
                    for k, v in model.named_buffers():
                        v.copy_(saved[k])
        finally:
            model.train(was_training)
        return out

    def weights(self, model: nn.Module, inputs, targets, held_inputs, held_targets) -> dict[str, float]:
        """Weights ``{name: w}`` (sum 1) for this step; re-evaluated every ``every`` calls."""
        if len(self.losses) > 1 and self._calls % self.every == 0:
            m = self.lookahead(model, inputs, targets, held_inputs, held_targets)
            if self.reduce is not None:
                m = self.reduce(m)
            self.last_metrics = m
            keys = list(m)
            vals = np.array([m[k] for k in keys])
            if self.mode == "select":
                best = int(np.argmin(vals))
                self.current = {k: float(i == best) for i, k in enumerate(keys)}
            else:
                z = -(vals - vals.min()) / max(self.temperature, 1e-12)
                e = np.exp(z)
                self.current = {k: float(v) for k, v in zip(keys, e / e.sum(), strict=True)}
            log.debug("meta-joint look-ahead %s -> %s", m, self.current)
        self._calls += 1
        for k, v in self.current.items():
            if v >= 0.5:
                self.counts[k] += 1
        return dict(self.current)
