"""TokenFusion on the GPU: the kernels of ``token_fusion.cu`` launched on raw device pointers (what the
TensorRT plugin's ``enqueue`` does) or on torch CUDA tensors (``token_fusion_cuda``).

Same function as ``reference.token_fusion`` (see ``spec`` for the contract); x, metric, info and size
share one dtype (float32 or float16; the ONNX schema's T), ``dest`` is int64. Three launches: scores
(A x B, float32, with the norms and factors computed in the same blocks), match (bipartite matching ->
dest), merge (weighted means of the groups dest defines); for r = 0 match (dest = arange) and copy. For
float16 metrics of at most 128 channels and 256 tokens the scores and the matching are one launch
(``enqueue_scores_match``) from a batch of a fifth of the GPU's SMs. The workspace holds the float32
score matrix alone: ``workspace_bytes`` = 4 B Na Nb bytes, rounded up.

``merge_tokens_cuda`` runs the merge kernel alone on any [B, N, C] tensor: a fused block merges its
attention output with it (one-step-ahead attention, see ``module.FusionBlock``).

torch and cuda-python are imported lazily: this module imports on machines without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitrt.plugins.cuda_launcher import (
    KERNEL_SUFFIX,
    KernelArg,
    LoadedModule,
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
INFO_COLUMNS_PER_LANE = (8, 24)
"""Register columns per lane of the attention_info kernels: N <= 32 x this (256 or 768 tokens)."""
SCORE_TILES = (64, 32)
"""Side of the CUDA-core score kernel's output tile: 64, or 32 where 64-tiles would not fill the GPU."""
MMA_TILES = (64, 32)
"""Sides of the tensor-core score kernels' tiles (float16 metrics with Cm % 8 == 0): 64, or 32 where
64-tiles would not fill the GPU. Both give the same bits."""
MMA_THREADS = 256
"""Threads of either tensor-core score kernel (token_fusion.cu's kMmaThreads)."""
INFO_QK_HEAD_DIMS = (32, 64, 128)
"""Head dims of the attention_info kernels that read q and k (float16 on tensor cores)."""
INFO_QK_MAX_TOKENS = 256
"""Most tokens those kernels take (all key rows sit in shared memory); beyond, q k^T goes through a GEMM."""
INFO_QK_KEY_SPLITS = (1, 2, 4, 8)
"""Key splits S those kernels take (dividing their warps): each of a block's 16-row groups of queries is
swept by S warps over S ranges of the keys, so each warp's chain is S times shorter, in S times as many
blocks that each stage all the keys. The launcher takes ``info_qk_key_splits``."""
KERNELS = (
    *(f"vitrt_tf_scores{tile}_{sfx}" for tile in SCORE_TILES for sfx in KERNEL_SUFFIX.values()),
    "vitrt_tf_scores_mma_f16",
    "vitrt_tf_scores_mma64_f16",
    *(
        f"vitrt_tf_{stage}_{sfx}"
        for stage in (
            "merge",
            "copy",
            "info_mean",
            *(f"attention_info{vpl}" for vpl in INFO_COLUMNS_PER_LANE),
        )
        for sfx in KERNEL_SUFFIX.values()
    ),
    *(f"vitrt_tf_layer_norm_{sfx}" for sfx in KERNEL_SUFFIX.values()),
    *(f"vitrt_tf_unfold_layer_norm_{sfx}" for sfx in KERNEL_SUFFIX.values()),
    *(f"vitrt_tf_attention_info_qk{e // 16}_f16" for e in INFO_QK_HEAD_DIMS),
    "vitrt_tf_match",
    "vitrt_tf_match_timed",
    "vitrt_tf_scores_match_f16",
    "vitrt_tf_merge384_f16",
)
"""Every kernel this module launches (the build test checks each is in the fatbin)."""
_THREADS = 256
_WARPS = _THREADS // 32
_MATCH_THREADS = 1024  # one block per batch element: as many warps as the O(N^2) steps can use
_INFO_ROWS = 64  # attention_info: query rows per block (eight per warp, the next row's loads in flight)
_COPY_BLOCKS = 1024  # identity copy: grid-stride loops beyond this many blocks
MATCH_SHARED_LIMIT = 96 * 1024
"""Largest dynamic shared memory the match kernel asks for (the smallest target, sm_120, allows 99 KiB):
up to it the score rows are copied into shared memory, beyond it they are read from the workspace."""


@dataclass(frozen=True)
class FusionDims:
    """Static sizes of one TokenFusion launch: batch B, tokens N, channels C of x, Cm of metric, and r;
    ``metric_pitch``: elements from one metric row to the next (0: Cm, contiguous rows; more where the
    metric is a view of a wider projection, whose batch elements are N rows apart)."""

    batch: int
    tokens: int
    channels: int
    metric_channels: int
    r: int
    metric_pitch: int = 0

    @property
    def metric_ld(self) -> int:
        """Elements between consecutive metric rows."""
        return self.metric_pitch or self.metric_channels

    @property
    def n_out(self) -> int:
        """Tokens out, N - r."""
        return self.tokens - self.r


@dataclass(frozen=True)
class RowNorm:
    """A LayerNorm over the channels that the merge kernel applies to every merged row as it writes it:
    device addresses of its weight and bias [C] (0: 1 and 0) and of the output (same dtype as x), and its
    epsilon. What a fused block's norm after the fusion is, without a pass of its own. The output is
    [B, N - r, C], or with ``by_token`` [B, N, C]: token i's row is the norm of the merged row dest[i]
    (what ``normed.gather(1, dest)`` would give, without the gather)."""

    weight: int
    bias: int
    out: int
    eps: float
    by_token: bool = False


def workspace_layout(d: FusionDims) -> dict[str, int]:
    """Byte offset of every workspace region (each aligned to 256 bytes): the float32 scores."""
    na, nb = set_sizes(d.tokens)
    return aligned_layout({"scores": 4 * d.batch * na * nb})


def workspace_bytes(d: FusionDims) -> int:
    """Workspace one launch needs, in bytes."""
    return workspace_layout(d)["end"]


def _match_table_bytes(tokens: int) -> int:
    na, nb = set_sizes(tokens)
    return 4 * (4 * na + 3 * nb)


def scores_in_shared(tokens: int) -> bool:
    """Whether the match kernel copies a batch element's Na x Nb scores into shared memory."""
    na, nb = set_sizes(tokens)
    return 4 * na * nb + _match_table_bytes(tokens) <= MATCH_SHARED_LIMIT


def match_shared_bytes(tokens: int) -> int:
    """Dynamic shared memory of ``vitrt_tf_match`` for N tokens, in bytes: the scores (when
    ``scores_in_shared``) plus 4 Na + 3 Nb ints."""
    na, nb = set_sizes(tokens)
    return (4 * na * nb if scores_in_shared(tokens) else 0) + _match_table_bytes(tokens)


