"""Fixtures of the build and bundle tests: one small vitrt export and its precision files, made once per
test session (per pytest-xdist worker), and a graph holding a vitrt plugin node."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def precision_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """DeiT-T at 32 x 32 (4 patches + the class token, 10 classes, random init, portable lowering) as
    ``vitrt export`` writes it, and its INT8 (``vitrt calibrate``, 8 synthetic samples), FP16 and INT8+FP16
    (``vitrt fp16``) files: {"fp32": path, "int8": ..., "fp16": ..., "int8+fp16": ...}."""
    import vitrt
    from vitrt.compiler.export import ExportConfig, export_model, model_from_config

    folder = tmp_path_factory.mktemp("precision_files")
    config = ExportConfig(
        "deit_tiny_patch16_224", lowering="portable", input_size=(3, 32, 32), img_size=32, num_classes=10
    )
    fp32 = export_model(model_from_config(config), folder / "deit_t.onnx", config)
    int8 = folder / "deit_t.int8.onnx"
    vitrt.calibrate(
        fp32,
        "synthetic",
        int8,
        num_samples=8,
        batch_size=8,
        eval_samples=4,
        sensitivity=False,
        progress=False,
    )
    fp16, int8_fp16 = folder / "deit_t.fp16.onnx", folder / "deit_t.int8.fp16.onnx"
    vitrt.fp16(fp32, fp16, check=False)
    vitrt.fp16(int8, int8_fp16, check=False)
    return {"fp32": fp32, "int8": int8, "fp16": fp16, "int8+fp16": int8_fp16}


@pytest.fixture(scope="session")
def plugin_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A graph with one ``vitrt::TokenFusion`` node as the plugin lowering writes it (the node's attributes,
    a fixed [1, 17, 8] input): enough for what reads the graph (facts, plans, bundles), not runnable."""
    import onnx
    from onnx import TensorProto, helper

    from vitrt.plugins.token_fusion.spec import OUTPUT_NAMES, PLUGIN_NAME, TokenFusionAttrs

    node = helper.make_node(
        PLUGIN_NAME,
        ["x", "x", "info", "size"],  # x is also the metric, as in ToMe / MCTF without keys
        list(OUTPUT_NAMES),
        name="blocks.1.fusion/TokenFusion_1",
        domain="vitrt",
        **TokenFusionAttrs(r=4).onnx_attributes(),
    )
    graph = helper.make_graph(
        [node],
        "fusion",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 17, 8]),
            helper.make_tensor_value_info("info", TensorProto.FLOAT, [1, 17]),
            helper.make_tensor_value_info("size", TensorProto.FLOAT, [1, 17]),
        ],
        [
            helper.make_tensor_value_info(OUTPUT_NAMES[0], TensorProto.FLOAT, [1, 13, 8]),
            helper.make_tensor_value_info(OUTPUT_NAMES[1], TensorProto.FLOAT, [1, 13]),
            helper.make_tensor_value_info(OUTPUT_NAMES[2], TensorProto.INT64, [1, 17]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vitrt", 1)], ir_version=10
    )
    path = tmp_path_factory.mktemp("plugin_graph") / "fusion.onnx"
    onnx.save_model(model, str(path))
    return path
