"""Where INT8 goes in a ViT's ONNX graph: the quantizable layers and the reasons others stay float.

A *layer* is one standard-domain MatMul, Gemm or Conv node. Its activation inputs get per-tensor
symmetric int8 Q/DQ and its constant weight per-channel symmetric int8 (see ``vitrt.calibration.qdq``).
Every other op is left alone, so LayerNormalization, Softmax, GELU (Erf), residual Adds and
vitrt's plugin nodes compute in float; the Q/DQ sits on the tensors they hand to a layer, which
is where TensorRT fuses it into the layer's int8 kernel (and ONNX Runtime into MatMulInteger).

A candidate layer stays float, with the reason recorded, when:

- its name or label matches an ``exclude`` pattern (``fnmatch``, e.g. ``blocks.0.*`` or
  ``head/Gemm_1``; the label restores the module path where a node name lacks it, see
  ``layer_label``);
- an activation input is an input or output of a custom-domain node (vitrt's TokenFusion,
  ScatterbrainAttention), looking through pure data-movement ops (Reshape, Transpose, ...): plugin
  nodes stay opaque and float, and TensorRT would otherwise try to fuse the Q into the plugin;
- it is inside an *exp span*: its output reaches an ``Exp`` through element-wise ops (the random
  feature projection ``w x`` of the T2T token performer, whose error the exponential amplifies),
  or an activation-by-activation product one of whose inputs derives from an ``Exp`` output
  (the performer's ``phi(q) (phi(k)^T v)`` and its normaliser). The span ends at the next weighted
  layer, LayerNormalization or Softmax, so the performer's output projection is quantized;
- it is inside a *selection span*: an operand derives from a comparison (Equal, Less, ...), i.e.
  a 0/1 mask or one-hot merge matrix such as MCTF's, through data movement, Cast or scaling;
- an input is not float32, or it has no input computed at run time.

Node names are module paths (``blocks.3.attn.qkv/MatMul_1``, from ``vitrt.compiler.passes.name_nodes``);
foreign graphs with unnamed nodes get ``<op_type>_<index>`` names in the working copy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

STANDARD_DOMAINS = ("", "ai.onnx")
LAYER_OPS = ("MatMul", "Gemm", "Conv")
# Ops that only move or select values: looked through when deciding if a tensor touches a plugin node.
DATA_MOVEMENT = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Gather", "Slice", "Split",
     "Concat", "Expand", "Tile"}
)  # fmt: skip
# Element-wise ops through which a layer's output is followed to an Exp.
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Reciprocal", "Cast", "Identity"})
# Ops whose output is a 0/1 mask, and the ops a mask passes through unchanged in kind.
COMPARISONS = frozenset(
    {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "OneHot"}
)
MASK_PASS = DATA_MOVEMENT | {"Cast", "Mul", "Div", "Where", "Neg"}
# Ops at which an exp span ends (besides weighted layers and custom-domain nodes).
SPAN_END = frozenset({"LayerNormalization", "Softmax", "LogSoftmax", "ReduceMax", "ArgMax", "TopK"})
FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class LayerInput:
    """One input slot of a layer that gets quantized.

    ``kind``: "activation" (per-tensor scale from calibration) or "weight" (a constant; per-channel
    scales along ``axis``, or per-tensor when ``axis`` is None). ``index``: the node's input slot.
    """

    index: int
    tensor: str
    kind: str
    axis: int | None = None


@dataclass
class Layer:
    """A MatMul/Gemm/Conv node and how it is quantized; ``reason`` says why it stays float (None:
    it is quantized unless the sensitivity pass falls it back)."""

    name: str
    op_type: str
    inputs: tuple[LayerInput, ...]
    output: str
    reason: str | None = None
    label: str = ""  # the name with its module path, where the node name lacks it (see layer_label)

    @property
    def activations(self) -> list[str]:
        """Names of the activation tensors this layer quantizes."""
        return [i.tensor for i in self.inputs if i.kind == "activation"]

    @property
    def weights(self) -> list[LayerInput]:
        return [i for i in self.inputs if i.kind == "weight"]


@dataclass
class GraphIndex:
    """Producers, consumers, constants and element types of one graph (a read-only view)."""

    model: Any
    producer: dict[str, Any] = field(default_factory=dict)
    consumers: dict[str, list[Any]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)  # name -> TensorProto
    elem_type: dict[str, int] = field(default_factory=dict)
    graph_inputs: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, model: ModelProto) -> GraphIndex:
        import onnx

        index = cls(model)
        graph = model.graph
        for init in graph.initializer:
            index.constants[init.name] = init
            index.elem_type[init.name] = init.data_type
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    index.constants[node.output[0]] = value
                    index.elem_type[node.output[0]] = value.data_type
            for out in node.output:
                if out:
                    index.producer[out] = node
            for inp in node.input:
                if inp:
                    index.consumers.setdefault(inp, []).append(node)
        index.graph_inputs = [i.name for i in graph.input if i.name not in index.constants]
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
            infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        except Exception:  # custom ops without schemas: types stay unknown, not an error
            infos = [*graph.value_info, *graph.input, *graph.output]
        for info in infos:
            if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
                index.elem_type.setdefault(info.name, info.type.tensor_type.elem_type)
        return index

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def constant_array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return np.asarray(numpy_helper.to_array(self.constants[name]))


def is_custom(node: NodeProto) -> bool:
    """True for a node outside the standard ONNX domain (vitrt's plugins, com.microsoft, ...)."""
    return node.domain not in STANDARD_DOMAINS


def ensure_node_names(model: ModelProto) -> None:
    """Give unnamed or duplicate-named nodes a unique ``<op_type>_<index>`` name (in place)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def _attr(node: NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _weight_axis(node: NodeProto, index: int, rank: int) -> int | None:
    """Per-channel axis of a constant input: the layer's output channels.

    Conv W [O, I/g, k...]: axis 0. Gemm B: [N, K] with transB -> 0, [K, N] -> 1. MatMul B [..., K, N]:
    the last axis, N (the output columns: each output sums over K with one weight scale, so the int32
    accumulator can be rescaled per output; it is the axis TensorRT and ONNX Runtime's MatMul
    kernels take for per-channel weights, 1 for the usual 2-D B). A constant *first* input (A) or a
    1-D B: per-tensor (None).
    """
    if rank < 2:
        return None
    if node.op_type == "Conv":
        return 0 if index == 1 else None
    if node.op_type == "Gemm":
        return (0 if _attr(node, "transB", 0) else 1) if index == 1 else None
    return rank - 1 if index == 1 else None


def _plugin_neighbour(index: GraphIndex, tensor: str) -> Any | None:
    """A custom-domain node that produces or consumes ``tensor``, looking through data movement."""
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        producer = index.producer.get(name)
        if producer is not None:
            if is_custom(producer):
                return producer
            if producer.op_type in DATA_MOVEMENT:
                stack += [i for i in producer.input[:1] if i and not index.is_constant(i)]
        for consumer in index.consumers.get(name, []):
            if is_custom(consumer):
                return consumer
            if consumer.op_type in DATA_MOVEMENT:
                stack += [o for o in consumer.output if o]
    return None


def _is_weighted_layer(index: GraphIndex, node: NodeProto) -> bool:
    return (
        node.op_type in LAYER_OPS
        and not is_custom(node)
        and any(index.is_constant(i) for i in node.input[:2] if i)
    )


def exp_span(index: GraphIndex) -> tuple[set[str], dict[str, str]]:
    """Tensors derived from an Exp output, and the layers inside an exp span (name -> why).

    Forward from every Exp output through any op but a weighted layer, LayerNormalization,
    Softmax and custom nodes; an activation x activation MatMul/Gemm reached this way is in the
    span. Backward from every Exp input through element-wise ops: a layer reached is in the span.
    """
    derived: set[str] = set()
    layers: dict[str, str] = {}
    exps = [n for n in index.model.graph.node if n.op_type == "Exp" and not is_custom(n)]
    stack = [o for n in exps for o in n.output if o]
    while stack:
        name = stack.pop()
        if name in derived:
            continue
        derived.add(name)
        for consumer in index.consumers.get(name, []):
            if is_custom(consumer) or consumer.op_type in SPAN_END or _is_weighted_layer(index, consumer):
                continue
            if consumer.op_type in LAYER_OPS:
                layers.setdefault(consumer.name, "exp span: multiplies values derived from an Exp")
            stack += [o for o in consumer.output if o]
    for exp in exps:
        back = [exp.input[0]]
        seen: set[str] = set()
        while back:
            name = back.pop()
            if name in seen:
                continue
            seen.add(name)
            producer = index.producer.get(name)
            if producer is None or is_custom(producer):
                continue
            if producer.op_type in LAYER_OPS:
                layers.setdefault(producer.name, "exp span: its output feeds an Exp")
            elif producer.op_type in ELEMENTWISE:
                back += [i for i in producer.input if i and not index.is_constant(i)]
    return derived, layers


def mask_span(index: GraphIndex) -> dict[str, str]:
    """Layers with an operand derived from a comparison (name -> why).

    Such operands are 0/1 selection or merge matrices (the one-hot merge matrix of MCTF's
    one-step-ahead attention, built from the TokenFusion ``dest`` output by Equal + Cast): the
    product is a gather/scatter, exact in float, whose 1s a clipped int8 range would shrink.
    Followed from each comparison output through data movement, Cast and element-wise scaling;
    not through a layer, so the attention that such a product yields is still quantized downstream.
    """
    layers: dict[str, str] = {}
    seen: set[str] = set()
    stack = [
        o for n in index.model.graph.node if n.op_type in COMPARISONS and not is_custom(n) for o in n.output
    ]
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        for consumer in index.consumers.get(name, []):
            if is_custom(consumer):
                continue
            if consumer.op_type in LAYER_OPS:
                layers.setdefault(consumer.name, "selection span: an operand is a 0/1 mask or merge matrix")
            elif consumer.op_type in MASK_PASS:
                stack += list(consumer.output)
    return layers


def layer_label(node: NodeProto) -> str:
    """The node name with a module path: the name itself when it has one (``blocks.3.attn.qkv/
    MatMul_1``), else ``<module>/<name>`` with the module read off a parameter name
    (``blocks.3.attn.qkv.bias`` -> ``blocks.3.attn.qkv/Gemm_1``). vitrt's own exports name every node
    with its module path (tests/compiler/test_export.py checks it); this serves ONNX files from other
    exporters, where an optimiser's MatMul + Add -> Gemm fusion of a Linear leaves names like Gemm_34."""
    if "/" in node.name:
        return node.name
    for tensor in node.input[1:]:
        for suffix in (".weight", ".bias"):
            if tensor.endswith(suffix) and len(tensor) > len(suffix):
                return f"{tensor[: -len(suffix)]}/{node.name}"
    return node.name


def _matches(names: Sequence[str], patterns: Sequence[str]) -> str | None:
    return next((p for p in patterns if any(fnmatch.fnmatchcase(n, p) for n in names)), None)


def _selects(index: GraphIndex, node: NodeProto) -> bool:
    """Whether a Conv's constant weight only selects inputs (``vitrt.compiler.unfold_conv``)."""
    from onnx import numpy_helper

    from vitrt.compiler.unfold_conv import is_selection_conv

    weight = index.constants.get(node.input[1]) if len(node.input) > 1 else None
    return weight is not None and is_selection_conv(numpy_helper.to_array(weight))


def find_layers(model: ModelProto, exclude: Iterable[str] = ()) -> list[Layer]:
    """Every standard-domain MatMul/Gemm/Conv of ``model`` in graph order, with its Q/DQ inputs.

    Layers that stay float carry a ``reason``. ``model`` must have unique node names
    (``ensure_node_names``). Raises nothing for a graph without layers: see ``calibrate_onnx``.
    """
    patterns = list(exclude)
    index = GraphIndex.build(model)
    _, span = exp_span(index)
    for name, why in mask_span(index).items():
        span.setdefault(name, why)
    layers: list[Layer] = []
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS or is_custom(node):
            continue
        slots = [(k, t) for k, t in enumerate(node.input[:2]) if t]
        inputs: list[LayerInput] = []
        for k, tensor in slots:
            if index.is_constant(tensor):
                rank = len(index.constants[tensor].dims)
                inputs.append(LayerInput(k, tensor, "weight", _weight_axis(node, k, rank)))
            else:
                inputs.append(LayerInput(k, tensor, "activation"))
        layer = Layer(node.name, node.op_type, tuple(inputs), node.output[0], label=layer_label(node))
        layers.append(layer)
        pattern = _matches([node.name, layer.label], patterns)
        if pattern is not None:
            layer.reason = f"excluded by pattern {pattern!r}"
            continue
        if not layer.activations:
            layer.reason = "no input computed at run time (constant layer)"
            continue
        if node.op_type == "Conv" and _selects(index, node):
            layer.reason = "a one-hot convolution (an unfold: it moves data, it does not compute), kept float"
            continue
        types = {t: index.elem_type.get(t) for t in (i.tensor for i in inputs)}
        not_float = [t for t, ty in types.items() if ty is not None and ty != FLOAT]
        if not_float:
            layer.reason = f"input {not_float[0]!r} is not float32"
            continue
        plugin = next((p for p in map(lambda t: _plugin_neighbour(index, t), layer.activations) if p), None)
        if plugin is not None:
            layer.reason = (
                f"next to plugin node {plugin.name!r} ({plugin.domain}::{plugin.op_type}), kept float"
            )
            continue
        if node.name in span:
            layer.reason = span[node.name]
    return layers


def unmatched_patterns(model: ModelProto, exclude: Iterable[str]) -> list[str]:
    """The ``exclude`` patterns that match the name or label of no MatMul/Gemm/Conv node (of those
    ``find_layers`` lists): typos, or patterns of nodes that are never quantized anyway."""
    nodes = [n for n in model.graph.node if n.op_type in LAYER_OPS and not is_custom(n)]
    names = [n.name for n in nodes] + [layer_label(n) for n in nodes]
    return [p for p in exclude if not any(fnmatch.fnmatchcase(n, p) for n in names)]
