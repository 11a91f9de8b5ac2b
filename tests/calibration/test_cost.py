"""The ONNX Runtime form's cost model: layer sizes from one run of the graph, and which sizes stay float."""

from __future__ import annotations

import numpy as np
import pytest

from tests.calibration._graphs import vit_like
from vitrt.calibration.cost import REASON, LayerSize, OrtCostModel, apply_cost_model, layer_sizes
from vitrt.calibration.graph import find_layers


def test_layer_sizes_are_per_sample_products_read_off_one_run() -> None:
    model = vit_like(seed=1)
    layers = find_layers(model)
    sizes = layer_sizes(model, layers, np.zeros((1, 3, 8, 8), np.float32))
    assert set(sizes) == {layer.name for layer in layers}
    # 4 tokens of 16: qkv 16 -> 48; q k^T over 4 x 4 scores of 16; the 4 x 4 patch Conv, 3 channels -> 16
    assert sizes["blocks.0.attn.qkv/MatMul_1"] == LayerSize("MatMul", 4 * 16 * 48, 16, 48, True)
    assert sizes["blocks.0.attn.core/MatMul_1"] == LayerSize("MatMul", 4 * 4 * 16, 16, 4, False, True)
    assert sizes["patch_embed.proj/Conv_1"] == LayerSize("Conv", 4 * 16 * 48, 48, 16, True)
    assert sizes["head/Gemm_1"] == LayerSize("Gemm", 16 * 10, 16, 10, True)
    # the performer's phi^T x reads a Transpose of the last two axes
    assert sizes["perf/MatMul_2"].transposed_input and not sizes["perf/MatMul_3"].transposed_input


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        (LayerSize("Gemm", 256 * 147 * 96, 147, 96, True), None),  # the T2T performer's kqv
        (LayerSize("MatMul", 17 * 96 * 288, 96, 288, True), None),
        (LayerSize("Gemm", 17 * 96 * 96, 96, 96, True), "156,672 MACs per sample, below 262,144"),
        (LayerSize("Gemm", 256 * 32 * 32, 32, 32, True), "32 -> 32 features, narrower than 64"),
        (LayerSize("MatMul", 16 * 288 * 96, 288, 96, True, True), "96 output features behind a Transpose"),
        (LayerSize("MatMul", 196 * 576 * 384, 576, 384, True, True), None),  # T2T-ViT-14's project at 224
        (LayerSize("MatMul", 4 * 65 * 65 * 24, 24, 65, False), "below 4,194,304 for a product of two"),
        (LayerSize("MatMul", 6 * 197 * 197 * 64, 64, 197, False), None),  # DeiT-S attention at 224
        (LayerSize("Conv", 196 * 768 * 384, 768, 384, True), "no int8 Conv with a float output"),
    ],
)
def test_cost_model_keeps_small_layers_float(size: LayerSize, reason: str | None) -> None:
    got = OrtCostModel().reason(size)
    if reason is None:
        assert got is None
    else:
        assert got is not None and got.startswith(REASON) and reason in got, got


def test_apply_cost_model_leaves_layers_the_graph_keeps_float_as_they_are() -> None:
    layers = find_layers(vit_like(seed=1))
    sizes = layer_sizes(vit_like(seed=1), layers, np.zeros((1, 3, 8, 8), np.float32))
    before = {layer.name: layer.reason for layer in layers}
    kept = apply_cost_model(layers, sizes, OrtCostModel())
    assert set(kept) == {name for name, why in before.items() if why is None}  # everything is tiny here
    assert all(layer.reason == before[layer.name] for layer in layers if before[layer.name] is not None)
