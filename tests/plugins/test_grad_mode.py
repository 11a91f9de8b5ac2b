"""``vitrt.plugins.lowering.grad_mode``: torch's grad-mode switch in eager mode (as a context manager and as
a decorator), nothing under torch.export, so exported graphs carry no grad-mode nodes for torch.export's
set-grad pass to split at, and compute the same."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import vitrt.plugins.lowering as lowering
from vitrt.plugins.lowering import grad_mode
from vitrt.plugins.token_fusion.reference import token_fusion
from vitrt.plugins.token_fusion.spec import TokenFusionAttrs


@grad_mode(False)
def _doubled(x: Tensor) -> Tensor:
    return x * 2


def test_in_eager_mode_it_switches_gradients_like_torch() -> None:
    x = torch.randn(3, requires_grad=True)
    with grad_mode(False):
        assert not (x * 2).requires_grad and not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    assert not _doubled(x).requires_grad and not _doubled(x).requires_grad  # the decorator, used twice
    with torch.no_grad(), grad_mode(True):
        assert (x * 2).requires_grad


class _Fusion(nn.Module):
    """The token-fusion reference, which matches and weighs tokens under ``grad_mode(False)``."""

    def forward(self, x: Tensor, info: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return token_fusion(x, x, info, size, TokenFusionAttrs(r=5))


def _grad_mode_nodes(program: torch.export.ExportedProgram) -> int:
    """Grad-mode switches the exported program kept, as nodes or as the submodules the set-grad pass wraps
    them into."""
    graph = program.graph_module
    switches = sum(n.target is torch._C._set_grad_enabled for n in graph.graph.nodes)
    return switches + sum(1 for name, _ in graph.named_children() if name.startswith("submod"))


@pytest.mark.parametrize("skip", [True, False])
def test_under_export_it_leaves_no_switch_and_the_program_computes_the_same(
    skip: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lowering, "SKIP_GRAD_MODE_IN_EXPORT", skip)
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    x = torch.randn(2, 17, 8, generator=g)
    info = torch.softmax(torch.randn(2, 17, generator=g), dim=-1)
    size = torch.randint(1, 4, (2, 17), generator=g).float()
    program = torch.export.export(_Fusion(), (x, info, size))
    # torch's own switches inside a training-mode trace: the set-grad pass keeps them as wrapped submodules
    assert (_grad_mode_nodes(program) == 0) == skip
    for got, want in zip(program.module()(x, info, size), _Fusion()(x, info, size), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
