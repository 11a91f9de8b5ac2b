"""The ScatterbrainAttention op: one definition that the reference, the ONNX lowerings, the CUDA kernels
and the TensorRT plugin all read.

Op boundary
-----------
``ScatterbrainAttention`` is an *attention core*: it maps q, k, v of one attention layer to its output
and owns nothing but the fixed random tensors, which are explicit inputs so that every backend
computes the same function::

    inputs                                              outputs
    q             [B, H, N, E]   queries (unscaled)     out  [B, H, N, Dv]  (dtype of q)
    k             [B, H, N, E]   keys
    v             [B, H, N, Dv]  values
    hash_vectors  [R, E + 2]     one Gaussian vector per hash round (modes SCATTERBRAIN, LSH)
    projection    [m, E]         orthogonal Gaussian rows of the feature map (SCATTERBRAIN, PERFORMER);
                                 each row is used with both signs: n_features = 2 m

In mode LSH the node has no ``projection`` input; in mode PERFORMER its ``hash_vectors`` input is the
empty name (an omitted optional ONNX input). Queries and keys have the same N (self-attention).

The function (``reference.py`` is the executable definition; ``scale`` is the softmax scale t):

* Hashing (SMYRF, XBOX+): per (b, h), with MQ, MK the largest squared norms of q and k,
  q -> [q, 0, sqrt(MQ + MK - |q|^2)], k -> [k, sqrt(MQ + MK - |k|^2), 0]; the hash of round r is the
  dot product with ``hash_vectors[r]``. Equal tokens must hash bitwise alike: a backend computes the
  squared norms and the dot products of every token with the same float32 operations, whatever its
  position (the reference and its ONNX graph: elementwise products summed by halving; the CUDA kernel:
  the same fma loops for every token), never with a matmul or reduction whose rounding depends on the
  row's place in a block or its memory alignment (MKL's sgemm, ONNX Runtime's last-axis ReduceSum).
  Queries and keys are argsorted separately per round (stable: ties keep token order, so all backends
  group equal tokens alike), N is padded with zero tokens to N_pad = ceil(N / cluster_size) *
  cluster_size whose hashes are +inf (they sort last), and the sorted
  order is cut into N_pad / cluster_size clusters; query cluster i attends key cluster i. Padded keys
  are masked (logit = MASK_VALUE, low-rank term 0); padded queries' outputs are dropped.
* Features (Performer FAVOR+, positive, both signs): with w = sqrt(t) * projection,
  phi(x) = exp([w x, -w x] - t |x|^2 / 2) / sqrt(2 m), so phi(q) . phi(k) estimates exp(t q . k).
  Kept in log-scaled form: q' = exp([wq, -wq] - max_j), log_q = -t|q|^2/2 + max_j - log(2m)/2 (per
  query); k' = exp(f_k - log_k) with log_k the max of f_k = [wk, -wk] - t|k|^2/2 - log(2m)/2 over the
  keys and features of one (b, h) (padded keys included, then their k' is zeroed);
  pls = log_q + log_k, so phi(q) . phi(k) = q' . k' exp(pls).
* SCATTERBRAIN: in cluster (round r), s = t q . k - log(count), lr = q' . k' / count, where count is the
  number of rounds in which the pair shares a cluster (each pair is counted once overall);
  M = max(max_j s, pls); dots = exp(s - M) - lr exp(pls - M). Rounds are combined with
  L = logsumexp_r M_r, w_r = exp(M_r - L):
  out = [sum_r w_r dots_r v + exp(pls - L) q' (k'^T v)] / max(sum_r w_r dots_r 1 + exp(pls - L) q' . sum k',
  DENOMINATOR_MIN). Exact on the union of the clusters, low rank elsewhere.
* LSH (SMYRF as published): per round the softmax inside the cluster (no duplicate counting); rounds
  combined by w_r = softmax_r(logsumexp_j s). Equals A v / A 1 with A = sum_r [same cluster in r] exp(s).
* PERFORMER: out = q' (k'^T v) / max(q' . sum k', PERFORMER_DENOMINATOR_MIN).

Everything runs in float32 whatever the input dtype (the exponentials overflow and the denominator
clamp underflows in float16) and is cast back to the dtype of q. Shapes are static: every size above
follows from the input shapes and the attributes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import torch

from vitrt.errors import ConfigError

PLUGIN_NAME = "ScatterbrainAttention"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "vitrt"

INPUT_NAMES = ("q", "k", "v", "hash_vectors", "projection")
OUTPUT_NAMES = ("out",)
SUPPORTED_DTYPES = (torch.float32, torch.float16)
COMPUTE_DTYPE = torch.float32

XBOX_EXTRA_DIMS = 2
"""hash_vectors has E + 2 columns: XBOX+ appends two coordinates to queries and keys."""
DENOMINATOR_MIN = 1e-6
"""Clamp of the Scatterbrain denominator, in units of exp(L) (as in the official SBSmyrfAttention)."""
PERFORMER_DENOMINATOR_MIN = float(torch.finfo(torch.float32).tiny)
"""The Performer-only denominator is q' . sum k' with both maxima at 1: any positive value is
legitimate, so the clamp only keeps an all-underflowed row at 0 instead of NaN."""
MASK_VALUE = -float(torch.finfo(torch.float32).max)
"""Logit of a padded key: finite (unlike -inf) so that max/exp never see inf - inf."""


class Mode(enum.IntEnum):
    """Which parts of the approximation a node computes (ONNX attribute ``mode``)."""

    SCATTERBRAIN = 0
    """LSH-sparse + low-rank, the low-rank estimate subtracted on the sparse support."""
    LSH = 1
    """SMYRF: the sparse part alone (no ``projection`` input)."""
    PERFORMER = 2
    """FAVOR+: the low-rank part alone (no ``hash_vectors`` input)."""


@dataclass(frozen=True)
class ScatterbrainAttrs:
    """Static attributes of one ``ScatterbrainAttention`` node (ONNX attributes / TensorRT fields).

    mode: a ``Mode`` value.
    cluster_size: tokens per cluster (queries and keys alike); 0 in mode PERFORMER.
    n_hashes: hash rounds R (rows of ``hash_vectors``); 0 in mode PERFORMER.
    n_features: feature count 2 m (``projection`` has m rows); 0 in mode LSH.
    scale: softmax scale t > 0 (logits are t q . k), e.g. input_dim^-0.5 in the T2T token attention.
    """

    mode: int
    cluster_size: int
    n_hashes: int
    n_features: int
    scale: float

    def __post_init__(self) -> None:
        mode = Mode(self.mode)
        sparse = mode in (Mode.SCATTERBRAIN, Mode.LSH)
        low_rank = mode in (Mode.SCATTERBRAIN, Mode.PERFORMER)
        if sparse and (self.cluster_size < 1 or self.n_hashes < 1):
            raise ConfigError(
                f"{mode.name}: cluster_size and n_hashes must be >= 1, got {self.cluster_size} and "
                f"{self.n_hashes}"
            )
        if low_rank and (self.n_features < 2 or self.n_features % 2):
            raise ConfigError(
                f"{mode.name}: n_features must be even and >= 2 (each projection row gives two "
                f"features), got {self.n_features}"
            )
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"scale must be a positive finite number, got {self.scale}")

    @property
    def projection_rows(self) -> int:
        """Rows m of the ``projection`` input (n_features / 2)."""
        return self.n_features // 2

    def input_names(self) -> tuple[str, ...]:
        """The node's inputs in order; "" marks an omitted optional input (ONNX convention)."""
        if self.mode == Mode.LSH:
            return INPUT_NAMES[:4]
        if self.mode == Mode.PERFORMER:
            return (*INPUT_NAMES[:3], "", INPUT_NAMES[4])
        return INPUT_NAMES

    def onnx_attributes(self) -> dict[str, Any]:
        """The attributes as plain ints/floats, plus ``plugin_version``/``plugin_namespace`` for the
        TensorRT ONNX parser."""
        from vitrt.plugins.lowering import node_attributes

        return node_attributes(self, PLUGIN_VERSION, PLUGIN_NAMESPACE)

    def budget_per_query(self) -> int:
        """Memory budget in float32 entries per token: n_hashes * cluster_size sparse scores plus the
        query and key features (2 * n_features).

        This is the accounting under which the paper's T2T-ViT configurations all use about 1/32 of
        dense attention's N entries per token at N = 3136 (Scatterbrain 2 * 24 + 2 * 24 = 96, SMYRF
        2 * 49 = 98, Performer 2 * 49 = 98); the presets of ``integration`` compare at it.
        """
        sparse = self.n_hashes * self.cluster_size if self.mode != Mode.PERFORMER else 0
        return sparse + (2 * self.n_features if self.mode != Mode.LSH else 0)


