"""TokenFusion as torch ops: ``torch.ops.vitrt.token_fusion`` (the op of ``spec``),
``torch.ops.vitrt.token_fusion_norm`` (the op and the LayerNorm of its fused tokens, which the merge kernel
writes too: a fused block's norm after its fusion; ``row_layer_norm`` is that LayerNorm alone, which T2T-ViT's
token norms use on a GPU, ``unfold_layer_norm`` the same norm of a soft split's patches read from the image
or tokens, and ``add_layer_norm`` the norm after a residual add, which every block's add and norm2 use on a
GPU), ``torch.ops.vitrt.token_merge`` (its merge step alone: the weighted mean of the groups a ``dest``
defines, which a fused block applies to its attention output; ``token_merge_add_norm`` adds the merged rows
to the fused tokens and writes the norm that follows too) and ``torch.ops.vitrt.attention_info`` (the
attention each key receives, a fused block's ``info``, from q and k without writing the probabilities).

Dispatch: CPU tensors run the PyTorch reference; CUDA tensors run the kernels of ``cuda.py``; inside
``vitrt.plugins.cuda_emulation.emulated_kernels()`` CPU tensors run the kernels on the CPU emulator,
which is how CI checks that a model really takes the kernel path. Gradients (registered here, the same
on every device) follow the reference: only x receives one, through the weighted mean; matching and
pooling weights are constants. The plugin lowering exports ``token_fusion`` as one ONNX node
(``onnx_lowering``).

No ``from __future__ import annotations`` here: ``torch.library.custom_op`` reads the annotations.
"""

import logging
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitrt.plugins.cuda_emulation import emulating

from .reference import attention_info, merge_tokens, pooling_weights, token_fusion
from .spec import TokenFusionAttrs

log = logging.getLogger(__name__)


