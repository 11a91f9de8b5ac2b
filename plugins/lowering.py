"""What every plugin op shares for its ONNX lowerings: the lowering switch, ONNX schemas with shape
inference, the dynamo exporter's translation table, ONNX Runtime CPU kernels, a grad-mode switch that
torch.export skips (``grad_mode``), and scopes that name a module's inline ops in exports (``ExportScope``).

Lowerings:
- ``eager``: PyTorch as written (scatter-based merges; what training and the reference use);
- ``portable``: the reference traced into standard ONNX ops that ONNX Runtime *and* TensorRT run
  (no scatter-add: TensorRT's scatter has none, so merges become one-hot matmuls);
- ``plugin``: one ``torch.library`` custom op per op instance, exported as one node
  ``vitrt::<PluginName>`` with ``plugin_version``/``plugin_namespace`` attributes: what TensorRT's
  ONNX parser looks up in its plugin registry.

ONNX Runtime runs plugin nodes on CPU through onnxruntime-extensions Python ops that call the op's
PyTorch reference: the plugin lowering is then checked against the op's one definition instead of
a second (C++) implementation of the math; the CUDA kernels are the only other implementation.
onnxruntime-extensions registers Python ops only in the domain ``ai.onnx.contrib``, so the ONNX
Runtime session gets a copy of the graph with vitrt's nodes moved there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vitrt.plugins import OP_PACKAGES

LOWERINGS = ("eager", "portable", "plugin")
DOMAIN = "vitrt"
ORT_CONTRIB_DOMAIN = "ai.onnx.contrib"

SKIP_GRAD_MODE_IN_EXPORT = True
"""``grad_mode`` does nothing under torch.export (False: it switches there too, as torch's own context
managers do; ``benchmarks/export_grad_mode.py`` times both)."""

ShapeRule = Callable[[list[list[Any] | None], dict[str, Any]], list[tuple[int | None, list[Any]]]]


@dataclass(frozen=True)
class PluginLowering:
    """The ONNX face of one plugin op.

    name: op_type and TensorRT plugin name; inputs / outputs: ONNX names, outputs with their type
    constraint ("T" = the inputs' float type, or a fixed type like "tensor(int64)"); attributes:
    (name, kind) with kind "int", "float" or "string"; shape_rule: input shapes + attributes ->
    (ONNX elem type or None for "same as input 0", shape) per output; translation: the dynamo
    exporter's translation of ``torch_op``; ort_kernel: numpy in -> numpy out, attributes as kwargs.
    """

    name: str
    version: str
    namespace: str
    inputs: tuple[str, ...]
    optional_inputs: frozenset[str]
    outputs: tuple[tuple[str, str], ...]
    attributes: tuple[tuple[str, str], ...]
    shape_rule: ShapeRule
    torch_op: Any
    translation: Callable[..., Any]
    ort_kernel: Callable[..., tuple[Any, ...]]


@contextlib.contextmanager
def grad_mode(enabled: bool) -> Iterator[None]:
    """``torch.set_grad_enabled(enabled)``, except while ``torch.export`` traces, where it does nothing.
    A context manager and a decorator, like ``torch.no_grad()``.

    Why: torch.export records every grad-mode switch as a node, and its set-grad pass then splits the
    graph at each one and regenerates the code of every piece; with a fused block's several switches that
    was about 40 % of exporting deit_tiny with MCTF (``benchmarks/export_grad_mode.py``). Exported graphs
    are inference graphs, so the switches change nothing in them (the ONNX files are the same bytes).
    """
    if SKIP_GRAD_MODE_IN_EXPORT and torch.compiler.is_exporting():
        yield
    else:
        with torch.set_grad_enabled(enabled):
            yield


class ExportScope(nn.Module):
    """A parameterless child module under whose name a parent's inline ops are exported.

    ``scope.run(fn)`` calls ``fn()``; while ``torch.export`` traces, it calls it as this module's forward,
    so the ops ``fn`` makes carry this module's path (``blocks.3.fusion/TopK_1``: ``compiler.passes.
    name_nodes``) instead of the parent's (``blocks.3/TopK_1``), and per-layer profiles and calibration
    reports can tell them apart (``vitrt.deploy.module_groups``). Modules that ``fn`` calls keep their own
    paths. Outside exports it is a plain call: a module call costs Python time on every eager forward, and
    only exports read the scopes. No parameters or buffers, so state dicts are unchanged.
    """

    def forward(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def run(self, fn: Callable[[], Any]) -> Any:
        return self(fn) if torch.compiler.is_exporting() else fn()


def set_lowering(model: nn.Module, lowering: str) -> nn.Module:
    """Switch every plugin-op module of ``model`` (in place) to ``lowering``; returns the model."""
    if lowering not in LOWERINGS:
        from vitrt.errors import ConfigError

        raise ConfigError(f"unknown lowering {lowering!r}; use one of {', '.join(LOWERINGS)}")
    for module in model.modules():
        switch = getattr(module, "set_lowering", None)
        if callable(switch):
            switch(lowering)
    return model


def plugin_lowerings() -> list[PluginLowering]:
    """Every op's PluginLowering; importing them registers the torch ops and ONNX schemas."""
    return [importlib.import_module(f"{pkg}.onnx_lowering").LOWERING for pkg in OP_PACKAGES]


