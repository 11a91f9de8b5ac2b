"""TensorRT per-layer profile of a tiny engine: every engine layer maps back to an ONNX node.

Skipped, with the reason printed, where TensorRT cannot be imported (or only its type stubs can) or
there is no CUDA GPU. TensorRT is never mocked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from vitrt.deploy.layer_profile import group_times, layer_nodes
from vitrt.deploy.module_groups import group_nodes
from vitrt.deploy.trt_profiler import (
    LayerTimeCollector,
    engine_information,
    engine_layers,
    make_layer_profiler,
)
from vitrt.errors import VitrtError

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

NODES = ["blocks.0.mlp.fc1/MatMul_1", "blocks.0.mlp.act/Relu_1", "head/MatMul_1", "head/Softmax_1"]


@pytest.fixture(scope="module")
def trt() -> Any:
    from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason

    reason = tensorrt_missing_reason()
    if reason is None and not torch.cuda.is_available():
        reason = "torch.cuda.is_available() is False: TensorRT needs a CUDA GPU"
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(f"{reason}; these tests need TensorRT >= 10.0 and a GPU")
    import tensorrt

    return tensorrt


def _onnx() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name=NODES[0]),
        helper.make_node("Relu", ["h"], ["a"], name=NODES[1]),
        helper.make_node("MatMul", ["a", "w2"], ["z"], name=NODES[2]),
        helper.make_node("Softmax", ["z"], ["y"], name=NODES[3], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((256, 16)).astype(np.float32), "w2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def _engine(trt: Any, verbosity: Any) -> Any:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(_onnx()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.profiling_verbosity = verbosity
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    return trt.Runtime(logger).deserialize_cuda_engine(plan)


def test_profiled_layers_map_to_onnx_nodes(trt: Any) -> None:
    engine = _engine(trt, trt.ProfilingVerbosity.DETAILED)
    context = engine.create_execution_context()
    x = torch.randn(32, 64, device="cuda")
    y = torch.empty(32, 16, device="cuda")
    context.set_tensor_address("x", x.data_ptr())
    context.set_tensor_address("y", y.data_ptr())
    collector = LayerTimeCollector()
    context.profiler = make_layer_profiler(collector)
    context.enqueue_emits_profile = False
    stream = torch.cuda.current_stream()
    for _ in range(5):
        assert context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        assert context.report_to_profiler()

    assert collector.iterations == 5
    timings = collector.timings()
    assert timings and all(t.count == 5 and t.total_ms >= 0 for t in timings)
    assert sum(t.percentage for t in timings) == pytest.approx(100.0)

    info = engine_information(engine, context)
    layers = engine_layers(engine, context)
    assert [lay.name for lay in layers] == [entry["Name"] for entry in info["Layers"]]
    mapping = layer_nodes(layers, NODES)
    for t in timings:  # every profiled layer is an inspector layer that names ONNX nodes of the graph
        assert mapping.get(t.name), f"{t.name} maps to no ONNX node"
        assert set(mapping[t.name]) <= set(NODES)
    covered = {node for nodes in mapping.values() for node in nodes}
    assert covered == set(NODES)  # no node lost: each is in some layer
    groups = group_times(timings, mapping, group_nodes(NODES), level="group")
    assert {g.label for g in groups} <= {"blocks.0", "head"}
    assert sum(g.total_ms for g in groups) == pytest.approx(sum(t.total_ms for t in timings))


def test_names_only_engine_is_refused_with_the_fix(trt: Any) -> None:
    engine = _engine(trt, trt.ProfilingVerbosity.LAYER_NAMES_ONLY)
    with pytest.raises(VitrtError, match="DETAILED"):
        engine_information(engine)
