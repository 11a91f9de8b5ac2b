"""Which layers gain from INT8 on ONNX Runtime's CPU kernels: the cost model of the ``onnxruntime`` form.

TensorRT chooses int8 or float per layer itself (it times tactics) and fuses the QuantizeLinear into the
kernel before it; ONNX Runtime runs what the graph says. There, a quantized layer costs a QuantizeLinear
pass over its input besides its int8 kernel (QGemm, MatMulIntegerToFloat, QLinearMatMul), and that kernel
beats MLAS's float GEMM only once the product is large enough. Measured per layer shape on a 2-core x86
AMD EPYC (AVX-512 VNNI), ONNX Runtime 1.31, 2 threads, batch 1 (``benchmarks/ort_int8_layers.py``;
ratio = Q + int8 kernel with its int32 bias / the float layer):

    weight layers  M x K x N        MACs    ratio       activation x activation  MACs    ratio
    256 x 147 x 96                  3.6 M   0.5-0.6     4 heads, 65 tokens, 24   0.41 M  1.2
    17 x 96 x 288                   0.47 M  0.8-0.9     3-6 heads, 197, 64       7-15 M  0.8-0.9
    17 x 96 x 192                   0.31 M  0.8-1.0
    17 x 96 x 96                    0.16 M  0.9-1.0
    256 x 32 x 32                   0.26 M  1.0-1.1
    64 x 32 x 32, 1 x 96 x 10       < 0.07 M 1.1-1.2
    197 x 384 x 1152 (DeiT-S)       87 M    0.3

So the ``onnxruntime`` form quantizes (``OrtCostModel``):

- a layer with a constant weight (MatMul, Gemm) of at least ``min_macs`` multiply-adds per sample whose
  input and output widths (K, N) are both at least ``min_width``: narrower products spend as long
  quantizing their input as they save (the QuantizeLinear is one pass over the M x K input, the gain
  N multiply-adds per input value). A layer whose input comes straight out of a Transpose of its last
  two axes needs N >= 2 ``min_width``: ONNX Runtime folds that Transpose into its float MatMul
  (FusedMatMul) but not into the int8 kernels, before which it moves the QuantizeLinear up through the
  data movement, so the INT8 layer pays a second pass over its input (the T2T ``project`` layer of the
  digits model, 16 x 288 x 96 behind the soft split's transposes: slower INT8 than float in the model);
- a product of two activations (attention's q k^T and p v) of at least ``min_activation_macs``
  (batched over heads, ONNX Runtime's int8 MatMul gains little even at 224);
- no Conv: ONNX Runtime has no int8 convolution with a float output (its QDQ transformer makes a
  QLinearConv only when the output is quantized too), so a quantized Conv would dequantize its weights
  on every run and lose the float Conv's blocked (NCHWc) kernel.

Sizes come from one run of the model on ONNX Runtime (``layer_sizes``), so they hold for foreign graphs
whose shapes are computed at run time. The thresholds are data: another CPU may warrant others.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitrt.fileio import save_onnx

from .collect import RunnerFactory, default_runner_factory, model_io, with_outputs
from .graph import GraphIndex, Layer

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

REASON = "ONNX Runtime cost model"  # how the reasons of the layers it keeps float begin


@dataclass(frozen=True)
class LayerSize:
    """One layer's product per sample: ``macs`` multiply-adds, ``reduce`` (K) summed per output value,
    ``width`` (N) output features; ``weighted``: one input is a constant weight."""

    op_type: str
    macs: int
    reduce: int
    width: int
    weighted: bool
    transposed_input: bool = False  # the activation comes straight out of a Transpose of its last two axes


@dataclass(frozen=True)
class OrtCostModel:
    """When a layer is worth INT8 on ONNX Runtime's CPU kernels (module docstring for the measurements)."""

    min_macs: int = 1 << 18
    min_width: int = 64
    min_activation_macs: int = 1 << 22

    def reason(self, size: LayerSize) -> str | None:
        """Why the layer stays float on ONNX Runtime, or None (quantize it)."""
        where = REASON
        if size.op_type == "Conv":
            return (
                f"{where}: no int8 Conv with a float output (a quantized Conv would dequantize its "
                "weights on every run)"
            )
        if not size.weighted:
            if size.macs < self.min_activation_macs:
                return (
                    f"{where}: {size.macs:,} MACs per sample, below {self.min_activation_macs:,} for a "
                    "product of two activations"
                )
            return None
        if size.macs < self.min_macs:
            return f"{where}: {size.macs:,} MACs per sample, below {self.min_macs:,}"
        if min(size.reduce, size.width) < self.min_width:
            return (
                f"{where}: {size.reduce} -> {size.width} features, narrower than {self.min_width} "
                "(quantizing the input costs what the int8 product saves)"
            )
        if size.transposed_input and size.width < 2 * self.min_width:
            return (
                f"{where}: {size.width} output features behind a Transpose, fewer than {2 * self.min_width} "
                "(ONNX Runtime folds the Transpose into the float MatMul, not into its int8 kernel)"
            )
        return None


