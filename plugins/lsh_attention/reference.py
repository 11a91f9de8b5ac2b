"""PyTorch reference of ``ScatterbrainAttention`` (the ground truth every backend is tested against).

Written with export-friendly ops only (matmul, argsort, gather, scatter, logsumexp), static shapes and
no Python control flow on data, so ``torch.export`` and ``torch.onnx.export`` trace it as is. The rules
are in ``spec.py``; the layout follows vitrt's attention cores: q, k, v are [B, H, N, E].

Internally the hash rounds are a dimension R after (B, H): sorted tensors are [B, H, R, P, *] and the
clustered ones [B, H, R, P / c, c, *], P being N padded to a multiple of the cluster size c.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vitrt.errors import ConfigError

from .spec import (
    COMPUTE_DTYPE,
    DENOMINATOR_MIN,
    MASK_VALUE,
    PERFORMER_DENOMINATOR_MIN,
    Mode,
    ScatterbrainAttrs,
    check_inputs,
    padded_length,
)


def _check_cluster_size(cluster_size: int) -> int:
    if isinstance(cluster_size, bool) or not isinstance(cluster_size, int) or cluster_size < 1:
        raise ConfigError(f"cluster_size must be an int >= 1 (tokens per LSH cluster), got {cluster_size!r}")
    return cluster_size


def _resolve_scale(scale: float | None, e: int) -> float:
    if scale is None:
        return e**-0.5
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive finite number (softmax scale), got {scale}")
    return scale


def xbox_plus(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """XBOX+ asymmetric transform of q, k [..., N, E] -> [..., N, E + 2] (float32).

    q -> [q, 0, sqrt(MQ + MK - |q|^2)], k -> [k, sqrt(MQ + MK - |k|^2), 0], with MQ, MK the largest
    squared norms over the N tokens. Every transformed vector then has squared norm MQ + MK, so the
    Euclidean distance of a transformed pair falls as q . k grows: near in hash space = large logit.
    The squared norms are ``halving_sum``s, so equal tokens get bitwise equal vectors on every backend.
    """
    q_sq = halving_sum(q.square()).unsqueeze(-1)
    k_sq = halving_sum(k.square()).unsqueeze(-1)
    total = q_sq.amax(dim=-2, keepdim=True) + k_sq.amax(dim=-2, keepdim=True)
    # clamp: in float16 inputs' rounding could leave a tiny negative under the root.
    q_ext = (total - q_sq).clamp_min(0).sqrt()
    k_ext = (total - k_sq).clamp_min(0).sqrt()
    zeros = torch.zeros_like(q_ext)
    return torch.cat([q, zeros, q_ext], dim=-1), torch.cat([k, k_ext, zeros], dim=-1)


def halving_sum(x: Tensor) -> Tensor:
    """Sum over the last dim, [..., D] -> [...], by elementwise adds only: add the second half of the
    columns onto the first (an odd last column is carried) until one is left.

    Every row then goes through the same float32 additions in the same order on every backend, so equal
    rows give bitwise equal sums. A matmul or a last-axis reduction does not promise that: MKL's sgemm
    (PyTorch's CPU matmul, on some x86 CPUs) and ONNX Runtime's ReduceSum (Eigen, whose vector loop
    starts at the first aligned element) round equal rows differently depending on where they lie.
    """
    while x.shape[-1] > 1:
        d = x.shape[-1]
        half = d // 2
        folded = x[..., :half] + x[..., half : 2 * half]
        x = torch.cat([folded, x[..., 2 * half :]], dim=-1) if d % 2 else folded
    return x[..., 0]


def hashes(x_t: Tensor, hash_vectors: Tensor) -> Tensor:
    """Hash of every round: XBOX+ vectors [B, H, P, E + 2] . hash_vectors [R, E + 2] -> [B, H, R, P].

    Elementwise products and a ``halving_sum`` (not a matmul), one round at a time: equal tokens hash
    bitwise alike in every backend, so that they tie and the stable sort groups them alike.
    """
    hv = hash_vectors.to(COMPUTE_DTYPE)
    return torch.stack([halving_sum(x_t * hv[r]) for r in range(hv.shape[0])], dim=2)


def _hash_orders(qf: Tensor, kf: Tensor, hash_vectors: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted token order per round of queries and keys: [B, H, P, E] -> indices [B, H, R, P] (int64).

    Hash of round r = XBOX+ vector . hash_vectors[r] (``hashes``). Padded tokens hash to +inf so that
    they fill the tail of the last cluster; ties (equal tokens, padding) keep index order
    (``stable_argsort``), the same in every backend.
    """
    orders = []
    for x_t in xbox_plus(qf, kf):
        orders.append(stable_argsort(hashes(x_t, hash_vectors).masked_fill(~valid, math.inf)))
    return orders[0], orders[1]


def _cluster_scores(a: Tensor, b: Tensor, q_perm: Tensor, k_perm: Tensor, c: int) -> Tensor:
    """Dot products inside each cluster: rows of a [B, H, P, F] (queries' order) against rows of b
    (keys' order) -> [B, H, R, P/c, c, c]."""
    return torch.matmul(
        _clusters(_sort_rows(a, q_perm), c), _clusters(_sort_rows(b, k_perm), c).transpose(-1, -2)
    )


def _key_padding(valid: Tensor, k_perm: Tensor, c: int) -> Tensor:
    """True where the key of a cluster column is padding: [B, H, R, P/c, 1, c] (bool)."""
    b, h, r, p = k_perm.shape
    return ~valid.expand(b, h, r, p).gather(3, k_perm).reshape(b, h, r, p // c, 1, c)


def stable_argsort(x: Tensor) -> Tensor:
    """Ascending argsort along the last dim with ties kept in index order, from unstable sorts only.

    ``torch.argsort(stable=True)`` exports to neither ONNX exporter, and an unstable sort (ONNX TopK,
    CUDA) may order equal hashes (identical tokens, padding) differently in every backend, which would
    route identical queries to different clusters. So: sort once, give each element the dense rank of
    its value (a cumsum over value changes; equal values share it), and sort the unique int64 keys
    rank * P + index: any sort orders unique keys alike, and the order is (value, index).
    """
    p = x.shape[-1]
    values, order = torch.sort(x, dim=-1)
    change = values[..., 1:] != values[..., :-1]
    first = torch.ones_like(values[..., :1], dtype=torch.bool)
    rank = torch.cumsum(torch.cat([first, change], dim=-1).to(torch.int64), dim=-1)
    keys = rank * p + order
    return order.gather(-1, torch.sort(keys, dim=-1).indices)


def _inverse(perm: Tensor) -> Tensor:
    """Inverse permutation along the last dim: slot of each token in the sorted order."""
    ar = torch.arange(perm.shape[-1], device=perm.device, dtype=perm.dtype).expand(perm.shape)
    return torch.zeros_like(perm).scatter(-1, perm, ar)


def _sort_rows(x: Tensor, perm: Tensor) -> Tensor:
    """x [B, H, P, F] gathered in each round's order perm [B, H, R, P] -> [B, H, R, P, F]."""
    b, h, r, p = perm.shape
    f = x.shape[-1]
    return x.unsqueeze(2).expand(b, h, r, p, f).gather(3, perm.unsqueeze(-1).expand(b, h, r, p, f))


def _clusters(x: Tensor, c: int) -> Tensor:
    """[B, H, R, P, F] -> [B, H, R, P / c, c, F]."""
    b, h, r, p, f = x.shape
    return x.reshape(b, h, r, p // c, c, f)


def _unsort(x: Tensor, inv: Tensor) -> Tensor:
    """Clustered per-round rows [B, H, R, P / c, c, F] back to token order [B, H, R, P, F]."""
    b, h, r, p = inv.shape
    f = x.shape[-1]
    return x.reshape(b, h, r, p, f).gather(3, inv.unsqueeze(-1).expand(b, h, r, p, f))


def performer_features(
    q: Tensor, k: Tensor, projection: Tensor, scale: float, key_valid: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Log-scaled FAVOR+ positive features with both signs, as Scatterbrain computes them.

    q, k: [B, H, P, E] float32; projection: [m, E]; key_valid: [P] bool (padded keys False).
    Returns q' [B, H, P, 2m] (each row's max is 1), k' [B, H, P, 2m] (max 1 over keys and features of
    one (b, h); 0 on padded keys) and the log scale pls [B, H, P, 1], such that
    phi(q_i) . phi(k_j) = (q'_i . k'_j) exp(pls_i) estimates exp(scale * q_i . k_j).
    """
    n_features = 2 * projection.shape[0]
    root = math.sqrt(scale)
    w = projection.to(COMPUTE_DTYPE) * root
    log_norm = math.log(n_features) / 2

    def dash(x: Tensor) -> tuple[Tensor, Tensor]:
        xw = torch.matmul(x, w.t())
        return torch.cat([xw, -xw], dim=-1), x.square().sum(dim=-1, keepdim=True) / 2 * (root * root)

    q_dash, q_diag = dash(q)
    q_max = q_dash.amax(dim=-1, keepdim=True)
    q_prime = torch.exp(q_dash - q_max)
    q_log = q_max - q_diag - log_norm

    k_dash, k_diag = dash(k)
    k_f = k_dash - k_diag - log_norm
    # One scale per (b, h) over all keys, padded ones included (as the official code does): it
    # cancels exactly, and keeping it the same keeps the float rounding the same.
    k_log = k_f.amax(dim=(-1, -2), keepdim=True)
    k_prime = torch.exp(k_f - k_log)
    if key_valid is not None:
        k_prime = k_prime * key_valid.unsqueeze(-1).to(k_prime.dtype)
    return q_prime, k_prime, q_log + k_log


def _prepare(
    q: Tensor, k: Tensor, v: Tensor, cluster_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Float32 copies padded with zero tokens to P = multiple of the cluster size, and the [P] mask of
    real tokens."""
    n = q.shape[2]
    p = padded_length(n, cluster_size)
    qf, kf, vf = (F.pad(t.to(COMPUTE_DTYPE), (0, 0, 0, p - n)) for t in (q, k, v))
    valid = torch.arange(p, device=q.device) < n
    return qf, kf, vf, valid, p


def scatterbrain_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    hash_vectors: Tensor,
    projection: Tensor,
    cluster_size: int,
    scale: float | None = None,
) -> Tensor:
    """Scatterbrain attention: SMYRF LSH-sparse attention + Performer low-rank attention.

    Args:
        q, k: [B, H, N, E] queries and keys (unscaled; float32 or float16).
        v: [B, H, N, Dv] values (same dtype).
        hash_vectors: [R, E + 2] Gaussian vectors, one per hash round (XBOX+ space).
        projection: [m, E] orthogonal Gaussian rows; 2m positive features (both signs).
        cluster_size: tokens per cluster c (N is padded to a multiple of c).
        scale: softmax scale t (logits t q . k); default E^-0.5.
    Returns:
        [B, H, N, Dv] in q's dtype: the exact softmax numerator on pairs that share a cluster in some
        round (each pair counted once), phi(q) . phi(k) elsewhere, normalised by the row sum.
        Computed in float32. Memory: O(B H N (R c + 2m + E)) instead of O(B H N^2).
    """
    check_inputs(q, k, v, hash_vectors, projection)
    c = _check_cluster_size(cluster_size)
    t = _resolve_scale(scale, q.shape[-1])
    n = q.shape[2]
    qf, kf, vf, valid, _ = _prepare(q, k, v, c)
    q_perm, k_perm = _hash_orders(qf, kf, hash_vectors, valid)
    q_inv = _inverse(q_perm)

    q_prime, k_prime, pls = performer_features(qf, kf, projection, t, valid)
    kv = torch.matmul(k_prime.transpose(-1, -2), vf)  # [B, H, 2m, Dv]
    low_rank = torch.matmul(q_prime, kv)  # [B, H, P, Dv]
    low_rank_sum = torch.matmul(q_prime, k_prime.sum(dim=-2, keepdim=True).transpose(-1, -2))  # [B, H, P, 1]

    # The `del`s only bound eager PyTorch's peak memory; traced graphs free by liveness anyway.
    key_masked = _key_padding(valid, k_perm, c)  # [B, H, R, P/c, 1, c]
    inner = (_cluster_scores(qf, kf, q_perm, k_perm, c) * t).masked_fill(key_masked, MASK_VALUE)
    dots_lr = _cluster_scores(q_prime, k_prime, q_perm, k_perm, c).masked_fill(key_masked, 0.0)
    del qf, kf, q_prime, k_prime, key_masked

    # A pair that shares a cluster in several rounds would be summed once per round: divide its exact
    # and low-rank terms by that count so that it contributes exactly once overall.
    count = _pair_counts(q_inv, _inverse(k_perm), q_perm, k_perm, c)
    if count is not None:
        inner = inner - torch.log(count)
        dots_lr = dots_lr / count
        del count

    # M bounds both exp(inner - M) and exp(pls - M) by 1; any M would do in exact arithmetic.
    s_pls = _clusters(_sort_rows(pls, q_perm), c)  # [B, H, R, P/c, c, 1]
    m_ = torch.maximum(inner.amax(dim=-1, keepdim=True), s_pls)
    dots = torch.exp(inner - m_) - dots_lr * torch.exp(s_pls - m_)
    del inner, dots_lr, s_pls
    out_r = _unsort(torch.matmul(dots, _clusters(_sort_rows(vf, k_perm), c)), q_inv)  # [B, H, R, P, Dv]
    sum_r = _unsort(dots.sum(dim=-1, keepdim=True), q_inv)  # [B, H, R, P, 1]
    log_r = _unsort(m_, q_inv)  # [B, H, R, P, 1]
    del dots, m_

    log_total = torch.logsumexp(log_r, dim=2)  # [B, H, P, 1]
    weights = torch.exp(log_r - log_total.unsqueeze(2))
    lr_weight = torch.exp(pls - log_total)
    num = (out_r * weights).sum(dim=2) + low_rank * lr_weight
    den = (sum_r * weights).sum(dim=2) + low_rank_sum * lr_weight
    out = num / den.clamp_min(DENOMINATOR_MIN)
    return out[:, :, :n].to(q.dtype)


def _pair_counts(q_inv: Tensor, k_inv: Tensor, q_perm: Tensor, k_perm: Tensor, c: int) -> Tensor | None:
    """Rounds in which each clustered (query, key) pair shares a cluster: [B, H, R, P/c, c, c] float32
    (>= 1), or None with a single round. The loop runs over the static number of rounds."""
    r = q_perm.shape[2]
    if r == 1:
        return None
    q_bucket = torch.div(q_inv, c, rounding_mode="floor").transpose(-1, -2)  # [B, H, P, R]
    k_bucket = torch.div(k_inv, c, rounding_mode="floor").transpose(-1, -2)
    s_qb = _clusters(_sort_rows(q_bucket, q_perm), c)  # [B, H, R, P/c, c, R]
    s_kb = _clusters(_sort_rows(k_bucket, k_perm), c)
    count: Tensor | None = None
    for j in range(r):
        same = (s_qb[..., j].unsqueeze(-1) == s_kb[..., j].unsqueeze(-2)).to(COMPUTE_DTYPE)
        count = same if count is None else count + same
    return count


def lsh_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    hash_vectors: Tensor,
    cluster_size: int,
    scale: float | None = None,
) -> Tensor:
    """SMYRF LSH-sparse attention alone (as published: no duplicate counting).

    Args:
        q, k: [B, H, N, E] queries and keys (unscaled; float32 or float16).
        v: [B, H, N, Dv] values.
        hash_vectors: [R, E + 2] Gaussian vectors, one per hash round.
        cluster_size: tokens per cluster c.
        scale: softmax scale t; default E^-0.5.
    Returns:
        [B, H, N, Dv] in q's dtype: per round the softmax inside each query's cluster, rounds combined
        with weights softmax_r(logsumexp of the round's logits), i.e. A v / A 1 with
        A = sum_r [same cluster in round r] exp(t q . k). Computed in float32.
    """
    check_inputs(q, k, v, hash_vectors, None)
    c = _check_cluster_size(cluster_size)
    t = _resolve_scale(scale, q.shape[-1])
    n = q.shape[2]
    qf, kf, vf, valid, _ = _prepare(q, k, v, c)
    q_perm, k_perm = _hash_orders(qf, kf, hash_vectors, valid)
    q_inv = _inverse(q_perm)

    inner = (_cluster_scores(qf, kf, q_perm, k_perm, c) * t).masked_fill(
        _key_padding(valid, k_perm, c), MASK_VALUE
    )
    del qf, kf
    # Padding is shorter than a cluster and sorts last, so every cluster holds a real key and no row
    # is fully masked: the official code's all-masked-row fix-up cannot trigger here.
    lse = torch.logsumexp(inner, dim=-1, keepdim=True)
    probs = torch.exp(inner - lse)
    del inner
    out_r = _unsort(torch.matmul(probs, _clusters(_sort_rows(vf, k_perm), c)), q_inv)  # [B, H, R, P, Dv]
    log_r = _unsort(lse, q_inv)  # [B, H, R, P, 1]
    del probs
    weights = torch.softmax(log_r, dim=2)
    out = (out_r * weights).sum(dim=2)
    return out[:, :, :n].to(q.dtype)