def score_tile(d: FusionDims, multiprocessors: int) -> int:
    """The score tile for ``d`` on a GPU with ``multiprocessors`` SMs (CUDA-core or tensor-core kernel):
    64 when its blocks cover the GPU, else 32 (four times the blocks, e.g. batch 1); 64 on the CPU
    emulator (0 SMs)."""
    na, nb = set_sizes(d.tokens)
    blocks = d.batch * -(-na // 64) * -(-nb // 64)
    return 64 if blocks >= multiprocessors else 32


def _multiprocessors() -> int:
    """SMs of the GPU the kernels run on; 0 on the CPU emulator (no GPU to fill)."""
    mod = load_module(SOURCE)
    return mod.device.multiprocessors if isinstance(mod, LoadedModule) else 0


def _exponent(tau: float) -> float:
    """1 / tau as the reference's ``** (1 / tau)`` uses it; 0 disables the factor (tau = 0)."""
    return 1.0 / tau if tau > 0 else 0.0


def _exponent_args(attrs: TokenFusionAttrs) -> list[KernelArg]:
    """The score kernels' e_sim, e_info, e_size arguments: one definition for the split score kernels and
    the one-launch scores and matching, whose scores must agree bit for bit."""
    return [f32(_exponent(attrs.tau_sim)), f32(_exponent(attrs.tau_info)), f32(_exponent(attrs.tau_size))]


def _itemsize(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def enqueue_scores(
    metric: int,
    info: int,
    size: int,
    scores: int,
    d: FusionDims,
    attrs: TokenFusionAttrs,
    dtype: str,
    stream: int,
    tile: int | None = None,
    mma_tile: int | None = None,
) -> None:
    """Launch the score kernel: metric [B, N, Cm] (rows ``d.metric_ld`` elements apart), info / size
    [B, N] of ``dtype`` -> float32 scores [B, Na, Nb] at device address ``scores``. Tensor cores
    (``vitrt_tf_scores_mma_f16`` / ``vitrt_tf_scores_mma64_f16``, ``mma_tile`` 32 / 64) for float16 with
    Cm % 8 == 0 and 16-byte aligned rows, unless ``tile`` (64 or 32) names a CUDA-core kernel; either tile
    defaults to ``score_tile`` for this GPU."""
    mod = load_module(SOURCE)
    sfx = kernel_suffix(dtype, PLUGIN_NAME)
    n, cm, ld = d.tokens, d.metric_channels, d.metric_ld
    na, nb = set_sizes(n)
    sms = _multiprocessors()
    head: list[KernelArg] = [
        ptr(metric),
        ptr(info),
        ptr(size),
        ptr(scores),
        i32(n),
        i32(cm),
        i32(ld),
        *_exponent_args(attrs),
    ]
    if tile is None and dtype == "float16" and cm % 8 == 0 and ld % 8 == 0 and metric % 16 == 0:
        side = score_tile(d, sms) if mma_tile is None else mma_tile
        if side not in MMA_TILES:
            raise ValueError(f"tensor-core score tile must be one of {MMA_TILES}, got {side}")
        name = "vitrt_tf_scores_mma_f16" if side == 32 else f"vitrt_tf_scores_mma{side}_f16"
        launch(
            mod, name, (-(-nb // side), -(-na // side), d.batch), (MMA_THREADS, 1, 1),
            [*head, i32(attrs.num_protected)], stream,
        )  # fmt: skip
        return
    if mma_tile is not None:
        raise ValueError(
            "mma_tile names a tensor-core kernel: float16 metrics, Cm % 8 == 0, no CUDA-core tile"
        )
    if tile is None:
        tile = score_tile(d, sms)
    if tile not in SCORE_TILES:
        raise ValueError(f"score tile must be one of {SCORE_TILES}, got {tile}")
    vec4 = cm % 4 == 0 and ld % 4 == 0 and metric % (4 * _itemsize(dtype)) == 0
    launch(
        mod,
        f"vitrt_tf_scores{tile}_{sfx}",
        (-(-nb // tile), -(-na // tile), d.batch),
        (_THREADS, 1, 1),
        [*head, i32(attrs.num_protected), i32(vec4)],
        stream,
    )


MATCH_PHASES = (
    "start", "scores to shared memory", "best B partner of each A token", "A ranks", "slots of unmerged A",
    "best A slot of each B token", "B ranks", "dest written",
)  # fmt: skip
"""The clock marks of ``vitrt_tf_match_timed`` (its phase_clock), each named by the step it ends."""


def enqueue_match(
    scores: int, dest: int, d: FusionDims, bidirectional: int, stream: int, phase_clock: int = 0
) -> None:
    """Launch the matching on float32 scores [B, Na, Nb] (unused when r = 0): writes dest [B, N] (int64).
    ``phase_clock`` (a diagnostic; 0 = off): int64 [B, len(MATCH_PHASES)] that receives the SM clock at
    each mark (r > 0; one-way matching skips the two phase-2 marks), from a copy of the kernel compiled
    with the marks (``vitrt_tf_match_timed``)."""
    args: list[KernelArg] = [
        ptr(scores),
        ptr(dest),
        i32(d.tokens),
        i32(d.r),
        i32(bidirectional),
        i32(scores_in_shared(d.tokens)),
    ]
    launch(
        load_module(SOURCE),
        "vitrt_tf_match_timed" if phase_clock else "vitrt_tf_match",
        (d.batch, 1, 1),
        (_MATCH_THREADS, 1, 1),
        [*args, ptr(phase_clock)] if phase_clock else args,
        stream,
        shared_mem=match_shared_bytes(d.tokens) if d.r else 0,
    )


SCORES_MATCH_MAX_CHANNELS = 128
"""Most metric channels of the one-launch scores and matching: the batch element's metric rows sit in
shared memory, and a row's norm is one 128-channel step of the split score kernel (same bits)."""
SCORES_MATCH_MAX_TOKENS = 256
"""Most tokens of the one-launch scores and matching: each warp holds at most 4 16 x 8 score units."""
SCORES_MATCH_MIN_BATCH_PER_SM = 0.2
"""The batch, in SMs of the GPU, from which the scores and the matching run as one launch. Measured on an
H100 (132 SMs; N = 197, Cm = 64, r = 16), one launch / split launches: 1.07 at batch 1, 1.03 at 8, 1.01
at 16, 0.99 at 24, 0.91 at 32, 0.89 at 64, 0.80 at 132, 0.84 at 264. One block per batch element does
all the score work on one SM, which at small batches the split score kernel spreads over many."""


def scores_match_shared_bytes(tokens: int, metric_channels: int) -> int:
    """Dynamic shared memory of ``vitrt_tf_scores_match_f16`` in bytes: the staged metric rows (Na rounded
    up to 16 and Nb to 8, Cm to 16 plus 8 halves) or, in the same bytes afterwards, the Na x Nb float32
    scores, whichever is larger (rounded up to 16 bytes); the norms and the two factors per token; the
    matching's tables."""
    na, nb = set_sizes(tokens)
    rows = (-(-na // 16) * 16 + -(-nb // 8) * 8) * (-(-metric_channels // 16) * 16 + 8)
    region = -(-max(2 * rows, 4 * na * nb) // 16) * 16
    return region + 12 * tokens + _match_table_bytes(tokens)


def scores_match_applies(d: FusionDims, dtype: str, metric: int) -> str | None:
    """Why the scores and the matching of ``d`` cannot be one launch (``enqueue_scores_match``), or None
    when they can: a float16 metric of at most SCORES_MATCH_MAX_CHANNELS channels, a multiple of 8 with
    16-byte aligned rows (address ``metric``), at most SCORES_MATCH_MAX_TOKENS tokens, r > 0."""
    cm, ld = d.metric_channels, d.metric_ld
    if dtype != "float16":
        return f"the metric is {dtype}, not float16"
    if cm > SCORES_MATCH_MAX_CHANNELS:
        return f"the metric has {cm} channels, more than {SCORES_MATCH_MAX_CHANNELS}"
    if cm < 8 or cm % 8 or ld % 8 or metric % 16:
        return f"the metric's rows ({cm} channels, {ld} apart) are not 16-byte vectors"
    if d.tokens > SCORES_MATCH_MAX_TOKENS:
        return f"{d.tokens} tokens exceed {SCORES_MATCH_MAX_TOKENS}"
    if d.r == 0:
        return "r = 0 has no scores"
    return None


def enqueue_scores_match(
    metric: int, info: int, size: int, dest: int, d: FusionDims, attrs: TokenFusionAttrs, stream: int
) -> None:
    """Launch ``vitrt_tf_scores_match_f16``: float16 metric [B, N, Cm] (rows ``d.metric_ld`` elements
    apart), info / size [B, N] -> dest [B, N] (int64), the scores never written; the same dest as
    ``enqueue_scores`` then ``enqueue_match`` (bit for bit). The caller checks ``scores_match_applies``."""
    launch(
        load_module(SOURCE),
        "vitrt_tf_scores_match_f16",
        (d.batch, 1, 1),
        (_MATCH_THREADS, 1, 1),
        [ptr(metric), ptr(info), ptr(size), ptr(dest), i32(d.tokens), i32(d.metric_channels),
         i32(d.metric_ld), *_exponent_args(attrs), i32(attrs.num_protected), i32(d.r),
         i32(attrs.bidirectional)],
        stream,
        shared_mem=scores_match_shared_bytes(d.tokens, d.metric_channels),
    )  # fmt: skip


def _scores_match_chosen(d: FusionDims, dtype: str, metric: int, fused_match: bool | None) -> bool:
    """Whether ``enqueue`` runs the scores and the matching (r > 0) as one launch: ``fused_match`` True /
    False forces it (True raises ValueError where it cannot); None decides by ``scores_match_applies`` and
    the batch, from SCORES_MATCH_MIN_BATCH_PER_SM per SM (any batch on the CPU emulator, which has no
    SMs). With r = 0 ``enqueue`` launches no scores and does not ask."""
    why_not = scores_match_applies(d, dtype, metric)
    if fused_match is not None:
        if fused_match and why_not is not None:
            raise ValueError(f"the scores and the matching cannot be one launch: {why_not}")
        return fused_match
    if why_not is not None:
        return False
    sms = _multiprocessors()
    return not sms or d.batch >= SCORES_MATCH_MIN_BATCH_PER_SM * sms


MERGE_384 = (256, 384)
"""Row widths (exclusive, inclusive) that the float16 merge takes in 4-half vectors, three per lane
(``vitrt_tf_merge384_f16``, rows 8-byte aligned): one sweep of the row with every lane busy, where 8-half
vectors leave half the lanes idle in their second vector (DeiT-S, T2T-ViT-14: 384 channels)."""


def merge_shared_bytes(tokens: int) -> int:
    """Dynamic shared memory of ``vitrt_tf_merge`` for N tokens, in bytes: the batch element's pooling
    weights, sizes (float32) and dest (int32), 12 N, then the member bitmasks of the block's ``_WARPS``
    output slots, one uint32 per slot and chunk of 32 tokens: 4 * _WARPS * ceil(N / 32)."""
    return 12 * tokens + 4 * _WARPS * -(-tokens // 32)


def enqueue_merge(
    x: int,
    info: int,
    size: int,
    dest: int,
    x_out: int,
    size_out: int,
    d: FusionDims,
    pooling: int,
    dtype: str,
    stream: int,
    norm: RowNorm | None = None,
    residual: int = 0,
    log_size_out: int = 0,
    base: int = 0,
) -> None:
    """Launch the merge: x [B, N, C] -> x_out [B, N - r, C], the weighted mean of each group of tokens with
    one dest (int64 [B, N]), weights from info / size [B, N] and ``pooling``; size_out [B, N - r] = the
    groups' summed sizes (not written when ``size_out`` is 0), and log_size_out [B, N - r] their log (when
    not 0); with ``norm``, also the LayerNorm of every merged row (``RowNorm``); with ``residual``
    [B, N, C], the rows merged are x + residual (each sum rounded to ``dtype``, as torch's add stores it);
    with ``base`` [B, N - r, C], x_out = base + the merged rows (rounded as torch's add of the two). Same
    dtype for all but dest."""
    norm_ptrs = (norm.weight, norm.bias, norm.out) if norm else (0, 0, 0)
    rows = (x, residual, base, x_out, *norm_ptrs)
    name = f"vitrt_tf_merge_{kernel_suffix(dtype, PLUGIN_NAME)}"
    if dtype == "float16" and MERGE_384[0] < d.channels <= MERGE_384[1] and d.channels % 4 == 0:
        vec = all(p % 8 == 0 for p in rows)  # 4-half vectors, three per lane: one sweep of every lane
        name = "vitrt_tf_merge384_f16" if vec else name
    else:
        vec = d.channels % (4 if dtype == "float32" else 8) == 0 and all(p % 16 == 0 for p in rows)
    launch(
        load_module(SOURCE),
        name,
        (-(-d.n_out // _WARPS), d.batch, 1),
        (_THREADS, 1, 1),
        [*map(ptr, (x, residual, base, info, size, dest, x_out, size_out, log_size_out)),
         i32(d.tokens), i32(d.n_out), i32(d.channels), i32(pooling), i32(vec), *map(ptr, norm_ptrs),
         f32(norm.eps if norm else 0.0), i32(bool(norm and norm.by_token))],
        stream,
        shared_mem=merge_shared_bytes(d.tokens),
    )  # fmt: skip


def info_kernel(tokens: int) -> int | None:
    """Columns per lane of the attention_info kernel for N tokens, or None when N exceeds them all."""
    return next((vpl for vpl in INFO_COLUMNS_PER_LANE if tokens <= 32 * vpl), None)


def enqueue_attention_info(
    logits: int,
    size: int,
    colsum: int,
    batch: int,
    heads: int,
    tokens: int,
    scale: float,
    dtype: str,
    stream: int,
) -> int:
    """Launch ``vitrt_tf_attention_info``: logits [B, H, N, N] (q k^T, unscaled) and size [B, N] (0: no
    proportional attention) of ``dtype`` -> float32 colsum [B, H, chunks, N], each chunk's query rows'
    softmax probabilities summed per key; returns the number of chunks."""
    vpl = info_kernel(tokens)
    if vpl is None:
        raise ValueError(
            f"attention_info supports up to {32 * INFO_COLUMNS_PER_LANE[-1]} tokens, got {tokens}"
        )
    chunks = -(-tokens // _INFO_ROWS)
    launch(
        load_module(SOURCE),
        f"vitrt_tf_attention_info{vpl}_{kernel_suffix(dtype, PLUGIN_NAME)}",
        (chunks, heads, batch),
        (_THREADS, 1, 1),
        [ptr(logits), ptr(size), ptr(colsum), i32(tokens), i32(heads), i32(_INFO_ROWS), f32(scale)],
        stream,
        shared_mem=4 * _WARPS * tokens,
    )  # fmt: skip
    return chunks


def info_qk_warps(head_dim: int) -> int:
    """Warps per block of ``vitrt_tf_attention_info_qk`` (W in the kernel), 16 query rows each: 8 up to
    E = 64, 4 for E = 128, whose 8-warp blocks would ask more shared memory than sm_120 gives a block."""
    return 8 if head_dim <= 64 else 4


def info_qk_rows(head_dim: int, splits: int = 1) -> int:
    """Query rows per block of ``vitrt_tf_attention_info_qk``: 16 per group of ``splits`` warps."""
    return 16 * info_qk_warps(head_dim) // splits


INFO_QK_WAVES = 2
"""Blocks per SM up to which ``info_qk_key_splits`` adds key splits: a split that keeps the q, k kernel's
blocks within two per SM shortened it on an H200 (benchmarks/results/h200-2026-11-28/), one that went past
lengthened it."""


def info_qk_key_splits(batch: int, heads: int, tokens: int, head_dim: int, multiprocessors: int) -> int:
    """The key splits the launcher takes (``INFO_QK_KEY_SPLITS``, at most the block's warps): the most whose
    blocks (batch x heads x ``info_qk_chunks``) stay within ``INFO_QK_WAVES`` per SM, else 1; 1 on the CPU
    emulator (0 SMs). Measured for a fused DeiT-S block (6 heads, 197 tokens, E = 64) on an H200 (132 SMs),
    graph time against 1 split in the same run: batch 1 (12 blocks unsplit) 0.76x at 2, 0.67x at 4, 0.68x at
    8 (taken: 78 blocks); batch 8 (96 blocks) 0.87x at 2 (taken: 192 blocks), 0.91x at 4 (336), 1.08x at 8;
    batch 64 (768 blocks) 1.10x at 2, 1.31x at 4 (1 taken). More splits give each warp a shorter chain over
    the keys where the blocks would leave SMs idle, and cost a restaging of all keys per block."""
    splits = 1
    for s in INFO_QK_KEY_SPLITS:
        blocks = batch * heads * info_qk_chunks(tokens, head_dim, s)
        if s <= info_qk_warps(head_dim) and blocks <= INFO_QK_WAVES * multiprocessors:
            splits = s
    return splits


def info_qk_shared_bytes(tokens: int, head_dim: int, splits: int = 1) -> int:
    """Dynamic shared memory of ``vitrt_tf_attention_info_qk`` in bytes: the key rows (N rounded up to 8)
    and the block's query rows (``info_qk_rows``) at a pitch of E + 8 halves, the bias and each row group's
    column sums; with splits > 1 also each warp's rows' (max, sum) pairs."""
    padded, warps, rows = -(-tokens // 8) * 8, info_qk_warps(head_dim), info_qk_rows(head_dim, splits)
    pairs = 8 * 16 * warps if splits > 1 else 0
    return 2 * (padded + rows) * (head_dim + 8) + 4 * padded + 4 * (rows // 16) * padded + pairs


def info_qk_applies(dtype: str, tokens: int, head_dim: int) -> bool:
    """Whether q and k of ``dtype`` [B, H, N, E] go to the attention_info kernel that reads them directly."""
    return dtype == "float16" and head_dim in INFO_QK_HEAD_DIMS and tokens <= INFO_QK_MAX_TOKENS


def enqueue_attention_info_qk(
    q: int,
    k: int,
    size: int,
    colsum: int,
    batch: int,
    heads: int,
    tokens: int,
    head_dim: int,
    q_strides: tuple[int, int, int],
    k_strides: tuple[int, int, int],
    scale: float,
    stream: int,
    splits: int = 1,
) -> int:
    """Launch ``vitrt_tf_attention_info_qk``: float16 q, k [B, H, N, E] at element strides (batch, head,
    token) with unit channel stride and 16-byte aligned rows, size [B, N] float16 (0: no proportional
    attention) -> float32 colsum [B, H, chunks, N], as ``enqueue_attention_info``, in ``splits`` key splits
    (``INFO_QK_KEY_SPLITS``, at most the block's warps); returns the chunks (``info_qk_chunks``)."""
    if not info_qk_applies("float16", tokens, head_dim):
        raise ValueError(
            f"attention_info from q, k takes head dims {INFO_QK_HEAD_DIMS} and up to {INFO_QK_MAX_TOKENS} "
            f"tokens, got E={head_dim}, N={tokens}"
        )
    for name, base, strides in (("q", q, q_strides), ("k", k, k_strides)):
        if base % 16 or any(st % 8 for st in strides) or any(not 0 <= st < 2**31 for st in strides):
            raise ValueError(f"{name}: rows must be 16-byte aligned with int32 strides, got {strides}")
    warps = info_qk_warps(head_dim)
    _check_key_splits(splits, head_dim)
    chunks = info_qk_chunks(tokens, head_dim, splits)
    launch(
        load_module(SOURCE),
        f"vitrt_tf_attention_info_qk{head_dim // 16}_f16",
        (chunks, heads, batch),
        (32 * warps, 1, 1),
        [ptr(q), ptr(k), ptr(size), ptr(colsum), i32(tokens), i32(heads), *map(i32, q_strides),
         *map(i32, k_strides), f32(scale), i32(splits)],
        stream,
        shared_mem=info_qk_shared_bytes(tokens, head_dim, splits),
    )  # fmt: skip
    return chunks


def _check_key_splits(splits: int, head_dim: int) -> None:
    """Raise unless ``splits`` is one of ``INFO_QK_KEY_SPLITS`` and at most the q, k kernel's warps."""
    warps = info_qk_warps(head_dim)
    if splits not in INFO_QK_KEY_SPLITS or splits > warps:
        raise ValueError(f"key splits must be one of {INFO_QK_KEY_SPLITS} up to {warps} at E={head_dim}, "
                         f"got {splits}")  # fmt: skip


def info_qk_chunks(tokens: int, head_dim: int, splits: int = 1) -> int:
    """Blocks per (batch element, head) of ``vitrt_tf_attention_info_qk``: the chunks of query rows."""
    return -(-tokens // info_qk_rows(head_dim, splits))


def enqueue_info_mean(
    colsum: int,
    info: int,
    batch: int,
    heads: int,
    tokens: int,
    chunks: int,
    dtype: str,
    stream: int,
    size: int = 0,
    log_size: int = 0,
) -> None:
    """Launch ``vitrt_tf_info_mean``: float32 colsum [B, H, chunks, N] -> info [B, N] of ``dtype``, the
    sum over heads and chunks / (H N); with ``log_size`` (and ``size``, both [B, N] of ``dtype``) also
    log_size = log(size), proportional attention's bias."""
    launch(
        load_module(SOURCE),
        f"vitrt_tf_info_mean_{kernel_suffix(dtype, PLUGIN_NAME)}",
        (-(-tokens // _THREADS), batch, 1),
        (_THREADS, 1, 1),
        [ptr(colsum), ptr(info), i32(tokens), i32(heads), i32(chunks), ptr(size), ptr(log_size)],
        stream,
    )


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
    tile: int | None = None,
    norm: RowNorm | None = None,
    residual: int = 0,
    log_size_out: int = 0,
    fused_match: bool | None = None,
) -> None:
    """The whole op on raw device pointers (C-contiguous tensors): x [B, N, C], metric [B, N, Cm],
    info / size [B, N] of ``dtype`` ("float32" or "float16") -> x_out [B, N - r, C], size_out [B, N - r]
    (same dtype), dest [B, N] int64. ``workspace`` holds ``workspace_bytes(d)`` bytes; ``stream`` is a
    CUDA stream handle as an int; ``tile``: see ``enqueue_scores`` (a tile runs the split launches);
    ``norm``, ``residual`` and ``log_size_out`` (r > 0 only): the merge also writes the LayerNorm of x_out
    (``RowNorm``), merges x + residual and writes log(size_out) (``enqueue_merge``); ``fused_match``:
    scores and matching in one launch (``enqueue_scores_match``) or not, None = the launcher's choice
    (``_scores_match_chosen``). Asynchronous, like any launch."""
    sfx = kernel_suffix(dtype, PLUGIN_NAME)
    if attrs.r != d.r:
        raise ValueError(f"attrs.r={attrs.r} but the launch was sized for r={d.r}")
    if (norm is not None or residual or log_size_out) and d.r == 0:
        raise ValueError("a row norm, residual or log size rides on the merge, which r = 0 does not launch")
    scores = workspace + workspace_layout(d)["scores"]
    if tile is not None and fused_match:
        raise ValueError("a score tile names the split launches; it cannot go with fused_match=True")
    if d.r > 0 and tile is None and _scores_match_chosen(d, dtype, metric, fused_match):
        enqueue_scores_match(metric, info, size, dest, d, attrs, stream)
    else:
        if d.r > 0:
            enqueue_scores(metric, info, size, scores, d, attrs, dtype, stream, tile)
        enqueue_match(scores, dest, d, attrs.bidirectional, stream)
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
    rest = (x_out, size_out, d, attrs.pooling, dtype, stream, norm, residual, log_size_out)
    enqueue_merge(x, info, size, dest, *rest)


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


def _metric_rows(metric: Tensor, d: FusionDims) -> tuple[Tensor, FusionDims]:
    """The metric as the score kernels read it, and ``d`` with its row pitch: a view whose rows are evenly
    spaced, unit-stride and at least Cm apart, with batch elements N rows apart (a slice of a wider
    projection, such as ToMe's key mean beside q, k and v) is read in place; anything else is copied to
    contiguous rows first."""
    import dataclasses

    b_stride, row, channel = metric.stride()
    pitch = row if channel == 1 and b_stride == d.tokens * row and d.metric_channels <= row < 2**31 else 0
    if not pitch:
        metric = metric.contiguous()
    return metric, dataclasses.replace(d, metric_pitch=pitch if pitch != d.metric_channels else 0)


def token_fusion_cuda(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    attrs: TokenFusionAttrs,
    *,
    out: tuple[Tensor, Tensor, Tensor] | None = None,
    tile: int | None = None,
    fused_match: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``reference.token_fusion`` with the CUDA kernels, on torch's current stream.

    x [B, N, C], metric [B, N, Cm], info [B, N], size [B, N]: CUDA tensors (CPU ones under
    ``vitrt.plugins.cuda_emulation.emulated_kernels()``) of one dtype (float32 or float16) -> (x_fused
    [B, N - r, C], size_fused [B, N - r], dest [B, N] int64). ``out`` receives the results when given
    (C-contiguous, right shapes and dtypes; the tests pre-fill it with NaN / -1 to check every element
    is written). ``tile``: the score tile (``enqueue_scores``); ``fused_match``: scores and matching in
    one launch or not (``enqueue``; None: the launcher's choice). No host synchronisation: capturable in
    a CUDA graph once the kernels are loaded (one call before capture).
    """
    x_f, size_f, dest, _ = _token_fusion(
        x, metric, info, size, attrs, out, tile, None, fused_match=fused_match
    )
    return x_f, size_f, dest


def token_fusion_norm_cuda(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    attrs: TokenFusionAttrs,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    by_token: bool = False,
    residual: Tensor | None = None,
    log_size_fused: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``token_fusion_cuda`` and ``F.layer_norm(x_fused, (C,), weight, bias, eps)`` in the same launches:
    the merge kernel writes both (a fused block's norm after its fusion). weight / bias: [C] of x's dtype,
    or None. -> (x_fused, size_fused, dest, normed [B, N - r, C]); with ``by_token`` normed is [B, N, C],
    token i's row the norm of x_fused[dest[i]] (``RowNorm``). ``residual`` (like x): the op's x is
    x + residual, which the merge forms as it reads the rows (a block's residual add; the sum is never
    written), bit for bit torch's add. ``log_size_fused`` (a contiguous [B, N - r] tensor of x's dtype)
    receives log(size_fused), the next block's proportional-attention bias, from the merge's launch."""
    norm = (weight, bias, eps, by_token)
    x_f, size_f, dest, normed = _token_fusion(
        x, metric, info, size, attrs, None, None, norm, residual, log_size_fused
    )
    assert normed is not None
    return x_f, size_f, dest, normed


def _norm_params(
    weight: Tensor | None, bias: Tensor | None, x: Tensor, what: str, channels: int | None = None
) -> tuple[Tensor | None, Tensor | None]:
    """A LayerNorm's weight and bias (each None or [C] of x's dtype on x's device; C = ``channels``, by
    default x.shape[-1]) as the kernels read them: contiguous. ``what`` prefixes their names in errors."""
    c = x.shape[-1] if channels is None else channels
    for name, param in (("weight", weight), ("bias", bias)):
        if param is None:
            continue
        check_kernel_tensor(f"{what}{name}", param, x.device)
        if tuple(param.shape) != (c,) or param.dtype != x.dtype:
            raise ValueError(f"{what}{name} must be [{c}] {x.dtype}, got {param.dtype} {tuple(param.shape)}")
    return (None if weight is None else weight.contiguous(), None if bias is None else bias.contiguous())


def _token_fusion(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    attrs: TokenFusionAttrs,
    out: tuple[Tensor, Tensor, Tensor] | None,
    tile: int | None,
    norm: tuple[Tensor | None, Tensor | None, float, bool] | None,
    residual: Tensor | None = None,
    log_size_out: Tensor | None = None,
    fused_match: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    import torch

    d = _checked(x, metric, info, size, attrs)
    log_ptr = _log_size_ptr(log_size_out, (d.batch, d.n_out), x)
    if residual is not None:
        _check_like_x("residual", residual, x)
        if d.r == 0:  # no merge to form the sum in: the copy kernel copies torch's
            x, residual = x + residual, None
    x, info, size = (t.contiguous() for t in (x, info, size))
    metric, d = _metric_rows(metric, d)
    residual = None if residual is None else residual.contiguous()
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
    normed, row_norm = None, None
    if norm is not None:
        weight, bias, eps, by_token = norm
        weight, bias = _norm_params(weight, bias, x, "norm ")
        if d.r == 0:  # no merge kernel to ride on: the copy, then the norm (dest = arange: by token too)
            normed = torch.nn.functional.layer_norm(x, (d.channels,), weight, bias, eps)
        else:
            normed = x.new_empty(d.batch, d.tokens if by_token else d.n_out, d.channels)
            addr = [0 if param is None else param.data_ptr() for param in (weight, bias, normed)]
            row_norm = RowNorm(addr[0], addr[1], addr[2], float(eps), by_token)
    work = new_workspace(workspace_bytes(d), x)
    with kernel_device(x):
        enqueue(
            x.data_ptr(), metric.data_ptr(), info.data_ptr(), size.data_ptr(),
            out[0].data_ptr(), out[1].data_ptr(), out[2].data_ptr(), work.data_ptr(),
            d, attrs, tensor_dtype_name(x), kernel_stream(x), tile, row_norm,
            0 if residual is None else residual.data_ptr(),
            0 if d.r == 0 else log_ptr, fused_match=fused_match,
        )  # fmt: skip
    if log_size_out is not None and d.r == 0:  # no merge kernel: the sizes are copied, their log by torch
        torch.log(out[1], out=log_size_out)
    return (*out, normed)


def merge_tokens_cuda(
    x: Tensor, dest: Tensor, info: Tensor, size: Tensor, pooling: int, n_out: int
) -> Tensor:
    """``reference.merge_tokens(x, dest, reference.pooling_weights(info, size, pooling), n_out)`` with the
    merge kernel: x [B, N, C], dest [B, N] int64 (every slot 0 .. n_out - 1 used), info / size [B, N] in
    x's dtype -> [B, n_out, C]. What a fused block applies to its attention output."""
    return _merge_tokens(x, dest, info, size, pooling, n_out, None, None)[0]


def merge_add_norm_cuda(
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
    """``merge_tokens_cuda`` of x into base's n_out slots, added to base, and the LayerNorm of the sum, in
    one launch: base [B, n_out, C] like x -> (s = base + merged, F.layer_norm(s, (C,), weight, bias, eps)),
    each add rounded as torch's. A fused block's residual add after its merged attention branch and the
    norm after it."""
    if base.dim() != 3 or base.shape[0] != x.shape[0] or base.shape[2] != x.shape[2] or base.dtype != x.dtype:
        raise ValueError(f"base must be [{x.shape[0]}, n_out, {x.shape[2]}] {x.dtype}, got {base.dtype} "
                         f"{tuple(base.shape)}")  # fmt: skip
    total, normed = _merge_tokens(x, dest, info, size, pooling, base.shape[1], base, (weight, bias, eps))
    assert normed is not None
    return total, normed


def _merge_tokens(
    x: Tensor,
    dest: Tensor,
    info: Tensor,
    size: Tensor,
    pooling: int,
    n_out: int,
    base: Tensor | None,
    norm: tuple[Tensor | None, Tensor | None, float] | None,
) -> tuple[Tensor, Tensor | None]:
    import torch

    b, n, c = x.shape
    for name, t in (("x", x), ("dest", dest), ("info", info), ("size", size)):
        check_kernel_tensor(name, t, x.device)
    if dest.dtype != DEST_DTYPE or tuple(dest.shape) != (b, n):
        raise ValueError(f"dest must be int64 [{b}, {n}], got {dest.dtype} {tuple(dest.shape)}")
    if info.dtype != x.dtype or size.dtype != x.dtype or x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x, info, size must share one dtype of {SUPPORTED_DTYPES}")
    x, dest, info, size = (t.contiguous() for t in (x, dest, info, size))
    out = torch.empty(b, n_out, c, dtype=x.dtype, device=x.device)
    normed, row_norm = None, None
    if norm is not None:
        weight, bias = _norm_params(norm[0], norm[1], x, "")
        normed = torch.empty_like(out)
        addr = [0 if t is None else t.data_ptr() for t in (weight, bias, normed)]
        row_norm = RowNorm(addr[0], addr[1], addr[2], float(norm[2]))
    if base is not None:
        check_kernel_tensor("base", base, x.device)
        base = base.contiguous()
    with kernel_device(x):
        enqueue_merge(
            x.data_ptr(), info.data_ptr(), size.data_ptr(), dest.data_ptr(), out.data_ptr(), 0,
            FusionDims(b, n, c, c, n - n_out), pooling, tensor_dtype_name(x), kernel_stream(x), row_norm,
            base=0 if base is None else base.data_ptr(),
        )  # fmt: skip
    return out, normed


def _checked_size(size: Tensor | None, b: int, n: int, like: Tensor) -> Tensor | None:
    """Proportional attention's token sizes for the attention_info kernels: None, or [b, n] of ``like``'s
    dtype on its device, made contiguous."""
    if size is None:
        return None
    check_kernel_tensor("size", size, like.device)
    if size.dtype != like.dtype or tuple(size.shape) != (b, n):
        raise ValueError(f"size must be [{b}, {n}] {like.dtype}, got {size.dtype} {tuple(size.shape)}")
    return size.contiguous()


def _info_buffers(b: int, h: int, n: int, chunks: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """The attention_info kernels' float32 column sums [B, H, chunks, N] and the info [B, N] they are
    averaged into (``like``'s dtype and device)."""
    import torch

    colsum = torch.empty(b, h, chunks, n, dtype=torch.float32, device=like.device)
    return colsum, torch.empty(b, n, dtype=like.dtype, device=like.device)


def attention_info_cuda(
    logits: Tensor, size: Tensor | None, scale: float, log_size: Tensor | None = None
) -> Tensor:
    """``reference.attention_info`` with the kernel: logits [B, H, N, N] (q k^T before the scale), size
    [B, N] or None (proportional attention: log size added per key) -> [B, N] in the logits' dtype, the
    attention each key receives averaged over heads and queries. The probabilities are never written.
    ``log_size``: a tensor that receives log(size) from the same launches (``_checked_log_size``)."""

    check_kernel_tensor("logits", logits, logits.device)
    if logits.dim() != 4 or logits.shape[2] != logits.shape[3] or logits.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"logits must be [B, H, N, N] of {SUPPORTED_DTYPES}, got {logits.dtype} {tuple(logits.shape)}"
        )
    b, h, n, _ = logits.shape
    size = _checked_size(size, b, n, logits)
    log_ptr = _checked_log_size(log_size, size, logits)
    logits = logits.contiguous()
    dtype, stream = tensor_dtype_name(logits), kernel_stream(logits)
    colsum, info = _info_buffers(b, h, n, -(-n // _INFO_ROWS), logits)
    with kernel_device(logits):
        size_ptr = 0 if size is None else size.data_ptr()
        chunks = enqueue_attention_info(
            logits.data_ptr(), size_ptr, colsum.data_ptr(), b, h, n, scale, dtype, stream
        )
        sums = (colsum.data_ptr(), info.data_ptr())
        enqueue_info_mean(*sums, b, h, n, chunks, dtype, stream, size_ptr, log_ptr)
    return info


def _checked_log_size(log_size: Tensor | None, size: Tensor | None, like: Tensor) -> int:
    """The device address of ``log_size``, which receives log(size) (0: none asked): a contiguous tensor of
    size's shape and dtype, given only with a size."""
    if log_size is not None and size is None:
        raise ValueError("log_size needs a size")
    return _log_size_ptr(log_size, None if size is None else tuple(size.shape), like)


def _log_size_ptr(log_size: Tensor | None, shape: tuple[int, ...] | None, like: Tensor) -> int:
    """The device address of ``log_size`` (0 for None), checked to be a contiguous tensor of ``shape`` in
    ``like``'s dtype on its device."""
    if log_size is None:
        return 0
    check_kernel_tensor("log_size", log_size, like.device)
    if tuple(log_size.shape) != shape or log_size.dtype != like.dtype or not log_size.is_contiguous():
        raise ValueError(f"log_size must be a contiguous {like.dtype} {shape}, got "
                         f"{log_size.dtype} {tuple(log_size.shape)}")  # fmt: skip
    return int(log_size.data_ptr())


def attention_info_qk_cuda(
    q: Tensor,
    k: Tensor,
    size: Tensor | None,
    scale: float,
    log_size: Tensor | None = None,
    *,
    key_splits: int | None = None,
) -> Tensor:
    """``reference.attention_info(q @ k^T, size, scale)``: q, k [B, H, N, E] (any strides), size [B, N] or
    None -> [B, N] in q's dtype. Float16 with E in ``INFO_QK_HEAD_DIMS`` and N <= ``INFO_QK_MAX_TOKENS``:
    one kernel reads q and k (views of the qkv projection are read in place when their rows are 16-byte
    aligned) and a second takes the mean, so neither the logits nor contiguous copies are written;
    otherwise q k^T by a GEMM, then ``attention_info_cuda`` (or the reference beyond its token limit).
    ``log_size`` (a contiguous tensor like size) receives log(size), written by the mean's launch.
    ``key_splits``: the q, k kernel's (``INFO_QK_KEY_SPLITS``; None: ``info_qk_key_splits``); the GEMM path
    has none and ignores it."""
    import torch

    from .reference import attention_info

    for name, t in (("q", q), ("k", k)):
        check_kernel_tensor(name, t, q.device)
        if t.dim() != 4 or t.dtype != q.dtype or t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"q and k must be [B, H, N, E] of one dtype of {SUPPORTED_DTYPES}, got {name} "
                             f"{t.dtype} {tuple(t.shape)}")  # fmt: skip
    if q.shape != k.shape:
        raise ValueError(f"q and k must have one shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    b, h, n, e = q.shape
    dtype = tensor_dtype_name(q)
    if not info_qk_applies(dtype, n, e):
        logits = q @ k.transpose(-2, -1)
        if info_kernel(n) is not None:
            return attention_info_cuda(logits, size, scale, log_size)
        _checked_log_size(log_size, size, q)
        if log_size is not None and size is not None:
            torch.log(size, out=log_size)
        return attention_info(logits, size, scale)
    size = _checked_size(size, b, n, q)
    log_ptr = _checked_log_size(log_size, size, q)

    def rows(t: Tensor) -> Tensor:
        """t itself with unit channel stride and 16-byte aligned rows, else a fresh contiguous copy (a
        contiguous tensor may still start off a 16-byte boundary, so not ``contiguous()``)."""
        strides = t.stride()[:3]
        aligned = t.stride(3) == 1 and t.data_ptr() % 16 == 0 and all(st % 8 == 0 for st in strides)
        return t if aligned and max(strides) < 2**31 else t.clone(memory_format=torch.contiguous_format)

    q, k = rows(q), rows(k)
    stream = kernel_stream(q)
    splits = info_qk_key_splits(b, h, n, e, _multiprocessors()) if key_splits is None else key_splits
    _check_key_splits(splits, e)
    colsum, info = _info_buffers(b, h, n, info_qk_chunks(n, e, splits), q)
    with kernel_device(q):
        size_ptr = 0 if size is None else size.data_ptr()
        chunks = enqueue_attention_info_qk(
            q.data_ptr(), k.data_ptr(), size_ptr, colsum.data_ptr(), b, h, n, e,
            (q.stride(0), q.stride(1), q.stride(2)), (k.stride(0), k.stride(1), k.stride(2)), scale, stream,
            splits,
        )  # fmt: skip
        sums = (colsum.data_ptr(), info.data_ptr())
        enqueue_info_mean(*sums, b, h, n, chunks, dtype, stream, size_ptr, log_ptr)
    return info


def fusion_scores_cuda(
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    attrs: TokenFusionAttrs,
    *,
    tile: int | None = None,
    mma_tile: int | None = None,
) -> Tensor:
    """The score kernel alone (``reference.fusion_scores``): metric [B, N, Cm], info / size [B, N] ->
    float32 scores [B, Na, Nb] (what the matching kernel ranks). ``tile`` / ``mma_tile``: the CUDA-core
    or tensor-core kernel's tile (``enqueue_scores``)."""
    import torch

    d = _checked(metric, metric, info, size, attrs)
    info, size = (t.contiguous() for t in (info, size))
    metric, d = _metric_rows(metric, d)
    na, nb = set_sizes(d.tokens)
    scores = torch.empty(d.batch, na, nb, dtype=torch.float32, device=metric.device)
    with kernel_device(metric):
        enqueue_scores(
            metric.data_ptr(), info.data_ptr(), size.data_ptr(), scores.data_ptr(), d, attrs,
            tensor_dtype_name(metric), kernel_stream(metric), tile, mma_tile,
        )  # fmt: skip
    return scores


def bipartite_matching_cuda(
    scores: Tensor, r: int, bidirectional: bool = True, phase_clock: Tensor | None = None
) -> Tensor:
    """The matching kernel alone (``reference.bipartite_matching``): float32 scores [B, Na, Nb] with
    Na = Nb or Nb + 1 -> dest [B, Na + Nb] int64. ``phase_clock``: an int64 [B, len(MATCH_PHASES)]
    tensor on the same device that receives the kernel's clock marks (``enqueue_match``)."""
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
    clock = 0
    if phase_clock is not None:
        check_kernel_tensor("phase_clock", phase_clock, scores.device)
        if phase_clock.dtype != torch.int64 or tuple(phase_clock.shape) != (b, len(MATCH_PHASES)):
            raise ValueError(f"phase_clock must be int64 [{b}, {len(MATCH_PHASES)}], got {phase_clock.dtype} "
                             f"{tuple(phase_clock.shape)}")  # fmt: skip
        if not phase_clock.is_contiguous():
            raise ValueError("phase_clock must be contiguous")
        clock = phase_clock.data_ptr()
    with kernel_device(scores):
        enqueue_match(scores.data_ptr(), dest.data_ptr(), d, int(bidirectional), kernel_stream(scores), clock)
    return dest


def layer_norm_rows_cuda(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    pitch: int | None = None,
    *,
    group: int | None = None,
) -> Tensor:
    """``F.layer_norm(x, (C,), weight, bias, eps)`` by the merge kernel's row LayerNorm, a warp (or, for
    narrow rows, 8 or 16 lanes: ``layer_norm_group``) per row: x [..., C] (float32 or float16; weight / bias
    [C] of its dtype or None) -> the same shape. For T2T-ViT's token norms, where torch's layer_norm runs a
    block per row. ``pitch`` (>= C): the output is [..., pitch], its columns C .. pitch - 1 zeros, written by
    the same launch (``vitrt.models.layers.padded_linear``: rows that a product reads on cuBLAS's aligned
    kernels). ``group`` (tests, benchmarks): lanes per row, 8, 16 or 32 (None: ``layer_norm_group``'s)."""
    return _layer_norm_rows(x, None, weight, bias, eps, pitch, group)[1]


def add_layer_norm_rows_cuda(
    x: Tensor, y: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, *, group: int | None = None
) -> tuple[Tensor, Tensor]:
    """A block's residual add and the LayerNorm after it in one kernel: x, y [..., C] of one shape and dtype
    (float32 or float16; weight / bias [C] of that dtype or None) -> (s = x + y, F.layer_norm(s, (C,),
    weight, bias, eps)), s bit-identical to torch's add. Where torch launches an add and a layer_norm,
    this is one launch and one pass over the tokens less. ``group`` as for ``layer_norm_rows_cuda``."""
    _check_like_x("y", y, x)
    return _layer_norm_rows(x, y, weight, bias, eps, group=group)


def _check_like_x(name: str, t: Tensor, x: Tensor) -> None:
    """Raise ValueError unless ``t`` (a residual added to x) can feed the kernels beside x: x's shape and
    dtype, on x's device."""
    check_kernel_tensor(name, t, x.device)
    if t.shape != x.shape or t.dtype != x.dtype:
        raise ValueError(f"{name} must match x ({x.dtype} {tuple(x.shape)}), got {t.dtype} {tuple(t.shape)}")


def _layer_norm_rows(
    x: Tensor,
    y: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    pitch: int | None = None,
    group: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Launch ``vitrt_tf_layer_norm``: (x + y, its norm) with a residual y, else (x, norm of x); the norm's
    rows ``pitch`` elements wide (default C), zero past C; ``group`` lanes per row (None: the launcher's)."""
    import torch

    check_kernel_tensor("x", x, x.device)
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x must be one of {SUPPORTED_DTYPES}, got {x.dtype}")
    y = None if y is None else y.contiguous()
    c = x.shape[-1]
    ldo = c if pitch is None else pitch
    if not c <= ldo < 2**31:
        raise ValueError(f"pitch must be at least the {c} channels, got {pitch}")
    weight, bias = _norm_params(weight, bias, x, "")
    x = x.contiguous()
    total = x if y is None else torch.empty_like(x)
    out = x.new_empty(*x.shape[:-1], ldo)
    rows = x.numel() // c if c else 0
    if rows == 0:
        return total, out.zero_()  # nothing for the kernel: no rows, or C = 0 (the padding alone)
    if rows >= 2**31:
        raise ValueError(f"{rows} rows exceed the kernel's int32 indexing")
    addr = [0 if t is None else t.data_ptr() for t in (x, y, weight, bias, None if y is None else total, out)]
    vector = 4 if x.dtype == torch.float32 else 8
    vec = c % vector == 0 and ldo % vector == 0 and all(a % 16 == 0 for a in addr)
    chosen = layer_norm_group(c, vector) if vec else 32
    if group is not None and (group not in (8, 16, 32) or group < chosen):
        raise ValueError(f"group must be 8, 16 or 32 lanes, at least {chosen} here, got {group}")
    group = chosen if group is None else group
    with kernel_device(x):
        launch(
            load_module(SOURCE),
            f"vitrt_tf_layer_norm_{kernel_suffix(tensor_dtype_name(x), PLUGIN_NAME)}",
            (-(-rows // (_WARPS * 32 // group)), 1, 1),
            (_THREADS, 1, 1),
            [*map(ptr, addr), i32(rows), i32(c), f32(eps), i32(vec), i32(ldo), i32(group)],
            kernel_stream(x),
        )
    return total, out


UNFOLD_MAX_VALUES = 640
"""Most values per patch (C k k) that ``unfold_layer_norm_cuda`` takes: its kernel tabulates a patch in shared
memory and holds a lane's values in registers (T2T-ViT's patches have 147 and 576)."""


def unfold_layer_norm_cuda(
    x: Tensor,
    kernel: int,
    stride: int,
    padding: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    pitch: int | None = None,
) -> Tensor:
    """T2T-ViT's soft split and the LayerNorm of its patches in one kernel: x [B, C, H, W] (any strides: the
    image, or a token block's [B, H W, C] output viewed as one) -> [B, L, pitch], row oy OW + ox the norm of
    ``F.unfold(x, kernel, padding=padding, stride=stride)``'s column of that patch (C k k values: channel,
    kernel row, kernel column), zeros past C k k. The patches are never written; each value is read as
    ``models.layers.unfold_rows`` would copy it and normed in ``layer_norm_rows_cuda``'s scalar order."""
    check_kernel_tensor("x", x, x.device)
    if x.dtype not in SUPPORTED_DTYPES or x.dim() != 4:
        raise TypeError(f"x must be [B, C, H, W] of one of {SUPPORTED_DTYPES}, got {x.dtype} "
                        f"{tuple(x.shape)}")  # fmt: skip
    b, c, h, w = x.shape
    oh, ow = ((n + 2 * padding - kernel) // stride + 1 for n in (h, w))
    width = c * kernel * kernel
    ldo = width if pitch is None else pitch
    if not width <= ldo < 2**31 or kernel < 1 or stride < 1 or not 0 <= padding < kernel or oh < 1 or ow < 1:
        raise ValueError(f"no soft split of {tuple(x.shape)} with kernel {kernel}, stride {stride}, padding "
                         f"{padding} into rows of pitch {pitch}")  # fmt: skip
    _, sc, sy, sx = x.stride()
    span = (c - 1) * sc + (kernel - 1) * (sy + sx)  # a value's offset from its patch's corner, at most
    if any(not 0 <= st < 2**31 for st in x.stride()) or span >= 2**31 or b * oh * ow >= 2**31:
        raise ValueError(f"x {tuple(x.shape)} at strides {x.stride()} exceeds the kernel's int32 indexing")
    if width > UNFOLD_MAX_VALUES:
        raise ValueError(f"patches of {width} values exceed the kernel's {UNFOLD_MAX_VALUES} (C k k)")
    weight, bias = _norm_params(weight, bias, x, "", width)
    out = x.new_empty(b, oh * ow, ldo)
    rows = b * oh * ow
    if rows == 0 or width == 0:
        return out.zero_()
    with kernel_device(x):
        launch(
            load_module(SOURCE),
            f"vitrt_tf_unfold_layer_norm_{kernel_suffix(tensor_dtype_name(x), PLUGIN_NAME)}",
            (-(-rows // _WARPS), 1, 1),
            (_THREADS, 1, 1),
            [ptr(x.data_ptr()), ptr(0 if weight is None else weight.data_ptr()),
             ptr(0 if bias is None else bias.data_ptr()), ptr(out.data_ptr()), i32(rows), i32(c), i32(h),
             i32(w), *map(i32, x.stride()), i32(kernel), i32(stride), i32(padding), i32(ow), i32(oh * ow),
             i32(ldo), f32(eps)],
            kernel_stream(x),
        )  # fmt: skip
    return out


def layer_norm_group(channels: int, vector: int) -> int:
    """Lanes per row of ``vitrt_tf_layer_norm``'s vector path: 8 or 16 where a row's ``channels / vector``
    vectors fit them (64 float16 channels: 8 lanes of 8 halves, four rows per warp), else 32 (a warp). Rows
    of the narrow groups give the bits a warp per row gives (the kernel's group_sum); a warp per row left 24
    of its 32 lanes idle at T2T-ViT's 64 channels."""
    vectors = -(-channels // vector)
    return next((g for g in (8, 16) if vectors <= g), 32)
