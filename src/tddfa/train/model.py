"""MobileNet-V1 regressor in PyTorch, with the official 3DDFA_V2 module names.

``conv1``/``bn1``, then the depthwise-separable blocks ``dw2_1 … dw6`` (each ``conv_dw``,
``bn_dw``, ``conv_sep``, ``bn_sep``), global average pooling, and two heads: ``fc_param`` (62
normalised parameters) and ``fc_lm`` (136: the 68×2 landmark-regression regulariser). A
``state_dict()`` of this module therefore loads in :func:`tddfa.networks.build_mobilenet_onnx`
and in the official code (which prefixes keys with ``module.``).

Input: ``(B, 3, 120, 120)`` float32, BGR, ``(pixel − 127.5) / 128`` (see :func:`to_input`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tddfa.errors import ModelError, require

torch = require("torch", "train")
nn = torch.nn

__all__ = ["MobileNetV1", "to_input", "predict_params", "load_official_weights", "build_model"]

log = logging.getLogger(__name__)

# (name, stride, in channels, out channels) at width 1.0, as in the official network
BLOCKS = [
    ("dw2_1", 1, 32, 64), ("dw2_2", 2, 64, 128), ("dw3_1", 1, 128, 128), ("dw3_2", 2, 128, 256),
    ("dw4_1", 1, 256, 256), ("dw4_2", 2, 256, 512), ("dw5_1", 1, 512, 512), ("dw5_2", 1, 512, 512),
    ("dw5_3", 1, 512, 512), ("dw5_4", 1, 512, 512), ("dw5_5", 1, 512, 512),
    ("dw5_6", 2, 512, 1024), ("dw6", 1, 1024, 1024),
]


class DepthWiseBlock(nn.Module):
    """3×3 depthwise conv + BN + ReLU, then 1×1 pointwise conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(nn.Module):
    """MobileNet-V1 with width multiplier ``width`` (0.5 for mb05, 1.0 for mb1).

    ``forward(x)`` returns ``(params, landmarks)``: ``(B, 62)`` normalised parameters and
    ``(B, 136)`` fc_lm output.
    """

    def __init__(self, width: float = 0.5, n_params: int = 62, n_lm: int = 136) -> None:
        super().__init__()
        self.width = float(width)
        c = lambda n: int(n * width)  # noqa: E731
        self.conv1 = nn.Conv2d(3, c(32), 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c(32))
        self.relu = nn.ReLU(inplace=True)
        for name, stride, cin, cout in BLOCKS:
            setattr(self, name, DepthWiseBlock(c(cin), c(cout), stride))
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc_param = nn.Linear(c(1024), n_params)
        self.fc_lm = nn.Linear(c(1024), n_lm)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc_param.weight, std=1e-3)
        nn.init.zeros_(self.fc_param.bias)
        nn.init.normal_(self.fc_lm.weight, std=1e-3)
        nn.init.constant_(self.fc_lm.bias, 0.5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 120, 120)`` → pooled features ``(B, 1024·width)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in BLOCKS:
            x = getattr(self, name)(x)
        return torch.flatten(self.avg_pool(x), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.fc_param(f), self.fc_lm(f)


def to_input(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(B, 120, 120, 3)`` uint8 BGR crops → ``(B, 3, 120, 120)`` float32 network input."""
    t = torch.as_tensor(np.asarray(crops)) if not isinstance(crops, torch.Tensor) else crops
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ModelError(f"crops must be (B, H, W, 3), got {tuple(t.shape)}")
    return (t.permute(0, 3, 1, 2).float() - 127.5) / 128.0


def predict_params(model: torch.nn.Module, crops: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """De-normalised parameters ``(N, 62)`` float64 of ``model`` (or its DDP wrapper) for uint8
    BGR crops ``(N, 120, 120, 3)``, in eval mode and batches of ``batch_size``; the model's
    train/eval mode is restored afterwards."""
    from tddfa.face.fitting import param_prior

    mean, std = param_prior()
    m = getattr(model, "module", model)
    was = m.training
    m.eval()
    try:
        with torch.no_grad():
            out = [m(to_input(crops[i:i + batch_size]))[0].numpy()
                   for i in range(0, len(crops), batch_size)]
    finally:
        m.train(was)
    return np.concatenate(out).astype(np.float64) * std + mean


def load_official_weights(model: MobileNetV1, path: str | Path | None = None,
                          heads: bool = True) -> MobileNetV1:
    """Initialise ``model`` from an official-layout checkpoint (default: the ``mb05`` asset).

    Read with :func:`tddfa.serialization.load_torch_checkpoint` (NumPy, restricted), never with
    ``torch.load``. ``heads=False`` keeps the freshly initialised ``fc_param``/``fc_lm``.

    Raises:
        ModelError: a tensor is missing or has the wrong shape (names the first one).
    """
    from tddfa.assets import registry as assets
    from tddfa.assets.serialization import load_torch_checkpoint, state_dict_from_checkpoint

    path = Path(path) if path is not None else assets.resolve("mb05")
    sd = state_dict_from_checkpoint(load_torch_checkpoint(path))
    own = model.state_dict()
    new = {}
    for k, v in own.items():
        if not heads and k.startswith(("fc_param", "fc_lm")):
            new[k] = v
            continue
        if k not in sd:
            raise ModelError(f"{path}: checkpoint lacks '{k}' (expected shape {tuple(v.shape)})")
        a = np.asarray(sd[k])
        if tuple(a.shape) != tuple(v.shape):
            raise ModelError(f"{path}: '{k}' has shape {a.shape}, expected {tuple(v.shape)}")
        new[k] = torch.from_numpy(np.array(a, copy=True)).to(v.dtype)
    model.load_state_dict(new)
    log.info("initialised %s from %s", type(model).__name__, path)
    return model


def build_model(width: float = 0.5, init: str = "mb05") -> MobileNetV1:
    """A regressor: ``init`` is ``"mb05"`` (official weights), ``"scratch"``, or a checkpoint path."""
    model = MobileNetV1(width)
    if init == "scratch":
        return model
    if init == "mb05":
        if width != 0.5:
            raise ModelError(f"init 'mb05' needs width 0.5, got {width}")
        return load_official_weights(model)
    return load_official_weights(model, init)
