"""One graph preparation for every precision step, on any ViT ONNX (vitrt's export or a foreign one).

``prepare_model(proto)`` returns a graph that computes the same function (checked on ONNX Runtime
against the input) in the form the precision steps expect:

1. default-domain opset raised to at least 17 (``onnx.version_converter``), the first with
   ``LayerNormalization``;
2. simplified and constant-folded: onnxsim, onnxslim as fallback (``vitrt.compiler.passes.simplify_model``;
   vitrt's plugin nodes stay opaque);
3. LayerNorm patterns (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) fused into one
   ``LayerNormalization`` (stash_type 1: statistics in float32) and, at opset >= 20, the erf GELU
   (Div, Erf, Add, Mul, Mul) into the standard ``Gelu``: ONNX Runtime's transformer optimizer's
   fusions (``onnxruntime.transformers.fusion_layernorm`` / ``fusion_gelu``) do the matching; its
   GELU node is moved from ``com.microsoft`` to the standard domain, which TensorRT reads. Below
   opset 20 the erf GELU stays in primitive ops (ONNX Runtime and TensorRT fuse that form themselves);
4. every node named ``<module path>/<OpType>_<k>`` (``blocks.3.attn.qkv/MatMul_1``), the module path
   read from the exporter's scoped names (``/blocks.3/attn/qkv/MatMul``), a parameter name, or the
   node upstream; every intermediate tensor named after its producer (``...MatMul_1:0``). The
   names depend only on the graph, so preparing twice gives the same bytes;
5. an exported ``nn.Unfold`` (T2T-ViT's soft split: Pad, two Gathers, a Transpose) rewritten as one
   grouped convolution with one-hot weights, the same values far faster on ONNX Runtime
   (``vitrt.compiler.unfold_conv``);
6. the ViT structure recognised: attention matmuls (``scores`` = q k^T feeding a Softmax,
   ``context`` = probabilities times v) and residual adds (``x + f(LN(x))``), recorded in the
   ``PrepareReport`` for the precision recipe.

Plugin nodes, graph inputs, outputs and metadata (the ExportConfig) are kept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_output, check_writable, load_onnx, save_onnx

if TYPE_CHECKING:
    from collections.abc import Callable

    from onnx import ModelProto, NodeProto

    from vitrt.deploy.runners import Runner

    RunnerFactory = Callable[[Path], Runner]

log = logging.getLogger(__name__)

LAYERNORM_OPSET = 17  # LayerNormalization
GELU_OPSET = 20  # Gelu
STANDARD_DOMAINS = ("", "ai.onnx")
# Ops through which an attention product is followed to its Softmax (scale, mask, layout).
_TO_SOFTMAX = frozenset({"Mul", "Div", "Add", "Sub", "Reshape", "Transpose", "Cast", "Where", "Identity"})
_FROM_SOFTMAX = frozenset({"Reshape", "Transpose", "Cast", "Identity", "Dropout", "Mul", "Div"})


class PreparationError(VitrtError):
    """A graph that cannot be prepared, or whose preparation changed its outputs."""


@dataclass(frozen=True)
class PrepareReport:
    """What ``prepare_model`` did.

    opset: (before, after) of the default domain; nodes: (before, after); simplifier: "onnxsim",
    "onnxslim" or "none"; fused: {"LayerNormalization": n, "Gelu": n} nodes made; attention_matmuls:
    {node name: "scores" | "context"}; residual_adds: node names; check: max |prepared - input| per
    output on ONNX Runtime (random N(0, 1) inputs), empty when not checked.
    """

    opset: tuple[int, int]
    nodes: tuple[int, int]
    simplifier: str
    fused: dict[str, int]
    attention_matmuls: dict[str, str] = field(default_factory=dict)
    residual_adds: list[str] = field(default_factory=list)
    check: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        fused = ", ".join(f"{n} {op}" for op, n in self.fused.items()) or "nothing"
        lines = [
            f"opset {self.opset[0]} -> {self.opset[1]}, nodes {self.nodes[0]} -> {self.nodes[1]} "
            f"(simplified by {self.simplifier}); fused {fused}",
            f"recognised {sum(k == 'scores' for k in self.attention_matmuls.values())} attention score and "
            f"{sum(k == 'context' for k in self.attention_matmuls.values())} context matmuls, "
            f"{len(self.residual_adds)} residual adds",
        ]
        if self.check:
            worst = ", ".join(f"{k} {v:.2e}" for k, v in self.check.items())
            lines.append(f"same function on ONNX Runtime: max abs difference {worst}")
        return "\n".join(lines)


def default_opset(model: ModelProto) -> int:
    """The model's default-domain opset version (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)


