"""A faster input path for a cascade stage's ONNX graph (needs the ``onnx`` package: training side).

``torch.onnx`` writes :class:`tddfa.v1.net.CascadeStageNet`'s input handling as it reads in
PyTorch: concatenate the NHWC uint8 crop and PNCC along channels, transpose, cast, subtract 127.5,
divide by 128, then the first convolution (and transpose, cast, subtract, divide for the PAF map
before the pose-adaptive convolution). In ONNX Runtime that costs about as much as two of the
stage's eight convolutions: the channel concat of NHWC images copies 3 bytes at a time, and the
subtract and divide are two passes over float images.

:func:`fast_inputs` rewrites it to

* take the crop and PNCC as one channels-first input, as
  :func:`tddfa.v1.features.stage_inputs` renders it: ``image`` ``(B, 6, 120, 120)`` uint8 (crop
  channels, then PNCC channels), cast to float (no transposes or channel concat left); the PAF
  map ``paf`` ``(B, 64k, 64k, 3)`` uint8 is transposed to channels-first and cast;
* fold ``(x − 127.5) / 128`` into the first convolution of each stream (weights / 128, bias −
  Σ weights × 127.5 / 128); where that convolution pads its input, an explicit ``Pad`` with value
  127.5 (the raw value that normalises to the zero the original pads with) comes first and the
  convolution's own padding is removed.

The result is the same function up to float rounding (outputs agree to ~1e-7 relative). A graph
that does not have the expected pattern is returned unchanged (with a log message).
"""

from __future__ import annotations

import logging

import numpy as np

from tddfa.errors import require

__all__ = ["fast_inputs"]

log = logging.getLogger(__name__)


def _chain(start: str, consumers: dict) -> list:
    """Nodes from the tensor ``start`` along single consumers up to the first Conv."""
    seq, cur = [], start
    while len(consumers.get(cur, ())) == 1:
        node = consumers[cur][0]
        seq.append(node)
        if node.op_type == "Conv":
            break
        cur = node.output[0]
    return seq


def fast_inputs(model):
    """Return ``model`` (an ``onnx.ModelProto`` of a cascade stage, modified in place) with the
    input path described in the module docstring, checked by ``onnx.checker``. A graph
    rewritten by the previous version (NHWC inputs, transposed in the graph) only has its
    inputs made channels-first."""
    onnx = require("onnx", "dev")
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    nodes = list(g.node)
    if [n.output[0] for n in nodes[:3]] == ["crop_nchw", "pncc_nchw", "image_u8"]:
        _channels_first(model)
        onnx.checker.check_model(model)
        return model
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
              for n in nodes if n.op_type == "Constant" and n.attribute[0].name == "value"}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    cat = [n for n in nodes if n.op_type == "Concat" and list(n.input) == ["crop", "pncc"]]
    streams = []
    for head, start in ((cat[0] if cat else None, cat[0].output[0] if cat else None), (None, "paf")):
        seq = _chain(start, consumers) if start else []
        if [n.op_type for n in seq] != ["Transpose", "Cast", "Sub", "Div", "Conv"]:
            log.info("stage graph: input path not in the expected form; left unchanged")
            return model
        sub, div = seq[2].input[1], seq[3].input[1]
        if sub not in consts or div not in consts or consts[sub].size != 1 or consts[div].size != 1:
            log.info("stage graph: normalisation constants not scalar; left unchanged")
            return model
        streams.append((head, seq, float(consts[sub]), float(consts[div])))

    inits = {i.name: i for i in g.initializer}
    drop = {id(n) for head, seq, _, _ in streams for n in ([head] if head else []) + seq[:4]}
    used_consts = {n.input[1] for _, seq, _, _ in streams for n in seq[2:4]}
    pre = [helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
           helper.make_node("Transpose", ["paf"], ["paf_nchw"], perm=[0, 3, 1, 2]),
           helper.make_node("Cast", ["paf_nchw"], ["paf_f"], to=TensorProto.FLOAT)]
    for (_, seq, sub_c, div_c), src in zip(streams, ("image_f", "paf_f"), strict=True):
        conv = seq[4]
        w_name, b_name = conv.input[1], conv.input[2] if len(conv.input) > 2 else None
        w = numpy_helper.to_array(inits[w_name]).astype(np.float64)
        b = numpy_helper.to_array(inits[b_name]).astype(np.float64) if b_name else np.zeros(len(w))
        b = b - w.sum(axis=(1, 2, 3)) * sub_c / div_c
        inits[w_name].CopyFrom(numpy_helper.from_array((w / div_c).astype(np.float32), w_name))
        if b_name is None:
            b_name = f"{conv.name or w_name}_folded_bias"
            g.initializer.append(numpy_helper.from_array(b.astype(np.float32), b_name))
            conv.input.append(b_name)
        else:
            inits[b_name].CopyFrom(numpy_helper.from_array(b.astype(np.float32), b_name))
        pads = [a for a in conv.attribute if a.name == "pads"]
        pv = list(pads[0].ints) if pads else [0, 0, 0, 0]
        if any(pv):
            g.initializer.extend([
                numpy_helper.from_array(np.array([0, 0, pv[0], pv[1], 0, 0, pv[2], pv[3]], np.int64),
                                        f"{src}_pads"),
                numpy_helper.from_array(np.array(sub_c, np.float32), f"{src}_pad_value")])
            pre.append(helper.make_node("Pad", [src, f"{src}_pads", f"{src}_pad_value"],
                                        [f"{src}_padded"], mode="constant"))
            src = f"{src}_padded"
            del pads[0].ints[:]
            pads[0].ints.extend([0, 0, 0, 0])
        conv.input[0] = src
    keep = [n for n in nodes if id(n) not in drop
            and not (n.op_type == "Constant" and n.output[0] in used_consts
                     and all(id(c) in drop for c in consumers[n.output[0]]))]
    del g.node[:]
    g.node.extend(pre + keep)
    _image_input(g)
    onnx.checker.check_model(model)
    return model