@torch.library.custom_op("vitrt::token_fusion", mutates_args=())
def token_fusion_op(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    r: int,
    num_protected: int,
    tau_sim: float,
    tau_info: float,
    tau_size: float,
    bidirectional: int,
    pooling: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The TokenFusion op as one opaque torch op (see ``spec``): x [B, N, C], metric [B, N, Cm], info /
    size [B, N] -> (x_fused [B, N - r, C], size_fused [B, N - r], dest [B, N] int64)."""
    attrs = TokenFusionAttrs(r, num_protected, tau_sim, tau_info, tau_size, bidirectional, pooling)
    if emulating():
        from .cuda import token_fusion_cuda

        return token_fusion_cuda(x, metric, info, size, attrs)
    x_f, size_f, dest = token_fusion(x, metric, info, size, attrs)
    # A custom op's outputs may not alias its inputs (r = 0 returns x and size themselves).
    return x_f.clone(), size_f.clone(), dest.clone()


@token_fusion_op.register_kernel("cuda")
def _token_fusion_cuda(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    r: int,
    num_protected: int,
    tau_sim: float,
    tau_info: float,
    tau_size: float,
    bidirectional: int,
    pooling: int,
) -> tuple[Tensor, Tensor, Tensor]:
    from .cuda import token_fusion_cuda

    attrs = TokenFusionAttrs(r, num_protected, tau_sim, tau_info, tau_size, bidirectional, pooling)
    return token_fusion_cuda(x, metric, info, size, attrs)


@token_fusion_op.register_fake
def _token_fusion_fake(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    r: int,
    num_protected: int,
    tau_sim: float,
    tau_info: float,
    tau_size: float,
    bidirectional: int,
    pooling: int,
) -> tuple[Tensor, Tensor, Tensor]:
    b, n, c = x.shape
    return x.new_empty(b, n - r, c), size.new_empty(b, n - r), x.new_empty(b, n, dtype=torch.int64)


@torch.library.custom_op("vitrt::token_fusion_norm", mutates_args=())
def token_fusion_norm_op(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    r: int,
    num_protected: int,
    tau_sim: float,
    tau_info: float,
    tau_size: float,
    bidirectional: int,
    pooling: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    by_token: bool,
    residual: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``token_fusion`` then ``F.layer_norm(x_fused, (C,), weight, bias, eps)``: (x_fused, size_fused,
    dest, normed [B, N - r, C], log_size); ``by_token``: normed [B, N, C], token i's row the norm of
    x_fused[dest[i]] (the gather a fused block's one-step-ahead attention needs, without a gather);
    ``residual`` (like x or None): the op fuses x + residual (a block's residual add, which the merge kernel
    forms as it reads the rows); log_size: log(size_fused) [B, N - r] (the next block's
    proportional-attention bias). On the kernels the merge writes all of it (a fused
    block's norm after its fusion, one pass less). Inference only: no gradient is registered (blocks call
    it with grad off)."""
    values = (r, num_protected, tau_sim, tau_info, tau_size, bidirectional, pooling)
    if emulating():
        return _token_fusion_norm_cuda(x, metric, info, size, *values, weight, bias, eps, by_token, residual)
    attrs = TokenFusionAttrs(*values)
    log_size = size.new_empty(x.shape[0], x.shape[1] - r)
    if residual is not None:
        x = x + residual
    x_f, size_f, dest = token_fusion(x, metric, info, size, attrs)
    normed = F.layer_norm(x_f, (x_f.shape[-1],), weight, bias, eps)
    if by_token:
        normed = normed.gather(1, dest[..., None].expand(-1, -1, normed.shape[-1]))
    torch.log(size_f, out=log_size)
    return x_f.clone(), size_f.clone(), dest.clone(), normed, log_size


# The registrations below take the op's arguments as they come: x, metric, info, size, the seven
# attributes (``spec`` order), weight, bias, eps, by_token, residual.


@token_fusion_norm_op.register_kernel("cuda")
def _token_fusion_norm_cuda(*args: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The op on the kernels (CUDA, or the emulator), its log_size written by the merge."""
    from .cuda import token_fusion_norm_cuda

    x, metric, info, size = args[:4]
    attrs = TokenFusionAttrs(*args[4:11])
    log_size = size.new_empty(x.shape[0], x.shape[1] - attrs.r)
    weight, bias, eps, by_token, residual = args[11:]
    norm = (weight, bias, eps, by_token, residual, log_size)
    return (*token_fusion_norm_cuda(x, metric, info, size, attrs, *norm), log_size)


@token_fusion_norm_op.register_fake
def _token_fusion_norm_fake(*args: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x, size, r, by_token = args[0], args[3], args[4], args[14]
    b, n, c = x.shape
    fused = x.new_empty(b, n - r, c)
    normed = x.new_empty(b, n, c) if by_token else torch.empty_like(fused)
    dest = x.new_empty(b, n, dtype=torch.int64)
    return fused, size.new_empty(b, n - r), dest, normed, size.new_empty(b, n - r)


@torch.library.custom_op("vitrt::row_layer_norm", mutates_args=())
def row_layer_norm_op(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, pitch: int = 0
) -> Tensor:
    """``F.layer_norm(x, (C,), weight, bias, eps)`` over the last dim; on the kernels the merge kernel's row
    LayerNorm alone, a warp per row, or 8 or 16 lanes for narrow rows (``cuda.layer_norm_rows_cuda``), for
    T2T-ViT's token norms, where torch's layer_norm runs a block per row. ``pitch`` > 0 (at least C): the
    result is [..., pitch], zeros past column C (rows a product reads on aligned kernels:
    ``vitrt.models.layers.padded_linear``). Inference only: no gradient is registered (callers use it with
    grad off)."""
    if emulating():
        from .cuda import layer_norm_rows_cuda

        return layer_norm_rows_cuda(x, weight, bias, eps, pitch or None)
    return _row_layer_norm_torch(x, weight, bias, eps, pitch)


def _row_layer_norm_torch(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, pitch: int
) -> Tensor:
    """``row_layer_norm`` by torch's layer_norm (the reference, and the fallback without kernels)."""
    c = x.shape[-1]
    if pitch and pitch < c:
        raise ValueError(f"pitch must be at least the {c} channels, got {pitch}")
    normed = F.layer_norm(x, (c,), weight, bias, eps)
    return F.pad(normed, (0, pitch - c)) if pitch > c else normed


_NORM_KERNELS: dict[int, bool] = {}
_NORM_KERNELS_LOCK = threading.Lock()


def _norm_kernels_load(x: Tensor) -> bool:
    """Whether vitrt's kernels load on x's GPU (cached per device). The models call ``row_layer_norm`` and
    ``add_layer_norm`` by themselves, a dense model too, so where vitrt's optional CUDA toolchain is missing
    (cuda-python, a fatbin for this GPU or NVRTC) these two ops run torch's add and layer_norm instead, with
    one warning, rather than fail a model that needs no vitrt kernel."""
    from vitrt.errors import VitrtError
    from vitrt.plugins.cuda_launcher import kernel_device, load_module

    from .cuda import SOURCE

    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    known = _NORM_KERNELS.get(index)  # every launch asks: no lock once the answer is known
    if known is not None:
        return known
    with _NORM_KERNELS_LOCK:
        if index not in _NORM_KERNELS:
            try:
                with kernel_device(x):
                    load_module(SOURCE)
                _NORM_KERNELS[index] = True
            except VitrtError as exc:
                log.warning("vitrt's CUDA kernels do not load on cuda:%d, so LayerNorms run on torch's "
                            "kernels: %s", index, exc)  # fmt: skip
                _NORM_KERNELS[index] = False
        return _NORM_KERNELS[index]


@row_layer_norm_op.register_kernel("cuda")
def _row_layer_norm_cuda(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, pitch: int = 0
) -> Tensor:
    from .cuda import layer_norm_rows_cuda

    if not _norm_kernels_load(x):
        return _row_layer_norm_torch(x, weight, bias, eps, pitch)
    return layer_norm_rows_cuda(x, weight, bias, eps, pitch or None)


@row_layer_norm_op.register_fake
def _row_layer_norm_fake(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, pitch: int = 0
) -> Tensor:
    return x.new_empty(*x.shape[:-1], pitch or x.shape[-1])  # the kernel's output: contiguous


@torch.library.custom_op("vitrt::unfold_layer_norm", mutates_args=())
def unfold_layer_norm_op(
    x: Tensor,
    kernel: int,
    stride: int,
    padding: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    pitch: int = 0,
) -> Tensor:
    """T2T-ViT's soft split and the token norm after it: x [B, C, H, W] (any strides) -> [B, L, C k k] (or
    [B, L, pitch], zeros past C k k, with ``pitch`` > 0): ``F.layer_norm`` over each row of
    ``F.unfold(x, kernel, padding=padding, stride=stride).transpose(1, 2)``. On the kernels one pass that
    never writes the patches (``cuda.unfold_layer_norm_cuda``). Inference only: no gradient is registered."""
    if emulating():
        return _unfold_layer_norm_cuda(x, kernel, stride, padding, weight, bias, eps, pitch)
    patches = F.unfold(x, kernel, padding=padding, stride=stride).transpose(1, 2)
    return _row_layer_norm_torch(patches, weight, bias, eps, pitch)


@unfold_layer_norm_op.register_kernel("cuda")
def _unfold_layer_norm_cuda(*args: Any) -> Tensor:
    """The op on the kernels; patches wider than the fused kernel takes (``UNFOLD_MAX_VALUES``) are copied out
    by F.unfold and normed by the row-norm kernel, and without vitrt's kernels torch does both."""
    from .cuda import UNFOLD_MAX_VALUES, layer_norm_rows_cuda, unfold_layer_norm_cuda

    x, kernel, stride, padding, weight, bias, eps, pitch = args
    loads = not x.is_cuda or _norm_kernels_load(x)
    if loads and x.shape[1] * kernel * kernel <= UNFOLD_MAX_VALUES:
        return unfold_layer_norm_cuda(x, kernel, stride, padding, weight, bias, eps, pitch or None)
    patches = F.unfold(x, kernel, padding=padding, stride=stride).transpose(1, 2)
    if loads:
        return layer_norm_rows_cuda(patches, weight, bias, eps, pitch or None)
    return _row_layer_norm_torch(patches, weight, bias, eps, pitch)


@unfold_layer_norm_op.register_fake
def _unfold_layer_norm_fake(*args: Any) -> Tensor:
    x, kernel, stride, padding, pitch = args[0], args[1], args[2], args[3], args[7]
    b, c, h, w = x.shape
    rows = ((h + 2 * padding - kernel) // stride + 1) * ((w + 2 * padding - kernel) // stride + 1)
    return x.new_empty(b, rows, pitch or c * kernel * kernel)


@torch.library.custom_op("vitrt::add_layer_norm", mutates_args=())
def add_layer_norm_op(
    x: Tensor, y: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """A block's residual add and the norm after it: x, y [..., C] of one shape -> (s = x + y,
    ``F.layer_norm(s, (C,), weight, bias, eps)``). On the kernels one launch writes both
    (``cuda.add_layer_norm_rows_cuda``), s bit-identical to torch's add. Inference only: no gradient is
    registered (callers use it with grad off)."""
    if emulating():
        from .cuda import add_layer_norm_rows_cuda

        return add_layer_norm_rows_cuda(x, y, weight, bias, eps)
    return _add_layer_norm_torch(x, y, weight, bias, eps)


def _add_layer_norm_torch(
    x: Tensor, y: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """``add_layer_norm`` by torch's add and layer_norm (the reference, and the fallback without kernels)."""
    total = x + y
    return total, F.layer_norm(total, (total.shape[-1],), weight, bias, eps)


@add_layer_norm_op.register_kernel("cuda")
def _add_layer_norm_cuda(
    x: Tensor, y: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    from .cuda import add_layer_norm_rows_cuda

    if not _norm_kernels_load(x):
        return _add_layer_norm_torch(x, y, weight, bias, eps)
    return add_layer_norm_rows_cuda(x, y, weight, bias, eps)


@add_layer_norm_op.register_fake
def _add_layer_norm_fake(
    x: Tensor, y: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    contiguous = torch.contiguous_format  # the kernels' outputs, whatever x's strides
    return torch.empty_like(x, memory_format=contiguous), torch.empty_like(x, memory_format=contiguous)


@torch.library.custom_op("vitrt::token_merge", mutates_args=())
def token_merge_op(x: Tensor, dest: Tensor, info: Tensor, size: Tensor, pooling: int, n_out: int) -> Tensor:
    """Weighted mean of the groups of ``dest``: x [B, N, C], dest [B, N] int64 (slots 0 .. n_out - 1, all
    used), info / size [B, N] (the pooling weights' inputs, ``reference.pooling_weights``) -> [B, n_out, C]
    in x's dtype."""
    if emulating():
        from .cuda import merge_tokens_cuda

        return merge_tokens_cuda(x, dest, info, size, pooling, n_out)
    return merge_tokens(x, dest, pooling_weights(info, size, pooling), n_out)


@token_merge_op.register_kernel("cuda")
def _token_merge_cuda(
    x: Tensor, dest: Tensor, info: Tensor, size: Tensor, pooling: int, n_out: int
) -> Tensor:
    from .cuda import merge_tokens_cuda

    return merge_tokens_cuda(x, dest, info, size, pooling, n_out)


@token_merge_op.register_fake
def _token_merge_fake(
    x: Tensor, dest: Tensor, info: Tensor, size: Tensor, pooling: int, n_out: int
) -> Tensor:
    return x.new_empty(x.shape[0], n_out, x.shape[2])


@torch.library.custom_op("vitrt::token_merge_add_norm", mutates_args=())
def token_merge_add_norm_op(
    x: Tensor,
    dest: Tensor,
    info: Tensor,
    size: Tensor,
    pooling: int,
    base: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """``token_merge`` of x into base's slots, then a residual add and the norm after it: base [B, n_out, C]
    -> (s = base + merged, ``F.layer_norm(s, (C,), weight, bias, eps)``); on the kernels the merge kernel
    writes both (``cuda.merge_add_norm_cuda``). A fused block's attention branch merged, added to its fused
    tokens, and norm2. Inference only: no gradient is registered (blocks call it with grad off)."""
    if emulating():
        from .cuda import merge_add_norm_cuda

        return merge_add_norm_cuda(x, dest, info, size, pooling, base, weight, bias, eps)
    total = base + merge_tokens(x, dest, pooling_weights(info, size, pooling), base.shape[1])
    return total, F.layer_norm(total, (total.shape[-1],), weight, bias, eps)


@token_merge_add_norm_op.register_kernel("cuda")
def _token_merge_add_norm_cuda(*args: Any) -> tuple[Tensor, Tensor]:
    from .cuda import merge_add_norm_cuda

    return merge_add_norm_cuda(*args)


@token_merge_add_norm_op.register_fake
def _token_merge_add_norm_fake(*args: Any) -> tuple[Tensor, Tensor]:
    base = args[5]
    total = torch.empty_like(base, memory_format=torch.contiguous_format)
    return total, torch.empty_like(total)


@torch.library.custom_op("vitrt::attention_info", mutates_args=())
def attention_info_op(q: Tensor, k: Tensor, size: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
    """``reference.attention_info(q @ k^T, size, scale)``: q, k [B, H, N, E], size [B, N] or None -> (info
    [B, N] in q's dtype, log_size): log_size = log(size) [B, N], the proportional attention's bias, which the
    block's attention adds next ([B, 0] without a size). On the kernels (``cuda.attention_info_qk_cuda``)
    neither the probabilities nor, for float16, the logits are written, and log_size comes from the
    launch that writes info. Both are constants for gradients (the reference's info is)."""
    if emulating():
        return _attention_info_cuda(q, k, size, scale)
    log_size = _log_size_like(q, size)
    if size is not None:
        torch.log(size, out=log_size)
    return attention_info(q @ k.transpose(-2, -1), size, scale), log_size


def _log_size_like(q: Tensor, size: Tensor | None) -> Tensor:
    """attention_info's uninitialised log_size: [B, N] (size's shape) in q's dtype, or [B, 0]."""
    return q.new_empty(q.shape[0], 0 if size is None else q.shape[2])


@attention_info_op.register_kernel("cuda")
def _attention_info_cuda(q: Tensor, k: Tensor, size: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
    from .cuda import attention_info_qk_cuda

    log_size = _log_size_like(q, size)
    return attention_info_qk_cuda(q, k, size, scale, None if size is None else log_size), log_size


@attention_info_op.register_fake
def _attention_info_fake(q: Tensor, k: Tensor, size: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
    return q.new_empty(q.shape[0], q.shape[2]), _log_size_like(q, size)


def _no_gradient(ctx: Any, grad: Tensor, grad_log_size: Tensor) -> tuple[None, None, None, None]:
    return None, None, None, None  # info is a constant for gradients (reference.attention_info)


attention_info_op.register_autograd(_no_gradient)


# ---- gradients: x_f[s] = sum_{dest[i] = s} w_i x_i / den_s, so dx_i = w_i / den_{dest[i]} dx_f[dest[i]] ----


def _merge_backward(grad: Tensor, dest: Tensor, info: Tensor, size: Tensor, pooling: int) -> Tensor:
    w = pooling_weights(info, size, pooling)
    den = w.new_zeros(grad.shape[0], grad.shape[1]).scatter_add(1, dest, w).clamp_min(1e-12)
    scale = (w / den.gather(1, dest)).to(grad.dtype)
    return grad.gather(1, dest[..., None].expand(-1, -1, grad.shape[2])) * scale[..., None]


def _fusion_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[2], inputs[2], inputs[3])
    ctx.pooling = inputs[10]


def _fusion_backward(ctx: Any, grad_x: Tensor, grad_size: Tensor, grad_dest: Tensor) -> tuple[Any, ...]:
    dest, info, size = ctx.saved_tensors
    return (_merge_backward(grad_x, dest, info, size, ctx.pooling), *([None] * 10))


def _merge_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(inputs[1], inputs[2], inputs[3])
    ctx.pooling = inputs[4]


def _merge_grad(ctx: Any, grad: Tensor) -> tuple[Any, ...]:
    dest, info, size = ctx.saved_tensors
    return _merge_backward(grad, dest, info, size, ctx.pooling), None, None, None, None, None


token_fusion_op.register_autograd(_fusion_backward, setup_context=_fusion_setup)
token_merge_op.register_autograd(_merge_grad, setup_context=_merge_setup)


def token_fusion_call(
    x: Tensor, metric: Tensor, info: Tensor, size: Tensor, attrs: TokenFusionAttrs
) -> tuple[Tensor, Tensor, Tensor]:
    """``reference.token_fusion`` through the custom op (what the plugin lowering traces and what a fused
    block calls where the kernels apply)."""
    return token_fusion_op(x, metric, info, size, *_attribute_values(attrs))


def _attribute_values(attrs: TokenFusionAttrs) -> list[int | float]:
    """The attributes as the ops take them, in the spec's order and kinds."""
    from vitrt.plugins.lowering import attribute_kinds

    kinds = attribute_kinds(TokenFusionAttrs)
    return [int(getattr(attrs, n)) if kind == "int" else float(getattr(attrs, n)) for n, kind in kinds]


def token_fusion_norm_call(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    attrs: TokenFusionAttrs,
    norm: nn.LayerNorm,
    by_token: bool = False,
    residual: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``token_fusion_call`` and ``norm`` of its fused tokens through ``torch.ops.vitrt.token_fusion_norm``:
    (x_fused, size_fused, dest, norm(x_fused), by token with ``by_token``, log(size_fused)); norm a LayerNorm
    over the channels; with ``residual`` the tokens fused are x + residual."""
    values = _attribute_values(attrs)
    weight, bias, eps = norm.weight, norm.bias, float(norm.eps)
    return token_fusion_norm_op(x, metric, info, size, *values, weight, bias, eps, by_token, residual)
