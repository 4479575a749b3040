"""The parameter regressor: 120×120 BGR crops in, 62 de-normalised 3DMM parameters out."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tddfa.assets import registry as assets
from tddfa.assets.serialization import load_pickle, load_torch_checkpoint, state_dict_from_checkpoint
from tddfa.errors import AssetError, InputError, ModelError
from tddfa.models.networks import build_mobilenet_onnx
from tddfa.models.registry import ModelInfo, get_model_info
from tddfa.models.runtime import cached_onnx, create_session, resolve_backend

__all__ = ["Regressor", "load_param_stats", "v1_state_dict"]

log = logging.getLogger(__name__)


def load_param_stats(name: str = "param_mean_std") -> tuple[np.ndarray, np.ndarray]:
    """The 62-d parameter ``mean`` and ``std`` ``(62,)`` float32 used for (de-)normalisation."""
    path = assets.resolve(name)
    d = load_pickle(path)
    try:
        if isinstance(d, dict) and "param_mean" in d:  # 3DDFA V1's param_whitening.pkl
            mean = np.asarray(d["param_mean"], np.float32).reshape(-1)
            std = np.asarray(d["param_std"], np.float32).reshape(-1)
        else:
            mean = np.asarray(d["mean"], np.float32).reshape(-1)
            std = np.asarray(d["std"], np.float32).reshape(-1)
    except (KeyError, TypeError, IndexError) as exc:
        raise AssetError(f"{path}: expected a dict with 'mean' and 'std' (or V1's 'param_mean' and "
                         f"'param_std'), got {type(d).__name__}") from exc
    if mean.shape != (62,) or std.shape != (62,):
        raise AssetError(f"{path}: mean/std must be (62,), got {mean.shape}/{std.shape}")
    return mean, std


def v1_state_dict(state: dict[str, np.ndarray], source: str = "checkpoint") -> dict[str, np.ndarray]:
    """A 3DDFA V1 state dict (single head ``fc``) renamed to the graph builder's ``fc_param``.

    Raises:
        ModelError: the checkpoint has no ``fc`` head (not a V1 regressor).
    """
    if "fc.weight" not in state or "fc.bias" not in state:
        raise ModelError(f"{source}: not a 3DDFA V1 checkpoint (no 'fc.weight'/'fc.bias'; has "
                         f"{sorted(state)[:6]}...)")
    out = {k: v for k, v in state.items() if not k.startswith("fc.")}
    out["fc_param.weight"] = state["fc.weight"]
    out["fc_param.bias"] = state["fc.bias"]
    return out


class Regressor:
    """MobileNet-V1 regressor on ONNX Runtime.

    Args:
        model: registry name (``"mb05"`` default, ``"mb1"``); gives architecture and width.
        checkpoint: optional path to a PyTorch checkpoint (official layout, e.g. one exported by
            ``tddfa train``) or a ready ``.onnx`` file made by tddfa, used instead of the
            registered weights. A checkpoint dict may carry ``"width"`` to override the registry.
        threads: intra-op threads (0 = default).
        backend: ``onnxruntime``, ``openvino`` or ``auto``; device: ``cpu`` or ``cuda``.
        spin: how ONNX Runtime's idle threads wait (:func:`tddfa.models.runtime.spin_config`).
    """

    def __init__(self, model: str = "mb05", checkpoint: str | Path | None = None, threads: int = 0,
                 backend: str = "onnxruntime", device: str = "cpu", spin: str | None = None):
        self.info: ModelInfo = get_model_info(model)
        self.source = assets.resolve(self.info.weights, checkpoint)
        if self.source.suffix == ".onnx":
            onnx_path = self.source
        else:
            # the checkpoint is only read when its graph is not cached yet
            onnx_path = cached_onnx(self.source, model, self._build_graph)
        self.backend = resolve_backend(backend, "regressor", device)
        self.session = create_session(onnx_path, threads, self.backend, device, spin)
        graph_meta = self.session.get_modelmeta().custom_metadata_map
        self.width = float(graph_meta.get("width", self.info.width))
        outs = [o.name for o in self.session.get_outputs()]
        if "param" not in outs:
            raise ModelError(f"{onnx_path}: the graph has no 'param' output (outputs: {outs})")
        self.input_size = self.info.input_size

    def _build_graph(self) -> bytes:
        ckpt = load_torch_checkpoint(self.source)
        meta = ckpt if isinstance(ckpt, dict) else {}
        width = float(meta.get("width", self.info.width))
        mean, std = load_param_stats(self.info.param_stats)
        state = state_dict_from_checkpoint(ckpt, source=str(self.source))
        if self.info.checkpoint_layout == "v1":
            state = v1_state_dict(state, str(self.source))
        return build_mobilenet_onnx(state, width=width, param_mean=mean, param_std=std)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Parameters ``(B, 62)`` float32 for crops ``(B, 120, 120, 3)`` uint8 BGR."""
        crops = np.asarray(crops)
        s = self.input_size
        if crops.ndim == 3:
            crops = crops[None]
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
            raise InputError(f"crops must be (B, {s}, {s}, 3) uint8, got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, 62), np.float32)
        if crops.dtype != np.uint8:
            raise InputError(f"crops must be uint8, got {crops.dtype}")
        return self.session.run(["param"], {"input": np.ascontiguousarray(crops)})[0]
