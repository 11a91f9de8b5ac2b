"""The exported ``nn.Unfold`` (Pad, two Gathers, a Transpose: what the TorchScript exporter writes for
T2T-ViT's soft split) becomes one grouped one-hot convolution in the graph preparation: the same values
(each output is one input times 1.0), and the precision steps keep it in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vitrt.compiler.unfold_conv import is_selection_conv, one_hot_unfold_weight, window_rows


class TwoUnfolds(nn.Module):
    """Unfold the image, then unfold again from tokens reshaped to a grid (a shape known only at run time)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Unfold(7, stride=4, padding=2)
        self.second = nn.Unfold(3, stride=2, padding=1)
        self.proj = nn.Linear(147, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(self.first(x).transpose(1, 2))  # [B, 256, 8]
        b, _, c = tokens.shape
        side = 16  # 64 / 4: a constant, as T2T-ViT's reshape of a known image size
        grid = tokens.transpose(1, 2).reshape(b, c, side, side)
        return self.second(grid)  # [B, 72, 64]


def test_window_rows_and_weights() -> None:
    assert window_rows(np.arange(4)[:, None] + 2 * np.arange(5)[None, :]) == (4, 2)
    assert window_rows(np.array([[0, 2], [1, 4]])) is None  # not i + o * stride
    w = one_hot_unfold_weight(2, 3)
    assert w.shape == (18, 1, 3, 3) and is_selection_conv(w) and w[3 * 3 + 1 * 3 + 2, 0, 1, 2] == 1.0
    assert not is_selection_conv(w * 0.5) and not is_selection_conv(np.ones((2, 1, 3, 3), np.float32))


def test_exported_unfolds_become_one_hot_convolutions(tmp_path: Path) -> None:
    import onnx

    import vitrt
    from vitrt.calibration.graph import find_layers
    from vitrt.deploy.runners import OnnxRuntimeRunner

    model = TwoUnfolds().eval()
    x = torch.randn(2, 3, 64, 64)
    foreign = tmp_path / "foreign.onnx"
    with pytest.warns(DeprecationWarning):  # the TorchScript exporter, as foreign scripts use it
        torch.onnx.export(
            model, (x,), str(foreign), opset_version=14, dynamo=False, input_names=["images"],
            dynamic_axes={"images": {0: "batch"}},
        )  # fmt: skip
    prepared_path, report = vitrt.prepare(foreign, tmp_path / "prepared.onnx")
    assert report.fused.get("Conv (unfold)") == 2
    prepared = onnx.load(str(prepared_path))
    ops = [n.op_type for n in prepared.graph.node]
    assert ops.count("Conv") == 2  # both unfolds: the image's, and the run-time-shaped grid's
    feed = {"images": np.random.default_rng().standard_normal((3, 3, 64, 64)).astype(np.float32)}
    expected = OnnxRuntimeRunner(foreign).infer(feed)
    got = OnnxRuntimeRunner(prepared_path).infer(feed)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(
            next(iter(got.values())), model(torch.from_numpy(feed["images"])).numpy(), rtol=1e-4, atol=1e-4
        )
    convs = [layer for layer in find_layers(prepared) if layer.op_type == "Conv"]
    assert len(convs) == 2 and all("one-hot convolution" in (layer.reason or "") for layer in convs)
