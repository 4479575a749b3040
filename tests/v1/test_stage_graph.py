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


def test_fast_inputs_same_outputs_no_channel_concat_of_nhwc_images():
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
    assert not {"Sub", "Div"} & set(ops) and ops.count("Transpose") == 1  # the PAF's
    assert ops.count("Concat") == 1  # only the fusion of the two streams' vectors
    assert [i.name for i in after.graph.input] == ["image", "paf"]
    rng = np.random.default_rng(0)
    feed = {"crop": rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8),
            "pncc": rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8),
            "paf": rng.integers(0, 256, (3, 192, 192, 3), dtype=np.uint8)}
    planar = {"image": np.ascontiguousarray(
                  np.concatenate([feed["crop"], feed["pncc"]], axis=3).transpose(0, 3, 1, 2)),
              "paf": feed["paf"]}
    run = lambda m, f: ort.InferenceSession(m.SerializeToString()).run(None, f)[0]  # noqa: E731
    a, b = run(before, feed), run(after, planar)
    with torch.no_grad():
        t = net(*(torch.from_numpy(feed[k]) for k in ("crop", "pncc", "paf"))).numpy()
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    np.testing.assert_allclose(b, t, rtol=1e-4, atol=1e-4 * np.abs(t).max())
    # a graph rewritten by the previous version (inputs transposed in the graph) is upgraded
    old = _previous_version(copy.deepcopy(after))
    assert [i.name for i in old.graph.input] == ["crop", "pncc", "paf"]
    np.testing.assert_allclose(run(old, feed), b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    again = fast_inputs(old)
    assert [i.name for i in again.graph.input] == ["image", "paf"]
    np.testing.assert_array_equal(run(again, planar), b)


def _previous_version(m):
    """The rewritten graph with the previous version's head: the NHWC crop and PNCC transposed
    to channels-first and concatenated in the graph."""
    from onnx import TensorProto, helper

    g = m.graph
    for n in g.node:
        for i, name in enumerate(n.input):
            if name == "image":
                n.input[i] = "image_u8"
    head = [helper.make_node("Transpose", ["crop"], ["crop_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Transpose", ["pncc"], ["pncc_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Concat", ["crop_nchw", "pncc_nchw"], ["image_u8"], axis=1)]
    nodes = head + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    paf = [i for i in g.input if i.name == "paf"]
    del g.input[:]
    g.input.extend([helper.make_tensor_value_info(k, TensorProto.UINT8, ["batch", 120, 120, 3])
                    for k in ("crop", "pncc")] + paf)
    return m


def test_fast_inputs_leaves_other_graphs_alone():
    from onnx import TensorProto, helper

    from tddfa.v1.stage_graph import fast_inputs

    g = helper.make_graph([helper.make_node("Identity", ["crop"], ["delta"])], "g",
                          [helper.make_tensor_value_info("crop", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("delta", TensorProto.FLOAT, [1])])
    m = helper.make_model(g)
    before = m.SerializeToString()
    assert fast_inputs(m).SerializeToString() == before


def test_cascade_runs_stage_graphs_of_either_input_layout(tmp_path, shared):
    import hashlib
    import json
    import shutil

    from tddfa.v1.cascade import CascadeRegressor, default_cascade_dir

    src = default_cascade_dir()
    shutil.copytree(src, tmp_path / "old")
    graph = tmp_path / "old" / "stage1.onnx"
    data = _previous_version(onnx.load(str(graph))).SerializeToString()
    graph.write_bytes(data)
    man = json.loads((tmp_path / "old" / "cascade.json").read_text())
    man["stages"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / "old" / "cascade.json").write_text(json.dumps(man))
    new, old = CascadeRegressor(threads=1), CascadeRegressor(tmp_path / "old", threads=1)
    assert new._channels_first == [True] and old._channels_first == [False]
    crops = np.random.default_rng(0).integers(0, 256, (2, 120, 120, 3), dtype=np.uint8)
    np.testing.assert_allclose(old.predict(crops), new.predict(crops), rtol=1e-6, atol=1e-4)
