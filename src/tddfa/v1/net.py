"""PyTorch networks of 3DDFA V1 (the ``train`` extra; inference runs their ONNX graphs).

* :class:`V1MobileNet` — the released V1 regressor's layout (``cleardusk/3DDFA`` ``mobilenet_v1``:
  ``conv1``/``bn1``, blocks ``dw2_1`` … ``dw6`` with ``conv_dw``/``bn_dw``/``conv_sep``/``bn_sep``,
  ``fc`` (62); no landmark head). Used to write V1-layout checkpoints in tests.
* :class:`CascadeStageNet` — one cascade stage, the paper's two-stream network at CPU size:

  - stream 1: the crop and the PNCC of the current estimate stacked (6 channels, 120×120),
    four stride-2 3×3 conv + BN + ReLU layers (16, 32, 64, 96 channels), global average pool;
  - stream 2: the PAF map (``(64k, 64k, 3)``, :func:`tddfa.v1.features.render_paf_crops`), the
    **pose-adaptive convolution** (k×k kernel, stride k: one output per surface anchor, 16
    channels) and three stride-2 layers (32, 64, 96), global average pool;
  - fusion: the two 96-d vectors concatenated, a 128-unit ReLU layer, a linear layer to the
    update. The last layer starts at zero, so an untrained stage returns its input.

  Inputs are uint8 NHWC (crop BGR, PNCC, PAF); the output ``delta`` ``(B, 62)`` is the
  parameter update in de-normalised units (the normalised update × the ``param_mean_std`` std):
  the next estimate is ``params + delta``.
"""

from __future__ import annotations

from tddfa.errors import require
from tddfa.train.model import BLOCKS, DepthWiseBlock  # the same blocks and module names as V2's

torch = require("torch", "train")
nn = torch.nn

__all__ = ["V1MobileNet", "CascadeStageNet"]


class V1MobileNet(nn.Module):
    """3DDFA V1's MobileNet-V1 (width 1.0 for the release), input ``(B, 3, 120, 120)`` float
    ``(BGR − 127.5) / 128``, output ``(B, 62)`` whitened parameters (``param_whitening``)."""

    def __init__(self, width: float = 1.0, n_out: int = 62) -> None:
        super().__init__()
        c = lambda n: int(n * width)  # noqa: E731
        self.conv1 = nn.Conv2d(3, c(32), 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c(32))
        for name, stride, cin, cout in BLOCKS:
            setattr(self, name, DepthWiseBlock(c(cin), c(cout), stride))
        self.fc = nn.Linear(c(1024), n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        for name, *_ in BLOCKS:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


def _block(cin: int, cout: int, k: int = 3, stride: int = 2, pad: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CascadeStageNet(nn.Module):
    """One cascade stage (see the module docstring).

    Args:
        std: ``(62,)`` de-normalisation of the update (the ``param_mean_std`` std).
        kernel: PAF patch side ``k`` (the pose-adaptive convolution's kernel and stride).
        n_out: outputs (62; 57 when the pose is regressed as a quaternion + translation).
    """

    def __init__(self, std, kernel: int = 3, n_out: int = 62) -> None:
        super().__init__()
        self.kernel = kernel
        self.scale_output = n_out == 62
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1))
        self.image = nn.Sequential(_block(6, 8), _block(8, 16), _block(16, 32), _block(32, 64))
        self.pac = _block(3, 8, k=kernel, stride=kernel, pad=0)  # pose-adaptive convolution
        self.paf = nn.Sequential(_block(8, 16), _block(16, 32), _block(32, 64))
        self.fuse = nn.Sequential(nn.Linear(128, 128), nn.ReLU(inplace=True))
        self.out = nn.Linear(128, n_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, crop: torch.Tensor, pncc: torch.Tensor, paf: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0–255) NHWC ``crop`` ``(B, 120, 120, 3)``, ``pncc`` (same),
        ``paf`` ``(B, 64k, 64k, 3)`` → ``delta`` ``(B, n_out)`` (× ``std`` when ``n_out`` is 62)."""
        x = torch.cat([crop, pncc], dim=3).permute(0, 3, 1, 2).float()
        x = (x - 127.5) / 128.0
        a = self.image(x).mean(dim=(2, 3))
        y = (paf.permute(0, 3, 1, 2).float() - 127.5) / 128.0
        b = self.paf(self.pac(y)).mean(dim=(2, 3))
        d = self.out(self.fuse(torch.cat([a, b], dim=1)))
        return d * self.std if self.scale_output else d
