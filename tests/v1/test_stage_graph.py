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
    assert not {"Sub", "Div", "Transpose", "Pad"} & set(ops)  # only casts before the convolutions
    assert ops.count("Concat") == 1  # only the fusion of the two streams' vectors
    assert ops.count("Add") == 1  # the first image convolution's border map
    assert [i.name for i in after.graph.input] == ["image", "paf_chw"]
    rng = np.random.default_rng(0)
    feed = {"crop": rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8),
            "pncc": rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8),
            "paf": rng.integers(0, 256, (3, 192, 192, 3), dtype=np.uint8)}
    image = np.ascontiguousarray(np.concatenate([feed["crop"], feed["pncc"]], axis=3).transpose(0, 3, 1, 2))
    planar = {"image": image, "paf_chw": np.ascontiguousarray(feed["paf"].transpose(0, 3, 1, 2))}
    run = lambda m, f: ort.InferenceSession(m.SerializeToString()).run(None, f)[0]  # noqa: E731
    a, b = run(before, feed), run(after, planar)
    with torch.no_grad():
        t = net(*(torch.from_numpy(feed[k]) for k in ("crop", "pncc", "paf"))).numpy()
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    np.testing.assert_allclose(b, t, rtol=1e-4, atol=1e-4 * np.abs(t).max())
    # graphs rewritten by the previous versions are upgraded to the same graph
    old_b = _version_b(copy.deepcopy(after))  # channels-last PAF, Pad 127.5
    assert [i.name for i in old_b.graph.input] == ["image", "paf"]
    np.testing.assert_allclose(run(old_b, {"image": image, "paf": feed["paf"]}), b, rtol=1e-6,
                               atol=1e-6 * np.abs(b).max())
    old_a = _previous_version(copy.deepcopy(old_b))  # and NHWC crop and PNCC concatenated
    assert [i.name for i in old_a.graph.input] == ["crop", "pncc", "paf"]
    np.testing.assert_allclose(run(old_a, feed), b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    for old in (old_b, old_a):
        again = fast_inputs(old)
        assert [n.op_type for n in again.graph.node] == ops
        assert [i.name for i in again.graph.input] == ["image", "paf_chw"]
        np.testing.assert_allclose(run(again, planar), b, rtol=1e-6, atol=1e-6 * np.abs(b).max())


def _version_b(m):
    """The rewritten graph as the previous version wrote it: ``paf`` ``(B, S, S, 3)`` transposed
    in the graph, and the first image convolution reading a copy padded with 127.5 instead of
    adding the border map."""
    from onnx import TensorProto, helper, numpy_helper

    g = m.graph
    add = [n for n in g.node if n.op_type == "Add"][0]
    conv = [n for n in g.node if n.output[0] == add.input[0]][0]
    for n in g.node:
        for i, name in enumerate(n.input):
            if name == add.output[0]:
                n.input[i] = conv.output[0]
            elif name == "paf_chw":
                n.input[i] = "paf_nchw"
    for a in conv.attribute:
        if a.name == "pads":
            pads = list(a.ints)
            del a.ints[:]
            a.ints.extend([0, 0, 0, 0])
    conv.input[0] = "image_f_padded"
    g.initializer.extend([
        numpy_helper.from_array(np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64),
                                "image_f_pads"),
        numpy_helper.from_array(np.array(127.5, np.float32), "image_f_pad_value")])
    nodes = [n for n in g.node if n is not add]
    nodes.insert(1, helper.make_node("Transpose", ["paf"], ["paf_nchw"], perm=[0, 3, 1, 2]))
    nodes.insert(3, helper.make_node("Pad", ["image_f", "image_f_pads", "image_f_pad_value"],
                                     ["image_f_padded"], mode="constant"))
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.remove([i for i in g.initializer if i.name == add.input[1]][0])
    size = [d.dim_value for d in g.input[1].type.tensor_type.shape.dim][2]
    del g.input[1:]
    g.input.append(helper.make_tensor_value_info("paf", TensorProto.UINT8, ["batch", size, size, 3]))
    return m


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
    assert paf, "build this from _version_b's graph"
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


def test_cascade_runs_stage_graphs_of_every_input_layout(tmp_path, shared):
    import hashlib
    import json
    import shutil

    from tddfa.v1.cascade import CascadeRegressor, default_cascade_dir

    regs = {"planar": CascadeRegressor(threads=1)}
    base = onnx.load(str(default_cascade_dir() / "stage1.onnx"))
    for name, make in (("image", _version_b), ("export", lambda m: _previous_version(_version_b(m)))):
        shutil.copytree(default_cascade_dir(), tmp_path / name)
        graph = tmp_path / name / "stage1.onnx"
        data = make(copy.deepcopy(base)).SerializeToString()
        graph.write_bytes(data)
        man = json.loads((tmp_path / name / "cascade.json").read_text())
        man["stages"][0]["sha256"] = hashlib.sha256(data).hexdigest()
        (tmp_path / name / "cascade.json").write_text(json.dumps(man))
        regs[name] = CascadeRegressor(tmp_path / name, threads=1)
    crops = np.random.default_rng(0).integers(0, 256, (2, 120, 120, 3), dtype=np.uint8)
    want = regs["planar"].predict(crops)
    for name, reg in regs.items():
        assert reg._layouts == [name]
        np.testing.assert_allclose(reg.predict(crops), want, rtol=1e-5, atol=1e-3)  # float32 sums
