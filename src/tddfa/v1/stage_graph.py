"""A faster input path for a cascade stage's ONNX graph (needs the ``onnx`` package: training side).

``torch.onnx`` writes :class:`tddfa.v1.net.CascadeStageNet`'s input handling as it reads in
PyTorch: concatenate the NHWC uint8 crop and PNCC along channels, transpose, cast, subtract 127.5,
divide by 128, then the first convolution (and transpose, cast, subtract, divide for the PAF map
before the pose-adaptive convolution). In ONNX Runtime that costs about as much as two of the
stage's eight convolutions: the channel concat of NHWC images copies 3 bytes at a time, and the
subtract and divide are two passes over float images.

:func:`fast_inputs` rewrites it to

* take both inputs channels-first, as :func:`tddfa.v1.features.stage_inputs` renders them:
  ``image`` ``(B, 6, 120, 120)`` uint8 (crop channels, then PNCC channels) and ``paf_chw``
  ``(B, 3, 64k, 64k)`` uint8 (the PAF map as planes), each only cast to float — no transposes or
  channel concat left;
* fold ``(x − 127.5) / 128`` into the first convolution of each stream (weights / 128, bias −
  Σ weights × 127.5 / 128). Where that convolution pads its input, the original pads with the
  zero that 127.5 normalises to, while the folded one pads raw values with 0: the difference
  is a constant map (non-zero only on output rows and columns that read padding), added after
  the convolution (``Add`` of the ``border`` initializer) — cheaper than padding the input
  with 127.5 first, as the previous version did.

The result is the same function up to float rounding (outputs agree to ~1e-7 relative). A graph
that does not have the expected pattern is returned unchanged (with a log message); graphs
rewritten by the previous versions are upgraded (:func:`fast_inputs`).
"""

from __future__ import annotations

import logging

import numpy as np

from tddfa.errors import require

__all__ = ["fast_inputs", "border_map"]

log = logging.getLogger(__name__)

