"""Range collection on ONNX Runtime: exact max |x| per tensor, bounded chunks, fixed-batch models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from tests.calibration._graphs import save, two_layers
from vitrt.calibration.cache import read_cache, write_cache
from vitrt.calibration.collect import collect_ranges, model_io, rebatch
from vitrt.calibration.errors import DataSourceError
from vitrt.deploy.runners import OnnxRuntimeRunner

TENSORS = ["images", "flatten/Flatten_1:0", "fc1/MatMul_1:0", "logits"]

pytestmark = pytest.mark.usefixtures("quiet_logs")


def _batches(n: int, batch: int, seed: int = 0) -> list[np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)
    return [x[i : i + batch] for i in range(0, n, batch)]


def _direct_max(path: Path, x: np.ndarray) -> dict[str, float]:
    """max |x| of each tensor, computed from a whole-data run (the reference)."""
    import onnx

    model = onnx.load(str(path))
    for name in TENSORS[1:3]:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    probe = save(model, path.with_name("probe.onnx"), check=False)
    out = OnnxRuntimeRunner(probe, threads=1).infer({"images": x})
    return {"images": float(np.abs(x).max()), **{t: float(np.abs(out[t]).max()) for t in TENSORS[1:]}}


def test_dynamic_batch_model_runs_in_memory_bounded_chunks(tmp_path: Path) -> None:
    path = save(two_layers(dynamic=True), tmp_path / "dyn.onnx")
    import onnx

    model = onnx.load(str(path))
    assert model_io(model).batch is None
    sizes: list[int] = []

    class Spy:
        name = "spy"

        def __init__(self, p: Path) -> None:
            self.runner = OnnxRuntimeRunner(p, threads=1)

        def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            sizes.append(len(feed["images"]))
            return self.runner.infer(feed)

    batches = _batches(100, 32)
    # per sample: flatten 48 + fc1 32 + logits 10 floats = 360 bytes; 4000 bytes -> chunks of 11
    ranges = collect_ranges(model, TENSORS, batches, runner_factory=Spy, max_bytes=4000)
    assert sizes[0] == 1 and set(sizes[1:-1]) == {11} and sum(sizes) == 100
    expected = _direct_max(path, np.concatenate(batches))
    for name in TENSORS:
        assert ranges[name].amax == pytest.approx(expected[name], rel=1e-6)
    per_sample = {"images": 48, "flatten/Flatten_1:0": 48, "fc1/MatMul_1:0": 32, "logits": 10}
    assert {t: ranges[t].count for t in TENSORS} == {t: 100 * n for t, n in per_sample.items()}


def test_fixed_batch_model_gets_its_batch_and_the_cache_round_trips(tmp_path: Path) -> None:
    path = save(two_layers(), tmp_path / "fixed.onnx")
    import onnx

    model = onnx.load(str(path))
    ranges = collect_ranges(model, TENSORS, _batches(10, 4), runner_factory=lambda p: OnnxRuntimeRunner(p))
    assert ranges["fc1/MatMul_1:0"].count == 10 * 32
    scales = ranges.scales("entropy")
    cache = write_cache(tmp_path / "fixed.cache", scales, trt_version="10.3.0")
    assert read_cache(cache).scales == scales  # float32 values, bit for bit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.cache", "fixed.onnx"]  # temp model removed


def test_wrong_sample_shape_and_empty_data_are_clear_errors(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(save(two_layers(), tmp_path / "m.onnx")))
    wrong = [np.zeros((2, 1, 4, 4), np.float32)]
    with pytest.raises(DataSourceError, match=r"samples are \(1, 4, 4\).*convert-channels"):
        collect_ranges(model, TENSORS, wrong)
    with pytest.raises(DataSourceError, match="no calibration sample"):
        collect_ranges(model, TENSORS, [])


def test_rebatch_recuts_a_stream() -> None:
    chunks = list(rebatch([np.zeros((5, 1)), np.ones((7, 1))], lambda: 4))
    assert [len(c) for c in chunks] == [4, 4, 4]
    assert float(chunks[1].sum()) == 3.0
