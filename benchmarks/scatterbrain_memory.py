"""Attention memory of Scatterbrain, SMYRF (LSH) and Performer at the paper's T2T-ViT budgets, measured.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scatterbrain_memory.py

Runs each attention core on q, k, v [1, 1, N, 64] (one image, the single head of a T2T token
attention) under ``vitrt.plugins.lsh_attention.memory.AllocationTracker``, which sees every tensor the ops
allocate: "largest" is the largest single intermediate, "peak" the most bytes of intermediates alive at
once (inputs and the fixed buffers excluded). Dense attention is run too (it materialises
[N, N] scores and probabilities). Both scale linearly with batch and heads.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from vitrt.models.layers import DenseAttention
from vitrt.plugins.lsh_attention.integration import PAPER_BUDGETS, make_core
from vitrt.plugins.lsh_attention.memory import measure_allocations
from vitrt.plugins.lsh_attention.spec import dense_attention_elements

SETTINGS = (("attention1", 3136, 147**-0.5), ("attention2", 784, 576**-0.5))
E = 64


def main() -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print("| layer | N | method | budget | largest (KiB) | / dense N x N | peak (KiB) | / dense peak | ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for slot, n, scale in SETTINGS:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 1, n, E, generator=g) for _ in range(3))
        cores: list[tuple[str, str, nn.Module]] = [("dense", "N x N", DenseAttention())]
        for method, budgets in PAPER_BUDGETS.items():
            b = budgets[slot]
            parts = [f"c{b.cluster_size} x{b.n_hashes}"] if b.cluster_size else []
            desc = " + ".join(parts + ([f"f{b.n_features}"] if b.n_features else []))
            cores.append((method, desc, make_core(method, b, E, seed=0)))
        dense_matrix = 4 * dense_attention_elements(1, 1, n)
        dense_peak = 0
        for name, desc, core in cores:

            def call(q: Tensor, k: Tensor, v: Tensor, core: nn.Module = core, scale: float = scale) -> Tensor:
                return core(q, k, v, scale)

            stats = measure_allocations(call, q, k, v, external=list(core.buffers()))
            start = time.perf_counter()
            with torch.no_grad():
                call(q, k, v)
            ms = 1000 * (time.perf_counter() - start)
            dense_peak = dense_peak or stats.peak
            print(
                f"| {slot} | {n} | {name} | {desc} | {stats.largest / 1024:.0f} | "
                f"{stats.largest / dense_matrix:.2%} | {stats.peak / 1024:.0f} | "
                f"{stats.peak / dense_peak:.1%} | {ms:.1f} |"
            )


if __name__ == "__main__":
    main()
