"""Latency statistics (trtexec's rules, checked on hand-computed examples), the PyTorch runner and
``vitrt profile`` on the CPU (CUDA paths are exercised by tests/gpu and benchmarks/gpu_models.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vitrt.compiler.cli import main
from vitrt.deploy.latency import latency_stats, nearest_rank
from vitrt.deploy.torch_profile import profile_torch
from vitrt.deploy.torch_runner import TorchModelRunner
from vitrt.errors import VitrtError


def test_statistics_follow_trtexec() -> None:
    # 10 samples 1..10 shuffled: p90 drops int(0.1 * 10) = 1 -> the 9th value; p95 / p99 drop none.
    s = latency_stats([5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0, 8.0, 6.0, 9.0])
    assert (s.iterations, s.min, s.max, s.mean, s.median) == (10, 1.0, 10.0, 5.5, 5.5)
    assert (s.p90, s.p95, s.p99) == (9.0, 10.0, 10.0)
    assert math.isclose(s.std, math.sqrt(8.25))
    # 100 samples 1..100, in trtexec's float32 arithmetic: p90 drops int(10.0000024) = 10 (float64 would
    # drop 9), p95 int(5.000001) = 5, p99 int(0.99999905) = 0, so p99 is the largest sample.
    hundred = np.arange(1.0, 101.0)
    assert [nearest_rank(hundred, p) for p in (90, 95, 99)] == [90.0, 95.0, 100.0]
    # odd count: the middle sample is the median; one sample is every statistic
    assert latency_stats([3.0, 1.0, 2.0]).median == 2.0
    one = latency_stats([4.0])
    assert (one.min, one.max, one.p99, one.std) == (4.0, 4.0, 4.0, 0.0)
    with pytest.raises(ValueError, match="no latency samples"):
        latency_stats([])


def test_runner_matches_the_model_and_profiles_on_cpu() -> None:
    runner = TorchModelRunner.from_name("deit_tiny_patch16_224", img_size=64, num_classes=10)
    images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = runner.model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(runner.infer({"images": images})["logits"], expected, rtol=1e-6, atol=1e-6)

    result = profile_torch(
        runner, batch=2, img_size=64, warmup_s=0.0, duration_s=0.05, iterations=5, progress=False
    )
    assert result.latency.iterations >= 5 and result.gpu_compute is None
    assert 0 < result.latency.min <= result.latency.median <= result.latency.max
    assert result.enqueue.median <= result.latency.max
    assert result.throughput_qps > 0 and result.settings["cuda_graph"] == "n/a (host runner)"
    assert "Throughput:" in result.format() and "percentile(99%)" in result.format()


def test_profile_command_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    argv = [
        "profile",
        "deit_tiny_patch16_224",
        "--img-size",
        "64",
        "--num-classes",
        "10",
        "--duration-s",
        "0.05",
        "--e2e-s",
        "0.01",
    ]
    assert main([*argv, "--iterations", "3", "--warmup-s", "0", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Latency: min =" in text and "batch 1" in text
    data = json.loads(out.read_text())["artifacts"][0]  # a model name profiles its PyTorch model
    assert data["batch"] == 1 and data["latency"]["iterations"] >= 3 and data["gpu_compute"] is None
    assert data["settings"]["runtime"] == "torch" and data["settings"]["precision"] == "fp32"
    assert data["e2e"]["iterations"] >= 3  # preprocessing from the model card (64 x 64)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where torch has no CUDA device")
def test_cuda_without_a_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(VitrtError, match=r"torch\.cuda\.is_available"):
        TorchModelRunner(torch.nn.Linear(2, 2), device="cuda")
    assert main(["profile", "deit_tiny_patch16_224", "--device", "cuda", "--img-size", "64"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_cuda_graph_needs_cuda() -> None:
    with pytest.raises(VitrtError, match="CUDA graphs need a GPU"):
        TorchModelRunner(torch.nn.Linear(2, 2), device="cpu", cuda_graph=True)
