"""PyTorch reference of the ``TokenFusion`` op (ground truth for every lowering and kernel).

Export-friendly by construction: static output shapes (``r`` is a Python int), no Python control
flow on tensor values, only max/sort/gather/scatter/scatter_add/matmul. Scoring and matching run in
float32 whatever the input dtype; pooling accumulates in float32 and casts back, so float16 inputs
give no NaN (the class token's row is masked with float32's most negative finite value, not -inf).

Shapes: B batch, N tokens in (class token at 0), N' = N - r tokens out, C channels, H heads.
Set A = even token positions (Na = ceil(N/2)), set B = odd positions (Nb = floor(N/2)).

Gradients follow the official MCTF code: matching and pooling weights are constants (no gradient
through the choice of partners nor through the attention used as pooling weight); gradients flow
through the tokens and, for the one-step-ahead attention, through the attention probabilities.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from vitrt.plugins.lowering import grad_mode

from .spec import Pooling, TokenFusionAttrs

MergeMethod = Literal["scatter", "onehot"]

_TINY = 1e-12  # guards 1/0 and 0/0; far below any value a real metric, attention or size takes


def _masked_value() -> float:
    # Finite, so that fp16 casts and 0 * value stay finite (-inf rows gave NaN in fp16).
    return float(torch.finfo(torch.float32).min)


def attention_received(attn: Tensor) -> Tensor:
    """Attention each key receives, mean over heads and queries: [B, H, Nq, Nk] -> [B, Nk]."""
    return attn.mean(dim=(1, 2))


def attention_info(logits: Tensor, size: Tensor | None, scale: float) -> Tensor:
    """``attention_received`` of softmax(scale * logits + log size) from the logits alone: logits
    [B, H, N, N] (q k^T before the scale), size [B, N] or None (no proportional attention) -> [B, N] in
    the logits' dtype, computed in float32. What a fused block's ``info`` is; constant for gradients, as
    everything it feeds (scores, pooling weights) is."""
    s = logits.detach().float() * scale
    if size is not None:
        s = s + size.detach().float().log()[:, None, None, :]
    return attention_received(s.softmax(dim=-1)).to(logits.dtype)


def fusion_scores(
    metric: Tensor,
    info: Tensor | None,
    size: Tensor | None,
    tau_sim: float = 1.0,
    tau_info: float = 20.0,
    tau_size: float = 40.0,
    num_protected: int = 1,
) -> Tensor:
    """MCTF score between set A and set B: W_sim * W_info * W_size, float32 [B, Na, Nb].

    metric [B, N, Cm] (L2-normalised here); info [B, N] attention received (or None); size [B, N]
    patches per token (or None). W_sim = ((cos + 1) / 2)^(1/tau_sim); W_info = (i_a i_b)^(1/tau_info)
    with i = 1 / info normalised by its max; W_size = (s_a s_b)^(1/tau_size) with s = 1 / size
    normalised by its max. A temperature of 0 (or a None input) makes its factor 1. Rows of protected
    A tokens and columns of protected B tokens (positions < num_protected) hold the most negative
    finite float32, so they are never merged away nor merged into.
    """
    m = metric.float()
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(_TINY)
    a, b = m[:, ::2], m[:, 1::2]
    if tau_sim > 0:
        # clamp: rounding can push a cosine just below -1, and a negative base ** (1/tau) is NaN
        scores = ((a @ b.transpose(-1, -2) + 1) / 2).clamp_min(0) ** (1 / tau_sim)
    else:
        scores = a.new_ones(a.shape[0], a.shape[1], b.shape[1])
    if tau_info > 0 and info is not None:
        inv = 1 / info.float().clamp_min(_TINY)
        inv = inv / inv.amax(dim=-1, keepdim=True)
        scores = scores * (inv[:, ::2, None] * inv[:, None, 1::2]) ** (1 / tau_info)
    if tau_size > 0 and size is not None:
        inv = 1 / size.float()
        inv = inv / inv.amax(dim=-1, keepdim=True)
        scores = scores * (inv[:, ::2, None] * inv[:, None, 1::2]) ** (1 / tau_size)
    if num_protected:
        n = metric.shape[1]
        pos = torch.arange(n, device=metric.device)
        protected = pos < num_protected
        scores = scores.masked_fill(protected[::2, None], _masked_value())
        scores = scores.masked_fill(protected[None, 1::2], _masked_value())
    return scores


def interleave(a: Tensor, b: Tensor) -> Tensor:
    """Inverse of the parity split: a [B, Na, ...] (even positions), b [B, Nb, ...] -> [B, Na+Nb, ...]."""
    na, nb = a.shape[1], b.shape[1]
    i = torch.arange(na + nb, device=a.device)
    index = torch.where(i % 2 == 0, i // 2, na + i // 2)
    return torch.cat((a, b), dim=1).index_select(1, index)


@grad_mode(False)
def bipartite_matching(scores: Tensor, r: int, bidirectional: bool = True) -> Tensor:
    """Bipartite soft matching on A x B scores [B, Na, Nb] -> dest [B, Na + Nb] int64.

    ``dest[b, i]`` is the output slot of input token i. One-way (ToMe): the r A tokens with the best
    partner merge into it. Bidirectional (MCTF): r // 2 A tokens merge into their best B partner,
    then the r - r // 2 B tokens with the best partner among the still-unmerged A tokens merge into
    it (a B token that received A tokens takes them along). Output slots: unmerged A tokens in index
    order (protected tokens first), then unmerged B tokens (bidirectional: in decreasing order of
    their best score; one-way: all B tokens in index order). ``r`` must not exceed
    ``spec.removed_tokens`` for N = Na + Nb.
    """
    bsz, na, nb = scores.shape
    r1, r2 = (r // 2, r - r // 2) if bidirectional else (r, 0)
    n_unm = na - r1
    node_max, node_idx = scores.max(dim=-1)  # best B partner of every A token
    edge_idx = node_max.argsort(dim=-1, descending=True)
    unm_idx = edge_idx[:, r1:].sort(dim=-1).values  # index order keeps the class token at slot 0
    src_idx = edge_idx[:, :r1]
    slots_a = torch.arange(n_unm, device=scores.device).expand(bsz, n_unm)
    if bidirectional:
        # scores of every B token against the unmerged A tokens, in output-slot order
        scores2 = scores.gather(1, unm_idx[:, :, None].expand(bsz, n_unm, nb)).transpose(1, 2)
        node_max2, node_idx2 = scores2.max(dim=-1)
        edge_idx2 = node_max2.argsort(dim=-1, descending=True)
        unm_idx2, src_idx2 = edge_idx2[:, r2:], edge_idx2[:, :r2]
        slots_b = n_unm + torch.arange(nb - r2, device=scores.device).expand(bsz, nb - r2)
        dest_b = torch.zeros(bsz, nb, dtype=torch.int64, device=scores.device)
        dest_b = dest_b.scatter(1, unm_idx2, slots_b).scatter(1, src_idx2, node_idx2.gather(1, src_idx2))
    else:
        dest_b = n_unm + torch.arange(nb, device=scores.device).expand(bsz, nb)
    dest_a = torch.zeros(bsz, na, dtype=torch.int64, device=scores.device)
    dest_a = dest_a.scatter(1, unm_idx, slots_a)
    dest_a = dest_a.scatter(1, src_idx, dest_b.gather(1, node_idx.gather(1, src_idx)))
    return interleave(dest_a, dest_b)


def merge_matrix(dest: Tensor, n_out: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot merge matrix M [B, n_out, N] with M[b, dest[b, i], i] = 1 (the portable lowering's
    form: TensorRT's scatter has no add, and ONNX has no scatter-mean)."""
    slots = torch.arange(n_out, device=dest.device)
    return (dest[:, None, :] == slots[None, :, None]).to(dtype)


