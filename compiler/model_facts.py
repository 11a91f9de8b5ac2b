"""What an ONNX file is, as the plain data a build plan reads (``ModelFacts``): the precision its graph holds,
its inputs and outputs, vitrt plugin nodes, and the float32 keep-list of its precision recipe.

The precision comes from vitrt's precision recipe when the file has one (``vitrt calibrate`` / ``vitrt
fp16`` write it), else from the graph itself, so that files quantized by other tools are read too: the
element type of QuantizeLinear's zero point (or ``output_dtype``) or of DequantizeLinear's quantized
initializers says INT8, FP8 (float8e4m3fn) or FP4 (float4e2m1); float16 tensors say FP16.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vitrt.calibration.recipe import read_recipe

from .build_plan import LayerConstraint, ModelFacts, TensorInfo

if TYPE_CHECKING:
    from onnx import ModelProto, ValueInfoProto


def _tensor_info(value: ValueInfoProto) -> TensorInfo:
    from onnx import helper

    t = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
    dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "undefined"
    return TensorInfo(value.name, shape, dtype)


def quantized_types(model: ModelProto) -> set[str]:
    """The quantized element types of the graph's Q/DQ pairs: subset of {"int8", "fp8", "fp4"}."""
    from onnx import TensorProto

    names = {
        TensorProto.INT8: "int8",
        TensorProto.UINT8: "int8",
        TensorProto.FLOAT8E4M3FN: "fp8",
        TensorProto.FLOAT4E2M1: "fp4",
    }
    initializer_types = {t.name: t.data_type for t in model.graph.initializer}
    found: set[str] = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "QuantizeLinear":
            dtype = next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), None)
            if dtype is None and len(node.input) > 2 and node.input[2]:
                dtype = initializer_types.get(node.input[2])
            found.add(names.get(dtype or TensorProto.UINT8, "int8"))  # no zero point: uint8 (ONNX's default)
        elif node.op_type == "DequantizeLinear" and node.input[0] in initializer_types:
            kind = names.get(initializer_types[node.input[0]])
            if kind:
                found.add(kind)
    return found


def graph_precision(model: ModelProto) -> str:
    """The precision ``model``'s graph holds (module docstring): "fp32", "fp16", "int8", "int8+fp16", "fp8"
    or "fp4"; its recipe's when it has one."""
    from vitrt.calibration.fp16 import is_float16

    recipe = read_recipe(model)
    if recipe is not None:
        return recipe.precision
    quantized = quantized_types(model)
    for low in ("fp4", "fp8"):
        if low in quantized:
            return low
    if "int8" in quantized:
        return "int8+fp16" if is_float16(model) else "int8"
    return "fp16" if is_float16(model) else "fp32"


def load_model_facts(path: str | os.PathLike[str]) -> tuple[Path, ModelProto, ModelFacts]:
    """(path, ``onnx.ModelProto``, ModelFacts) of the ONNX file at ``path``; VitrtError for a missing file or
    one that is not ONNX (``vitrt.fileio.load_onnx``)."""
    from vitrt.fileio import load_onnx

    proto = load_onnx(path)
    return Path(path), proto, read_model_facts(proto)


def read_model_facts(model: ModelProto) -> ModelFacts:
    """The ModelFacts of an ``onnx.ModelProto`` (graph inputs that are initializers are not inputs)."""
    from vitrt.compiler.export import read_export_config
    from vitrt.plugins.lowering import DOMAIN

    initializers = {t.name for t in model.graph.initializer}
    recipe = read_recipe(model)
    config = read_export_config(model)
    constraints = tuple(
        LayerConstraint(c["node"], c["precision"], c["output_type"])
        for c in (recipe.layer_constraints() if recipe is not None else [])
    )
    return ModelFacts(
        precision=graph_precision(model),
        inputs=tuple(_tensor_info(v) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(_tensor_info(v) for v in model.graph.output),
        plugins=tuple(sorted({n.op_type for n in model.graph.node if n.domain == DOMAIN})),
        lowering=config.lowering if config is not None else None,
        layer_constraints=constraints,
    )
