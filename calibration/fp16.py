"""FP16 graphs with float32 islands, for strongly typed TensorRT (11: precision is what the graph says).

>>> result = fp16_onnx("deit_s.onnx", "deit_s.fp16.onnx")              # FP16
>>> result = fp16_onnx("deit_s.int8.onnx", "deit_s.int8.fp16.onnx")    # INT8 + FP16 (Q/DQ kept)

Every float32 tensor becomes float16 except in the *islands*, the nodes a ViT needs in float32
(``fp32_islands``), which get Casts at their borders:

- LayerNormalization (its x^2 and variance overflow float16 once activations pass ~256: the public
  Orin Nano report of ViT-B going from 85 % to 19 % top-1) and the pieces of an unfused LayerNorm
  or L2 norm (squares, their sums, square roots);
- Softmax / LogSoftmax (exp sums);
- the *exp span* of the Performer (T2T token performer, portable Scatterbrain): the projection into an
  exponential, the exponentials and every sum and product of them until the next weighted layer,
  LayerNorm or Softmax (its 1e-8 normaliser underflows float16; ARCHITECTURE.md section 4);
- the *ranking span*: everything that computes the scores a TopK / ArgMax ranks (the portable token
  fusion's matching scores, Scatterbrain's hashes), so the order of tokens follows float32;
- nodes the user names (``keep_fp32``: fnmatch patterns of node names or op types);
- ops whose ONNX schema has no float16 form at the graph's opset.

vitrt's plugin nodes (TokenFusion, ScatterbrainAttention) are not islands: they take float16 inputs and
outputs and accumulate in float32 inside (their kernels; on ONNX Runtime the CPU kernel runs the
reference in float32 between casts, ``vitrt.plugins.lowering.to_onnxruntime``).
Graph inputs and outputs stay float32 unless ``io_fp16``. Q/DQ pairs stay where they are, with
float16 scales (opset >= 19: DequantizeLinear's output type is its scale's); weights are requantized
to the float16 scale so that DQ(w) is the closest int8 grid to the float32 weights.

Why not onnxconverter-common's ``convert_float_to_float16`` (keep_io_types, node_block_list): it
blocks by op type and node name only, so the islands above (spans found by walking the graph) would
still be computed here; and on a Q/DQ graph it makes the scales float16 at the graph's opset (invalid
below 19: onnx.checker and ONNX Runtime reject the file, tried with 1.16 on an opset-17 INT8 file)
without requantizing the weights to the rounded scales. The conversion here is one pass over a
shape-inferred graph with one Cast per (tensor, type).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrt.errors import ConfigError, VitrtError
from vitrt.fileio import atomic_output, check_writable, load_onnx, save_onnx

from .recipe import NodePrecision, PrecisionRecipe, read_recipe, write_recipe

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto

log = logging.getLogger(__name__)

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)
QDQ_FP16_OPSET = 19  # QuantizeLinear / DequantizeLinear take float16 scales from opset 19
STANDARD_DOMAINS = ("", "ai.onnx")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

NORM_OPS = {
    "LayerNormalization": "LayerNorm statistics (x^2, variance) overflow float16",
    "Softmax": "Softmax: exponentials and their sum keep float32 range",
    "LogSoftmax": "LogSoftmax: exponentials and their sum keep float32 range",
    "ReduceSumSquare": "sum of squares overflows float16",
    "ReduceL2": "sum of squares overflows float16",
    "ReduceLogSumExp": "exp sum keeps float32 range",
}
# Ops a square's statistics flow through (an unfused LayerNorm: Pow, ReduceMean, Add eps, Sqrt, Div).
_STAT_FLOW = frozenset({"ReduceMean", "ReduceSum", "Add", "Sub", "Mul", "Div", "Sqrt", "Reciprocal", "Cast"})
# Ops a ranking score is followed back through (everything but weighted layers, norms, plugins).
_RANK_OPS = ("TopK", "ArgMax", "ArgMin")
_RANK_STOP = frozenset({"LayerNormalization", "Softmax", "LogSoftmax"})
# Ops that make a float tensor from a dtype attribute: they stay float32 (their output is cast).
_FIXED_DTYPE_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike", "Bernoulli"}
)
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
# Ops that read only a tensor's shape: a walk over float values does not follow them.
_SHAPE_OPS = frozenset({"Shape", "Size"})


class PrecisionError(VitrtError):
    """A model or option the FP16 / INT8+FP16 conversion cannot take."""


@dataclass
class Fp16Result:
    """What ``fp16_onnx`` produced: the model, its recipe, agreement with the float32 input on ONNX
    Runtime ({output: {"max_abs", "cosine"}}, random N(0, 1) inputs) and the written path."""

    model: Any
    recipe: PrecisionRecipe
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)
    written: Path | None = None


# -- islands --------------------------------------------------------------------------------------


class _Graph:
    """Producers, consumers and constants of one graph."""

    def __init__(self, model: ModelProto) -> None:
        from vitrt.compiler.prepare import graph_index

        self.model = model
        self.producer, self.consumers, self.constants = graph_index(model)

    def weighted(self, node: NodeProto) -> bool:
        return node.op_type in ("MatMul", "Gemm", "Conv") and any(
            i in self.constants or self._dequantized_constant(i) for i in node.input[:2] if i
        )

    def _dequantized_constant(self, tensor: str) -> bool:
        node = self.producer.get(tensor)
        return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.constants


def _is_custom(node: NodeProto) -> bool:
    return node.domain not in STANDARD_DOMAINS


def _constant_value(g: _Graph, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in g.model.graph.initializer:
        if init.name == name:
            return np.asarray(numpy_helper.to_array(init))
    node = g.producer.get(name)
    if node is not None and node.op_type == "Constant":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if value is not None:
            return np.asarray(numpy_helper.to_array(value))
    return None


def _is_square(g: _Graph, node: NodeProto) -> bool:
    if node.op_type == "Pow" and len(node.input) > 1:
        exponent = _constant_value(g, node.input[1])
        return exponent is not None and exponent.size == 1 and float(exponent.ravel()[0]) == 2.0
    return node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]


def _square_spans(g: _Graph) -> dict[str, str]:
    """Squares (Pow 2, x * x) and the statistics made of them, up to the Div that normalises."""
    found: dict[str, str] = {}
    for node in g.model.graph.node:
        if _is_custom(node) or not _is_square(g, node):
            continue
        found[node.name] = "square: x^2 overflows float16 once |x| > 256"
        frontier = [(node, 0)]
        while frontier:
            current, depth = frontier.pop()
            for out in current.output:
                for c in g.consumers.get(out, []):
                    if _is_custom(c) or c.op_type not in _STAT_FLOW or c.name in found or depth > 8:
                        continue
                    found[c.name] = "statistics of squares (variance / norm) in float32"
                    if c.op_type not in ("Div", "Reciprocal"):
                        frontier.append((c, depth + 1))
    return found


def _exp_spans(g: _Graph) -> dict[str, str]:
    """Exp nodes, what flows into them from the last weighted layer, and every sum / product of
    their outputs until a weighted layer, LayerNorm or Softmax (``vitrt.calibration.graph.exp_span``'s
    walk, over nodes)."""
    from .graph import ELEMENTWISE, SPAN_END

    found: dict[str, str] = {}
    exps = [n for n in g.model.graph.node if n.op_type == "Exp" and not _is_custom(n)]
    stack = [o for n in exps for o in n.output]
    for n in exps:
        found[n.name] = "exponential: keeps float32 range"
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for c in g.consumers.get(name, []):
            if _is_custom(c) or c.op_type in SPAN_END or c.op_type in _SHAPE_OPS or g.weighted(c):
                continue
            found.setdefault(c.name, "sums / products of exponentials (Performer) in float32")
            stack += list(c.output)
    back_ops = ELEMENTWISE | {"ReduceSum", "ReduceMean", "Pow", "Sqrt", "Reshape", "Transpose", "Unsqueeze"}
    for exp in exps:
        back = [exp.input[0]]
        visited: set[str] = set()
        while back:
            name = back.pop()
            if name in visited or name not in g.producer:
                continue
            visited.add(name)
            p = g.producer[name]
            if _is_custom(p) or p.op_type in ("Constant", *QDQ_OPS):
                continue
            if p.op_type in ("MatMul", "Gemm"):
                found.setdefault(p.name, "projection into an exponential (Performer features) in float32")
                if g.weighted(p):
                    continue
            elif p.op_type not in back_ops:
                continue
            found.setdefault(p.name, "input of an exponential in float32")
            back += [i for i in p.input if i and i not in g.constants]
    return found


def _ranking_spans(g: _Graph) -> dict[str, str]:
    """What a TopK / ArgMax ranks, back to the nearest weighted layer (included), LayerNorm, Softmax,
    plugin node or graph input: token-fusion matching scores and LSH hashes follow float32 order."""
    found: dict[str, str] = {}
    for node in g.model.graph.node:
        if node.op_type not in _RANK_OPS or _is_custom(node):
            continue
        back = [node.input[0]]
        visited: set[str] = set()
        while back and len(visited) < 400:
            name = back.pop()
            if name in visited or name not in g.producer:
                continue
            visited.add(name)
            p = g.producer[name]
            if _is_custom(p) or p.op_type in _RANK_STOP or p.op_type in ("Constant", *QDQ_OPS, *_SHAPE_OPS):
                continue
            found.setdefault(p.name, f"ranking scores of {node.name}: token order follows float32")
            if g.weighted(p):
                continue
            back += [i for i in p.input if i and i not in g.constants]
    return found


def _opset(model: ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)


def _no_fp16_form(model: ModelProto, node: NodeProto, float_inputs: Sequence[int]) -> bool:
    """True when ``node``'s schema allows no float16 for one of its float32 inputs at the graph's opset."""
    from onnx import defs

    if node.domain == "vitrt":
        return False  # vitrt's plugin schemas take float and float16
    if _is_custom(node):
        return True
    try:
        schema = defs.get_schema(node.op_type, _opset(model), "")
    except Exception:  # defs.SchemaError: an op unknown at this opset
        return True
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    for i in float_inputs:
        if not schema.inputs:
            return True
        formal = schema.inputs[min(i, len(schema.inputs) - 1)]
        types = allowed.get(formal.type_str, {formal.type_str})
        if "tensor(float16)" not in types:
            return True
    return False


def fp32_islands(model: ModelProto, keep_fp32: Sequence[str] = ()) -> dict[str, NodePrecision]:
    """{node name: NodePrecision} of the nodes that stay float32 in an FP16 graph (module docstring).

    ``keep_fp32``: fnmatch patterns of node names or op types. Raises ConfigError for a pattern that
    matches no node name and no op type of the graph (a typo, or an op the graph does not have).
    """
    g = _Graph(model)
    by_name = {n.name: n for n in model.graph.node}
    reasons: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in NORM_OPS and not _is_custom(node):
            reasons[node.name] = NORM_OPS[node.op_type]
        elif node.op_type in _FIXED_DTYPE_OPS:
            reasons[node.name] = f"{node.op_type} makes float32 by its dtype attribute"
    for spans in (_square_spans(g), _exp_spans(g), _ranking_spans(g)):
        for name, why in spans.items():
            reasons.setdefault(name, why)
    for pattern in keep_fp32:
        matched = [
            n.name
            for n in model.graph.node
            if fnmatch.fnmatchcase(n.name, pattern) or fnmatch.fnmatchcase(n.op_type, pattern)
        ]
        if not matched:
            ops = sorted({n.op_type for n in model.graph.node})
            raise ConfigError(
                f"--keep-fp32 {pattern!r} matches no node name and no op type of the model. Node names "
                f"look like {model.graph.node[len(model.graph.node) // 2].name!r}; its op types are "
                f"{', '.join(ops)}"
            )
        for name in matched:
            reasons[name] = f"--keep-fp32 {pattern!r}"
    return {
        name: NodePrecision(name, by_name[name].op_type, why)
        for name, why in reasons.items()
        if by_name[name].op_type not in ("Constant",)
    }


# -- conversion -----------------------------------------------------------------------------------


def _elem_types(model: ModelProto) -> dict[str, int]:
    """Element type of every tensor (shape inference; vitrt's plugin schemas registered first)."""
    import onnx

    from vitrt.plugins.lowering import has_plugin_nodes, plugin_lowerings

    if has_plugin_nodes(model):
        plugin_lowerings()  # registers the schemas, so inference types the plugin outputs
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types: dict[str, int] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


def _to_fp16_array(values: np.ndarray, name: str, clipped: list[str]) -> np.ndarray:
    finite = np.isfinite(values)
    if np.any(np.abs(values[finite]) > FP16_MAX):
        clipped.append(name)
    out = np.where(finite, np.clip(values, -FP16_MAX, FP16_MAX), values)
    return out.astype(np.float16)


def _fp16_tensor(tensor: TensorProto, name: str, clipped: list[str]) -> TensorProto:
    from onnx import numpy_helper

    return numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(tensor), name, clipped), name)


