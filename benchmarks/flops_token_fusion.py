"""Count (not quote) the cost of DeiT with and without token fusion.

Usage: ``python benchmarks/flops_token_fusion.py [model ...]`` (default: DeiT-T and DeiT-S at 224).
Prints MACs in G, which is what the DeiT, ToMe and MCTF papers call GFLOPs (FLOPs = 2 x MACs), from
torch's FLOP counter on one 224x224 image: matmuls, linears and convolutions only (softmax, GELU,
LayerNorm and the fusion's gather/scatter are not counted, as in the papers' tables).
"""

from __future__ import annotations

import sys

import torch

from vitrt import create_model
from vitrt.models.complexity import count_complexity

FUSIONS: tuple[str | None, ...] = (None, "mctf", "mctf-fast", "tome")
REPORTED = {  # GFLOPs (= GMACs) from the MCTF paper, for comparison
    ("deit_tiny_patch16_224", None): 1.26,
    ("deit_tiny_patch16_224", "mctf"): 0.71,
    ("deit_small_patch16_224", None): 4.61,
    ("deit_small_patch16_224", "mctf"): 2.60,
}


def main(names: list[str]) -> None:
    """Print one line per (model, fusion): tokens leaving the last block, GMACs, ratio to unfused."""
    torch.manual_seed(0)
    print(f"{'model':26s} {'fusion':10s} {'tokens':>6s} {'GMACs':>7s} {'ratio':>6s} {'paper':>6s}")
    for name in names:
        base = None
        for fusion in FUSIONS:
            model = create_model(name, fusion=fusion)
            gmacs = count_complexity(model).macs / 1e9
            base = base or gmacs
            paper = REPORTED.get((name, fusion))
            print(
                f"{name:26s} {fusion or '-':10s} {model.token_schedule()[-1]:6d} {gmacs:7.3f} "
                f"{gmacs / base:6.3f} {paper if paper else '':>6}"
            )


if __name__ == "__main__":
    main(sys.argv[1:] or ["deit_tiny_patch16_224", "deit_small_patch16_224"])
