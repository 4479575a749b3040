import numpy as np
import onnxruntime as ort
import pytest

from tddfa.errors import ModelError
from tddfa.models.networks import build_mobilenet_onnx, mobilenet_spec
from tddfa.models.onnx_graph import Graph


def test_small_graph_runs():
    g = Graph("t")
    x = g.input("x", ("n", 3))
    y = g.node("Mul", [x, g.const(np.array([1.0, 2.0, 3.0], np.float32))])
    g.node("Relu", [y], outputs=["y"])
    g.output("y", ("n", 3))
    sess = ort.InferenceSession(g.serialize(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": np.array([[1, -1, 2]], np.float32)})[0]
    np.testing.assert_array_equal(out, [[1, 0, 6]])


def test_graph_passes_onnx_checker():
    onnx = pytest.importorskip("onnx", reason="onnx package not installed (optional check)")
    g = Graph("t")
    x = g.input("x", (1, 2, 4, 4))
    g.node("Conv", [x, g.const(np.ones((3, 2, 3, 3), np.float32))], kernel_shape=[3, 3],
           pads=[1, 1, 1, 1], strides=[1, 1], outputs=["y"])
    g.output("y", (1, 3, 4, 4))
    onnx.checker.check_model(onnx.load_from_string(g.serialize()))


def _random_state(width):
    rng = np.random.default_rng(0)
    sd = {}
    for k, shape in mobilenet_spec(width).items():
        sd[k] = rng.normal(0, 0.1, shape).astype(np.float32)
        if k.endswith("conv_dw.weight") or k.endswith("conv_sep.weight") or k == "conv1.weight":
            bn = {"conv1.weight": "bn1"}.get(k, k.replace("conv_dw.weight", "bn_dw")
                                              .replace("conv_sep.weight", "bn_sep"))
            n = shape[0]
            sd[f"{bn}.weight"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
            sd[f"{bn}.bias"] = rng.normal(0, 0.1, n).astype(np.float32)
            sd[f"{bn}.running_mean"] = rng.normal(0, 0.1, n).astype(np.float32)
            sd[f"{bn}.running_var"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return sd


def test_mobilenet_matches_torch_reference():
    torch = pytest.importorskip("torch", reason="torch (train extra) not installed")
    import torch.nn.functional as F

    width = 0.5
    sd = _random_state(width)
    mean = np.linspace(-1, 1, 62).astype(np.float32)
    std = np.linspace(0.5, 2, 62).astype(np.float32)
    sess = ort.InferenceSession(
        build_mobilenet_onnx(sd, width=width, param_mean=mean, param_std=std),
        providers=["CPUExecutionProvider"],
    )
    img = np.random.default_rng(1).integers(0, 256, (2, 120, 120, 3), dtype=np.uint8)
    got = sess.run(None, {"input": img})[0]

    t = {k: torch.from_numpy(v) for k, v in sd.items()}

    def cbr(x, conv, bn, stride, groups=1):
        pad = 1 if t[conv].shape[-1] == 3 else 0
        x = F.conv2d(x, t[conv], stride=stride, padding=pad, groups=groups)
        x = F.batch_norm(x, t[f"{bn}.running_mean"], t[f"{bn}.running_var"], t[f"{bn}.weight"],
                         t[f"{bn}.bias"], eps=1e-5)
        return F.relu(x)

    x = (torch.from_numpy(img).permute(0, 3, 1, 2).float() - 127.5) / 128
    x = cbr(x, "conv1.weight", "bn1", 2)
    strides = {"dw2_2": 2, "dw3_2": 2, "dw4_2": 2, "dw5_6": 2}
    for name in ["dw2_1", "dw2_2", "dw3_1", "dw3_2", "dw4_1", "dw4_2", "dw5_1", "dw5_2", "dw5_3",
                 "dw5_4", "dw5_5", "dw5_6", "dw6"]:
        x = cbr(x, f"{name}.conv_dw.weight", f"{name}.bn_dw", strides.get(name, 1), groups=x.shape[1])
        x = cbr(x, f"{name}.conv_sep.weight", f"{name}.bn_sep", 1)
    x = x.mean(dim=(2, 3))
    ref = (F.linear(x, t["fc_param.weight"], t["fc_param.bias"]).numpy() * std + mean)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_wrong_checkpoint_shape_is_named():
    sd = _random_state(0.5)
    sd["dw3_1.conv_sep.weight"] = np.zeros((64, 32, 1, 1), np.float32)
    with pytest.raises(ModelError, match=r"dw3_1.conv_sep.weight.*\(64, 32, 1, 1\).*\(64, 64, 1, 1\)"):
        build_mobilenet_onnx(sd, width=0.5, param_mean=np.zeros(62), param_std=np.ones(62))
    with pytest.raises(ModelError, match="lacks tensor 'fc_param.weight'"):
        build_mobilenet_onnx({k: v for k, v in _random_state(0.5).items() if k != "fc_param.weight"},
                             width=0.5, param_mean=np.zeros(62), param_std=np.ones(62))
