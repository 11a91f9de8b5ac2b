"""``TensorRTRunner`` on cuda-python buffers: a small engine (images [B, 3, 8, 8] -> a matmul + bias) built
with a dynamic batch, run against numpy at every batch of its profile, with and without a CUDA graph and
spin-wait; a batch outside the profile is refused with the range and the fix.

Skipped, with the reason printed, where TensorRT cannot be imported or there is no CUDA GPU (the ``target``
fixture). TensorRT is never mocked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, target: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """An engine of logits = flatten(images) @ W + b (W: 192 x 10), batch 1 to 4 (opt 2), and W, b."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import vitrt

    rng = np.random.default_rng()
    w = rng.standard_normal((192, 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"], axis=1, name="head/Flatten"),
            helper.make_node("MatMul", ["flat", "w"], ["mm"], name="head/MatMul"),
            helper.make_node("Add", ["mm", "b"], ["logits"], name="head/Add"),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    folder = tmp_path_factory.mktemp("runner")
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        folder / "tiny.onnx",
    )
    vitrt.build(folder / "tiny.onnx", folder / "engine", target=target, min_batch=1, opt_batch=2, max_batch=4)
    return folder / "engine" / "model.plan", w, b


@pytest.mark.parametrize("cuda_graph,spin_wait", [(False, False), (True, False), (True, True)])
def test_runner_matches_numpy_at_every_batch(
    engine: tuple[Path, np.ndarray, np.ndarray], cuda_graph: bool, spin_wait: bool
) -> None:
    from vitrt.deploy.tensorrt_runner import TensorRTRunner

    plan, w, b = engine
    rng = np.random.default_rng()
    with TensorRTRunner(plan, plugins=False, cuda_graph=cuda_graph, spin_wait=spin_wait) as runner:
        assert runner.batch == 2  # the profile's opt batch
        assert [t.name for t in runner.input_specs] == ["images"]
        assert runner.input_specs[0].profile == ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
        for batch in (1, 4, 3, 3):
            images = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            got = runner.infer({"images": images})["logits"]
            expected = images.reshape(batch, -1) @ w + b
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)  # TF32 may be on: 10-bit mantissa
        runner.prepare({"images": images})
        runner.enqueue(timed=True)
        runner.synchronize()
        assert 0.0 < runner.last_compute_ms() < 100.0
        assert not runner.notes or not cuda_graph  # a capture failure is noted, never silent


def test_a_batch_outside_the_profile_names_the_range(engine: tuple[Path, np.ndarray, np.ndarray]) -> None:
    from vitrt.deploy.tensorrt_runner import BatchTooLargeError, TensorRTRunner

    with TensorRTRunner(engine[0], plugins=False) as runner:
        with pytest.raises(BatchTooLargeError, match=r"batch 1 to 4.*--max 5"):
            runner.infer({"images": np.zeros((5, 3, 8, 8), np.float32)})


def test_layer_profiling_reports_every_enqueue(engine: tuple[Path, np.ndarray, np.ndarray]) -> None:
    from vitrt.deploy.tensorrt_runner import TensorRTRunner

    images = np.random.default_rng().standard_normal((2, 3, 8, 8)).astype(np.float32)
    with TensorRTRunner(engine[0], plugins=False, cuda_graph=True, profile_layers=True) as runner:
        assert not runner.cuda_graph and "without a CUDA graph" in runner.notes[0]
        for _ in range(3):
            runner.infer({"images": images})
        assert runner.layer_times is not None and runner.layer_times.iterations == 3
        timings = runner.layer_times.timings()
        assert timings and all(t.count == 3 and t.average_ms >= 0.0 for t in timings)
        assert abs(sum(t.percentage for t in timings) - 100.0) < 1e-6
