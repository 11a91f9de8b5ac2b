"""Graph passes on ONNX models: simplify, check, name. vitrt's plugin nodes stay opaque."""

from __future__ import annotations

import ast
import logging
from typing import Any

from vitrt.errors import VitrtError

log = logging.getLogger(__name__)


def simplify_model(proto: Any) -> Any:
    """Constant-fold and clean ``proto`` with onnxsim, falling back to onnxslim, else unchanged.

    vitrt's plugin nodes stay opaque: onnxsim checks its result on ONNX Runtime, so it gets a copy
    whose plugin nodes run on vitrt's CPU kernels (``vitrt.plugins.lowering.to_onnxruntime``), undone after.
    """
    return simplify_with_tool(proto)[0]


def simplify_with_tool(proto: Any) -> tuple[Any, str]:
    """``simplify_model`` that also says which tool simplified: "onnxsim", "onnxslim" or "none"."""
    from vitrt.plugins.lowering import (
        from_onnxruntime,
        has_plugin_nodes,
        ort_custom_ops_library,
        to_onnxruntime,
    )

    if has_plugin_nodes(proto):
        ort_copy = to_onnxruntime(proto)
        simplified, tool = _simplify(ort_copy, custom_lib=ort_custom_ops_library())
        return (proto, tool) if simplified is ort_copy else (from_onnxruntime(simplified), tool)
    return _simplify(proto)


def _simplify(proto: Any, custom_lib: str | None = None) -> tuple[Any, str]:
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto, custom_lib=custom_lib)
        if ok:
            return simplified, "onnxsim"
        log.warning("onnxsim could not validate its result; keeping the unsimplified graph")
    except Exception as err:  # onnxsim raises RuntimeError/ValueError/its own types
        log.warning("onnxsim failed (%s: %s); trying onnxslim", type(err).__name__, err)
        try:
            import onnxslim

            return onnxslim.slim(proto), "onnxslim"
        except ImportError:
            log.warning("onnxslim is not installed; keeping the unsimplified graph")
    return proto, "none"


def check_model(proto: Any) -> None:
    """``onnx.checker`` full check plus strict shape inference; raises VitrtError on failure."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise VitrtError(f"exported ONNX model is invalid: {err}") from err


_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def name_nodes(proto: Any) -> Any:
    """Name every node after the module that produced it (``blocks.3.attn.qkv/MatMul_1``) and drop
    the exporter's per-node metadata.

    Run before simplification: the dynamo exporter records each node's module path in its metadata,
    which onnxsim drops. The names let a sensitivity report or a TensorRT layer profile be read back
    to the model's blocks. The dropped metadata holds stack traces with absolute file paths, which
    would make the file's bytes depend on where vitrt is installed.
    """
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        scope = "model"
        for prop in node.metadata_props:
            if prop.key == _SCOPES_KEY:
                scopes = [s for s in ast.literal_eval(prop.value)[:-1] if s]  # last entry: the op itself
                scope = scopes[-1] if scopes else "model"
        key = f"{scope}/{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
        node.name = f"{key}_{counts[key]}"
        del node.metadata_props[:]
    return proto


def name_tensors(proto: Any) -> Any:
    """Name every intermediate tensor after the node that produces it (``blocks.3.attn.qkv/MatMul_1:0``).

    Graph inputs, outputs and initializers keep their names. Run after ``name_nodes`` and after
    simplification (onnxsim keeps node names but may add tensors of its own).
    """
    keep = {v.name for v in proto.graph.input} | {v.name for v in proto.graph.output}
    keep |= {t.name for t in proto.graph.initializer}
    renames: dict[str, str] = {}
    for node in proto.graph.node:
        for i, out in enumerate(node.output):
            if out and out not in keep:
                renames[out] = f"{node.name}:{i}"
                node.output[i] = renames[out]
    for node in proto.graph.node:
        for i, inp in enumerate(node.input):
            if inp in renames:
                node.input[i] = renames[inp]
    for info in proto.graph.value_info:
        info.name = renames.get(info.name, info.name)
    return proto
