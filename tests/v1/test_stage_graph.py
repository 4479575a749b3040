"""The cascade stage graph's rewritten input path computes the same function, faster ops."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _export(net, kernel=3):
    size = 64 * kernel
    ex = (torch.zeros(1, 120, 120, 3, dtype=torch.uint8), torch.zeros(1, 120, 120, 3, dtype=torch.uint8),
          torch.zeros(1, size, size, 3, dtype=torch.uint8))
    buf = io.BytesIO()
    torch.onnx.export(net, ex, buf, input_names=["crop", "pncc", "paf"], output_names=["delta"],
                      dynamic_axes={k: {0: "batch"} for k in ("crop", "pncc", "paf", "delta")},
                      opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def test_fast_inputs_same_outputs_no_nhwc_concat():
    import onnxruntime as ort

    from tddfa.v1.net import CascadeStageNet
    from tddfa.v1.stage_graph import fast_inputs

    torch.manual_seed(0)
    net = CascadeStageNet(np.ones(62, np.float32), kernel=3)
    torch.nn.init.normal_(net.out.weight, std=0.1)  # an untrained stage outputs zeros
    for mod in net.modules():  # non-trivial BatchNorm statistics, folded at export
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    net.eval()
    before = _export(net)
    after = fast_inputs(copy.deepcopy(before))
    ops = [n.op_type for n in after.graph.node]
    assert ops[:4] == ["Transpose", "Transpose", "Concat", "Cast"] and "Sub" not in ops and "Div" not in ops
    rng = np.random.default_rng(0)
    feed = {"crop": rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8),
            "pncc": rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8),
            "paf": rng.integers(0, 256, (3, 192, 192, 3), dtype=np.uint8)}
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, feed)[0]  # noqa: E731
    a, b = run(before), run(after)
    with torch.no_grad():
        t = net(*(torch.from_numpy(feed[k]) for k in ("crop", "pncc", "paf"))).numpy()
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    np.testing.assert_allclose(b, t, rtol=1e-4, atol=1e-4 * np.abs(t).max())


def test_fast_inputs_leaves_other_graphs_alone():
    from onnx import TensorProto, helper

    from tddfa.v1.stage_graph import fast_inputs

    g = helper.make_graph([helper.make_node("Identity", ["crop"], ["delta"])], "g",
                          [helper.make_tensor_value_info("crop", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("delta", TensorProto.FLOAT, [1])])
    m = helper.make_model(g)
    before = m.SerializeToString()
    assert fast_inputs(m).SerializeToString() == before