_IMAGE = 120  # the crop's side: the image input is (B, 6, _IMAGE, _IMAGE)


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
    rewritten by a previous version is upgraded: NHWC ``crop`` and ``pncc`` transposed and
    concatenated in the graph, or a channels-last ``paf`` transposed in the graph and a ``Pad``
    with 127.5 before the first image convolution."""
    onnx = require("onnx", "dev")
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    nodes = list(g.node)
    if [n.output[0] for n in nodes[:3]] == ["crop_nchw", "pncc_nchw", "image_u8"]:
        _channels_first(model)
        nodes = list(g.node)
    if nodes and nodes[0].output[0] == "image_f":  # rewritten before: upgrade what is left
        _planar_paf(g)
        _pad_to_border(g)
        onnx.checker.check_model(model)
        return model
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
              for n in nodes if n.op_type == "Constant" and n.attribute[0].name == "value"}
    consumers = _consumers(nodes)
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
           helper.make_node("Cast", ["paf_chw"], ["paf_f"], to=TensorProto.FLOAT)]
    added = []
    for (_, seq, sub_c, div_c), src, size in zip(streams, ("image_f", "paf_f"),
                                                 (_IMAGE, _paf_size(g)), strict=True):
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
        conv.input[0] = src
        added += _add_border(g, conv, w / div_c, sub_c, size, consumers)
    keep = [n for n in nodes if id(n) not in drop
            and not (n.op_type == "Constant" and n.output[0] in used_consts
                     and all(id(c) in drop for c in consumers[n.output[0]]))]
    _set_nodes(g, pre + keep, added)
    _declare_inputs(g)
    onnx.checker.check_model(model)
    return model


def _attr(node, name: str, default: list[int]) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return default


def _consumers(nodes) -> dict[str, list]:
    """Tensor name → the nodes that read it."""
    out: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _rename_input(nodes, old: str, new: str) -> None:
    """Make ``nodes`` read tensor ``new`` wherever they read ``old``."""
    for n in nodes:
        for i, x in enumerate(n.input):
            if x == old:
                n.input[i] = new


def _set_nodes(g, nodes: list, added: list = ()) -> None:
    """Replace the graph's nodes by ``nodes``, each ``(node, after)`` of ``added`` (the border
    ``Add`` of :func:`_add_border`) placed right after ``after``."""
    nodes = list(nodes)
    for node, after in added:
        nodes.insert(nodes.index(after) + 1, node)
    del g.node[:]
    g.node.extend(nodes)


def border_map(w: np.ndarray, pads: list[int], strides: list[int], size: int,
               value: float) -> np.ndarray:
    """``(1, O, OH, OW)`` float32: what a convolution (weights ``w`` ``(O, C, kh, kw)``, ONNX
    ``pads`` ``[top, left, bottom, right]``, ``strides``) over a ``size × size`` input padded with
    ``value`` adds to the same convolution padded with 0 — ``value`` × the sum of the weights of
    the taps that fall in the padding, at each output position."""
    o, _, kh, kw = w.shape
    wsum = w.sum(axis=1)  # (O, kh, kw)
    inside = []
    for k, p0, p1, st in ((kh, pads[0], pads[2], strides[0]), (kw, pads[1], pads[3], strides[1])):
        n_out = (size + p0 + p1 - k) // st + 1
        pos = np.arange(n_out)[None, :] * st - p0 + np.arange(k)[:, None]  # (k, n_out)
        inside.append(((pos >= 0) & (pos < size)).astype(np.float64))
    total = wsum.sum(axis=(1, 2))[:, None, None]
    kept = np.einsum("oyx,yi,xj->oij", wsum, inside[0], inside[1])
    return (value * (total - kept))[None].astype(np.float32)


def _add_border(g, conv, w_folded: np.ndarray, value: float, size: int, consumers: dict) -> list:
    """If ``conv`` pads its input: keep its zero padding and return ``[(Add node, conv)]``
    that adds :func:`border_map` to its output (its consumers rewired); else ``[]``."""
    from onnx import helper, numpy_helper

    pads = _attr(conv, "pads", [0, 0, 0, 0])
    if not any(pads):
        return []
    m = border_map(w_folded, pads, _attr(conv, "strides", [1, 1]), size, value)
    out = conv.output[0]
    name = f"{out}_border"
    _rename_input(consumers.get(out, []), out, name)
    for o in g.output:
        if o.name == out:
            raise ValueError("stage graph: a padded first convolution is a graph output")
    g.initializer.append(numpy_helper.from_array(m, f"{out}_border_map"))
    return [(helper.make_node("Add", [out, f"{out}_border_map"], [name]), conv)]


def _paf_size(g) -> int:
    """The PAF map's side from the graph's declared ``paf`` input ``(B, S, S, C)``."""
    for i in g.input:
        if i.name in ("paf", "paf_chw"):
            d = i.type.tensor_type.shape.dim
            return int(d[1].dim_value if i.name == "paf" else d[2].dim_value)
    raise ValueError("stage graph has no paf input")


def _planar_paf(g) -> None:
    """Previous version: ``paf`` ``(B, S, S, C)`` transposed in the graph → ``paf_chw`` input."""
    tr = [n for n in g.node if n.op_type == "Transpose" and list(n.input) == ["paf"]]
    if not tr:
        return
    keep = [n for n in g.node if n is not tr[0]]
    _rename_input(keep, tr[0].output[0], "paf_chw")
    _set_nodes(g, keep)
    _declare_inputs(g)


def _pad_to_border(g) -> None:
    """Previous version: ``Pad`` (value 127.5) before the first image convolution → the
    convolution's own zero padding + the :func:`border_map` ``Add``."""
    from onnx import numpy_helper

    pad = [n for n in g.node if n.op_type == "Pad" and n.input[0] == "image_f"]
    if not pad:
        return
    pad = pad[0]
    inits = {i.name: i for i in g.initializer}
    consumers = _consumers(g.node)
    conv = consumers[pad.output[0]][0]
    p = numpy_helper.to_array(inits[pad.input[1]]).astype(int)  # [0, 0, t, l, 0, 0, b, r]
    value = float(numpy_helper.to_array(inits[pad.input[2]]))
    for a in conv.attribute:
        if a.name == "pads":
            del a.ints[:]
            a.ints.extend([int(p[2]), int(p[3]), int(p[6]), int(p[7])])
    conv.input[0] = "image_f"
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    added = _add_border(g, conv, w, value, _IMAGE, consumers)
    for name in pad.input[1:]:
        g.initializer.remove(inits[name])
    _set_nodes(g, [n for n in g.node if n is not pad], added)


def _channels_first(model) -> None:
    """Upgrade a graph rewritten by the first version, which took ``crop`` and ``pncc``
    ``(B, 120, 120, 3)`` and transposed and concatenated them itself, to the ``image`` input:
    the transposes and the concat go. (ONNX Runtime turns "transpose both, concat the channels"
    back into a concat of NHWC images, which copies 3 bytes at a time: about a fifth of the
    stage graph's time at batch 1.)"""
    g = model.graph
    gone = {"crop_nchw", "pncc_nchw", "image_u8"}
    keep = [n for n in g.node if not set(n.output) & gone]
    _rename_input(keep, "image_u8", "image")
    _set_nodes(g, keep)
    _declare_inputs(g)


def _declare_inputs(g) -> None:
    """Declare the graph's inputs: ``image`` ``(B, 6, 120, 120)`` uint8 (crop channels, then
    PNCC channels, as :func:`tddfa.v1.features.stage_inputs` renders it) in place of ``crop``
    and ``pncc``; the PAF as ``paf_chw`` ``(B, C, S, S)`` when the graph reads it as planes
    (no transpose of ``paf`` left), else ``paf`` ``(B, S, S, C)`` as before."""
    from onnx import TensorProto, helper

    paf = [i for i in g.input if i.name in ("paf", "paf_chw")][0]
    d = [x.dim_value or x.dim_param for x in paf.type.tensor_type.shape.dim]
    reads = {x for n in g.node for x in n.input}
    if "paf_chw" in reads and paf.name == "paf":
        paf = helper.make_tensor_value_info("paf_chw", TensorProto.UINT8, [d[0], d[3], d[1], d[2]])
    del g.input[:]
    g.input.extend([helper.make_tensor_value_info("image", TensorProto.UINT8,
                                                  ["batch", 6, _IMAGE, _IMAGE]), paf])


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
