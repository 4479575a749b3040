"""Network architectures as ONNX graphs built from checkpoint arrays (BatchNorm folded).

* MobileNet-V1 regressor (3DDFA_V2): input ``(B, 120, 120, 3)`` uint8 BGR crops; the graph does
  ``(x − 127.5) / 128`` and the parameter de-normalisation (``× std + mean``, folded into the last
  layer), so its output ``param`` ``(B, 62)`` is ready to use. With ``with_landmarks=True`` a
  second output ``landmarks`` ``(B, 136)`` comes from the ``fc_lm`` head (training regulariser).
* FaceBoxes detector: input ``(1, H, W, 3)`` uint8 BGR; outputs ``loc`` ``(1, P, 4)`` box offsets
  and ``conf`` ``(1, P, 2)`` softmax scores over the priors (see :mod:`tddfa.detection`).

Each builder checks every tensor's shape against the architecture and raises
:class:`~tddfa.errors.ModelError` naming the first mismatch: the model's role comes from the
registry, never from guessing at tensor shapes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tddfa.errors import ModelError
from tddfa.models.onnx_graph import Graph

__all__ = ["build_mobilenet_onnx", "build_faceboxes_onnx", "mobilenet_spec", "BN_EPS"]

BN_EPS = 1e-5

# (name, stride) of MobileNet-V1's depthwise-separable blocks; channels at width 1.0.
_MB_BLOCKS = [
    ("dw2_1", 1, 32, 64), ("dw2_2", 2, 64, 128), ("dw3_1", 1, 128, 128), ("dw3_2", 2, 128, 256),
    ("dw4_1", 1, 256, 256), ("dw4_2", 2, 256, 512), ("dw5_1", 1, 512, 512), ("dw5_2", 1, 512, 512),
    ("dw5_3", 1, 512, 512), ("dw5_4", 1, 512, 512), ("dw5_5", 1, 512, 512),
    ("dw5_6", 2, 512, 1024), ("dw6", 1, 1024, 1024),
]


def mobilenet_spec(width: float, n_params: int = 62, n_landmarks: int = 136) -> dict[str, tuple]:
    """Expected ``name -> shape`` of the (non-BatchNorm-statistics) tensors of MobileNet-V1."""
    c = lambda n: int(n * width)  # noqa: E731
    spec: dict[str, tuple] = {"conv1.weight": (c(32), 3, 3, 3)}
    for name, _s, cin, cout in _MB_BLOCKS:
        spec[f"{name}.conv_dw.weight"] = (c(cin), 1, 3, 3)
        spec[f"{name}.conv_sep.weight"] = (c(cout), c(cin), 1, 1)
    spec["fc_param.weight"] = (n_params, c(1024))
    spec["fc_param.bias"] = (n_params,)
    spec["fc_lm.weight"] = (n_landmarks, c(1024))
    spec["fc_lm.bias"] = (n_landmarks,)
    return spec


def _get(sd: Mapping[str, np.ndarray], key: str, shape: tuple | None = None) -> np.ndarray:
    if key not in sd:
        raise ModelError(f"checkpoint lacks tensor '{key}' (expected shape {shape})")
    a = np.asarray(sd[key], dtype=np.float32)
    if shape is not None and a.shape != tuple(shape):
        raise ModelError(f"checkpoint tensor '{key}' has shape {a.shape}, expected {tuple(shape)}")
    return a


def _fold_bn(sd, conv_w: np.ndarray, bn: str, eps: float = BN_EPS):
    n = conv_w.shape[0]
    gamma = _get(sd, f"{bn}.weight", (n,))
    beta = _get(sd, f"{bn}.bias", (n,))
    mean = _get(sd, f"{bn}.running_mean", (n,))
    var = _get(sd, f"{bn}.running_var", (n,))
    k = gamma / np.sqrt(var + eps)
    return (conv_w * k[:, None, None, None]).astype(np.float32), (beta - mean * k).astype(np.float32)


def _conv(g: Graph, x: str, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int,
          group: int = 1) -> str:
    inputs = [x, g.const(w)] + ([g.const(b)] if b is not None else [])
    k = w.shape[2]
    return g.node("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride],
                  pads=[pad, pad, pad, pad], group=group)


def build_mobilenet_onnx(
    state_dict: Mapping[str, np.ndarray],
    *,
    width: float,
    param_mean: np.ndarray,
    param_std: np.ndarray,
    with_landmarks: bool = False,
    input_size: int = 120,
) -> bytes:
    """Serialised ONNX model of the 3DDFA_V2 MobileNet-V1 regressor.

    Args:
        state_dict: checkpoint arrays (``module.`` prefix already removed).
        width: widen factor (0.5 for mb05, 1.0 for mb1) — from the model registry.
        param_mean, param_std: ``(62,)`` de-normalisation folded into the output layer.
        with_landmarks: also output the ``fc_lm`` head (68×2 landmark regression, normalised).
    """
    spec = mobilenet_spec(width, n_params=len(param_mean))
    g = Graph("mobilenet_v1_tddfa")
    g.metadata.update({"arch": "mobilenet_v1", "width": str(width), "input": "BGR uint8 NHWC"})
    x = g.input("input", ("batch", input_size, input_size, 3), dtype=np.uint8)
    x = g.node("Cast", [x], to=1)
    x = g.node("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.node("Sub", [x, g.const(np.array(127.5, np.float32))])
    x = g.node("Mul", [x, g.const(np.array(1.0 / 128.0, np.float32))])

    w, b = _fold_bn(state_dict, _get(state_dict, "conv1.weight", spec["conv1.weight"]), "bn1")
    x = g.node("Relu", [_conv(g, x, w, b, 2, 1)])
    for name, stride, _cin, _cout in _MB_BLOCKS:
        wd = _get(state_dict, f"{name}.conv_dw.weight", spec[f"{name}.conv_dw.weight"])
        w, b = _fold_bn(state_dict, wd, f"{name}.bn_dw")
        x = g.node("Relu", [_conv(g, x, w, b, stride, 1, group=wd.shape[0])])
        ws = _get(state_dict, f"{name}.conv_sep.weight", spec[f"{name}.conv_sep.weight"])
        w, b = _fold_bn(state_dict, ws, f"{name}.bn_sep")
        x = g.node("Relu", [_conv(g, x, w, b, 1, 0)])
    x = g.node("GlobalAveragePool", [x])
    feat = g.node("Flatten", [x], axis=1)

    fw = _get(state_dict, "fc_param.weight", spec["fc_param.weight"])
    fb = _get(state_dict, "fc_param.bias", spec["fc_param.bias"])
    std = np.asarray(param_std, np.float32).reshape(-1)
    mean = np.asarray(param_mean, np.float32).reshape(-1)
    fw, fb = fw * std[:, None], fb * std + mean
    g.node("Gemm", [feat, g.const(fw), g.const(fb)], transB=1, outputs=["param"])
    g.output("param", ("batch", len(mean)))
    if with_landmarks:
        lw = _get(state_dict, "fc_lm.weight", spec["fc_lm.weight"])
        lb = _get(state_dict, "fc_lm.bias", spec["fc_lm.bias"])
        g.node("Gemm", [feat, g.const(lw), g.const(lb)], transB=1, outputs=["landmarks"])
        g.output("landmarks", ("batch", lw.shape[0]))
    return g.serialize()


# ---------------------------------------------------------------------------------------------
# FaceBoxes

_FB_MEAN_BGR = (104.0, 117.0, 123.0)


def _basic(g: Graph, sd, x: str, name: str, cin: int, cout: int, k: int, stride: int,
           pad: int) -> str:
    w = _get(sd, f"{name}.conv.weight", (cout, cin, k, k))
    w, b = _fold_bn(sd, w, f"{name}.bn")
    return g.node("Relu", [_conv(g, x, w, b, stride, pad)])


def _crelu(g: Graph, sd, x: str, name: str, cin: int, cout: int, k: int, stride: int,
           pad: int) -> str:
    w = _get(sd, f"{name}.conv.weight", (cout, cin, k, k))
    w, b = _fold_bn(sd, w, f"{name}.bn")
    y = _conv(g, x, w, b, stride, pad)
    y = g.node("Concat", [y, g.node("Neg", [y])], axis=1)
    return g.node("Relu", [y])


def _inception(g: Graph, sd, x: str, name: str) -> str:
    b1 = _basic(g, sd, x, f"{name}.branch1x1", 128, 32, 1, 1, 0)
    pool = g.node("AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                  count_include_pad=1)
    b2 = _basic(g, sd, pool, f"{name}.branch1x1_2", 128, 32, 1, 1, 0)
    b3 = _basic(g, sd, x, f"{name}.branch3x3_reduce", 128, 24, 1, 1, 0)
    b3 = _basic(g, sd, b3, f"{name}.branch3x3", 24, 32, 3, 1, 1)
    b4 = _basic(g, sd, x, f"{name}.branch3x3_reduce_2", 128, 24, 1, 1, 0)
    b4 = _basic(g, sd, b4, f"{name}.branch3x3_2", 24, 32, 3, 1, 1)
    b4 = _basic(g, sd, b4, f"{name}.branch3x3_3", 32, 32, 3, 1, 1)
    return g.node("Concat", [b1, b2, b3, b4], axis=1)


def build_faceboxes_onnx(state_dict: Mapping[str, np.ndarray]) -> bytes:
    """Serialised ONNX model of the FaceBoxes detector (input ``(1, H, W, 3)`` uint8 BGR)."""
    sd = state_dict
    g = Graph("faceboxes")
    g.metadata.update({"arch": "faceboxes", "input": "BGR uint8 NHWC, any size"})
    x = g.input("input", (1, "height", "width", 3), dtype=np.uint8)
    # Transpose (then cast) before the mean subtraction: ONNX Runtime's broadcast of a (3,) constant over
    # the innermost axis of an NHWC image is slow (10 ms of a 36 ms run at 1080×524); over
    # NCHW planes with a (1, 3, 1, 1) constant it is a fraction of that. Same values either way.
    x = g.node("Transpose", [x], perm=[0, 3, 1, 2])  # on the uint8 image: a quarter of the bytes
    x = g.node("Cast", [x], to=1)
    x = g.node("Sub", [x, g.const(np.array(_FB_MEAN_BGR, np.float32).reshape(1, 3, 1, 1))])
    x = _crelu(g, sd, x, "conv1", 3, 24, 7, 4, 3)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = _crelu(g, sd, x, "conv2", 48, 64, 5, 2, 2)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for i in (1, 2, 3):
        x = _inception(g, sd, x, f"inception{i}")
    s1 = x
    x = _basic(g, sd, x, "conv3_1", 128, 128, 1, 1, 0)
    s2 = x = _basic(g, sd, x, "conv3_2", 128, 256, 3, 2, 1)
    x = _basic(g, sd, x, "conv4_1", 256, 128, 1, 1, 0)
    s3 = _basic(g, sd, x, "conv4_2", 128, 256, 3, 2, 1)

    anchors = (21, 1, 1)
    locs, confs = [], []
    shape4 = g.const(np.array([1, -1, 4], np.int64))
    shape2 = g.const(np.array([1, -1, 2], np.int64))
    for i, (src, cin) in enumerate(((s1, 128), (s2, 256), (s3, 256))):
        for kind, per, shape, acc in (("loc", 4, shape4, locs), ("conf", 2, shape2, confs)):
            w = _get(sd, f"{kind}.{i}.weight", (anchors[i] * per, cin, 3, 3))
            b = _get(sd, f"{kind}.{i}.bias", (anchors[i] * per,))
            y = _conv(g, src, w, b, 1, 1)
            y = g.node("Transpose", [y], perm=[0, 2, 3, 1])
            acc.append(g.node("Reshape", [y, shape]))
    g.node("Concat", locs, axis=1, outputs=["loc"])
    conf = g.node("Concat", confs, axis=1)
    g.node("Softmax", [conf], axis=-1, outputs=["conf"])
    g.output("loc", (1, "priors", 4))
    g.output("conf", (1, "priors", 2))
    return g.serialize()
