"""ScatterbrainAttention's plugin lowering: the ``vitrt::scatterbrain_attention`` torch op (``torch_op``)
exported as the ONNX node ``vitrt::ScatterbrainAttention`` (the TensorRT plugin's name, version and
fields), and its ONNX Runtime CPU kernel. Every piece calls the references in ``reference.py``: one
definition.

No ``from __future__ import annotations`` here: ``torch.library.custom_op`` reads the annotations.
"""

import numpy as np
import onnxscript
import torch

from vitrt.plugins.lowering import PluginLowering, attribute_kinds, register_onnx_schema

from . import torch_op  # noqa: F401  (registers torch.ops.vitrt.scatterbrain_attention, exported below)
from .reference import attention_by_mode
from .spec import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    Mode,
    ScatterbrainAttrs,
)

ATTRIBUTES = attribute_kinds(ScatterbrainAttrs)


_VITRT = onnxscript.values.Opset("vitrt", int(PLUGIN_VERSION))


def _translation(
    q: onnxscript.FLOAT,
    k: onnxscript.FLOAT,
    v: onnxscript.FLOAT,
    hash_vectors: onnxscript.FLOAT | None,
    projection: onnxscript.FLOAT | None,
    mode: int,
    cluster_size: int,
    n_hashes: int,
    n_features: int,
    scale: float,
) -> onnxscript.FLOAT:
    attrs = ScatterbrainAttrs(Mode(mode), cluster_size, n_hashes, n_features, scale).onnx_attributes()
    return _VITRT.ScatterbrainAttention(q, k, v, hash_vectors, projection, **attrs)


def _shape_rule(
    shapes: list[list[object] | None], attrs: dict[str, object]
) -> list[tuple[int | None, list[object]]]:
    q, v = shapes[0], shapes[2]
    assert q is not None and v is not None
    return [(None, [*q[:3], v[3]])]


def _ort_kernel(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *fixed: np.ndarray, **attrs: object
) -> tuple[np.ndarray, ...]:
    spec = ScatterbrainAttrs(**{name: attrs[name] for name, _ in ATTRIBUTES})  # type: ignore[arg-type]
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (q, k, v, *fixed)]
    # ONNX Runtime passes only the inputs the node has: LSH nodes lack the projection, and the
    # Performer's omitted hash vectors arrive as an empty tensor.
    hash_vectors = tensors[3] if spec.mode != Mode.PERFORMER else None
    projection = tensors[-1] if spec.mode != Mode.LSH else None
    with torch.no_grad():
        out = attention_by_mode(tensors[0], tensors[1], tensors[2], hash_vectors, projection, spec)
    return (out.numpy(),)


LOWERING = PluginLowering(
    name=PLUGIN_NAME,
    version=PLUGIN_VERSION,
    namespace=PLUGIN_NAMESPACE,
    inputs=INPUT_NAMES,
    optional_inputs=frozenset({"hash_vectors", "projection"}),
    outputs=(("out", "T"),),
    attributes=ATTRIBUTES,
    shape_rule=_shape_rule,
    torch_op=torch.ops.vitrt.scatterbrain_attention.default,
    translation=_translation,
    ort_kernel=_ort_kernel,
)
assert tuple(n for n, _ in LOWERING.outputs) == OUTPUT_NAMES
register_onnx_schema(LOWERING)