def translation_table() -> dict[Any, Callable[..., Any]]:
    """{torch custom op: ONNX translation}, for ``torch.onnx.export(custom_translation_table=...)``."""
    return {low.torch_op: low.translation for low in plugin_lowerings()}


def register_onnx_schema(low: PluginLowering) -> None:
    """Register ``vitrt::<name>`` with ONNX (once), with shape inference from ``low.shape_rule``, so
    that ``onnx.checker`` and ``onnx.shape_inference`` know the plugin node."""
    import onnx
    from onnx import defs

    if defs.has(low.name, DOMAIN):
        return
    single, optional = (
        defs.OpSchema.FormalParameterOption.Single,
        defs.OpSchema.FormalParameterOption.Optional,
    )
    kinds = {"int": defs.OpSchema.AttrType.INT, "float": defs.OpSchema.AttrType.FLOAT}
    kinds["string"] = defs.OpSchema.AttrType.STRING
    attributes = [defs.OpSchema.Attribute(n, kinds[k], "", required=False) for n, k in low.attributes]
    attributes += [
        defs.OpSchema.Attribute("plugin_version", defs.OpSchema.AttrType.STRING, "", required=False),
        defs.OpSchema.Attribute("plugin_namespace", defs.OpSchema.AttrType.STRING, "", required=False),
    ]
    schema = defs.OpSchema(
        low.name,
        DOMAIN,
        int(low.version),
        inputs=[
            defs.OpSchema.FormalParameter(
                n, "T", param_option=optional if n in low.optional_inputs else single
            )
            for n in low.inputs
        ],
        outputs=[defs.OpSchema.FormalParameter(n, t) for n, t in low.outputs],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float32 or float16")],
        attributes=attributes,
    )

    def infer(ctx: Any) -> None:
        shapes: list[list[Any] | None] = []
        elem = None
        for i in range(min(ctx.get_num_inputs(), len(low.inputs))):
            t = ctx.get_input_type(i)
            if t is None or not t.tensor_type.HasField("shape"):
                shapes.append(None)  # omitted optional input, or unknown shape
                continue
            elem = elem or t.tensor_type.elem_type
            shapes.append(
                [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.tensor_type.shape.dim]
            )
        attrs = {}
        for name, kind in low.attributes:
            a = ctx.get_attribute(name)
            if a is not None:
                attrs[name] = a.i if kind == "int" else a.f if kind == "float" else a.s.decode()
        for i, (out_elem, shape) in enumerate(low.shape_rule(shapes, attrs)):
            out = onnx.TypeProto()
            out.tensor_type.elem_type = out_elem or elem or onnx.TensorProto.FLOAT
            for d in shape:
                dim = out.tensor_type.shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                else:
                    dim.dim_param = str(d)
            ctx.set_output_type(i, out)

    schema.set_type_and_shape_inference_function(infer)
    defs.register_schema(schema)


