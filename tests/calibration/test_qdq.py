"""Q/DQ placement and insertion: what is quantized, what stays float, axes, numerics on ONNX Runtime.

Graphs are the hand-built ViT-like ones of tests/calibration/_graphs.py (seeded weights); numerics
are checked against numpy fake quantization with a stated tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.calibration._graphs import plugins_as_identity, save, vit_like
from vitrt.calibration.graph import ensure_node_names, find_layers, unmatched_patterns
from vitrt.calibration.qdq import gate_name, gated_model, insert_qdq, quantize_weight
from vitrt.calibration.ranges import fake_quantize, scale_from_amax
from vitrt.deploy.runners import OnnxRuntimeRunner
from vitrt.errors import ConfigError

QUANTIZED = {
    "patch_embed.proj/Conv_1",
    "blocks.0.attn.qkv/MatMul_1",
    "blocks.0.attn.core/MatMul_1",  # q k^T
    "blocks.0.attn.core/MatMul_2",  # attn v
    "blocks.0.attn.proj/MatMul_1",
    "blocks.0.mlp.fc1/MatMul_1",
    "blocks.0.mlp.fc2/MatMul_1",
    "perf.proj/MatMul_1",  # the performer's output projection: after the span
    "head/Gemm_1",
}
FLOAT_OPS = {"LayerNormalization", "Softmax", "Erf", "Exp", "Div", "Sub", "Add", "Mul", "TestPlugin"}


def _amax_for(layers: list) -> dict[str, float]:
    return {t: 4.0 for layer in layers for t in layer.activations}


def test_placement_quantizes_linear_inputs_and_leaves_the_rest_float() -> None:
    model = vit_like(plugin=True)
    layers = find_layers(model)
    by_name = {layer.name: layer for layer in layers}
    assert {layer.name for layer in layers if layer.reason is None} == QUANTIZED
    assert "its output feeds an Exp" in str(by_name["perf/MatMul_1"].reason)
    assert "derived from an Exp" in str(by_name["perf/MatMul_2"].reason)
    assert "derived from an Exp" in str(by_name["perf/MatMul_3"].reason)
    assert "next to plugin node 'blocks.1/TestPlugin_1' (vitrt::TestPlugin)" in str(
        by_name["blocks.1.attn.qkv/MatMul_1"].reason
    )
    # both attention matmuls quantize both activation inputs
    assert len(by_name["blocks.0.attn.core/MatMul_1"].activations) == 2
    assert len(by_name["blocks.0.attn.core/MatMul_2"].activations) == 2
    # weights: per output channel; Gemm transB=1 -> axis 0, MatMul [K, N] -> axis 1, Conv -> axis 0
    axes = {layer.name: [w.axis for w in layer.weights] for layer in layers}
    assert axes["head/Gemm_1"] == [0]
    assert axes["blocks.0.attn.qkv/MatMul_1"] == [1]
    assert axes["patch_embed.proj/Conv_1"] == [0]

    q = insert_qdq(model, layers, _amax_for(layers), {layer.name for layer in layers if layer.reason is None})
    onnx.checker.check_model(q)
    producer = {o: n for n in q.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # every dequantized tensor feeds only MatMul / Gemm / Conv
    for n in q.graph.node:
        if n.op_type == "DequantizeLinear":
            assert {c.op_type for c in consumers[n.output[0]]} <= {"MatMul", "Gemm", "Conv"}, n.name
    # the float ops read float tensors, and nothing quantizes a plugin output
    for n in q.graph.node:
        if n.op_type in FLOAT_OPS:
            assert all(
                producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input
            ), n.name
        if n.op_type == "QuantizeLinear":
            src = producer.get(n.input[0])
            assert src is None or src.domain != "vitrt"
    # each quantized layer reads only dequantized tensors (+ a float bias); float layers read none
    for n in q.graph.node:
        if n.op_type in ("MatMul", "Gemm", "Conv"):
            from_dq = [
                producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input[:2]
            ]
            assert all(from_dq) if n.name in QUANTIZED else not any(from_dq), n.name
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) == 11  # one per activation tensor
    # opsets, the plugin domain and metadata survive
    assert {o.domain for o in q.opset_import} == {"", "vitrt"}


def test_weights_are_int8_symmetric_per_channel_within_127() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((24, 12)).astype(np.float32) * np.linspace(0.1, 5.0, 12, dtype=np.float32)
    qw = quantize_weight(w, axis=1)
    assert qw.values.dtype == np.int8 and qw.scale.shape == (12,)
    assert int(np.abs(qw.values).max()) == 127 and int(qw.values.min()) >= -127
    np.testing.assert_allclose(qw.scale, np.abs(w).max(axis=0) / 127, rtol=1e-6)
    # rounding error at most half a step per channel
    assert np.all(np.abs(qw.dequantize() - w) <= qw.scale / 2 + 1e-7)
    per_tensor = quantize_weight(w, axis=None)
    assert per_tensor.scale.shape == () and per_tensor.axis is None


def test_qdq_model_matches_numpy_fake_quantization_on_onnxruntime(tmp_path: Path) -> None:
    model = vit_like(seed=3)
    layers = find_layers(model)
    amax = {t: 3.0 for layer in layers for t in layer.activations}
    q = insert_qdq(model, layers, amax, {"blocks.0.attn.qkv/MatMul_1"})  # one layer: check it exactly
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) == 1
    path = save(q, tmp_path / "q.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    # expected qkv output: Q/DQ of the LayerNorm output times the dequantized weight
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(
        onnx.helper.make_tensor_value_info("blocks.0.norm1/LayerNormalization_1:0", 1, None)
    )
    probe.graph.output.append(onnx.helper.make_tensor_value_info("blocks.0.attn.qkv/MatMul_1:0", 1, None))
    ref = OnnxRuntimeRunner(save(probe, tmp_path / "probe.onnx", check=False)).infer({"images": x})
    ln = ref["blocks.0.norm1/LayerNormalization_1:0"]
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w_qkv"))
    import torch

    xq = fake_quantize(torch.from_numpy(ln), float(np.float32(3.0 / 127))).numpy()
    expected = xq @ quantize_weight(w, axis=1).dequantize()
    probe_q = onnx.ModelProto()
    probe_q.CopyFrom(q)
    probe_q.graph.output.append(onnx.helper.make_tensor_value_info("blocks.0.attn.qkv/MatMul_1:0", 1, None))
    got = OnnxRuntimeRunner(save(probe_q, tmp_path / "probe_q.onnx", check=False)).infer({"images": x})
    np.testing.assert_allclose(got["blocks.0.attn.qkv/MatMul_1:0"], expected, rtol=1e-5, atol=1e-5)
    assert OnnxRuntimeRunner(path).infer({"images": x})["logits"].shape == (1, 10)


def test_gated_model_switches_each_layer(tmp_path: Path) -> None:
    model = vit_like(seed=4)
    layers = [layer for layer in find_layers(model) if layer.reason is None]
    amax = _amax_for(layers)
    runner = OnnxRuntimeRunner(save(gated_model(model, layers, amax), tmp_path / "gated.onnx"))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)

    def run(on: set[str]) -> np.ndarray:
        gates = {gate_name(layer.name): np.array(layer.name in on) for layer in layers}
        return runner.infer({"images": x, **gates})["logits"]

    fp32 = OnnxRuntimeRunner(save(model, tmp_path / "fp32.onnx")).infer({"images": x})["logits"]
    # all gates off: the float model (up to ONNX Runtime fusing differently inside If branches)
    np.testing.assert_allclose(run(set()), fp32, rtol=1e-5, atol=1e-5)
    everything = {layer.name for layer in layers}
    real = OnnxRuntimeRunner(save(insert_qdq(model, layers, amax, everything), tmp_path / "q.onnx"))
    # all gates on: the Q/DQ model, up to float summation order (int8 kernels vs float MatMul)
    np.testing.assert_allclose(run(everything), real.infer({"images": x})["logits"], rtol=1e-4, atol=1e-4)
    assert not np.allclose(run({"head/Gemm_1"}), fp32)


def test_exclude_patterns_keep_layers_float(caplog: pytest.LogCaptureFixture) -> None:
    model = vit_like()
    layers = find_layers(model, exclude=["blocks.0.mlp.*", "head/Gemm_1"])
    reasons = {layer.name: layer.reason for layer in layers}
    assert reasons["blocks.0.mlp.fc1/MatMul_1"] == "excluded by pattern 'blocks.0.mlp.*'"
    assert reasons["blocks.0.mlp.fc2/MatMul_1"] == "excluded by pattern 'blocks.0.mlp.*'"
    assert reasons["head/Gemm_1"] == "excluded by pattern 'head/Gemm_1'"
    assert reasons["blocks.0.attn.qkv/MatMul_1"] is None
    assert unmatched_patterns(model, ["blocks.9.*", "head/*"]) == ["blocks.9.*"]
    # a pattern of nodes that are no layer (never quantized, so never excluded) is reported too
    assert unmatched_patterns(model, ["blocks.0.norm1/*", "*/Softmax_1", "*/MatMul_2"]) == [
        "blocks.0.norm1/*",
        "*/Softmax_1",
    ]
    # a Linear with bias that onnxsim fused into a renamed Gemm: matched by its module path label
    head = next(n for n in model.graph.node if n.op_type == "Gemm")
    head.name = "Gemm_7"
    relabelled = {layer.name: layer for layer in find_layers(model, exclude=["head/*"])}
    assert relabelled["Gemm_7"].label == "head/Gemm_7"
    assert relabelled["Gemm_7"].reason == "excluded by pattern 'head/*'"


def test_unnamed_nodes_get_unique_names() -> None:
    model = vit_like()
    model.graph.node[1].name = ""
    model.graph.node[2].name = model.graph.node[3].name
    ensure_node_names(model)
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names) and "" not in names


@pytest.mark.usefixtures("quiet_logs")
def test_plugin_graph_runs_with_a_custom_op_session(tmp_path: Path) -> None:
    # The factory hook: a session that can run vitrt's nodes (here: the stub becomes Identity).
    from vitrt.calibration.calibrate import calibrate_onnx

    model = vit_like(seed=5, plugin=True)
    path = save(model, tmp_path / "plugin.onnx")

    def factory(p: Path) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(plugins_as_identity(p), threads=1)

    result = calibrate_onnx(
        path,
        "synthetic",
        tmp_path / "plugin.int8.onnx",
        num_samples=16,
        eval_samples=8,
        runner_factory=factory,
        progress=False,
        mean=(0.485, 0.456, 0.406),  # ImageNet's: no ExportConfig in this hand-built graph
        std=(0.229, 0.224, 0.225),
    )
    assert set(result.quantized) == QUANTIZED
    assert any(n.domain == "vitrt" for n in result.model.graph.node)
    assert result.agreement is not None and result.agreement.mean_cosine > 0.99


def test_onnxruntime_runs_the_quantized_layers_on_int8_kernels(tmp_path: Path) -> None:
    # After ONNX Runtime's graph optimizations every quantized MatMul/Gemm is an int8 kernel and no
    # weight is dequantized at run time; the Gemm's bias was moved to an Add for that (QGemm takes
    # no float bias). Only the Conv (float bias kept for TensorRT) still dequantizes.
    import onnxruntime as ort

    model = vit_like(seed=6)
    layers = find_layers(model)
    q = insert_qdq(model, layers, _amax_for(layers), {layer.name for layer in layers if layer.reason is None})
    head = next(n for n in q.graph.node if n.name == "head/Gemm_1")
    assert len(head.input) == 2
    bias_add = next(n for n in q.graph.node if head.output[0] in n.input)
    assert bias_add.op_type == "Add" and bias_add.output[0] == "logits" and "head.bias" in bias_add.input
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(save(q, tmp_path / "q.onnx")), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    int8_kernels = ("QGemm", "MatMulIntegerToFloat", "QLinearMatMul")
    assert sum(op in int8_kernels for op in ops) == len(QUANTIZED) - 1  # all but the Conv
    assert ops.count("DequantizeLinear") == 2  # the Conv's input and weight


def _optimized_ops(model: onnx.ModelProto, tmp_path: Path, name: str) -> list[str]:
    """The op types of ``model`` after ONNX Runtime's graph optimizations (its CPU provider)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{name}.optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(
        str(save(model, tmp_path / f"{name}.onnx")), options, providers=["CPUExecutionProvider"]
    )
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def test_tensorrt_form_is_the_default_and_keeps_biases_float() -> None:
    model = vit_like(seed=6, linear_bias=True)
    layers = find_layers(model)
    amax, enabled = _amax_for(layers), {layer.name for layer in layers if layer.reason is None}
    default = insert_qdq(model, layers, amax, enabled)
    assert (
        default.SerializeToString()
        == insert_qdq(model, layers, amax, enabled, form="tensorrt").SerializeToString()
    )
    inits = {i.name: i for i in default.graph.initializer}
    # no int32 tensor anywhere; the biases are the float initializers they were
    assert all(i.data_type != onnx.TensorProto.INT32 for i in default.graph.initializer)
    for module in ("blocks.0.attn.qkv", "blocks.0.mlp.fc2"):
        add = next(n for n in default.graph.node if n.name == f"{module}/Add_1")
        assert f"{module}.bias" in add.input and inits[f"{module}.bias"].data_type == onnx.TensorProto.FLOAT
    with pytest.raises(ConfigError, match="unknown INT8 form 'tflite'"):
        insert_qdq(model, layers, amax, enabled, form="tflite")


