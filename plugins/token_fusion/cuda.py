"""TokenFusion on the GPU: the kernels of ``token_fusion.cu`` launched on raw device pointers (what the
TensorRT plugin's ``enqueue`` does) or on torch CUDA tensors (``token_fusion_cuda``).

Same function as ``reference.token_fusion`` (see ``spec`` for the contract); x, metric, info and size
share one dtype (float32 or float16; the ONNX schema's T), ``dest`` is int64. Four launches:
prepare (norms, factors, pooling weights), scores (A x B, float32), match (bipartite matching -> dest
and each output slot's members), merge (weighted means); for r = 0 match (dest = arange) and copy. The
workspace holds the float32 score matrix
and the per-token vectors: ``workspace_bytes`` = 4 (5 N + Na Nb + N_out + 1) B bytes, rounded up per
region.

torch and cuda-python are imported lazily: this module imports on machines without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitrt.plugins.cuda_launcher import (
    KERNEL_SUFFIX,
    aligned_layout,
    check_kernel_tensor,
    f32,
    i32,
    kernel_device,
    kernel_stream,
    kernel_suffix,
    launch,
    load_module,
    new_workspace,
    ptr,
    tensor_dtype_name,
)

from .spec import DEST_DTYPE, PLUGIN_NAME, SUPPORTED_DTYPES, TokenFusionAttrs, output_tokens, set_sizes

if TYPE_CHECKING:
    from torch import Tensor

SOURCE = "token_fusion"
"""The .cu source (``plugins/token_fusion/token_fusion.cu``) whose fatbin holds the kernels."""
KERNELS = (
    *(
        f"vitrt_tf_{stage}_{sfx}"
        for stage in ("prepare", "scores", "merge", "copy")
        for sfx in KERNEL_SUFFIX.values()
    ),
    "vitrt_tf_match",
)
"""Every kernel this module launches (the build test checks each is in the fatbin)."""
_THREADS = 256
_SLOTS_PER_BLOCK = _THREADS // 32  # merge: one warp per output slot
_COPY_BLOCKS = 1024  # identity copy: grid-stride loops beyond this many blocks


@dataclass(frozen=True)
class FusionDims:
    """Static sizes of one TokenFusion launch: batch B, tokens N, channels C of x, Cm of metric, and r."""

    batch: int
    tokens: int
    channels: int
    metric_channels: int
    r: int

    @property
    def n_out(self) -> int:
        """Tokens out, N - r."""
        return self.tokens - self.r


def _regions(d: FusionDims) -> dict[str, int]:
    na, nb = set_sizes(d.tokens)
    b, n = d.batch, d.tokens
    return {  # name -> bytes (float32 or int32 elements)
        "rnorm": 4 * b * n,
        "finfo": 4 * b * n,
        "fsize": 4 * b * n,
        "weight": 4 * b * n,
        "scores": 4 * b * na * nb,
        "slot_start": 4 * b * (d.n_out + 1),
        "members": 4 * b * n,
    }


def workspace_layout(d: FusionDims) -> dict[str, int]:
    """Byte offset of every workspace region (each aligned to 256 bytes)."""
    return aligned_layout(_regions(d))


def workspace_bytes(d: FusionDims) -> int:
    """Workspace one launch needs, in bytes."""
    return workspace_layout(d)["end"]


def match_shared_bytes(tokens: int) -> int:
    """Dynamic shared memory of ``vitrt_tf_match`` for N tokens, in bytes (5 Na + 3 Nb + 2 N + 1 ints)."""
    na, nb = set_sizes(tokens)
    return 4 * (5 * na + 3 * nb + 2 * tokens + 1)


def _exponent(tau: float) -> float:
    """1 / tau as the reference's ``** (1 / tau)`` uses it; 0 disables the factor (tau = 0)."""
    return 1.0 / tau if tau > 0 else 0.0


