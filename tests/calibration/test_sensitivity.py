"""Sensitivity ranking and fallback to float until an error budget holds (seeded synthetic data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.calibration._graphs import save, two_layers, vit_like
from vitrt.calibration.calibrate import calibrate_onnx
from vitrt.calibration.errors import CalibrationError
from vitrt.calibration.metrics import agreement

pytestmark = pytest.mark.usefixtures("quiet_logs")

# the hand-built graphs carry no ExportConfig: their preprocessing is given (calibrate_onnx requires it)
NORM = {"mean": (0.5,), "std": (0.5,)}


def test_metrics_on_known_outputs() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    out = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 3.0]])
    a = agreement(ref, out)
    assert a.top1_agreement == 0.5
    assert a.min_cosine == 0.0 and a.mean_cosine == pytest.approx((1 / np.sqrt(1.01)) / 2)
    assert a.max_abs_error == pytest.approx(3.0)
    assert a.error("top1") == 0.5 and a.error("cosine") == pytest.approx(1 - a.mean_cosine)
    assert agreement(np.zeros((2, 3)), np.zeros((2, 3))).mean_cosine == 1.0


def test_the_outlier_layer_ranks_first_and_falls_back_until_the_budget_holds(tmp_path: Path) -> None:
    path = save(two_layers(), tmp_path / "two.onnx")
    # without a budget: both layers INT8, fc2 (outlier channel on its input) ruins the output
    free = calibrate_onnx(
        path, "synthetic", num_samples=32, eval_samples=16, method="minmax", progress=False, **NORM
    )
    assert [s.layer for s in free.sensitivity] == ["fc2/MatMul_1", "fc1/MatMul_1"]
    worst, benign = free.sensitivity
    assert worst.cosine_distance > 100 * benign.cosine_distance
    assert free.agreement is not None and free.agreement.cosine_distance > 1e-3

    budget = 1e-3  # between fc1's error alone (~1e-5) and fc2's
    held = calibrate_onnx(
        path,
        "synthetic",
        num_samples=32,
        eval_samples=16,
        method="minmax",
        error_budget=budget,
        progress=False,
        **NORM,
    )
    assert held.fallen_back == ["fc2/MatMul_1"] and held.quantized == ["fc1/MatMul_1"]
    assert held.fallback is not None and held.fallback.met
    assert held.fallback.steps[0]["error"] <= budget
    assert held.agreement is not None and held.agreement.cosine_distance <= budget  # on all 16 held-out
    assert "sensitivity fallback #1" in str(next(x for x in held.layers if x.name == "fc2/MatMul_1").reason)


def test_fallback_walks_the_ranking_until_the_budget_holds(tmp_path: Path) -> None:
    path = save(vit_like(seed=2), tmp_path / "vit.onnx")
    free = calibrate_onnx(path, "synthetic", num_samples=16, eval_samples=16, progress=False, **NORM)
    errors = [s.cosine_distance for s in free.sensitivity]
    assert errors == sorted(errors, reverse=True)
    assert free.agreement is not None
    budget = free.agreement.cosine_distance / 4  # forces a few fallbacks
    held = calibrate_onnx(
        path, "synthetic", num_samples=16, eval_samples=16, error_budget=budget, progress=False, **NORM
    )
    assert held.fallback is not None and held.fallback.met and held.fallen_back
    # the fallbacks are the head of the ranking, in order, and the walk stopped as soon as it held
    assert held.fallen_back == [s.layer for s in held.sensitivity[: len(held.fallen_back)]]
    assert all(step["error"] > budget for step in held.fallback.steps[:-1])
    assert held.fallback.steps[-1]["error"] <= budget


def test_a_budget_only_float_meets_is_an_error(tmp_path: Path) -> None:
    path = save(two_layers(), tmp_path / "two.onnx")
    out = tmp_path / "two.int8.onnx"
    with pytest.raises(CalibrationError, match="holds only with every layer in float"):
        calibrate_onnx(
            path, "synthetic", out, num_samples=8, eval_samples=8, error_budget=0.0, progress=False, **NORM
        )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.onnx"]