def upgrade_opset(model: ModelProto, target: int) -> ModelProto:
    """``model`` with its default-domain opset raised to ``target`` (unchanged when already there).

    onnx's version converter rewrites the ops whose signature changed (ReduceMean's axes became an
    input at 18, ...). Custom-domain nodes (vitrt's plugins) are outside its reach and kept as they are.
    ir_version is capped at 10 (ONNX Runtime 1.31 reads no later one).
    """
    import onnx
    from onnx import version_converter

    if default_opset(model) >= target:
        return model
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as err:  # the converter raises RuntimeError / ValidationError with C++ messages
        raise PreparationError(
            f"cannot convert the model from opset {default_opset(model)} to {target}: "
            f"{str(err).strip().splitlines()[0]}. Fix: re-export at opset >= {target}"
        ) from err
    converted.ir_version = min(converted.ir_version, 10)
    # The converter drops nothing else, but keep the metadata explicitly (ExportConfig, recipe).
    if not converted.metadata_props and model.metadata_props:
        converted.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(converted)
    return converted


# -- names ----------------------------------------------------------------------------------------


def _scope(name: str) -> str | None:
    """The module path in a node or tensor name: ``/blocks.0/attn/qkv/MatMul`` (TorchScript exporter),
    ``/blocks.0/attn/qkv/MatMul_output_0`` (its tensors) and ``blocks.0.attn.qkv/MatMul_1`` (vitrt)
    all give ``blocks.0.attn.qkv``; a name without a path gives None."""
    stripped = name.strip("/")
    if "/" not in stripped:
        return None
    scope = stripped.rsplit("/", 1)[0].replace("/", ".")
    return scope or None


def stable_node_names(model: ModelProto, hints: dict[str, str] | None = None) -> ModelProto:
    """Name every node ``<module path>/<OpType>_<k>`` in graph order (in place; returns ``model``).

    The module path comes from, in order: the node's own scoped name; ``hints`` ({output tensor: an
    earlier name of the node that made it}, for nodes a simplifier or a fusion rebuilt); a parameter
    it alone reads (``blocks.0.mlp.fc2.bias`` -> ``blocks.0.mlp.fc2``, for a Linear that onnxsim
    rebuilt as a Gemm); the scoped name of its first output tensor (the TorchScript exporter's
    ``/blocks.0/attn/MatMul_output_0``); the path of the node that makes its first input; else
    ``model``. k counts (path, op type) pairs from 1. The result depends only on the graph; a node
    already named this way keeps its name, so preparing a prepared graph renames nothing (a
    simplifier may reorder nodes). A parameter read by several nodes says nothing: exporters share one
    initializer between equal parameters (a random init's zero biases), so its name can point at
    another module.
    """
    import re

    hints = hints or {}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    producer_scope: dict[str, str] = {}
    counts: dict[tuple[str, str], int] = {}
    # Names already in this form are kept (a simplifier may reorder nodes, which would renumber them).
    seen: dict[str, int] = {}
    for node in model.graph.node:
        seen[node.name] = seen.get(node.name, 0) + 1
    kept = {
        n.name
        for n in model.graph.node
        if seen[n.name] == 1 and (m := re.fullmatch(r"([^/]+)/(\w+)_([0-9]+)", n.name)) and m[2] == n.op_type
    }
    for node in model.graph.node:
        if node.name in kept:
            for out in node.output:
                producer_scope[out] = node.name.rsplit("/", 1)[0]
            continue
        scope = _scope(node.name)
        if scope is None:
            scope = next((s for o in node.output if o in hints and (s := _scope(hints[o]))), None)
        if scope is None:
            scope = _parameter_scope(node, readers)
        if scope is None:
            scope = next((s for o in node.output[:1] if (s := _scope(o))), None)
        if scope is None:
            scope = next((producer_scope[i] for i in node.input[:1] if i in producer_scope), "model")
        key = (scope, node.op_type)
        counts[key] = counts.get(key, 0) + 1
        while f"{scope}/{node.op_type}_{counts[key]}" in kept:
            counts[key] += 1
        node.name = f"{scope}/{node.op_type}_{counts[key]}"
        kept.add(node.name)
        for out in node.output:
            producer_scope[out] = scope
    return model


