"""Explicit Q/DQ insertion (what TensorRT 10/11 and ONNX Runtime's CPU INT8 kernels read).

For every enabled layer (``vitrt.calibration.graph.Layer``):

- each activation input ``x`` gets ``QuantizeLinear(x, s, 0) -> DequantizeLinear`` with int8 zero
  point 0 and the calibrated per-tensor scale ``s = amax / 127``; one Q/DQ pair per tensor, shared
  by every quantized consumer; other consumers keep reading the float tensor;
- each constant weight is stored as an int8 initializer, per-channel symmetric (scale[c] =
  max|w[c]| / 127, values clipped to [-127, 127] as TensorRT's weights are) along the output-channel
  axis, followed by ``DequantizeLinear(w_int8, scale, 0, axis)``;
- the bias, in one of two forms (``form``, recorded in the recipe as ``int8_form``):
  ``"tensorrt"`` (the default): biases stay float, a Gemm's bias moves to an Add after it (see
  ``_split_gemm_bias``): TensorRT reads no int32 DequantizeLinear and fuses the Add into its int8
  kernel's epilogue itself. ``"onnxruntime"``: the bias of a Gemm (its input C) or of a MatMul's
  bias Add becomes ``DequantizeLinear(b_int32, s_x * s_w[c], 0)``, the form ONNX Runtime's own
  quantizer writes: its QDQ transformer then fuses weight, activation and bias into one QGemm (or
  MatMul + bias into one int8 Gemm) with the bias added to the int32 accumulator, where a float
  bias Add after the int8 kernel is one more pass over the output (and a float bias on a 3-D
  MatMul lets ORT's MatMul + Add -> Gemm fusion take the MatMul out of the int8 kernels: the
  weights are dequantized on every run). See ``_int32_bias``.

Why this is plain ``onnx.helper`` code rather than ``onnxruntime.quantization.quantize_static``:
quantize_static places Q/DQ by op type over the whole graph (by default on Add, Mul, Softmax,
LayerNormalization, Transpose, ... too), has no notion of vitrt's plugin nodes or of the
Performer's exp span, uses asymmetric int8 activations by default (TensorRT needs zero point 0) and
its own calibrators (the 128-bin entropy trap). Restricting it with ``op_types_to_quantize`` and
``nodes_to_exclude`` still leaves its scales and its graph rewrites in charge; writing the few
nodes here keeps placement, scales and names under vitrt's control (``vitrt.calibration.graph``).

``gated_model`` builds the sensitivity-analysis twin: every layer switches between its quantized
and its float form on a bool graph input, so one ONNX Runtime session evaluates any subset of
quantized layers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrt.errors import ConfigError

from .errors import CalibrationError
from .graph import Layer, LayerInput
from .ranges import INT8_QMAX, scale_from_amax, weight_scales
from .recipe import INT8_FORMS  # the INT8 graph forms: for TensorRT (float biases), for ONNX Runtime

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto

MIN_OPSET = 13  # per-axis DequantizeLinear
GATE_PREFIX = "vitrt_gate/"
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight as int8 values and float32 scales: ``w ~ values * scale`` along ``axis``.

    values: int8 array of the weight's shape, in [-127, 127]; scale: (C,) float32 per channel
    (C = shape[axis]) or a () float32 scalar when ``axis`` is None.
    """

    values: np.ndarray
    scale: np.ndarray
    axis: int | None

    def dequantize(self) -> np.ndarray:
        scale = self.scale
        if self.axis is not None:
            shape = [1] * self.values.ndim
            shape[self.axis] = -1
            scale = scale.reshape(shape)
        return (self.values.astype(np.float32) * scale).astype(np.float32)


def quantize_weight(weight: np.ndarray, axis: int | None) -> QuantizedWeight:
    """Symmetric int8 weight: per output channel along ``axis`` (None: one scale for the tensor)."""
    w = np.asarray(weight, dtype=np.float32)
    if axis is None:
        scale = np.asarray(weight_scales(w.reshape(1, -1), axis=0)[0], dtype=np.float32)
        q = np.rint(w / scale)
    else:
        scale = weight_scales(w, axis=axis)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.rint(w / scale.reshape(shape))
    values = np.clip(q, -INT8_QMAX, INT8_QMAX).astype(np.int8)
    return QuantizedWeight(values, scale.astype(np.float32), axis)


