"""The TensorRT 10.x entropy calibrator: imports without TensorRT; builds an INT8 engine where it can.

TensorRT is never mocked: where ``import tensorrt`` fails, the build test is skipped with the
reason, and the factory's error for the missing package is checked for real.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from vitrt.calibration.cache import read_cache, trt_version_number
from vitrt.calibration.data import open_source
from vitrt.calibration.errors import MissingDependencyError
from vitrt.models.config import PreprocessConfig

CFG = PreprocessConfig(input_size=(3, 32, 32), crop_pct=1.0)


def _tensorrt_missing() -> str | None:
    try:
        importlib.import_module("tensorrt")
    except ImportError as exc:
        return f"import tensorrt failed ({exc}); the calibrator needs TensorRT 10.x and a GPU"
    return None


def test_module_imports_without_tensorrt() -> None:
    module = importlib.import_module("vitrt.calibration.trt_calibrator")
    assert callable(module.make_entropy_calibrator)


@pytest.mark.skipif(_tensorrt_missing() is None, reason="tensorrt is installed here")
def test_factory_names_the_missing_package(tmp_path: Path) -> None:
    from vitrt.calibration.trt_calibrator import make_entropy_calibrator

    data = open_source("synthetic", CFG, 4, 2, progress=False)
    with pytest.raises(MissingDependencyError, match="pip install tensorrt"):
        make_entropy_calibrator(data, tmp_path / "calib.cache")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_entropy_calibrator_builds_an_int8_engine_and_writes_a_cache(tmp_path: Path) -> None:
    reason = _tensorrt_missing()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    import numpy as np
    import onnx
    import tensorrt as trt
    from onnx import TensorProto, helper, numpy_helper

    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip(f"TensorRT {trt.__version__} removed implicit INT8 calibration")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from vitrt.calibration.trt_calibrator import make_entropy_calibrator

    # a tiny Conv -> Relu network with a static batch of 4
    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["output"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [4, 8, 32, 32])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString())
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    cache_path = tmp_path / "tiny.calib.cache"
    data = open_source("synthetic", CFG, 12, 4, progress=False)
    calibrator = make_entropy_calibrator(data, cache_path)
    config.int8_calibrator = calibrator
    plan = builder.build_serialized_network(network, config)
    calibrator.raise_if_failed()
    calibrator.close()
    assert plan is not None
    assert calibrator.batches_fed == 3
    cache = read_cache(cache_path)
    assert cache.version == trt_version_number(trt.__version__)
    assert cache.algorithm == "EntropyCalibration2"
    assert "input" in cache.scales and all(s > 0 for s in cache.scales.values())
    assert onnx.checker.check_model(model) is None