def layer_sizes(
    model: ModelProto,
    layers: Sequence[Layer],
    samples: np.ndarray,
    *,
    runner_factory: RunnerFactory | None = None,
) -> dict[str, LayerSize]:
    """{layer name: LayerSize} from one run of ``model`` on ``samples`` ((n, C, H, W), the model's batch
    size when it is fixed) with every layer's inputs and output as extra outputs."""
    index = GraphIndex.build(model)
    io = model_io(model)
    nodes = {n.name: n for n in model.graph.node}
    tensors = (t for layer in layers for t in [*nodes[layer.name].input[:2], layer.output])
    wanted = list(dict.fromkeys(t for t in tensors if t and not index.is_constant(t)))
    factory = runner_factory or default_runner_factory()
    with tempfile.TemporaryDirectory(prefix="vitrt-sizes-") as tmp:
        runner = factory(save_onnx(with_outputs(model, wanted), Path(tmp) / "sizes.onnx"))
        outputs = runner.infer({io.input_name: np.ascontiguousarray(samples, dtype=np.float32)})
        del runner
    shapes: dict[str, tuple[int, ...]] = {t: tuple(np.shape(outputs[t])) for t in wanted if t in outputs}
    shapes[io.input_name] = tuple(samples.shape)
    for name, tensor in index.constants.items():
        shapes.setdefault(name, tuple(int(d) for d in tensor.dims))
    n = max(len(samples), 1)
    sizes: dict[str, LayerSize] = {}
    for layer in layers:
        node = nodes[layer.name]
        a, w, out = (shapes.get(t, ()) for t in (node.input[0], node.input[1], layer.output))
        if not out or not a or not w:
            continue
        if node.op_type == "Conv":
            reduce, width = math.prod(w[1:]), w[0]
        elif node.op_type == "Gemm":
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            reduce, width = (a[0] if trans_a else a[-1]), out[-1]
        else:
            reduce, width = a[-1], out[-1]
        sizes[layer.name] = LayerSize(
            node.op_type,
            macs=int(math.prod(out) * reduce // n),
            reduce=int(reduce),
            width=int(width),
            weighted=bool(layer.weights),
            transposed_input=any(_last_axes_swapped(index.producer.get(t)) for t in layer.activations),
        )
    return sizes


def _last_axes_swapped(node: NodeProto | None) -> bool:
    """True for a Transpose that swaps only the last two axes (what ONNX Runtime folds into a MatMul)."""
    if node is None or node.op_type != "Transpose":
        return False
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return (
        perm is not None and len(perm) >= 2 and perm == [*range(len(perm) - 2), len(perm) - 1, len(perm) - 2]
    )


def apply_cost_model(
    layers: Sequence[Layer], sizes: Mapping[str, LayerSize], model: OrtCostModel
) -> list[str]:
    """Set ``reason`` on the candidate layers (no reason yet) that stay float by ``model``; returns
    their names. A layer without a size (not measured) is left as it is."""
    kept: list[str] = []
    for layer in layers:
        if layer.reason is None and layer.name in sizes:
            why = model.reason(sizes[layer.name])
            if why is not None:
                layer.reason = why
                kept.append(layer.name)
    return kept