def has_plugin_nodes(proto: Any) -> bool:
    """True when an ``onnx.ModelProto`` holds nodes of vitrt's domain."""
    return any(n.domain == DOMAIN for n in proto.graph.node)


EMPTY_INPUT = "vitrt.omitted_input"
"""Name of the empty float tensor that stands for an omitted optional input in ONNX Runtime's copy:
onnxruntime-extensions' Python ops take a fixed number of inputs."""


def to_onnxruntime(proto: Any) -> Any:
    """A copy of ``proto`` that ONNX Runtime runs with vitrt's CPU kernels: vitrt's nodes moved to
    ``ORT_CONTRIB_DOMAIN``, omitted optional inputs filled with an empty tensor (``EMPTY_INPUT``), and
    float16 plugin nodes run between Casts (float16 -> float32 -> float16): the Python kernels take
    float32, which is also how the plugins compute inside (float16 I/O, float32 accumulation)."""
    import onnx

    counts = {low.name: len(low.inputs) for low in plugin_lowerings()}
    copy = _move_domain(_float32_plugin_io(proto), DOMAIN, ORT_CONTRIB_DOMAIN)
    filled = False
    for node in copy.graph.node:
        if node.domain == ORT_CONTRIB_DOMAIN and node.op_type in counts:
            inputs = [i or EMPTY_INPUT for i in node.input]
            inputs += [EMPTY_INPUT] * (counts[node.op_type] - len(inputs))
            filled |= EMPTY_INPUT in inputs
            del node.input[:]
            node.input.extend(inputs)
    if filled:
        copy.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), EMPTY_INPUT))
    return copy


def _float32_plugin_io(proto: Any) -> Any:
    """``proto`` with each plugin node that reads float16 wrapped in Casts to float32 and back; the
    model itself when no plugin node reads float16."""
    import onnx
    from onnx import TensorProto, helper

    float_outputs = {low.name: [t == "T" for _, t in low.outputs] for low in plugin_lowerings()}
    plugins = [n for n in proto.graph.node if n.domain == DOMAIN]
    if not plugins:
        return proto
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]
    }
    types.update({t.name: t.data_type for t in proto.graph.initializer})
    if not any(types.get(i) == TensorProto.FLOAT16 for n in plugins for i in n.input):
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    nodes = []
    cast: set[str] = set()
    for node in copy.graph.node:
        if node.domain != DOMAIN or not any(types.get(i) == TensorProto.FLOAT16 for i in node.input):
            nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if types.get(name) == TensorProto.FLOAT16:
                node.input[k] = f"{name}/ort_float32"
                if name not in cast:  # one Cast per tensor (x and metric may be the same tensor)
                    cast.add(name)
                    nodes.append(
                        helper.make_node(
                            "Cast", [name], [node.input[k]], name=f"{name}/ort_Cast_float32", to=1
                        )
                    )
        nodes.append(node)
        for k, is_float in enumerate(float_outputs.get(node.op_type, [])):
            if is_float and k < len(node.output) and node.output[k]:
                out = node.output[k]
                node.output[k] = f"{out}/ort_float32"
                nodes.append(
                    helper.make_node(
                        "Cast", [node.output[k]], [out], name=f"{node.name}/out{k}_float16", to=10
                    )
                )
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    return copy


def from_onnxruntime(proto: Any) -> Any:
    """Undo ``to_onnxruntime``: vitrt's domain back, omitted inputs omitted again."""
    copy = _move_domain(proto, ORT_CONTRIB_DOMAIN, DOMAIN)
    for node in copy.graph.node:
        if node.domain == DOMAIN:
            inputs = ["" if i == EMPTY_INPUT else i for i in node.input]
            while inputs and not inputs[-1]:
                inputs.pop()
            del node.input[:]
            node.input.extend(inputs)
    kept = [t for t in copy.graph.initializer if t.name != EMPTY_INPUT]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    return copy


