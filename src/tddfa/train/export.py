"""Export a trained regressor to the inference formats of the core pipeline.

* :func:`export_checkpoint` — ``{"state_dict": {"module.<name>": tensor}, "width": w}`` saved
  with ``torch.save`` (zip format): the official 3DDFA_V2 layout, readable by
  :func:`tddfa.serialization.load_torch_checkpoint` without PyTorch, so
  ``FaceAligner(checkpoint=path)`` / ``Regressor(checkpoint=path)`` load it directly.
* :func:`export_onnx` — the ready ``.onnx`` graph built by the core's
  :func:`tddfa.networks.build_mobilenet_onnx` (BatchNorm folded, de-normalisation included),
  the same graph the core makes from a checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from tddfa.errors import require

__all__ = ["export_checkpoint", "export_onnx", "numpy_state_dict"]

log = logging.getLogger(__name__)


def numpy_state_dict(model) -> dict[str, np.ndarray]:
    """``name -> array`` of a (possibly DDP-wrapped) model, without any ``module.`` prefix."""
    m = getattr(model, "module", model)
    return {k: v.detach().cpu().numpy().copy() for k, v in m.state_dict().items()}


def export_checkpoint(model, path: str | Path, *, extra: dict | None = None) -> Path:
    """Save ``model`` (a :class:`~tddfa.training.model.MobileNetV1`) in the official layout.

    Returns the written path. The write is atomic (temporary file, then rename).
    """
    torch = require("torch", "train")
    m = getattr(model, "module", model)
    sd = {f"module.{k}": v.detach().cpu().clone() for k, v in m.state_dict().items()}
    obj = {"state_dict": sd, "width": float(getattr(m, "width", 0.5))}
    if extra:
        obj.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    log.info("exported checkpoint %s", path)
    return path


def export_onnx(model, path: str | Path, *, with_landmarks: bool = False) -> Path:
    """Write the inference ONNX graph of ``model`` (input ``(B, 120, 120, 3)`` uint8 BGR, output
    ``param`` ``(B, 62)`` de-normalised)."""
    from tddfa.face.fitting import param_prior
    from tddfa.models.networks import build_mobilenet_onnx

    m = getattr(model, "module", model)
    mean, std = param_prior()
    data = build_mobilenet_onnx(numpy_state_dict(m), width=float(getattr(m, "width", 0.5)),
                                param_mean=mean.astype(np.float32),
                                param_std=std.astype(np.float32), with_landmarks=with_landmarks)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    log.info("exported ONNX %s", path)
    return path