def _channels_first(model) -> None:
    """Upgrade a graph rewritten by the previous version, which took ``crop`` and ``pncc``
    ``(B, 120, 120, 3)`` and transposed and concatenated them itself, to the ``image`` input:
    the transposes and the concat go. (ONNX Runtime turns "transpose both, concat the channels"
    back into a concat of NHWC images, which copies 3 bytes at a time: about a fifth of the
    stage graph's time at batch 1.)"""
    g = model.graph
    gone = {"crop_nchw", "pncc_nchw", "image_u8"}
    keep = [n for n in g.node if not set(n.output) & gone]
    for n in keep:
        for i, name in enumerate(n.input):
            if name == "image_u8":
                n.input[i] = "image"
    del g.node[:]
    g.node.extend(keep)
    _image_input(g)


def _image_input(g) -> None:
    """Declare the graph's inputs: ``image`` ``(B, 6, 120, 120)`` uint8 (crop channels, then
    PNCC channels, as :func:`tddfa.v1.features.stage_inputs` renders it) in place of ``crop``
    and ``pncc``; ``paf`` ``(B, S, S, C)`` is kept."""
    from onnx import TensorProto, helper

    paf = [i for i in g.input if i.name == "paf"]
    del g.input[:]
    g.input.extend([helper.make_tensor_value_info("image", TensorProto.UINT8,
                                                  ["batch", 6, 120, 120])] + paf)


def main(argv: list[str] | None = None) -> int:
    """``python -m tddfa.v1.stage_graph STAGE.onnx [...]``: rewrite stage graphs in place (atomic)
    and print each one's new SHA-256 (for ``cascade.json``)."""
    import argparse
    import hashlib
    from pathlib import Path

    onnx = require("onnx", "dev")
    ap = argparse.ArgumentParser(description="rewrite cascade stage graphs' input path in place")
    ap.add_argument("graphs", nargs="+", type=Path)
    for path in ap.parse_args(argv).graphs:
        data = fast_inputs(onnx.load(str(path))).SerializeToString()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        print(f"{path}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