@grad_mode(False)
def pooling_weights(info: Tensor, size: Tensor, pooling: int) -> Tensor:
    """Pooling weight of every token, float32 [B, N] (no gradient, as in the official code).

    ATTN_SIZE: info * size / max(size); SIZE: size; MEAN: 1. info, size: [B, N].
    """
    p = Pooling(pooling)
    if p is Pooling.ATTN_SIZE:
        s = size.float()
        return info.float() * (s / s.amax(dim=-1, keepdim=True))
    if p is Pooling.SIZE:
        return size.float()
    return torch.ones_like(size, dtype=torch.float32)


def merge_tokens(
    x: Tensor, dest: Tensor, weight: Tensor, n_out: int, method: MergeMethod = "scatter"
) -> Tensor:
    """Weighted mean of each group: x [B, N, C], dest [B, N], weight [B, N] -> [B, n_out, C] (x's dtype).

    Accumulates in float32. ``method`` picks scatter_add or one-hot matmuls (same result).
    """
    w = weight.float()
    xw = x.float() * w[..., None]
    if method == "onehot":
        m = merge_matrix(dest, n_out)
        num, den = m @ xw, (m @ w[..., None]).squeeze(-1)
    else:
        num = xw.new_zeros(x.shape[0], n_out, x.shape[2]).scatter_add(
            1, dest[..., None].expand(-1, -1, x.shape[2]), xw
        )
        den = w.new_zeros(x.shape[0], n_out).scatter_add(1, dest, w)
    return (num / den.clamp_min(_TINY)[..., None]).to(x.dtype)