def performer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    projection: Tensor,
    scale: float | None = None,
) -> Tensor:
    """Performer FAVOR+ low-rank attention alone, with Scatterbrain's feature map.

    Args:
        q, k: [B, H, N, E] queries and keys (unscaled; float32 or float16).
        v: [B, H, N, Dv] values.
        projection: [m, E] orthogonal Gaussian rows; 2m positive features (both signs).
        scale: softmax scale t; default E^-0.5.
    Returns:
        [B, H, N, Dv] in q's dtype: phi(q) (phi(k)^T v) / (phi(q) . sum phi(k)), computed in float32
        with log-domain max subtraction (the exp(pls) factor cancels and is never formed).
    """
    check_inputs(q, k, v, None, projection)
    t = _resolve_scale(scale, q.shape[-1])
    qf, kf, vf = (x.to(COMPUTE_DTYPE) for x in (q, k, v))
    q_prime, k_prime, _ = performer_features(qf, kf, projection, t)
    num = torch.matmul(q_prime, torch.matmul(k_prime.transpose(-1, -2), vf))
    den = torch.matmul(q_prime, k_prime.sum(dim=-2, keepdim=True).transpose(-1, -2))
    return (num / den.clamp_min(PERFORMER_DENOMINATOR_MIN)).to(q.dtype)


def exact_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None) -> Tensor:
    """Dense softmax attention softmax(t q k^T) v in float32, cast back: [B, H, N, E] -> [B, H, N, Dv].

    The ground truth the approximations are measured against (materialises [B, H, N, N]).
    """
    t = _resolve_scale(scale, q.shape[-1])
    qf, kf, vf = (x.to(COMPUTE_DTYPE) for x in (q, k, v))
    return torch.softmax(torch.matmul(qf * t, kf.transpose(-1, -2)), dim=-1).matmul(vf).to(q.dtype)


def attention_by_mode(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
) -> Tensor:
    """The op for any ``attrs.mode`` (``spec.Mode``): [B, H, N, E] x3 (+ the fixed tensors the mode uses)
    -> [B, H, N, Dv]."""
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