def test_onnxruntime_form_folds_biases_into_the_int8_kernels(tmp_path: Path) -> None:
    # The ONNX Runtime form: each bias is DequantizeLinear(int32, s_x * s_w[c]) feeding the Gemm (C) or
    # the MatMul's bias Add, which ONNX Runtime fuses: no float Gemm on dequantized weights remains.
    # The TensorRT form of the same graph leaves ONNX Runtime's MatMul + Add -> Gemm fusion a float
    # bias, so it dequantizes those weights on every run.
    model = vit_like(seed=6, linear_bias=True)
    layers = find_layers(model)
    amax, enabled = _amax_for(layers), {layer.name for layer in layers if layer.reason is None}
    amax["model/Gather_1:0"] = 2.5  # the head's input: another scale than the weights' layers
    q = insert_qdq(model, layers, amax, enabled, form="onnxruntime")
    onnx.checker.check_model(q)
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in [*model.graph.initializer, *q.graph.initializer]}

    def bias_dq(node: onnx.NodeProto, slot: int) -> tuple[np.ndarray, np.ndarray]:
        dq = producer[node.input[slot]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int32
        assert not inits[dq.input[2]].any()  # zero point 0
        return inits[dq.input[0]], inits[dq.input[1]]

    head = next(n for n in q.graph.node if n.name == "head/Gemm_1")
    values, scale = bias_dq(head, 2)
    w_scale = quantize_weight(inits["head.weight"], axis=0).scale
    np.testing.assert_array_equal(scale, np.float32(scale_from_amax(2.5)) * w_scale)
    np.testing.assert_array_equal(values, np.rint(inits["head.bias"] / scale.astype(np.float64)))
    assert "head/Gemm_1/bias_Add" not in {n.name for n in q.graph.node}
    for module, width in (("blocks.0.attn.qkv", 48), ("blocks.0.attn.proj", 16), ("blocks.0.mlp.fc2", 16)):
        add = next(n for n in q.graph.node if n.name == f"{module}/Add_1")
        values, scale = bias_dq(add, 1)
        assert values.shape == scale.shape == (width,)
        np.testing.assert_allclose(values * scale, inits[f"{module}.bias"], atol=float(scale.max()) / 2)

    ort_ops = _optimized_ops(q, tmp_path, "ort_form")
    trt_ops = _optimized_ops(insert_qdq(model, layers, amax, enabled), tmp_path, "trt_form")
    assert ort_ops.count("DequantizeLinear") == 2  # only the Conv's (ONNX Runtime has no int8 Conv -> float)
    assert "Gemm" not in ort_ops and ort_ops.count("QGemm") == 5  # head + the four MatMul + bias Add
    assert trt_ops.count("Gemm") == 4 and trt_ops.count("DequantizeLinear") == 10
    # the fused kernels compute what the graph says (the int32 bias is in the accumulator's units: ORT's
    # QGemm adds it there, whatever the DequantizeLinear's scale says), and the two forms agree up to a
    # bias rounding of half a step of s_x * s_w, which can move a value across the next rounding boundary
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(
        str(tmp_path / "ort_form.onnx"), plain, providers=["CPUExecutionProvider"]
    ).run(["logits"], {"images": x})[0]
    ort_out = OnnxRuntimeRunner(tmp_path / "ort_form.onnx").infer({"images": x})["logits"]
    trt_out = OnnxRuntimeRunner(tmp_path / "trt_form.onnx").infer({"images": x})["logits"]
    np.testing.assert_allclose(ort_out, reference, rtol=1e-4, atol=1e-4)
    cosine = float(ort_out.ravel() @ trt_out.ravel() / np.linalg.norm(ort_out) / np.linalg.norm(trt_out))
    assert cosine > 0.999


def test_onnxruntime_form_keeps_a_bias_that_cannot_be_int32_float() -> None:
    # a Gemm with alpha != 1 (QGemm scales the accumulator), and a bias past int32 at s_x * s_w
    model = vit_like(seed=6, linear_bias=True)
    head = next(n for n in model.graph.node if n.name == "head/Gemm_1")
    head.attribute.append(onnx.helper.make_attribute("alpha", 0.5))
    bias = next(i for i in model.graph.initializer if i.name == "blocks.0.mlp.fc1.bias")
    bias.CopyFrom(numpy_helper.from_array(np.full(32, 1e30, np.float32), bias.name))
    layers = find_layers(model)
    q = insert_qdq(model, layers, _amax_for(layers), {layer.name for layer in layers}, form="onnxruntime")
    names = {n.name: n for n in q.graph.node}
    assert "head/Gemm_1/bias_Add" in names and len(names["head/Gemm_1"].input) == 2  # the TensorRT way
    assert "blocks.0.mlp.fc1.bias" in names["blocks.0.mlp.fc1/Add_1"].input
    assert "blocks.0.attn.qkv/MatMul_1/bias/DQ" in names
