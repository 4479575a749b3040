"""Networks: the regressor registry (:mod:`.registry`, one entry per model with its
preprocessing and weights), ONNX graphs built from checkpoint arrays (:mod:`.onnx_graph`,
:mod:`.networks`), ONNX Runtime sessions and the converted-graph cache (:mod:`.runtime`), and
the 62-parameter :class:`~tddfa.models.regressor.Regressor`.
"""

from tddfa.models.registry import MODELS, ModelInfo, get_model_info, list_models

__all__ = ["MODELS", "ModelInfo", "get_model_info", "list_models"]