def has_qdq(model: ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS and not _is_custom(n) for n in model.graph.node)


def is_float16(model: ModelProto) -> bool:
    """True when the graph already holds float16 tensors (inputs, outputs, weights or casts)."""
    if any(i.data_type == FLOAT16 for i in model.graph.initializer):
        return True
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    if any(v.type.tensor_type.elem_type == FLOAT16 for v in values):
        return True
    return any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16 for a in n.attribute)
        for n in model.graph.node
    )


def convert_to_fp16(model: ModelProto, keep: Iterable[str], *, io_fp16: bool = False) -> ModelProto:
    """A float16 copy of ``model`` (float32 only in the nodes named in ``keep``), Casts at the borders.

    Q/DQ scales become float16 and int8 weights are requantized to them; the opset is raised to 19
    when the graph holds Q/DQ. Graph inputs / outputs keep float32 unless ``io_fp16``. Raises
    PrecisionError for a graph with control flow (If / Loop / Scan), which ViT exports do not have.
    """
    import onnx
    from onnx import helper, numpy_helper

    from vitrt.compiler.prepare import upgrade_opset

    flow = sorted({n.op_type for n in model.graph.node if n.op_type in _CONTROL_FLOW})
    if flow:
        raise PrecisionError(
            f"the graph holds control flow ({', '.join(flow)}): its subgraphs read outer tensors whose type "
            "this conversion would change. Fix: export without data-dependent branches / loops"
        )
    work = onnx.ModelProto()
    work.CopyFrom(model)
    if has_qdq(work) and _opset(work) < QDQ_FP16_OPSET:
        work = upgrade_opset(work, QDQ_FP16_OPSET)
    types = _elem_types(work)
    keep = set(keep)
    graph = work.graph
    g = _Graph(work)

    def floats(names: Iterable[str]) -> list[int]:
        return [i for i, t in enumerate(names) if t and types.get(t) == FLOAT]

    # 1. each node's float type
    node_type: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        if node.name in keep or _no_fp16_form(work, node, floats(node.input)):
            node_type[node.name] = FLOAT
        else:
            node_type[node.name] = FLOAT16
    # 2. the type each float32 tensor has after conversion ("home"), from its producer
    home: dict[str, int] = {}
    for value in graph.input:
        if types.get(value.name) == FLOAT and value.name not in g.constants:
            home[value.name] = FLOAT16 if io_fp16 else FLOAT
            if io_fp16:
                value.type.tensor_type.elem_type = FLOAT16
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        for out in node.output:
            if types.get(out) == FLOAT:
                home[out] = node_type[node.name]
        if node.op_type == "Cast" and node_type[node.name] == FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = FLOAT16
                    home[node.output[0]] = FLOAT16
        if node.op_type == "ConstantOfShape" and node_type[node.name] == FLOAT16:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(_fp16_tensor(attr.t, attr.t.name, []))
    # 3. constants (initializers, Constant nodes): converted in place when every reader is float16,
    #    a float16 copy beside the float32 one when readers differ
    clipped: list[str] = []
    inits = {i.name: i for i in graph.initializer}
    const_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    constant_fp16: dict[str, str] = {}
    requantized = _requantize_plan(work, g, node_type)
    for name in list(inits) + list(const_nodes):
        if types.get(name) != FLOAT:
            continue
        readers = {node_type.get(c.name, FLOAT) for c in g.consumers.get(name, [])}
        if FLOAT16 not in readers:
            home[name] = FLOAT
            continue
        if name in inits:
            source = inits[name]
        else:
            source = next(a.t for a in const_nodes[name].attribute if a.name == "value")
        half = _fp16_tensor(source, name, clipped)
        if readers == {FLOAT16}:
            if name in inits:
                inits[name].CopyFrom(half)
            else:
                source.CopyFrom(half)
            home[name] = FLOAT16
        else:
            copy_name = f"{name}/float16"
            half.name = copy_name
            graph.initializer.append(half)
            constant_fp16[name] = copy_name
            home[name] = FLOAT
    for weight, values in requantized.items():  # int8 weights on their float16 scale
        inits[weight].CopyFrom(numpy_helper.from_array(values, weight))
    if clipped:
        log.warning(
            "%d constant(s) had values beyond float16's range and were clipped to +-%g: %s",
            len(clipped),
            FP16_MAX,
            ", ".join(clipped[:5]),
        )
    # 4. Casts where a reader wants the other type
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[NodeProto] = []
    names = {n.name for n in graph.node}

    def cast_of(tensor: str, to: int) -> str:
        key = (tensor, to)
        if key not in casts:
            suffix = "float16" if to == FLOAT16 else "float32"
            out = f"{tensor}/to_{suffix}"
            node_name = f"{tensor}/Cast_to_{suffix}"
            while node_name in names:
                node_name += "_"
            names.add(node_name)
            new_nodes.append(helper.make_node("Cast", [tensor], [out], name=node_name, to=to))
            casts[key] = out
        return casts[key]

    for node in list(graph.node):
        want = node_type.get(node.name)
        if want is not None:
            for i, tensor in enumerate(node.input):
                if not tensor or tensor not in home:
                    continue
                if tensor in constant_fp16 and want == FLOAT16:
                    node.input[i] = constant_fp16[tensor]
                elif home[tensor] != want:
                    node.input[i] = cast_of(tensor, want)
        new_nodes.append(node)
    # 5. graph outputs keep their declared type (float32, or float16 with io_fp16)
    for value in graph.output:
        if types.get(value.name) != FLOAT or value.name not in home:
            continue
        wanted = FLOAT16 if io_fp16 else FLOAT
        if home[value.name] != wanted:
            inner = f"{value.name}/{'float16' if home[value.name] == FLOAT16 else 'float32'}"
            for node in new_nodes:
                for i, out in enumerate(node.output):
                    if out == value.name:
                        node.output[i] = inner
                for i, inp in enumerate(node.input):
                    if inp == value.name:
                        node.input[i] = inner
            new_nodes.append(
                helper.make_node("Cast", [inner], [value.name], name=f"{value.name}/Cast_out", to=wanted)
            )
        value.type.tensor_type.elem_type = wanted
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    work = onnx.shape_inference.infer_shapes(work)
    return work


