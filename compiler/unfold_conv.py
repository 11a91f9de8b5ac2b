"""``nn.Unfold`` as exporters write it, rewritten as one grouped convolution with one-hot weights.

T2T-ViT's soft split is ``nn.Unfold(k, stride=s, padding=p)``. The TorchScript exporter (what timm / Hugging
Face scripts use) writes it as data movement::

    Pad(x) -> Gather(axis 2, I) -> Gather(axis 4, I) -> Transpose(0, 1, 2, 4, 3, 5) -> Reshape [B, C k k, L]

with I[i, o] = i + o s, the rows of the k x k windows. ONNX Runtime runs those Gathers element by element:
on the digits T2T-ViT (64 x 64) the three soft splits took about 0.55 ms of a 1.2-1.5 ms query on a 2-core
x86 CPU, where the same unfold as a convolution takes 0.08 ms (measured in isolation, ONNX Runtime 1.31, 2
threads, identical outputs). The convolution: ``Conv(x, W, group=C, kernel k, stride s, pads p)`` with W
[C k k, 1, k, k] one-hot (output channel c k k + i k + j copies input channel c at window offset (i, j)),
whose [B, C k k, H', W'] output has the element order of the Transpose's, so the original Reshape stays.
It computes exactly the same values (every output is one input times 1.0 plus zeros). The precision steps
keep such convolutions in float (``vitrt.calibration.graph``: a selection, not arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

UNFOLD_PERM = [0, 1, 2, 4, 3, 5]
UNFOLD_NODES = ("Pad", "Gather", "Gather", "Transpose")
"""The nodes one exported unfold is made of (its Reshape stays, fed by the convolution)."""


def one_hot_unfold_weight(channels: int, k: int) -> np.ndarray:
    """W [C k k, 1, k, k] float32: output channel c k k + i k + j is 1 at (i, j), 0 elsewhere."""
    w = np.zeros((channels * k * k, 1, k, k), np.float32)
    for c in range(channels):
        for i in range(k):
            for j in range(k):
                w[c * k * k + i * k + j, 0, i, j] = 1.0
    return w


def window_rows(indices: np.ndarray) -> tuple[int, int] | None:
    """(k, stride) when ``indices`` [k, L] is I[i, o] = i + o stride (unfold windows), else None."""
    if indices.ndim != 2 or indices.shape[0] < 1 or indices.shape[1] < 1:
        return None
    k, length = indices.shape
    stride = int(indices[0, 1] - indices[0, 0]) if length > 1 else 1
    expected = np.arange(k)[:, None] + stride * np.arange(length)[None, :]
    if stride < 1 or not np.array_equal(indices.astype(np.int64), expected):
        return None
    return k, stride


def is_selection_conv(weight: np.ndarray) -> bool:
    """Whether a Conv weight only selects inputs (every output channel one 1.0, the rest 0): an unfold."""
    flat = weight.reshape(weight.shape[0], -1)
    return bool(flat.size) and bool(np.all((flat == 0) | (flat == 1)) and np.all(flat.sum(axis=1) == 1))


def rewrite_unfolds(
    model: ModelProto, run_shapes: Callable[[ModelProto, list[str]], dict[str, tuple[int, ...]]] | None = None
) -> int:
    """Replace every exported unfold (module docstring) in ``model`` in place; returns how many.

    The convolution needs each unfold's channel count. Shape inference knows it for the first soft split
    (the image); the later ones reshape tokens with shapes computed at run time, so ``run_shapes(model,
    tensors)`` (one run on ONNX Runtime: ``vitrt.compiler.prepare``) gives the shapes inference cannot.
    """
    import onnx
    from onnx import helper, numpy_helper

    from .prepare import graph_index

    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    _, consumers, _ = graph_index(model)
    # data_prop follows Shape -> Gather -> Concat chains where the batch is static; with a dynamic batch the
    # later soft splits' channels stay unknown and come from run_shapes
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in (*inferred.graph.value_info, *inferred.graph.input)
    }

    def only(tensor: str, op_type: str) -> NodeProto | None:
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def attr(node: NodeProto, name: str, default: object) -> object:
        found = next((a for a in node.attribute if a.name == name), None)
        return helper.get_attribute_value(found) if found is not None else default

    # match the structure first, so that only real unfolds with an unknown channel count cost a probe run
    matches: list[tuple[NodeProto, NodeProto, NodeProto, NodeProto, np.ndarray, int, int, int]] = []
    for pad in (n for n in graph.node if n.op_type == "Pad" and n.domain in ("", "ai.onnx")):
        rows = only(pad.output[0], "Gather")
        cols = only(rows.output[0], "Gather") if rows is not None else None
        perm = only(cols.output[0], "Transpose") if cols is not None else None
        reshape = only(perm.output[0], "Reshape") if perm is not None else None
        if rows is None or cols is None or perm is None or reshape is None:
            continue
        if attr(rows, "axis", 0) != 2 or attr(cols, "axis", 0) != 4 or attr(perm, "perm", []) != UNFOLD_PERM:
            continue
        if attr(pad, "mode", b"constant") not in (b"constant", "constant") or len(pad.input) < 2:
            continue
        if len(pad.input) > 2 and pad.input[2]:
            value = consts.get(pad.input[2])
            if value is None or float(numpy_helper.to_array(value).reshape(-1)[0]) != 0.0:
                continue
        if len(pad.input) > 3 and pad.input[3]:
            continue  # an axes input: not the exporter's form
        if pad.input[1] not in consts or rows.input[1] not in consts or cols.input[1] not in consts:
            continue
        pads = numpy_helper.to_array(consts[pad.input[1]]).astype(np.int64).reshape(-1)
        wr = window_rows(numpy_helper.to_array(consts[rows.input[1]]))
        wc = window_rows(numpy_helper.to_array(consts[cols.input[1]]))
        if (
            wr is None
            or wc is None
            or wr[0] != wc[0]
            or pads.size != 8
            or pads[0]
            or pads[1]
            or pads[4]
            or pads[5]
        ):
            continue
        matches.append((pad, rows, cols, perm, pads, wr[0], wr[1], wc[1]))
    unknown = [m[0].input[0] for m in matches if not (shapes.get(m[0].input[0]) or [None, None])[1]]
    if unknown and run_shapes is not None:
        for name, dims in run_shapes(model, unknown).items():
            shapes[name] = list(dims)
    remove: list[NodeProto] = []
    for pad, rows, cols, perm, pads, k, stride_h, stride_w in matches:
        shape = shapes.get(pad.input[0])
        if shape is None or len(shape) != 4 or not shape[1]:
            continue
        channels = int(shape[1])
        scope = rows.name.rsplit("/", 1)[0] if "/" in rows.name else rows.name
        weight = numpy_helper.from_array(one_hot_unfold_weight(channels, k), f"{scope}/unfold_weight")
        conv = helper.make_node(
            "Conv",
            [pad.input[0], weight.name],
            [perm.output[0]],
            name=f"{scope}/Conv_unfold",
            group=channels,
            kernel_shape=[k, k],
            strides=[stride_h, stride_w],
            pads=[int(pads[2]), int(pads[3]), int(pads[6]), int(pads[7])],
        )
        graph.initializer.append(weight)
        graph.node.insert(list(graph.node).index(pad), conv)
        remove += [pad, rows, cols, perm]  # UNFOLD_NODES
    if not remove:
        return 0
    for node in remove:
        graph.node.remove(node)
    _drop_unused(model)
    # the Transpose's output now comes from the Conv in another shape: drop stale shape annotations
    stale = {n.output[0] for n in remove}
    kept = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return len(remove) // len(UNFOLD_NODES)


def _drop_unused(model: ModelProto) -> None:
    """Remove the Constant nodes and initializers nothing reads any more (the Gathers' indices, the pads)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = {t for n in graph.node for t in n.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Constant" and not set(n.output) & read]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {t for n in graph.node for t in n.input} | outputs
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
