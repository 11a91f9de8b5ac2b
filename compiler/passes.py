"""Graph passes on ONNX models: simplify, check, name. vitrt's plugin nodes stay opaque."""

from __future__ import annotations

import ast
import logging
from typing import Any

from .errors import VitrtError

log = logging.getLogger("vitrt")


def simplify_model(proto: Any) -> Any:
    """Constant-fold and clean ``proto`` with onnxsim, falling back to onnxslim, else unchanged.

    Custom-domain nodes (vitrt's plugins) are skipped by both tools' constant folding, since
    ONNX Runtime cannot evaluate them without vitrt's custom-op library.
    """
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
        if ok:
            return simplified
        log.warning("onnxsim could not validate its result; keeping the unsimplified graph")
    except Exception as err:  # onnxsim raises RuntimeError/ValueError/its own types
        log.warning("onnxsim failed (%s: %s); trying onnxslim", type(err).__name__, err)
        try:
            import onnxslim

            return onnxslim.slim(proto)
        except ImportError:
            log.warning("onnxslim is not installed; keeping the unsimplified graph")
    return proto


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
