"""Counting a model's cost by running it, not by quoting papers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    """Cost of one forward pass at batch 1.

    params: parameters (all, frozen ones included, as the T2T-ViT paper counts);
    macs: multiply-accumulates of matmuls, linears and convolutions (what the T2T-ViT, DeiT and MCTF
    papers call FLOPs); flops: 2 * macs.
    """

    params: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


def count_complexity(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> Complexity:
    """Run one image of ``input_size`` (C, H, W; default: the model's preprocessing size) through
    ``model`` under torch's FLOP counter. Element-wise ops (softmax, GELU, LayerNorm) are not
    counted, as in the papers' tables."""
    if input_size is None:
        input_size = model.preprocess.input_size  # type: ignore[union-attr, assignment]
    assert input_size is not None
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    x = torch.randn(1, *input_size)
    with torch.no_grad(), counter:
        model.eval()(x)
    return Complexity(params=params, macs=counter.get_total_flops() // 2)
