"""Engine-inspector and ONNX Runtime profiles mapped to ONNX nodes and module groups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vitrt.deploy.layer_profile import (
    group_times,
    layer_nodes,
    nodes_from_layer_name,
    ort_layer_timings,
    parse_metadata,
    read_engine_layers,
    read_ort_profile,
)
from vitrt.deploy.layer_timing import layer_timings
from vitrt.deploy.module_groups import ModuleGroup, group_nodes
from vitrt.deploy.trt_profiler import LayerTimeCollector

FIXTURES = Path(__file__).parent / "fixtures" / "layers"
MYELIN = "{ForeignNode[patch_embed/Reshape_1...blocks.0.attn.qkv/MatMul_1]}"
DEIT_NODES = [  # a DeiT-T export's first nodes and its last, in graph order (names as vitrt gives them)
    "patch_embed.proj/Conv_1",
    "patch_embed/Reshape_1",
    "patch_embed/Transpose_1",
    "model/Concat_1",
    "model/Add_1",
    "blocks.0.norm1/LayerNormalization_1",
    "blocks.0.attn.qkv/MatMul_1",
    "blocks.0.mlp.fc1/MatMul_1",
    "blocks.0.mlp.act/Div_1",
    "blocks.0.mlp.act/Erf_1",
    "blocks.1/TokenFusion_1",
    "norm/LayerNormalization_1",
    "model/Gather_1",
    "head/Gemm_1",
]


def test_parse_metadata_both_separators_and_function_stack() -> None:
    meta = (
        "[ONNX Layer: a/Add_1]\x1e[ONNX Layer: b/Mul_1]\x1f[ONNX Layer: c/Gemm_1 | fn_node (Fn)]"
        "\x1e[ONNX Layer: a/Add_1]"
    )
    assert parse_metadata(meta) == ["a/Add_1", "b/Mul_1", "c/Gemm_1"]
    assert parse_metadata("") == [] and parse_metadata("[Something else]") == []


def test_tensorrt10_inspector_maps_layers_to_nodes() -> None:
    layers = read_engine_layers(FIXTURES / "inspector_trt10.json")
    assert [lay.layer_type for lay in layers] == [
        "Reformat", "CaskConvolution", "Myelin", "gemm", "PluginV3", "CaskGemmMatrixMultiply",
    ]  # fmt: skip
    nodes = layer_nodes(layers)
    assert nodes == {
        "Reformatting CopyNode for Input Tensor 0 to patch_embed.proj/Conv_1": ["patch_embed.proj/Conv_1"],
        "patch_embed.proj/Conv_1": ["patch_embed.proj/Conv_1"],
        MYELIN: DEIT_NODES[1:7],
        "blocks.0.mlp.fc1/MatMul_1 + PWN(blocks.0.mlp.act/Div_1, blocks.0.mlp.act/Erf_1)": DEIT_NODES[7:10],
        "blocks.1/TokenFusion_1": ["blocks.1/TokenFusion_1"],
        "head/Gemm_1": ["head/Gemm_1"],
    }


def test_tensorrt11_inspector_reads_like_10() -> None:
    layers = read_engine_layers((FIXTURES / "inspector_trt11.json").read_text())
    nodes = layer_nodes(layers)
    assert nodes[
        "{ForeignNode[tokens_to_token.attention1.kqv/MatMul_1...tokens_to_token.attention1/Add_2]}"
    ] == [
        "tokens_to_token.attention1.kqv/MatMul_1",
        "model/Split_1",
        "tokens_to_token.attention1/Mul_1",
        "tokens_to_token.attention1/Add_2",
    ]
    assert nodes["Reformatting CopyNode for Output Tensor 0 to blocks.0.attn.qkv/MatMul_1"] == [
        "blocks.0.attn.qkv/MatMul_1"
    ]
    assert all(nodes.values())


def test_names_only_inspector_maps_through_layer_names() -> None:
    layers = read_engine_layers(FIXTURES / "inspector_names_only.json")
    assert all(lay.metadata == "" for lay in layers)
    nodes = layer_nodes(layers, DEIT_NODES)
    assert nodes[MYELIN] == DEIT_NODES[1:7]  # the ForeignNode range, in graph order
    assert nodes["Reformatting CopyNode for Input Tensor 0 to patch_embed.proj/Conv_1"] == [DEIT_NODES[0]]
    assert nodes_from_layer_name("x + head/Gemm_1 [profile 1]", DEIT_NODES) == ["head/Gemm_1"]


def test_group_times_split_fused_layers_evenly_and_flag_them() -> None:
    layers = read_engine_layers(FIXTURES / "inspector_trt10.json")
    nodes = layer_nodes(layers)
    groups = group_nodes(DEIT_NODES)
    # per-layer totals over 2 inferences (ms): reformat 1, conv 3, Myelin 6, mlp 4, fusion 2, head 4 -> 20
    per_layer = ([0.5, 0.5], [1.0, 2.0], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0], [2.0, 2.0])
    samples = dict(zip(nodes, per_layer, strict=True))
    timings = layer_timings(samples)
    by_group = {g.label: g for g in group_times(timings, nodes, groups, level="group")}
    # Myelin covers patch_embed (Reshape, Transpose, and model/Concat + Add placed in the stem) and
    # blocks.0 (norm1, qkv): 6 / 2 each
    assert by_group["patch_embed"].total_ms == 1 + 3 + 3
    assert by_group["blocks.0"].total_ms == 3 + 4
    assert by_group["blocks.1"].total_ms == 2 and by_group["head"].total_ms == 4
    assert by_group["patch_embed"].percentage == pytest.approx(35.0)
    assert by_group["patch_embed"].shared_layers == (MYELIN,)
    assert by_group["blocks.0"].shared_layers == (MYELIN,) and by_group["head"].shared_layers == ()
    by_part = {g.label: g.total_ms for g in group_times(timings, nodes, groups)}
    # Myelin at part level: patch_embed, patch_embed.root, blocks.0.norm, blocks.0.attn -> 1.5 each
    assert by_part == {
        "patch_embed": 1 + 3 + 1.5,
        "patch_embed.root": 1.5,
        "blocks.0.norm": 1.5,
        "blocks.0.attn": 1.5,
        "blocks.0.mlp": 4.0,
        "blocks.1.fusion": 2.0,
        "head.head": 4.0,
    }
    assert sum(by_part.values()) == 20.0


def test_unknown_layers_go_to_other() -> None:
    timings = layer_timings({"mystery": [1.0], "head/Gemm_1": [3.0]})
    result = group_times(timings, {}, group_nodes(DEIT_NODES))
    assert [(g.label, g.total_ms, g.percentage) for g in result] == [
        ("head.head", 3.0, 75.0),
        ("other", 1.0, 25.0),
    ]


def test_collector_counts_iterations_like_trtexec() -> None:
    collector = LayerTimeCollector()
    for ms in ([0.5, 1.0], [1.5, 2.0], [1.0, 3.0]):
        collector.report("conv", ms[0])
        collector.report("gemm", ms[1])
    assert collector.iterations == 3
    conv, gemm = collector.timings()
    assert (conv.total_ms, conv.median_ms, conv.count) == (3.0, 1.0, 3)
    assert (gemm.total_ms, gemm.average_ms, gemm.percentage) == (6.0, 2.0, pytest.approx(200 / 3))


def _module_path_graph() -> tuple[bytes, list[str]]:
    """x [4, 8] -> MatMul -> Relu -> MatMul -> Softmax, nodes named like a vitrt export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    names = ["blocks.0.mlp.fc1/MatMul_1", "blocks.0.mlp.act/Relu_1", "head/MatMul_1", "model/Softmax_1"]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name=names[0]),
        helper.make_node("Relu", ["h"], ["a"], name=names[1]),
        helper.make_node("MatMul", ["a", "w2"], ["z"], name=names[2]),
        helper.make_node("Softmax", ["z"], ["y"], name=names[3], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString(), names


def test_onnxruntime_profile_per_node_sums_match_raw_events(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    proto, names = _module_path_graph()
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "ort")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep node names
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
    x = np.ones((4, 8), np.float32)
    for _ in range(3):
        session.run(None, {"x": x})
    path = session.end_profiling()

    # the reference: the raw trace, summed here without vitrt's reader
    raw: dict[str, float] = {}
    for event in json.loads(Path(path).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            raw[node] = raw.get(node, 0.0) + event["dur"] / 1e3
    assert sorted(raw) == sorted(names)

    samples = read_ort_profile(path)
    assert list(samples) == names  # execution order
    assert all(len(ms) == 3 for ms in samples.values())
    timings = ort_layer_timings(path)
    for t in timings:
        assert t.total_ms == pytest.approx(raw[t.name], abs=1e-12)
        assert t.count == 3
    assert sum(t.percentage for t in timings) == pytest.approx(100.0)

    groups = group_nodes(names)
    assert groups["model/Softmax_1"] == ModuleGroup("head", "cls_token")  # after the last block
    result = {g.label: g.total_ms for g in group_times(timings, {}, groups)}
    assert result["blocks.0.mlp"] == pytest.approx(raw[names[0]] + raw[names[1]])
    assert result["head.head"] == pytest.approx(raw[names[2]])
