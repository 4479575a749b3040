"""Model registry: each regressor entry carries its architecture, preprocessing and assets
(after timm's pattern), so nothing is guessed from tensor shapes."""

from __future__ import annotations

from dataclasses import dataclass

from tddfa.errors import unknown_name

__all__ = ["ModelInfo", "MODELS", "get_model_info", "list_models"]


@dataclass(frozen=True)
class ModelInfo:
    """One regressor.

    Attributes:
        name: registry key.
        arch: architecture name (``"mobilenet_v1"``).
        width: widen factor.
        weights: asset name of the checkpoint.
        param_stats: asset name of the 62-d mean/std.
        input_size: crop side in pixels.
        input_format: colour order and scaling of the crop.
        param_layout: parameter layout.
        licence: weights licence.
        checkpoint_layout: tensor names of the checkpoint: ``"v2"`` (``module.`` prefix, heads
            ``fc_param`` + ``fc_lm``) or ``"v1"`` (``module.`` prefix, one head ``fc``).
        crop_policy: how the 120×120 crop is cut (the same rules in V1 and V2).
    """

    name: str
    arch: str
    width: float
    weights: str
    param_stats: str = "param_mean_std"
    input_size: int = 120
    input_format: str = "BGR uint8, (x - 127.5) / 128"
    param_layout: str = "12 pose [sR|t] row-major + 40 shape + 10 expression (BFM)"
    licence: str = "MIT (3DDFA_V2)"
    description: str = ""
    checkpoint_layout: str = "v2"
    crop_policy: str = ("detector box: side int(1.58·(w+h)/2), centre moved down 0.14·(w+h)/2; "
                        "landmarks: √2 × the square landmark box")


MODELS: dict[str, ModelInfo] = {
    "mb05": ModelInfo("mb05", "mobilenet_v1", 0.5, "mb05",
                      description="3DDFA_V2 MobileNet-V1 x0.5 (official release, 3.3 MB)"),
    "mb1": ModelInfo("mb1", "mobilenet_v1", 1.0, "mb1",
                     description="3DDFA_V2 MobileNet-V1 x1.0 (official release, 13 MB)"),
    # 3DDFA (V1), cleardusk/3DDFA models/phase1_wpdc_vdc.pth.tar, as its main.py reads it:
    # torch checkpoint {"state_dict": {"module.conv1.weight", ..., "module.fc.weight"/"bias"}},
    # cv2 BGR crop, ToTensor without scaling then (x - 127.5) / 128, output x param_std +
    # param_mean of train.configs/param_whitening.pkl; crop rules parse_roi_box_from_bbox /
    # parse_roi_box_from_landmark (identical to V2's).
    "v1-wpdc-vdc": ModelInfo(
        "v1-wpdc-vdc", "mobilenet_v1", 1.0, "v1_wpdc_vdc", param_stats="param_whitening",
        input_format="BGR uint8, (x - 127.5) / 128 (3DDFA V1 NormalizeGjz)",
        licence="MIT (3DDFA)", checkpoint_layout="v1",
        description="3DDFA V1 MobileNet-V1 x1.0, WPDC then VDC (official release, "
                    "phase1_wpdc_vdc.pth.tar)"),
}


def get_model_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise unknown_name("model", name, MODELS) from None


def list_models() -> list[str]:
    """Names of the registered regressors."""
    return list(MODELS)