def _parameter_scope(node: NodeProto, readers: dict[str, int]) -> str | None:
    """``blocks.3.attn.qkv`` from a ``blocks.3.attn.qkv.weight`` / ``.bias`` input that only this node
    reads (exporter-generated names such as ``onnx::MatMul_12`` carry no path)."""
    for tensor in node.input[1:]:
        for suffix in (".weight", ".bias"):
            if (
                tensor.endswith(suffix)
                and readers.get(tensor) == 1
                and "::" not in tensor
                and "/" not in tensor
            ):
                return tensor[: -len(suffix)] or None
    return None


def _name_hints(*models: ModelProto) -> dict[str, str]:
    """{tensor: name of the node that makes it} over ``models``, the first model's scoped names first."""
    hints: dict[str, str] = {}
    for model in models:
        for node in model.graph.node:
            for out in node.output:
                if out and _scope(node.name) and out not in hints:
                    hints[out] = node.name
    return hints


# -- fusions --------------------------------------------------------------------------------------


def _ort_fusions(model: ModelProto, gelu: bool) -> ModelProto:
    """LayerNormalization (and Gelu when ``gelu``) fused by ONNX Runtime's transformer optimizer."""
    import onnx

    # onnxruntime.transformers puts its own folder on sys.path (its modules import each other by
    # bare name); imported here only, when a graph is prepared.
    from onnxruntime.transformers.fusion_gelu import FusionGelu
    from onnxruntime.transformers.fusion_layernorm import FusionLayerNormalization
    from onnxruntime.transformers.onnx_model import OnnxModel

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    wrapped = OnnxModel(copy)
    ort_logger = logging.getLogger("onnxruntime.transformers")
    level = ort_logger.level
    ort_logger.setLevel(logging.WARNING)  # it logs every fusion at INFO
    try:
        FusionLayerNormalization(wrapped).apply()
        if gelu:
            FusionGelu(wrapped).apply()
        wrapped.prune_graph()
        wrapped.topological_sort()
    finally:
        ort_logger.setLevel(level)
    fused_model = wrapped.model
    for node in fused_model.graph.node:
        if node.op_type == "Gelu" and node.domain == "com.microsoft":
            node.domain = ""  # the standard Gelu (opset 20) computes the same erf form
    if not any(n.domain == "com.microsoft" for n in fused_model.graph.node):
        imports = [o for o in fused_model.opset_import if o.domain != "com.microsoft"]
        del fused_model.opset_import[:]
        fused_model.opset_import.extend(imports)
    return fused_model


FUSED_OPS = ("LayerNormalization", "Gelu")


def _count(model: ModelProto, op_type: str) -> int:
    return sum(n.op_type == op_type and n.domain in STANDARD_DOMAINS for n in model.graph.node)


# -- structure ------------------------------------------------------------------------------------


def graph_index(model: ModelProto) -> tuple[dict[str, NodeProto], dict[str, list[NodeProto]], set[str]]:
    """(producer of each tensor, consumers of each tensor, names of constant tensors) of ``model``."""
    producer: dict[str, NodeProto] = {}
    consumers: dict[str, list[NodeProto]] = {}
    constants = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
        for out in node.output:
            producer[out] = node
        for inp in node.input:
            if inp:
                consumers.setdefault(inp, []).append(node)
    return producer, consumers, constants


def _reaches(start: str, consumers: dict[str, list[NodeProto]], through: frozenset[str], goal: str) -> bool:
    """True when ``start`` reaches a ``goal`` op through ``through`` ops only."""
    stack: list[str] = [start]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for c in consumers.get(name, []):
            if c.op_type == goal:
                return True
            if c.op_type in through:
                stack += list(c.output)
    return False


def _comes_from(start: str, producer: dict[str, NodeProto], through: frozenset[str], goal: str) -> bool:
    """True when ``start`` is made by a ``goal`` op through ``through`` ops only."""
    stack: list[str] = [start]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        node = producer[name]
        if node.op_type == goal:
            return True
        if node.op_type in through:
            stack += [i for i in node.input[:1] if i]
    return False


def attention_matmuls(model: ModelProto) -> dict[str, str]:
    """{node name: "scores" | "context"} for the MatMuls of two activations in attention: q k^T whose
    output reaches a Softmax through scaling, masking and layout ops ("scores"), and the Softmax's
    probabilities times v ("context")."""
    producer, consumers, constants = graph_index(model)
    found: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.domain not in STANDARD_DOMAINS:
            continue
        if any(i in constants for i in node.input[:2]):
            continue
        if _reaches(node.output[0], consumers, _TO_SOFTMAX, "Softmax"):
            found[node.name] = "scores"
        elif any(_comes_from(i, producer, _FROM_SOFTMAX, "Softmax") for i in node.input[:2]):
            found[node.name] = "context"
    return found