def _requantize_plan(model: ModelProto, g: _Graph, node_type: dict[str, int]) -> dict[str, np.ndarray]:
    """{int8 weight initializer: requantized values} for weight DequantizeLinear nodes that turn
    float16: w' = clip(round(DQ(w) / fp16(scale))), so the float16 scale's grid is used exactly."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    plan: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node_type.get(node.name) != FLOAT16:
            continue
        w_name, s_name = node.input[0], node.input[1]
        if w_name not in inits or s_name not in inits or w_name in plan:
            continue
        if len(g.consumers.get(w_name, [])) != 1:
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        s32 = numpy_helper.to_array(inits[s_name]).astype(np.float32)
        s16 = s32.astype(np.float16).astype(np.float32)
        if np.any(s16 == 0):
            raise PrecisionError(
                f"the int8 scale {s_name!r} underflows float16 (smallest {float(s32.min()):.3g}); keep "
                f"that layer in float32 (--keep-fp32) or calibrate it without INT8 (--exclude)"
            )
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if s32.ndim == 1 and w.ndim > 0:
            shape[axis if axis >= 0 else w.ndim + axis] = -1
        dq = w * s32.reshape(shape)
        plan[w_name] = np.clip(np.rint(dq / s16.reshape(shape)), -127, 127).astype(np.int8)
    return plan


# -- the stage ------------------------------------------------------------------------------------


def _plugin_entries(model: ModelProto) -> tuple[dict[str, str], ...]:
    return tuple(
        {"node": n.name, "op_type": n.op_type, "io_type": "float16", "accumulate": "float32"}
        for n in model.graph.node
        if n.domain == "vitrt"
    )


def fp16_model(
    model: ModelProto,
    *,
    keep_fp32: Sequence[str] = (),
    io_fp16: bool = False,
    prepare: bool = True,
) -> tuple[ModelProto, PrecisionRecipe]:
    """The FP16 (or INT8 + FP16, when ``model`` holds Q/DQ) twin of ``model`` and its recipe.

    A float32 graph is prepared first (``vitrt.compiler.prepare``) unless ``prepare`` is False; a Q/DQ
    graph from ``vitrt calibrate`` was prepared when it was calibrated. Raises PrecisionError for a
    graph that is already float16 and ConfigError for a ``keep_fp32`` pattern that matches nothing.
    """
    from vitrt.compiler.prepare import attention_matmuls, prepare_model, residual_adds

    keep_fp32 = [keep_fp32] if isinstance(keep_fp32, str) else list(keep_fp32)  # one pattern, not letters
    if is_float16(model):
        raise PrecisionError(
            "the model already holds float16 tensors: vitrt fp16 converts a float32 (or INT8 Q/DQ float32) "
            "graph. Fix: pass the float32 file it came from"
        )
    earlier = read_recipe(model)
    quantized = has_qdq(model)
    if (earlier is not None and earlier.int8_form == "onnxruntime") or _int32_dq(model):
        raise PrecisionError(
            "the INT8 file is in the ONNX Runtime form (int32 bias DequantizeLinear nodes, which TensorRT "
            "does not read, and small layers left float): INT8 + FP16 is for TensorRT. Fix: calibrate "
            "with --for tensorrt (the default) and convert that file"
        )
    prepared_report = earlier.prepared if earlier is not None else None
    if prepare and not quantized:
        model, report = prepare_model(model)
        prepared_report = report.to_dict()
    islands = fp32_islands(model, keep_fp32)
    converted = convert_to_fp16(model, islands, io_fp16=io_fp16)
    recipe = PrecisionRecipe(
        precision="int8+fp16" if quantized else "fp16",
        float_type="float16",
        io_type="float16" if io_fp16 else "float32",
        int8_layers=earlier.int8_layers if earlier is not None else _qdq_layers(model),
        keep_fp32=tuple(sorted(islands.values(), key=lambda n: n.node)),
        keep_fp32_patterns=tuple(keep_fp32),
        plugins=_plugin_entries(model),
        residual_adds=tuple(residual_adds(model)),
        attention_matmuls=attention_matmuls(model),
        not_quantized=earlier.not_quantized if earlier is not None else (),
        prepared=prepared_report,
    )
    return converted, recipe


def _int32_dq(model: ModelProto) -> bool:
    """True when a DequantizeLinear reads an int32 initializer (a bias in ONNX Runtime's Q/DQ form)."""
    int32 = {i.name for i in model.graph.initializer if i.data_type == 6}  # onnx.TensorProto.INT32
    return any(n.op_type == "DequantizeLinear" and n.input[0] in int32 for n in model.graph.node)


def _qdq_layers(model: ModelProto) -> tuple[str, ...]:
    """Layers reading a DequantizeLinear output (for a Q/DQ graph vitrt did not calibrate)."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return tuple(
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm", "Conv") and any(i in dq for i in n.input[:2])
    )


def output_agreement(
    reference: ModelProto, candidate: ModelProto, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{output: {"max_abs", "cosine"}} of ``candidate`` vs ``reference`` on ONNX Runtime, one random
    N(0, 1) input set (float16 inputs get the same values rounded)."""
    from vitrt.compiler.prepare import _random_feeds, run_onnxruntime

    feeds = _random_feeds(reference, seed)
    candidate_inputs = {v.name: v.type.tensor_type.elem_type for v in candidate.graph.input}
    cast_feeds = {
        k: v.astype(np.float16) if candidate_inputs.get(k) == FLOAT16 else v for k, v in feeds.items()
    }
    expected = run_onnxruntime(reference, feeds)
    actual = run_onnxruntime(candidate, cast_feeds)
    out: dict[str, dict[str, float]] = {}
    for name, ref in expected.items():
        a = np.asarray(actual[name], np.float64).ravel()
        b = np.asarray(ref, np.float64).ravel()
        if not np.issubdtype(np.asarray(ref).dtype, np.floating):
            continue
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        out[name] = {
            "max_abs": float(np.abs(a - b).max(initial=0.0)),
            "cosine": float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b)),
        }
    return out


