"""The reference traces: torch.export, and both ONNX exporters (TorchScript ``dynamo=False`` and the
default dynamo exporter), with ONNX Runtime reproducing the PyTorch output, ties included."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from vitrt.plugins.lsh_attention.module import LSHAttention, PerformerAttention, ScatterbrainAttention
from vitrt.plugins.lsh_attention.reference import halving_sum, hashes, xbox_plus


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


class _Hashing(nn.Module):
    """The reference's hashing steps of queries and keys, each output with its token axis last: squared
    norms [B, H, N], XBOX+ vectors (transposed) [B, H, E + 2, N], hashes [B, H, R, N]."""

    def __init__(self, hash_vectors: Tensor) -> None:
        super().__init__()
        self.register_buffer("hash_vectors", hash_vectors)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, ...]:
        q_t, k_t = xbox_plus(q, k)
        return (
            halving_sum(q.square()),
            halving_sum(k.square()),
            q_t.transpose(-1, -2),
            k_t.transpose(-1, -2),
            hashes(q_t, self.hash_vectors),
            hashes(k_t, self.hash_vectors),
        )


@pytest.mark.parametrize(("n", "e"), [(50, 16), (57, 7), (197, 64), (100, 3)])
def test_onnxruntime_hashes_equal_tokens_alike(n: int, e: int, tmp_path: Path) -> None:
    """Copies of a token get bitwise equal squared norms, XBOX+ vectors and hashes in ONNX Runtime too,
    wherever they lie in memory (odd E included, where rows are not vector-aligned: ONNX Runtime's
    last-axis ReduceSum rounds equal rows differently there, and a MatMul need not round them alike),
    so the exported stable sort ties them as PyTorch does."""
    ort = pytest.importorskip("onnxruntime")
    g = torch.Generator().manual_seed(e)
    q, k = (torch.randn(2, 2, n, e, generator=g) for _ in range(2))
    copies = torch.zeros(n, dtype=torch.bool)
    copies[3::3] = copies[n // 2 : n // 2 + 8] = True  # every alignment of a row, neighbours too
    for t in (q, k):
        t[:, :, copies] = t[:, :, 3:4]
    module = _Hashing(torch.randn(3, e + 2, generator=g)).eval()
    path = tmp_path / "hashing.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (q, k), str(path), input_names=["q", "k"], dynamo=False, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"q": q.numpy(), "k": k.numpy()})
    for x, ref in zip(got, module(q, k), strict=True):
        x = torch.from_numpy(x)
        assert (x[..., copies] == x[..., 3:4]).all(), "equal tokens are hashed differently in ONNX Runtime"
        torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
