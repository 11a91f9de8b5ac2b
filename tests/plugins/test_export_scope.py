"""``vitrt.plugins.lowering.ExportScope``: a plain call in eager mode, a module call under torch.export, so
that the ops of the function it runs carry the scope's module path (and modules the function calls keep
their own), with the same outputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vitrt.plugins.lowering import ExportScope


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.inner = ExportScope()

    def forward(self, x: Tensor) -> Tensor:
        y = self.inner.run(lambda: (self.lin(x).relu() * 2).softmax(-1))
        return y + 1  # at the model's own scope


def _innermost(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def test_eager_calls_are_plain_calls() -> None:
    toy = _Toy()
    calls: list[str] = []
    toy.inner.register_forward_pre_hook(lambda *_: calls.append("inner"))
    x = torch.randn(3, 4)
    got = toy(x)
    assert calls == []  # no module call outside exports
    torch.testing.assert_close(got, (toy.lin(x).relu() * 2).softmax(-1) + 1, atol=0, rtol=0)


def test_exported_ops_carry_the_scope_and_compute_the_same() -> None:
    toy = _Toy().eval()
    program = torch.export.export(toy, (torch.randn(3, 4),))
    scopes = {n.target: _innermost(n) for n in program.graph.nodes if n.op == "call_function"}
    ops = {str(target).split(".")[1]: scope for target, scope in scopes.items()}
    assert ops["relu"] == ops["mul"] == ops["softmax"] == "inner"
    assert ops["linear"] == "lin"  # a module the function calls keeps its own path
    assert ops["add"] == ""
    x = torch.randn(3, 4)  # fresh values; the program's batch is static
    torch.testing.assert_close(program.module()(x), toy(x), atol=0, rtol=0)
