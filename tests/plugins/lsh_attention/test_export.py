"""The reference traces: torch.export, and both ONNX exporters (TorchScript ``dynamo=False`` and the
default dynamo exporter), with ONNX Runtime reproducing the PyTorch output, ties included."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from vitrt.plugins.lsh_attention.module import LSHAttention, PerformerAttention, ScatterbrainAttention


class _Layer(nn.Module):
    """A core with its layer's fixed scale, as a model calls it."""

    def __init__(self, core: nn.Module, scale: float) -> None:
        super().__init__()
        self.core, self.scale = core, scale

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self.core(q, k, v, self.scale)


CORES = {
    "scatterbrain": lambda: ScatterbrainAttention(16, cluster_size=8, n_hashes=2, n_features=8, seed=1),
    "lsh": lambda: LSHAttention(16, cluster_size=8, n_hashes=2, seed=1),
    "performer": lambda: PerformerAttention(16, n_features=8, seed=1),
}


def _inputs() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 50, 16, generator=g) for _ in range(3))  # 50 -> 56: padded
    # Repeated tokens tie in every hash: the exported sort must group them as PyTorch does.
    for t in (q, k, v):
        t[:, :, 30:40] = t[:, :, 20:21]
    return q, k, v


@pytest.mark.parametrize("name", list(CORES))
def test_torch_export(name: str) -> None:
    layer = _Layer(CORES[name](), 0.2).eval()
    args = _inputs()
    program = torch.export.export(layer, args)
    torch.testing.assert_close(program.module()(*args), layer(*args), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "dynamo"), [(n, False) for n in CORES] + [("scatterbrain", True)])
def test_onnx_export_runs_in_onnxruntime(name: str, dynamo: bool, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    layer = _Layer(CORES[name](), 0.2).eval()
    q, k, v = _inputs()
    path = tmp_path / "core.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            layer,
            (q, k, v),
            str(path),
            input_names=["q", "k", "v"],
            dynamo=dynamo,
            opset_version=18 if dynamo else 17,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), layer(q, k, v), rtol=1e-4, atol=1e-5)