def enqueue_scores(
    metric: int,
    info: int,
    size: int,
    workspace: int,
    d: FusionDims,
    attrs: TokenFusionAttrs,
    dtype: str,
    stream: int,
) -> int:
    """Launch prepare + scores; returns the device address of the float32 scores [B, Na, Nb] (inside the
    workspace)."""
    mod = load_module(SOURCE)
    sfx = kernel_suffix(dtype, PLUGIN_NAME)
    lay = workspace_layout(d)
    w = {k: workspace + v for k, v in lay.items()}
    b, n, cm = d.batch, d.tokens, d.metric_channels
    launch(
        mod,
        f"vitrt_tf_prepare_{sfx}",
        (b, 1, 1),
        (_THREADS, 1, 1),
        [ptr(metric), ptr(info), ptr(size), ptr(w["rnorm"]), ptr(w["finfo"]), ptr(w["fsize"]),
         ptr(w["weight"]), i32(n), i32(cm), i32(attrs.pooling)],
        stream,
    )  # fmt: skip
    na, nb = set_sizes(n)
    launch(
        mod,
        f"vitrt_tf_scores_{sfx}",
        (-(-nb // 32), -(-na // 32), b),
        (32, 8, 1),
        [ptr(metric), ptr(w["rnorm"]), ptr(w["finfo"]), ptr(w["fsize"]), ptr(w["scores"]), i32(n), i32(cm),
         f32(_exponent(attrs.tau_sim)), f32(_exponent(attrs.tau_info)), f32(_exponent(attrs.tau_size)),
         i32(attrs.num_protected)],
        stream,
    )  # fmt: skip
    return w["scores"]


def enqueue_match(
    scores: int, dest: int, workspace: int, d: FusionDims, bidirectional: int, stream: int
) -> None:
    """Launch the matching on float32 scores [B, Na, Nb]: writes dest [B, N] (int64) and the groups' CSR
    (slot_start, members) into the workspace."""
    lay = workspace_layout(d)
    launch(
        load_module(SOURCE),
        "vitrt_tf_match",
        (d.batch, 1, 1),
        (_THREADS, 1, 1),
        [ptr(scores), ptr(dest), ptr(workspace + lay["slot_start"]), ptr(workspace + lay["members"]),
         i32(d.tokens), i32(d.r), i32(bidirectional)],
        stream,
        shared_mem=match_shared_bytes(d.tokens),
    )  # fmt: skip


def enqueue(
    x: int,
    metric: int,
    info: int,
    size: int,
    x_out: int,
    size_out: int,
    dest: int,
    workspace: int,
    d: FusionDims,
    attrs: TokenFusionAttrs,
    dtype: str,
    stream: int,
) -> None:
    """The whole op on raw device pointers (C-contiguous tensors): x [B, N, C], metric [B, N, Cm],
    info / size [B, N] of ``dtype`` ("float32" or "float16") -> x_out [B, N - r, C], size_out [B, N - r]
    (same dtype), dest [B, N] int64. ``workspace`` holds ``workspace_bytes(d)`` bytes; ``stream`` is a
    CUDA stream handle as an int. Asynchronous, like any launch."""
    sfx = kernel_suffix(dtype, PLUGIN_NAME)
    if attrs.r != d.r:
        raise ValueError(f"attrs.r={attrs.r} but the launch was sized for r={d.r}")
    if d.r > 0:
        scores = enqueue_scores(metric, info, size, workspace, d, attrs, dtype, stream)
    else:
        scores = 0  # identity: the match kernel only writes arange
    enqueue_match(scores, dest, workspace, d, attrs.bidirectional, stream)
    if d.r == 0:
        nx, ns = d.batch * d.tokens * d.channels, d.batch * d.tokens
        if nx >= 2**31:
            raise ValueError(f"{PLUGIN_NAME}: {nx} elements exceed the kernels' int32 indexing")
        launch(
            load_module(SOURCE),
            f"vitrt_tf_copy_{sfx}",
            (min(-(-nx // _THREADS), _COPY_BLOCKS), 1, 1),
            (_THREADS, 1, 1),
            [ptr(x), ptr(size), ptr(x_out), ptr(size_out), i32(nx), i32(ns)],
            stream,
        )
        return
    lay = workspace_layout(d)
    itemsize = 4 if dtype == "float32" else 2
    vec4 = d.channels % 4 == 0 and x % (4 * itemsize) == 0 and x_out % (4 * itemsize) == 0
    launch(
        load_module(SOURCE),
        f"vitrt_tf_merge_{sfx}",
        (-(-d.n_out // _SLOTS_PER_BLOCK), d.batch, 1),
        (_THREADS, 1, 1),
        [ptr(x), ptr(size), ptr(workspace + lay["weight"]), ptr(workspace + lay["slot_start"]),
         ptr(workspace + lay["members"]), ptr(x_out), ptr(size_out), i32(d.tokens), i32(d.n_out),
         i32(d.channels), i32(vec4)],
        stream,
    )  # fmt: skip


# ---- torch face ----------------------------------------------------------------------------------------


def _checked(x: Tensor, metric: Tensor, info: Tensor, size: Tensor, attrs: TokenFusionAttrs) -> FusionDims:
    for name, t, rank in (("x", x, 3), ("metric", metric, 3), ("info", info, 2), ("size", size, 2)):
        check_kernel_tensor(name, t, x.device)
        if t.dim() != rank:
            raise ValueError(f"{name} must have rank {rank}, got shape {tuple(t.shape)}")
        if t.dtype != x.dtype or t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"x, metric, info, size must share one dtype of {SUPPORTED_DTYPES}, got {name} {t.dtype}"
            )
    b, n, c = x.shape
    if metric.shape[:2] != (b, n) or info.shape != (b, n) or size.shape != (b, n):
        raise ValueError(
            f"shapes must be x [B, N, C], metric [B, N, Cm], info / size [B, N]; got {tuple(x.shape)}, "
            f"{tuple(metric.shape)}, {tuple(info.shape)}, {tuple(size.shape)}"
        )
    output_tokens(n, attrs)  # raises when r exceeds the cap for N
    return FusionDims(b, n, c, metric.shape[2], attrs.r)


def token_fusion_cuda(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    attrs: TokenFusionAttrs,
    *,
    out: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``reference.token_fusion`` with the CUDA kernels, on torch's current stream.

    x [B, N, C], metric [B, N, Cm], info [B, N], size [B, N]: CUDA tensors (CPU ones under
    ``vitrt.plugins.cuda_emulation.emulated_kernels()``) of one dtype (float32 or float16) -> (x_fused
    [B, N - r, C], size_fused [B, N - r], dest [B, N] int64). ``out`` receives the results when given
    (C-contiguous, right shapes and dtypes; the tests pre-fill it with NaN / -1 to check every element
    is written).
    """
    import torch

    d = _checked(x, metric, info, size, attrs)
    x, metric, info, size = (t.contiguous() for t in (x, metric, info, size))
    if out is None:
        out = (
            x.new_empty(d.batch, d.n_out, d.channels),
            x.new_empty(d.batch, d.n_out),
            torch.empty(d.batch, d.tokens, dtype=DEST_DTYPE, device=x.device),
        )
    want = ((d.batch, d.n_out, d.channels), (d.batch, d.n_out), (d.batch, d.tokens))
    for t, shape, dtype in zip(out, want, (x.dtype, x.dtype, DEST_DTYPE), strict=True):
        if tuple(t.shape) != shape or t.dtype != dtype or not t.is_contiguous() or t.device != x.device:
            raise ValueError(
                f"out tensor {tuple(t.shape)} {t.dtype} must be a contiguous {shape} {dtype} on {x.device}"
            )
    work = new_workspace(workspace_bytes(d), x)
    with kernel_device(x):
        enqueue(
            x.data_ptr(), metric.data_ptr(), info.data_ptr(), size.data_ptr(),
            out[0].data_ptr(), out[1].data_ptr(), out[2].data_ptr(), work.data_ptr(),
            d, attrs, tensor_dtype_name(x), kernel_stream(x),
        )  # fmt: skip
    return out


def fusion_scores_cuda(metric: Tensor, info: Tensor, size: Tensor, attrs: TokenFusionAttrs) -> Tensor:
    """The score kernels alone (``reference.fusion_scores``): metric [B, N, Cm], info / size [B, N] ->
    float32 scores [B, Na, Nb] (what the matching kernel ranks)."""
    import torch

    d = _checked(metric, metric, info, size, attrs)
    metric, info, size = (t.contiguous() for t in (metric, info, size))
    work = new_workspace(workspace_bytes(d), metric)
    na, nb = set_sizes(d.tokens)
    with kernel_device(metric):
        enqueue_scores(
            metric.data_ptr(), info.data_ptr(), size.data_ptr(), work.data_ptr(), d, attrs,
            tensor_dtype_name(metric), kernel_stream(metric),
        )  # fmt: skip
    off = workspace_layout(d)["scores"]
    return work[off : off + 4 * d.batch * na * nb].view(torch.float32).view(d.batch, na, nb).clone()


def bipartite_matching_cuda(scores: Tensor, r: int, bidirectional: bool = True) -> Tensor:
    """The matching kernel alone (``reference.bipartite_matching``): float32 scores [B, Na, Nb] with
    Na = Nb or Nb + 1 -> dest [B, Na + Nb] int64."""
    import torch

    check_kernel_tensor("scores", scores, scores.device)
    if scores.dtype != torch.float32 or scores.dim() != 3:
        raise ValueError(
            f"scores must be a float32 tensor [B, Na, Nb], got {scores.dtype} {tuple(scores.shape)}"
        )
    b, na, nb = scores.shape
    if na - nb not in (0, 1):
        raise ValueError(f"Na must be Nb or Nb + 1 (parity split), got {na} and {nb}")
    d = FusionDims(b, na + nb, 1, 1, r)
    scores = scores.contiguous()
    dest = torch.empty(b, d.tokens, dtype=DEST_DTYPE, device=scores.device)
    work = new_workspace(workspace_bytes(d), scores)
    with kernel_device(scores):
        enqueue_match(
            scores.data_ptr(), dest.data_ptr(), work.data_ptr(), d, int(bidirectional), kernel_stream(scores)
        )
    return dest
