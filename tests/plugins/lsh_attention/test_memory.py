"""Attention memory at the paper's setting: N = 3136 tokens (T2T attention1 at 224), head dim 64,
cluster 24, 2 hash rounds, 24 features. Measured by watching every allocation of the real computation
(it takes well under a second at this size; only dense attention's N x N matrix is computed
analytically here)."""

from __future__ import annotations

import torch

from vitrt.plugins.lsh_attention.memory import measure_allocations
from vitrt.plugins.lsh_attention.module import ScatterbrainAttention
from vitrt.plugins.lsh_attention.spec import dense_attention_elements, largest_intermediate_elements

N, E = 3136, 64


def test_largest_intermediate_is_under_5_percent_of_dense() -> None:
    core = ScatterbrainAttention(E, cluster_size=24, n_hashes=2, n_features=24)
    q, k, v = (torch.randn(1, 1, N, E) for _ in range(3))
    stats = measure_allocations(lambda *a: core(*a, 147**-0.5), q, k, v, external=list(core.buffers()))
    dense_bytes = 4 * dense_attention_elements(1, 1, N)
    ratio = stats.largest / dense_bytes
    print(
        f"largest {stats.largest} B ({stats.largest_op}), peak {stats.peak} B, "
        f"dense {dense_bytes} B: {ratio:.2%}"
    )
    # The analytic bound of the spec holds (no unexpected big allocation).
    assert stats.largest <= 4 * largest_intermediate_elements(core.attrs(0.1), 1, 1, N, E, E)
    assert ratio <= 0.05
    # All live intermediates together stay well below one dense matrix as well.
    assert stats.peak <= 0.25 * dense_bytes


def test_tracker_sees_dense_attention_matrix() -> None:
    from vitrt.models.layers import DenseAttention

    q, k, v = (torch.randn(1, 2, 300, 16) for _ in range(3))
    stats = measure_allocations(lambda *a: DenseAttention()(*a, 0.25), q, k, v)
    assert stats.largest == 4 * dense_attention_elements(1, 2, 300)
    assert stats.peak >= 2 * stats.largest  # scores and probabilities coexist
