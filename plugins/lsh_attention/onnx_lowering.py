"""ScatterbrainAttention's plugin lowering: the ``vitrt::scatterbrain_attention`` torch op, its ONNX
node ``vitrt::ScatterbrainAttention`` (the TensorRT plugin's name, version and fields), and its ONNX
Runtime CPU kernel. Every piece calls the references in ``reference.py``: one definition.

No ``from __future__ import annotations`` here: ``torch.library.custom_op`` reads the annotations.
"""

import numpy as np
import onnxscript
import torch
from torch import Tensor

from vitrt.plugins.lowering import PluginLowering, attribute_kinds, register_onnx_schema

from .reference import lsh_attention, performer_attention, scatterbrain_attention
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


def attention_by_mode(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
) -> Tensor:
    """The op for any ``attrs.mode``: [B, H, N, E] x3 (+ fixed tensors) -> [B, H, N, Dv]."""
    if attrs.mode == Mode.SCATTERBRAIN:
        assert hash_vectors is not None and projection is not None
        return scatterbrain_attention(
            q,
            k,
            v,
            hash_vectors=hash_vectors,
            projection=projection,
            cluster_size=attrs.cluster_size,
            scale=attrs.scale,
        )
    if attrs.mode == Mode.LSH:
        assert hash_vectors is not None
        return lsh_attention(
            q, k, v, hash_vectors=hash_vectors, cluster_size=attrs.cluster_size, scale=attrs.scale
        )
    assert projection is not None
    return performer_attention(q, k, v, projection=projection, scale=attrs.scale)


@torch.library.custom_op("vitrt::scatterbrain_attention", mutates_args=())
def scatterbrain_attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    mode: int,
    cluster_size: int,
    n_hashes: int,
    n_features: int,
    scale: float,
) -> Tensor:
    """The ScatterbrainAttention op as one opaque torch op (see ``spec``); exported as one ONNX node."""
    attrs = ScatterbrainAttrs(Mode(mode), cluster_size, n_hashes, n_features, scale)
    return attention_by_mode(q, k, v, hash_vectors, projection, attrs).clone()


@scatterbrain_attention_op.register_fake
def _fake(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    mode: int,
    cluster_size: int,
    n_hashes: int,
    n_features: int,
    scale: float,
) -> Tensor:
    return q.new_empty(*q.shape[:3], v.shape[-1])


def scatterbrain_plugin(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
) -> Tensor:
    """``attention_by_mode`` through the custom op (what the plugin lowering traces)."""
    values = [int(getattr(attrs, n)) if kind == "int" else float(getattr(attrs, n)) for n, kind in ATTRIBUTES]
    return scatterbrain_attention_op(q, k, v, hash_vectors, projection, *values)


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