def _layernorm_input(node: NodeProto) -> str | None:
    if node.op_type == "LayerNormalization":
        return node.input[0]
    if node.op_type == "ReduceMean":  # an unfused LayerNorm starts with the mean of x
        return node.input[0]
    return None


def residual_adds(model: ModelProto) -> list[str]:
    """Adds of two activations where one operand also feeds a LayerNorm whose output reaches the other
    operand: the residual ``x + f(LN(x))`` of a pre-norm transformer block. These stay in float in
    every vitrt recipe (quantizing them collapses INT8 ViT accuracy, ARCHITECTURE.md section 3)."""
    producer, consumers, constants = graph_index(model)
    found = []
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or any(i in constants for i in node.input):
            continue
        for k in (0, 1):
            x, branch = node.input[k], node.input[1 - k]
            norms = [c for c in consumers.get(x, []) if _layernorm_input(c) == x and c is not node]
            if norms and _upstream(branch, producer, {id(n) for n in norms}):
                found.append(node.name)
                break
    return found


def _upstream(tensor: str, producer: dict[str, NodeProto], targets: set[int], limit: int = 400) -> bool:
    """True when a node in ``targets`` (by id) lies upstream of ``tensor`` (within ``limit`` nodes)."""
    stack: list[str] = [tensor]
    seen: set[str] = set()
    while stack and len(seen) < limit:
        name = stack.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        node = producer[name]
        if id(node) in targets:
            return True
        stack += [i for i in node.input if i]
    return False


# -- the check ------------------------------------------------------------------------------------


def _random_feeds(model: ModelProto, seed: int, batch: int = 1) -> dict[str, np.ndarray]:
    """N(0, 1) float inputs (dynamic axes at ``batch``); int inputs get zeros. Seeded."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    constants = {i.name for i in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in constants:
            continue
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(dims).astype(dtype)
        else:
            feeds[value.name] = np.zeros(dims, dtype=dtype)
    return feeds


def _run_shapes(
    model: ModelProto, tensors: list[str], runner_factory: RunnerFactory | None = None
) -> dict[str, tuple[int, ...]]:
    """The shapes of ``tensors`` in one run of ``model`` on random inputs (batch 1), for rewrites that
    need a size shape inference cannot see; {} when the run fails (the rewrite is then skipped)."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    try:
        outputs = run_onnxruntime(probe, _random_feeds(model, seed=0), runner_factory)
    except Exception as err:  # a probe that fails only means no rewrite
        log.debug("shape probe failed (%s); unfolds with unknown channels are left as they are", err)
        return {}
    return {name: tuple(outputs[name].shape) for name in tensors if name in outputs}


