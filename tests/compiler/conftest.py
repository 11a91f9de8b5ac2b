"""Fixtures of the build and bundle tests: a graph holding a vitrt plugin node (the small export and its
precision files, ``precision_files``, are in tests/conftest.py: the runtime tests share them)."""

from __future__ import annotations

from pathlib import Path

import pytest


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