def fp16_onnx(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    keep_fp32: Sequence[str] = (),
    io_fp16: bool = False,
    prepare: bool = True,
    check: bool = True,
) -> Fp16Result:
    """``vitrt fp16`` as a function (``vitrt.fp16``): convert ``model`` (float32 ONNX, or the Q/DQ file of
    ``vitrt calibrate``) to float16 with float32 islands and write ``output`` atomically.

    Args:
        model: the float32 or INT8 (Q/DQ) ONNX file.
        output: where to write (None: return the model only).
        keep_fp32: further nodes to keep in float32: fnmatch patterns of node names or op types
            (``"blocks.11.*"``, ``"Gelu"``; one string is one pattern); recorded in the recipe.
        io_fp16: float16 graph inputs and outputs (default float32, with Casts inside).
        prepare: run the graph preparation on a float32 input first.
        check: run both files on ONNX Runtime (random inputs) and record the agreement in the recipe.

    Returns an Fp16Result. The ExportConfig (precision "fp16" / "int8+fp16") and the recipe are in the
    file's metadata. Raises PrecisionError / ConfigError / VitrtError before anything is written.
    """
    dest = None
    if output is not None:
        dest = check_writable(output)
        if Path(model).resolve() == dest.resolve():
            raise ConfigError(f"the output {output} is the input model; write the FP16 model elsewhere")
    proto = load_onnx(model)
    converted, recipe = fp16_model(proto, keep_fp32=keep_fp32, io_fp16=io_fp16, prepare=prepare)
    agreement = output_agreement(proto, converted) if check else {}
    if agreement:
        recipe = recipe.with_changes(agreement={"vs": "float32 input, ONNX Runtime", "outputs": agreement})
    write_recipe(converted, recipe)
    if dest is not None:
        with atomic_output(dest, suffix=".onnx") as tmp:
            save_onnx(converted, tmp, data_name=dest.name + ".data")
    log.info(
        "%s: %s, %d nodes kept in float32, %d INT8 layers",
        model,
        recipe.precision,
        len(recipe.keep_fp32),
        len(recipe.int8_layers),
    )
    return Fp16Result(converted, recipe, agreement, dest)