def padded_length(n: int, cluster_size: int) -> int:
    """N rounded up to a multiple of the cluster size (the sorted, clustered length).

    Written with non-negative operands only: the TorchScript ONNX exporter traces sizes as tensors
    and lowers // to a truncating Div, so the ceil-division idiom -(-n // c) would round the wrong way.
    """
    return (n + cluster_size - 1) // cluster_size * cluster_size


def output_shape(q_shape: tuple[int, ...], v_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The output-shape rule: [B, H, N, Dv] from q [B, H, N, E] and v [B, H, N, Dv]."""
    b, h, n, _ = q_shape
    return (b, h, n, v_shape[-1])


def largest_intermediate_elements(attrs: ScatterbrainAttrs, b: int, h: int, n: int, e: int, dv: int) -> int:
    """Elements of the largest tensor the reference allocates (float32 unless noted), analytically.

    Candidates, with P = padded length and R = n_hashes: per-round score blocks [B, H, R, P/c, c, c]
    = B H R P c; rounds of sorted q, k ([.., R, P, E]) and of v / per-round outputs ([.., R, P, Dv]);
    the XBOX+ vectors [B, H, P, E + 2]; the features [B, H, P, n_features]; the int64 sort indices
    [B, H, R, P] count as two float32 elements each. Dense attention's is B H N N.
    """
    mode = Mode(attrs.mode)
    cands = [b * h * n * max(e, dv)]
    if mode != Mode.LSH:
        cands.append(b * h * n * attrs.n_features)
    if mode != Mode.PERFORMER:
        p = padded_length(n, attrs.cluster_size)
        r = attrs.n_hashes
        cands += [b * h * r * p * attrs.cluster_size, b * h * r * p * max(e, dv), b * h * p * (e + 2)]
        cands.append(2 * b * h * r * p)
    return max(cands)


def dense_attention_elements(b: int, h: int, n: int) -> int:
    """Elements of dense attention's materialised probability matrix [B, H, N, N]."""
    return b * h * n * n


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    hash_vectors: torch.Tensor | None,
    projection: torch.Tensor | None,
) -> None:
    """Raise a ValueError (shapes) or TypeError (dtypes) naming the problem and the expected input.

    Shapes only (static), so this costs nothing in an exported graph.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must have rank 4 [batch, heads, tokens, head_dim], got shape {tuple(t.shape)}"
            )
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; {PLUGIN_NAME} supports {SUPPORTED_DTYPES}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape != k.shape:
        raise ValueError(
            f"q and k must have the same shape [B, H, N, E] (self-attention), got {tuple(q.shape)} and "
            f"{tuple(k.shape)}"
        )
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"v must be [B, H, N, Dv] with k's B, H, N {tuple(k.shape[:3])}, got {tuple(v.shape)}"
        )
    if q.shape[2] < 1 or q.shape[3] < 1:
        raise ValueError(f"q, k, v need at least one token and one channel, got {tuple(q.shape)}")
    e = q.shape[-1]
    fixed = (("hash_vectors", hash_vectors, e + XBOX_EXTRA_DIMS), ("projection", projection, e))
    for name, tensor, cols in fixed:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
        if tensor.dim() != 2 or tensor.shape[0] < 1 or tensor.shape[1] != cols:
            what = "[n_hashes, E + 2] (XBOX+ adds two coordinates)" if name == "hash_vectors" else "[m, E]"
            raise ValueError(
                f"{name} must be {what} = [*, {cols}] for head_dim E={e}, got {tuple(tensor.shape)}"
            )
