"""ScatterbrainAttention as a torch op: ``torch.ops.vitrt.scatterbrain_attention`` (all three modes of
``spec.Mode``).

Dispatch: CPU tensors run the PyTorch reference (``reference.attention_by_mode``); CUDA tensors run the
kernels of ``cuda.py``; inside ``vitrt.plugins.cuda_emulation.emulated_kernels()`` CPU tensors run the
kernels on the CPU emulator (how CI checks that a model takes the kernel path). No gradient is
registered: the attention cores call the op only where none is needed (``module._AttentionCore``). The
plugin lowering exports the op as one ONNX node (``onnx_lowering``).

No ``from __future__ import annotations`` here: ``torch.library.custom_op`` reads the annotations.
"""

import torch
from torch import Tensor

from vitrt.plugins.cuda_emulation import emulating

from .reference import attention_by_mode
from .spec import Mode, ScatterbrainAttrs


def _kernels(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
) -> Tensor:
    from .cuda import scatterbrain_cuda

    return scatterbrain_cuda(
        q,
        k,
        v,
        hash_vectors if attrs.mode != Mode.PERFORMER else None,
        projection if attrs.mode != Mode.LSH else None,
        attrs,
    )


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
    """The ScatterbrainAttention op as one opaque torch op (see ``spec``): q, k [B, H, N, E], v [B, H, N, Dv]
    -> [B, H, N, Dv]."""
    attrs = ScatterbrainAttrs(Mode(mode), cluster_size, n_hashes, n_features, scale)
    if emulating():
        return _kernels(q, k, v, hash_vectors, projection, attrs)
    return attention_by_mode(q, k, v, hash_vectors, projection, attrs).clone()


@scatterbrain_attention_op.register_kernel("cuda")
def _scatterbrain_cuda(
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
    attrs = ScatterbrainAttrs(Mode(mode), cluster_size, n_hashes, n_features, scale)
    return _kernels(q, k, v, hash_vectors, projection, attrs)


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


def scatterbrain_call(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
) -> Tensor:
    """``reference.attention_by_mode`` through the custom op (what the plugin lowering traces and what the
    attention cores call where the kernels apply)."""
    from vitrt.plugins.lowering import attribute_kinds

    kinds = attribute_kinds(ScatterbrainAttrs)
    values = [int(getattr(attrs, n)) if kind == "int" else float(getattr(attrs, n)) for n, kind in kinds]
    return scatterbrain_attention_op(q, k, v, hash_vectors, projection, *values)