def _move_domain(proto: Any, src: str, dst: str) -> Any:
    """A copy of ``proto`` with the nodes of domain ``src`` moved to ``dst`` (opset imports too)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for node in copy.graph.node:
        if node.domain == src:
            node.domain = dst
    imports = [o for o in copy.opset_import if o.domain != src]
    if not any(o.domain == dst for o in imports):
        imports.append(onnx.helper.make_opsetid(dst, 1))
    del copy.opset_import[:]
    copy.opset_import.extend(imports)
    return copy


def ort_custom_ops_library() -> str:
    """Register vitrt's ONNX Runtime CPU kernels (Python ops calling the references) and return the
    onnxruntime-extensions library to pass to ``SessionOptions.register_custom_ops_library``. Graphs
    must be prepared with ``to_onnxruntime``."""
    from vitrt.errors import VitrtError

    try:
        from onnxruntime_extensions import get_library_path
    except ImportError as err:
        raise VitrtError(
            "running vitrt plugin nodes on ONNX Runtime needs onnxruntime-extensions: "
            "pip install onnxruntime-extensions (or export with --lowering portable)"
        ) from err
    _register_ort_kernels()
    return str(get_library_path())


_ORT_REGISTERED: set[str] = set()


def _register_ort_kernels() -> None:
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    kinds = {
        "int": PyCustomOpDef.dt_int64,
        "float": PyCustomOpDef.dt_float,
        "string": PyCustomOpDef.dt_string,
    }
    for low in plugin_lowerings():
        if low.name in _ORT_REGISTERED:
            continue
        outputs = [
            PyCustomOpDef.dt_int64 if t == "tensor(int64)" else PyCustomOpDef.dt_float for _, t in low.outputs
        ]
        attrs = {n: kinds[k] for n, k in low.attributes}
        attrs.update(plugin_version=PyCustomOpDef.dt_string, plugin_namespace=PyCustomOpDef.dt_string)
        onnx_op(
            op_type=low.name,
            inputs=[PyCustomOpDef.dt_float] * len(low.inputs),
            outputs=outputs,
            attrs=attrs,
        )(_ort_adapter(low))
        _ORT_REGISTERED.add(low.name)


def _ort_adapter(low: PluginLowering) -> Callable[..., Any]:
    def kernel(*inputs: Any, **attrs: Any) -> Any:
        attrs.pop("plugin_version", None)
        attrs.pop("plugin_namespace", None)
        outputs = low.ort_kernel(*inputs, **attrs)
        return outputs if len(outputs) > 1 else outputs[0]

    return kernel


def attribute_kinds(attrs_type: type) -> tuple[tuple[str, str], ...]:
    """(name, "int" | "float") of each field of a spec's attribute dataclass, in order: the ONNX node
    attributes, the custom op's scalar arguments and the TensorRT plugin fields. TypeError for any other
    field type (ONNX and TensorRT plugin fields carry only these two here)."""
    kinds = tuple((f.name, str(f.type)) for f in dataclasses.fields(attrs_type))
    bad = [(name, kind) for name, kind in kinds if kind not in ("int", "float")]
    if bad:
        raise TypeError(f"{attrs_type.__name__} fields must be int or float, got {bad}")
    return kinds


def node_attributes(fields: Any, version: str, namespace: str) -> dict[str, Any]:
    """A spec's attribute dataclass as ONNX node attributes: ints (IntEnum and bool included) and
    floats, plus the TensorRT ONNX parser's ``plugin_version`` and ``plugin_namespace``."""
    attrs: dict[str, Any] = {
        k: int(v) if isinstance(v, (bool, enum.IntEnum)) else v for k, v in dataclasses.asdict(fields).items()
    }
    attrs.update(plugin_version=version, plugin_namespace=namespace)
    return attrs