def check_opset(model: ModelProto) -> None:
    """Raise CalibrationError when the default-domain opset predates per-axis DequantizeLinear."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise CalibrationError(
            f"the model's opset is {opset}; per-channel Q/DQ needs opset >= {MIN_OPSET}. Fix: re-export "
            "with a newer opset (vitrt export uses 18)"
        )


class _Builder:
    """Rewrites a copy of a graph: new nodes are emitted after the producer of their input."""

    def __init__(self, model: ModelProto) -> None:
        import onnx

        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        self.inits: dict[str, TensorProto] = {i.name: i for i in self.graph.initializer}
        self.constants: dict[str, TensorProto] = dict(self.inits)
        for node in self.graph.node:
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = value
        self.after: dict[str, list[NodeProto]] = {}  # tensor -> nodes to emit once it exists
        self.before: dict[str, list[NodeProto]] = {}  # node name -> nodes to emit before it
        self.new_inits: list[TensorProto] = []
        self.rewire: dict[tuple[str, int], str] = {}  # (node name, input slot) -> new tensor
        self.replace: dict[str, NodeProto] = {}  # node name -> the node that takes its place
        self.names: set[str] = {t for n in self.graph.node for t in [*n.input, *n.output]}
        self.names |= set(self.constants) | {i.name for i in self.graph.input}
        self.graph_inputs = {i.name for i in self.graph.input}

    def unique(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self.names:
            k += 1
            candidate = f"{name}_{k}"
        self.names.add(candidate)
        return candidate

    def add_init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.unique(name)
        self.new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def emit_after(self, tensor: str, nodes: list[NodeProto]) -> None:
        self.after.setdefault(tensor, []).extend(nodes)

    def emit_before(self, node_name: str, nodes: list[NodeProto]) -> None:
        self.before.setdefault(node_name, []).extend(nodes)

    def constant(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return np.asarray(numpy_helper.to_array(self.constants[name]))

    def finish(self) -> ModelProto:
        """Assemble the node list in topological order and drop constants nothing reads."""
        out: list[NodeProto] = []
        for name in self.graph_inputs:
            out += self.after.pop(name, [])
        for tensor in list(self.after):  # constants: their consumers come later
            if tensor in self.constants:
                out += self.after.pop(tensor)
        for node in self.graph.node:
            out += self.before.pop(node.name, [])
            for k, _ in enumerate(node.input):
                if (node.name, k) in self.rewire:
                    node.input[k] = self.rewire[(node.name, k)]
            out.append(self.replace.get(node.name, node))
            for o in node.output:
                out += self.after.pop(o, [])
        if self.after or self.before:
            raise CalibrationError(f"internal: Q/DQ nodes left unplaced for {sorted(self.after)[:3]}")
        del self.graph.node[:]
        self.graph.node.extend(out)
        self.graph.initializer.extend(self.new_inits)
        used = {o.name for o in self.graph.output}
        for n in self.graph.node:
            used.update(n.input)
            for attr in n.attribute:  # outer-scope names read by If branches
                if attr.type == attr.GRAPH:
                    used.update(t for sub in attr.g.node for t in sub.input)
        keep = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        dead = [n for n in self.graph.node if n.op_type == "Constant" and n.output[0] not in used]
        for node in dead:
            self.graph.node.remove(node)
        return self.model


def _qdq_nodes(b: _Builder, tensor: str, scale: float, tag: str) -> tuple[list[NodeProto], str]:
    """QuantizeLinear -> DequantizeLinear on ``tensor``; returns (nodes, dequantized tensor name)."""
    from onnx import helper

    s = b.add_init(f"{tensor}/{tag}scale", np.array(scale, dtype=np.float32))
    z = b.add_init(f"{tensor}/{tag}zero_point", np.array(0, dtype=np.int8))
    q_out, dq_out = b.unique(f"{tensor}/{tag}quantized"), b.unique(f"{tensor}/{tag}dequantized")
    nodes = [
        helper.make_node("QuantizeLinear", [tensor, s, z], [q_out], name=b.unique(f"{tensor}/{tag}Q")),
        helper.make_node("DequantizeLinear", [q_out, s, z], [dq_out], name=b.unique(f"{tensor}/{tag}DQ")),
    ]
    return nodes, dq_out


def _weight_dq(b: _Builder, slot: LayerInput) -> tuple[NodeProto, str, QuantizedWeight]:
    """int8 initializer + DequantizeLinear for one weight; returns (node, output, quantized)."""
    from onnx import helper

    qw = quantize_weight(b.constant(slot.tensor), slot.axis)
    suffix = "" if slot.axis is None else f"_axis{slot.axis}"
    values = b.add_init(f"{slot.tensor}/int8{suffix}", qw.values)
    scale = b.add_init(f"{slot.tensor}/scale{suffix}", qw.scale)
    zero = b.add_init(f"{slot.tensor}/zero_point{suffix}", np.zeros(qw.scale.shape, dtype=np.int8))
    out = b.unique(f"{slot.tensor}/dequantized{suffix}")
    attrs: dict[str, Any] = {} if slot.axis is None else {"axis": slot.axis}
    node = helper.make_node(
        "DequantizeLinear", [values, scale, zero], [out], name=b.unique(f"{slot.tensor}/DQ{suffix}"), **attrs
    )
    return node, out, qw


def _act_scale(amax: Mapping[str, float], tensor: str) -> float:
    if tensor not in amax:
        raise CalibrationError(f"no calibrated range for tensor {tensor!r}; was it collected?")
    return scale_from_amax(float(amax[tensor]))


def check_form(form: str) -> str:
    """``form`` if it is one of ``INT8_FORMS``; ConfigError otherwise."""
    if form not in INT8_FORMS:
        raise ConfigError(f"unknown INT8 form {form!r}; one of {', '.join(INT8_FORMS)}")
    return form


def insert_qdq(
    model: ModelProto,
    layers: Sequence[Layer],
    amax: Mapping[str, float],
    enabled: Collection[str],
    *,
    form: str = "tensorrt",
) -> ModelProto:
    """A copy of ``model`` with Q/DQ on the inputs of the layers named in ``enabled``.

    ``amax``: {activation tensor: calibrated amax}, in the tensor's units (scale = amax / 127).
    ``form``: "tensorrt" (float biases) or "onnxruntime" (int32 biases where a layer has one, see the
    module docstring). Metadata, opsets and every node outside the enabled layers are kept as they are.
    """
    check_form(form)
    check_opset(model)
    b = _Builder(model)
    act_out: dict[str, str] = {}
    weight_out: dict[tuple[str, int | None], tuple[str, QuantizedWeight]] = {}
    by_name = {n.name: n for n in b.graph.node}
    consumers: dict[str, list[NodeProto]] = {}
    for n in b.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    outputs = {o.name for o in b.graph.output}
    for layer in layers:
        if layer.name not in enabled:
            continue
        node = by_name[layer.name]
        if layer.op_type == "Gemm" and form == "tensorrt":
            _split_gemm_bias(b, node)
        scales: dict[int, float] = {}
        weights: dict[int, QuantizedWeight] = {}
        for slot in layer.inputs:
            if slot.kind == "activation":
                scales[slot.index] = _act_scale(amax, slot.tensor)
                if slot.tensor not in act_out:
                    nodes, act_out[slot.tensor] = _qdq_nodes(b, slot.tensor, scales[slot.index], "")
                    b.emit_after(slot.tensor, nodes)
                b.rewire[(layer.name, slot.index)] = act_out[slot.tensor]
            else:
                key = (slot.tensor, slot.axis)
                if key not in weight_out:
                    dq, out, qw = _weight_dq(b, slot)
                    weight_out[key] = (out, qw)
                    b.emit_before(layer.name, [dq])
                b.rewire[(layer.name, slot.index)] = weight_out[key][0]
                weights[slot.index] = weight_out[key][1]
        if form == "onnxruntime" and not _int32_bias(b, node, scales, weights, consumers, outputs):
            if layer.op_type == "Gemm":  # a bias that cannot be int32: the float Add as for TensorRT
                _split_gemm_bias(b, node)
    return b.finish()


def _bias_site(
    b: _Builder,
    node: NodeProto,
    consumers: Mapping[str, list[NodeProto]],
    outputs: Collection[str],
) -> tuple[NodeProto, int, np.ndarray] | None:
    """Where ``node``'s constant bias is: (node that reads it, input slot, bias values * beta), or None.

    Gemm: its input C (alpha 1), scaled by beta. MatMul: the constant input of the one Add that alone
    reads its output (the bias of a Linear on a 3-D input, as exporters write it).
    """
    if node.op_type == "Gemm":
        attrs = {a.name: a.f for a in node.attribute if a.name in ("alpha", "beta")}
        if len(node.input) < 3 or node.input[2] not in b.constants or attrs.get("alpha", 1.0) != 1.0:
            return None
        return node, 2, b.constant(node.input[2]).astype(np.float32) * np.float32(attrs.get("beta", 1.0))
    if node.op_type != "MatMul":
        return None
    readers = consumers.get(node.output[0], [])
    if len(readers) != 1 or node.output[0] in outputs or readers[0].op_type != "Add":
        return None
    add = readers[0]
    slot = 1 if add.input[0] == node.output[0] else 0
    if add.input[slot] == node.output[0] or add.input[slot] not in b.constants:
        return None
    return add, slot, b.constant(add.input[slot]).astype(np.float32)


def _int32_bias(
    b: _Builder,
    node: NodeProto,
    scales: Mapping[int, float],
    weights: Mapping[int, QuantizedWeight],
    consumers: Mapping[str, list[NodeProto]],
    outputs: Collection[str],
) -> bool:
    """Give ``node``'s constant bias the int32 form ONNX Runtime fuses (in place); False: not possible.

    b_int32[c] = round(b[c] / (s_x * s_w[c])), dequantized with that scale: the units of the int8
    kernel's int32 accumulator, so ONNX Runtime adds it there (QGemm's C). The layer must read one
    activation (input 0, scale s_x) and one weight (input 1, per output channel), the bias must hold
    one value per output channel (shape [N] or [1, ..., N]) and fit in int32; a Gemm's beta is folded in.
    """
    from onnx import helper

    if set(scales) != {0} or set(weights) != {1} or weights[1].axis is None:
        return False
    site = _bias_site(b, node, consumers, outputs)
    if site is None:
        return False
    reader, slot, bias = site
    w_scale = weights[1].scale
    if bias.size != w_scale.size or (bias.ndim and bias.shape[-1] != w_scale.size):
        return False
    scale = (np.float32(scales[0]) * w_scale).astype(np.float32)
    values = np.rint(bias.reshape(-1).astype(np.float64) / scale.astype(np.float64))
    if not np.all(np.isfinite(values)) or np.abs(values).max(initial=0.0) > INT32_MAX:
        return False
    # a Gemm's C as [N] (QGemm's form; [1, N] broadcasts alike), an Add's bias in its own shape
    shape = (w_scale.size,) if reader is node or not bias.ndim else bias.shape
    tag = f"{node.name}/bias"
    q = b.add_init(f"{tag}/int32", values.astype(np.int32).reshape(shape))
    s = b.add_init(f"{tag}/scale", scale)
    z = b.add_init(f"{tag}/zero_point", np.zeros(scale.shape, dtype=np.int32))
    out = b.unique(f"{tag}/dequantized")
    dq = helper.make_node(
        "DequantizeLinear", [q, s, z], [out], name=b.unique(f"{tag}/DQ"), axis=len(shape) - 1
    )
    b.emit_before(node.name, [dq])
    if reader is node:  # Gemm: C with beta folded in
        node.input[2] = out
        for attr in [a for a in node.attribute if a.name == "beta"]:
            node.attribute.remove(attr)
    else:
        b.rewire[(reader.name, slot)] = out
    return True


def _split_gemm_bias(b: _Builder, node: NodeProto) -> None:
    """Gemm(A, B, C) -> Add(Gemm(A, B), beta * C) for a constant bias C (in place).

    ONNX Runtime fuses DQ -> Gemm into its int8 QGemm only when the bias is absent or an int32 DQ,
    and int32 DQ is not a TensorRT Q/DQ type; with a float bias it would dequantize the weights on
    every run and multiply in float. A separate Add keeps the bias float for both: TensorRT parses
    Gemm as MatMul + bias add anyway and fuses the add into the int8 kernel's epilogue.
    """
    from onnx import helper

    if len(node.input) < 3 or not node.input[2] or node.input[2] not in b.constants:
        return
    beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
    bias = node.input[2]
    if beta != 1.0:
        bias = b.add_init(f"{bias}/times_beta", (b.constant(bias) * np.float32(beta)).astype(np.float32))
    for attr in list(node.attribute):
        if attr.name == "beta":
            node.attribute.remove(attr)
    del node.input[2]
    out = node.output[0]
    node.output[0] = b.unique(f"{out}/without_bias")
    add = helper.make_node("Add", [node.output[0], bias], [out], name=b.unique(f"{node.name}/bias_Add"))
    b.emit_after(node.output[0], [add])


def gate_name(layer: str) -> str:
    """The graph input that switches ``layer``'s quantization in a ``gated_model``."""
    return GATE_PREFIX + layer