def merge_sizes(size: Tensor, dest: Tensor, n_out: int, method: MergeMethod = "scatter") -> Tensor:
    """Sum of the sizes of each group: size [B, N] -> [B, n_out] (size's dtype; no gradient)."""
    s = size.detach().float()
    if method == "onehot":
        out = (merge_matrix(dest, n_out) @ s[..., None]).squeeze(-1)
    else:
        out = s.new_zeros(s.shape[0], n_out).scatter_add(1, dest, s)
    return out.to(size.dtype)


def merge_attention(
    attn: Tensor, dest: Tensor, weight: Tensor, n_out: int, method: MergeMethod = "scatter"
) -> Tensor:
    """MCTF's one-step-ahead attention: [B, H, N, N] -> [B, H, n_out, n_out] (attn's dtype).

    Columns of keys merged together are summed (a fused key receives what its parts received); rows
    of queries merged together are averaged with the pooling ``weight`` [B, N], like the tokens. Rows
    still sum to 1.
    """
    bsz, heads, n, _ = attn.shape
    a = attn.float()
    w = weight.float()
    if method == "onehot":
        m = merge_matrix(dest, n_out)[:, None]  # [B, 1, n_out, N]
        num = (m * w[:, None, None, :]) @ a @ m.transpose(-1, -2)
        den = (m @ w[:, None, :, None]).squeeze(-1)  # [B, 1, n_out]
    else:
        cols = a.new_zeros(bsz, heads, n, n_out).scatter_add(
            3, dest[:, None, None, :].expand(bsz, heads, n, n), a
        )
        num = a.new_zeros(bsz, heads, n_out, n_out).scatter_add(
            2, dest[:, None, :, None].expand(bsz, heads, n, n_out), cols * w[:, None, :, None]
        )
        den = w.new_zeros(bsz, n_out).scatter_add(1, dest, w)[:, None]
    return (num / den.clamp_min(_TINY)[..., None]).to(attn.dtype)


def token_fusion(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    attrs: TokenFusionAttrs,
    method: MergeMethod = "scatter",
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``TokenFusion`` op: (x [B, N, C], metric [B, N, Cm], info [B, N], size [B, N]) ->
    (x_fused [B, N - r, C], size_fused [B, N - r], dest [B, N] int64). See ``spec`` for the contract.
    """
    n_out = x.shape[1] - attrs.r
    if attrs.r == 0:  # identity, not the parity reordering the matching would apply (static branch)
        dest = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], x.shape[1])
        return x, size, dest
    with grad_mode(False):
        scores = fusion_scores(
            metric, info, size, attrs.tau_sim, attrs.tau_info, attrs.tau_size, attrs.num_protected
        )
        dest = bipartite_matching(scores, attrs.r, bool(attrs.bidirectional))
    weight = pooling_weights(info, size, attrs.pooling)
    return merge_tokens(x, dest, weight, n_out, method), merge_sizes(size, dest, n_out, method), dest


def tome_merge(
    x: Tensor, keys: Tensor, size: Tensor, r: int, num_protected: int = 1
) -> tuple[Tensor, Tensor]:
    """ToMe's bipartite soft matching + size-weighted mean as the special case of ``token_fusion``.

    x [B, N, C], keys [B, N, E] (keys averaged over heads), size [B, N] -> (x [B, N - r, C],
    size [B, N - r]). Cosine similarity (tau_sim = 1 keeps its order), no info or size factor,
    one-way matching.
    """
    attrs = TokenFusionAttrs(
        r=r,
        num_protected=num_protected,
        tau_sim=1.0,
        tau_info=0.0,
        tau_size=0.0,
        bidirectional=0,
        pooling=Pooling.SIZE,
    )
    x_f, size_f, _ = token_fusion(x, keys, torch.ones_like(size), size, attrs)
    return x_f, size_f
