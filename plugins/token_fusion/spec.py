"""The TokenFusion op: one definition that the reference, the ONNX lowerings, the CUDA kernels and the
TensorRT plugin all read.

Op boundary
-----------
``TokenFusion`` fuses ``r`` of the ``N`` tokens of one block into others (MCTF, with ToMe as a special
case). It owns the data-dependent part (scoring, bipartite matching, pooling) and nothing that needs
the block's weights::

    inputs                                       outputs
    x       [B, N, C]   tokens to fuse           x_f     [B, N - r, C]  fused tokens (dtype of x)
    metric  [B, N, Cm]  similarity features      size_f  [B, N - r]     patches per fused token
    info    [B, N]      attention each token     dest    [B, N] int64   output slot of every input
                        receives (mean over                             token (class token -> 0)
                        heads and queries)
    size    [B, N]      patches per token (ones
                        before the first fusion)

* ``metric`` is the block input ``x`` for MCTF and the keys averaged over heads for ToMe, so one op
  serves both; it is L2-normalised inside the op.
* ``info`` is a [B, N] reduction of the attention rather than the attention itself: the op then never
  sees an N x N tensor, and ``info`` is one ReduceMean in any backend. It is ignored when
  ``tau_info == 0`` and ``pooling != ATTN_SIZE`` (ToMe): pass ones.
* ``dest`` is the whole merge map (``M[b, dest[b, i], i] = 1`` is the one-hot merge matrix
  [B, N - r, N]). MCTF's one-step-ahead attention (columns of merged keys summed, rows of merged
  queries averaged with the pooling weights) is a function of ``dest``, ``info`` and ``size`` alone
  (``reference.merge_attention``), so it stays outside the op: standard ops in exported graphs
  (reassociated: ``FusionBlock._attend_merged``), the merge kernel on the CUDA path. Proportional
  attention (adding log(size) to the key logits) and the choice of where in the block to fuse are
  likewise block-level, not op attributes: see ``FusionBlockConfig`` in
  ``vitrt.plugins.token_fusion.config``.

Output order (the next block splits its tokens by parity, so the order is part of the function):
``[unmerged set-A tokens in index order (class token first), unmerged set-B tokens]``, set A being the
even positions and set B the odd ones. With ``bidirectional`` the B tokens come in decreasing order of
their best score (as the official MCTF code leaves them); without it, all B tokens in index order
(ToMe).

With ``r = 0`` the op is the identity (``dest = arange(N)``), not a reordering.

Static shapes: ``r`` is an attribute already capped for the node's N (``removed_tokens``), so
``N_out = N - r`` is known when the graph is built. Scoring and matching run in float32 whatever the
input dtype (the decisions must not change with precision, and 1/attention overflows float16);
pooling accumulates in float32 and casts back.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import torch

PLUGIN_NAME = "TokenFusion"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "vitrt"

INPUT_NAMES = ("x", "metric", "info", "size")
OUTPUT_NAMES = ("x_fused", "size_fused", "dest")
SUPPORTED_DTYPES = (torch.float32, torch.float16)
DEST_DTYPE = torch.int64

MIN_TOKENS_LEFT = 10
"""A fusion never leaves fewer tokens than this (class token included), as in the official MCTF."""


class Pooling(enum.IntEnum):
    """How the tokens of one group are averaged (values are the official MCTF ``pooling_type``)."""

    SIZE = 0
    """weights = size: ToMe's size-weighted mean."""
    ATTN_SIZE = 1
    """weights = info * size / max(size): MCTF's attention x size pooling."""
    MEAN = 3
    """weights = 1: plain mean of the group."""


@dataclass(frozen=True)
class TokenFusionAttrs:
    """Static attributes of one ``TokenFusion`` node (ONNX node attributes / TensorRT plugin fields).

    r: tokens removed by this node, already capped for its input (0 <= r <= (N - p) // 2 and
        N - r >= MIN_TOKENS_LEFT, p = num_protected); N_out = N - r.
    num_protected: leading tokens that are never merged away (1: the class token).
    tau_sim, tau_info, tau_size: temperatures of the score factors; 0 disables a factor.
        score = ((cos + 1) / 2)^(1/tau_sim) * (i_a i_b)^(1/tau_info) * (s_a s_b)^(1/tau_size).
    bidirectional: 1: r // 2 merges A -> B then r - r // 2 merges B -> A; 0: r merges A -> B.
    pooling: a ``Pooling`` value.
    """

    r: int
    num_protected: int = 1
    tau_sim: float = 1.0
    tau_info: float = 20.0
    tau_size: float = 40.0
    bidirectional: int = 1
    pooling: int = Pooling.ATTN_SIZE

    def __post_init__(self) -> None:
        # A programming error (configs are validated with ConfigError before they get here).
        if self.r < 0 or self.num_protected < 0:
            raise ValueError(f"r and num_protected must be >= 0, got {self}")
        if min(self.tau_sim, self.tau_info, self.tau_size) < 0:
            raise ValueError(f"temperatures must be >= 0, got {self}")
        Pooling(self.pooling)

    def onnx_attributes(self) -> dict[str, Any]:
        """The attributes as plain ints/floats, plus ``plugin_version``/``plugin_namespace`` for the
        TensorRT ONNX parser."""
        from vitrt.plugins.lowering import node_attributes

        return node_attributes(self, PLUGIN_VERSION, PLUGIN_NAMESPACE)


def removed_tokens(n_in: int, r: float, num_protected: int = 1) -> int:
    """Tokens a fusion removes from ``n_in`` (class token included) for a requested ``r``.

    ``r >= 1`` is a count, ``0 < r < 1`` a fraction of the mergeable tokens (``int((n_in - p) * r)``,
    truncated as in the official code). Caps: at most ``(n_in - p) // 2`` (one partner per token of
    the smaller set) and at least ``MIN_TOKENS_LEFT`` tokens left. Unlike the official MCTF code,
    which applies the 10-token cap before converting a fraction (so never to fractions), the caps here
    apply to every r; the two agree whenever ``n_in >= 20``.
    """
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    count = int((n_in - num_protected) * r) if r < 1 else int(r)
    count = min(count, (n_in - num_protected) // 2, n_in - MIN_TOKENS_LEFT)
    return max(count, 0)


def output_tokens(n_in: int, attrs: TokenFusionAttrs) -> int:
    """The output-shape rule: tokens leaving a node with ``attrs`` for ``n_in`` entering it."""
    if attrs.r > removed_tokens(n_in, attrs.r, attrs.num_protected):
        raise ValueError(f"r={attrs.r} exceeds the cap for {n_in} tokens")
    return n_in - attrs.r


def set_sizes(n_in: int) -> tuple[int, int]:
    """Sizes of set A (even positions) and set B (odd positions) for ``n_in`` tokens."""
    return math.ceil(n_in / 2), n_in // 2