def gated_model(model: ModelProto, layers: Sequence[Layer], amax: Mapping[str, float]) -> ModelProto:
    """The sensitivity twin of ``model``: each layer runs quantized or float, as a gate input says.

    Every layer node becomes an ``If`` on a bool scalar graph input ``gate_name(layer.name)``: the
    then-branch is the layer on Q/DQ'd activations and fake-quantized weights (float constants
    DQ(Q(w))), the else-branch the layer as it was. ONNX Runtime runs only the chosen branch, so a
    run with one layer quantized costs about one float run (arithmetic gates, x + g (DQ(Q(x)) - x),
    would touch every weight on every run). Fake quantization in float equals the int8 kernels'
    result up to float summation order. Outputs are the model's own.
    """
    import onnx
    from onnx import TensorProto, helper

    check_opset(model)
    b = _Builder(model)
    nodes = {n.name: n for n in b.graph.node}
    fq_weight: dict[tuple[str, int | None], str] = {}
    for layer in layers:
        node = nodes[layer.name]
        gate = gate_name(layer.name)
        b.graph.input.append(helper.make_tensor_value_info(gate, TensorProto.BOOL, []))
        b.names.add(gate)
        then_nodes: list[NodeProto] = []
        then_inputs = list(node.input)
        for slot in layer.inputs:
            if slot.kind == "activation":
                qdq, then_inputs[slot.index] = _qdq_nodes(b, slot.tensor, _act_scale(amax, slot.tensor), "")
                then_nodes += qdq
            else:
                key = (slot.tensor, slot.axis)
                if key not in fq_weight:
                    fake = quantize_weight(b.constant(slot.tensor), slot.axis).dequantize()
                    fq_weight[key] = b.add_init(f"{slot.tensor}/fake_quantized", fake)
                then_inputs[slot.index] = fq_weight[key]
        branches = []
        for label, inputs, extra in (("int8", then_inputs, then_nodes), ("float", list(node.input), [])):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = b.unique(f"{node.name}/{label}")
            del copy.input[:]
            copy.input.extend(inputs)
            del copy.output[:]
            out = b.unique(f"{node.output[0]}/{label}")
            copy.output.append(out)
            branches.append(
                helper.make_graph(
                    [*extra, copy],
                    f"{node.name}/{label}",
                    [],
                    [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                )
            )
        gated = helper.make_node(
            "If",
            [gate],
            [node.output[0]],
            name=b.unique(f"{node.name}/gated"),
            then_branch=branches[0],
            else_branch=branches[1],
        )
        b.replace[node.name] = gated
    return b.finish()