def run_onnxruntime(
    model: ModelProto, feeds: dict[str, np.ndarray], runner_factory: RunnerFactory | None = None
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` (an in-memory ModelProto) on ONNX Runtime's CPU provider, plugin nodes
    included (vitrt's CPU kernels), or on the runner ``runner_factory`` makes from a path."""
    import tempfile

    from vitrt.deploy.runners import OnnxRuntimeRunner

    with tempfile.TemporaryDirectory(prefix="vitrt-prepare-") as tmp:
        path = save_onnx(model, Path(tmp) / "model.onnx")
        runner = runner_factory(path) if runner_factory is not None else OnnxRuntimeRunner(path)
        outputs = runner.infer(feeds)
        del runner  # release the session before its file is removed
        return outputs


def compare_on_onnxruntime(
    reference: ModelProto,
    candidate: ModelProto,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
    what: str = "preparation",
    runner_factory: RunnerFactory | None = None,
) -> dict[str, float]:
    """Run both models on the same random inputs; {output: max |candidate - reference|}. Raises
    PreparationError naming the output when |a - b| > atol + rtol |b| anywhere."""
    feeds = _random_feeds(reference, seed)
    expected = run_onnxruntime(reference, feeds, runner_factory)
    actual = run_onnxruntime(candidate, feeds, runner_factory)
    errors: dict[str, float] = {}
    for name, ref in expected.items():
        if name not in actual:
            raise PreparationError(f"{what} lost the output {name!r}")
        a, b = np.asarray(actual[name], np.float64), np.asarray(ref, np.float64)
        if a.shape != b.shape:
            raise PreparationError(f"{what} changed the shape of {name!r}: {a.shape} vs {b.shape}")
        diff = np.abs(a - b)
        errors[name] = float(diff.max(initial=0.0))
        if not np.all(diff <= atol + rtol * np.abs(b)):
            raise PreparationError(
                f"{what} changed the function: output {name!r} differs by up to {errors[name]:.3g} "
                f"(tolerance atol {atol} + rtol {rtol} |x|). This is a vitrt bug: skip the preparation "
                "(--no-prepare for calibrate / fp16), or keep its result anyway with --no-check"
            )
    return errors


# -- the pass -------------------------------------------------------------------------------------


def refuse_quantized(model: ModelProto, where: str = "the model") -> None:
    """PreparationError for a graph with Q/DQ nodes: the preparation (simplify, fuse, rename) is for the
    float32 graph; ``vitrt calibrate`` and ``vitrt fp16`` prepare it on the way (and ONNX Runtime cannot run
    the simplified ONNX Runtime-form INT8 graph)."""
    from vitrt.calibration.fp16 import has_qdq

    if has_qdq(model):
        raise PreparationError(
            f"{where} already holds QuantizeLinear / DequantizeLinear nodes (already quantized): prepare the "
            "float32 file it came from (`vitrt calibrate` and `vitrt fp16` prepare their input themselves)"
        )


def prepare_model(
    model: ModelProto,
    *,
    opset: int | None = None,
    simplify: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    runner_factory: RunnerFactory | None = None,
) -> tuple[ModelProto, PrepareReport]:
    """Prepare ``model`` for the precision steps (module docstring); returns (prepared copy, report).

    opset: the default-domain opset to reach (None: the model's, at least 17; 20 also fuses GELU).
    simplify: run onnxsim / onnxslim. check: compare the result with ``model`` on ONNX Runtime (random
    N(0, 1) inputs, |a - b| <= atol + rtol |b|) and raise PreparationError if they differ;
    runner_factory: path -> Runner for that check (default: ``OnnxRuntimeRunner``, CPU, vitrt's plugins).
    Raises PreparationError for a graph that cannot be converted to ``opset`` or that is already quantized
    (Q/DQ nodes: ``refuse_quantized``).
    """
    import onnx

    from .passes import name_tensors, simplify_with_tool
    from .unfold_conv import rewrite_unfolds

    refuse_quantized(model)
    source_opset = default_opset(model)
    target = max(opset or source_opset, LAYERNORM_OPSET)
    if opset is not None and opset < source_opset:
        raise PreparationError(f"the model is at opset {source_opset}; cannot prepare it at {opset} (lower)")
    work = onnx.ModelProto()
    work.CopyFrom(model)
    work = upgrade_opset(work, target)
    simplifier = "none"
    if simplify:
        work, simplifier = simplify_with_tool(work)
    hints = _name_hints(model, work)
    work = _ort_fusions(work, gelu=target >= GELU_OPSET)
    unfolds = rewrite_unfolds(work, lambda m, names: _run_shapes(m, names, runner_factory))
    stable_node_names(work, hints)
    name_tensors(work)
    del work.graph.value_info[:]
    work = onnx.shape_inference.infer_shapes(work)
    fused = {op: made for op in FUSED_OPS if (made := _count(work, op) - _count(model, op)) > 0}
    if unfolds:
        fused["Conv (unfold)"] = unfolds
    errors = (
        compare_on_onnxruntime(model, work, atol=atol, rtol=rtol, runner_factory=runner_factory)
        if check
        else {}
    )
    report = PrepareReport(
        opset=(source_opset, default_opset(work)),
        nodes=(len(model.graph.node), len(work.graph.node)),
        simplifier=simplifier,
        fused=fused,
        attention_matmuls=attention_matmuls(work),
        residual_adds=residual_adds(work),
        check=errors,
    )
    log.info("prepared the graph: %s", report.format().replace("\n", "; "))
    return work, report


def prepare_onnx(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    opset: int | None = None,
    simplify: bool = True,
    check: bool = True,
) -> tuple[Path, PrepareReport]:
    """``vitrt prepare`` as a function: read ``model``, prepare it, write ``output`` atomically.
    Returns (output path, report). The ExportConfig and other metadata are kept."""
    dest = check_writable(output)
    if Path(model).resolve() == dest.resolve():
        raise VitrtError(f"the output {output} is the input model; write the prepared model elsewhere")
    proto = load_onnx(model)
    refuse_quantized(proto, str(model))
    prepared, report = prepare_model(proto, opset=opset, simplify=simplify, check=check)
    with atomic_output(dest, suffix=".onnx") as tmp:
        save_onnx(prepared, tmp, data_name=dest.name + ".data")
    return dest, report
