"""The pure parts of the TensorRT build (``vitrt.compiler.trt_build``): parser errors explained with the node
and the fix, and layers mapped back to ONNX nodes through their metadata. The TensorRT calls themselves run in
``tests/tensorrt/test_build.py`` where TensorRT is installed."""

from __future__ import annotations

from vitrt.compiler.trt_build import ParserError, explain_parser_error, onnx_node_names


def test_parser_errors_name_the_node_and_the_fix() -> None:
    plugin = ParserError(
        "blocks.1.fusion/TokenFusion_1",
        "TokenFusion",
        "Plugin not found, are the plugin name, version, and namespace correct?",
        "UNSUPPORTED_NODE",
    )
    text = explain_parser_error(plugin, ["TokenFusion"])
    assert text.startswith("node 'blocks.1.fusion/TokenFusion_1' (TokenFusion): Plugin not found")
    assert "[UNSUPPORTED_NODE]. Fix: vitrt's plugin creators must be registered" in text
    unsupported = ParserError("head/Foo_1", "Foo", "No importer registered for op: Foo.", "UNSUPPORTED_NODE")
    assert "this TensorRT cannot import Foo: run `vitrt prepare`" in explain_parser_error(unsupported)
    weights = ParserError("", "", "Failed to open file: model.onnx.data (external weights)")
    assert explain_parser_error(weights).startswith("the model: Failed to open file")
    assert "keep the .onnx.data file beside the .onnx file" in explain_parser_error(weights)


def test_layers_map_back_to_onnx_nodes() -> None:
    assert onnx_node_names("[ONNX Layer: blocks.0.norm1/LayerNormalization_1]") == [
        "blocks.0.norm1/LayerNormalization_1"
    ]
    fused = "[ONNX Layer: blocks.0.attn.qkv/MatMul_1] [ONNX Layer: blocks.0.attn/Split_1]"
    assert onnx_node_names(fused) == ["blocks.0.attn.qkv/MatMul_1", "blocks.0.attn/Split_1"]
    assert onnx_node_names("") == [] and onnx_node_names("no metadata") == []
