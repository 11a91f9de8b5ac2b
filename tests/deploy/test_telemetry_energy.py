"""Energy over a timed window (trapezoid, interpolated edges), idle power, and the total-rail rules."""

from __future__ import annotations

import pytest

from vitrt.deploy.telemetry import (
    TOTAL_POWER_RULES,
    PowerSample,
    energy_per_inference_mj,
    idle_power_w,
    integrate_energy,
    select_total_rule,
    total_power_mw,
)

# 1 W at t=0, 3 W from t=1 to t=2, back to 1 W at t=3 (mW).
STEP = [
    PowerSample(0.0, 1000.0),
    PowerSample(1.0, 3000.0),
    PowerSample(2.0, 3000.0),
    PowerSample(3.0, 1000.0),
]


def test_whole_series() -> None:
    # (1000+3000)/2*1 + 3000*1 + (3000+1000)/2*1 = 7000 mW s = 7 J
    window = integrate_energy(STEP, 0.0, 3.0)
    assert window.energy_j == pytest.approx(7.0)
    assert (window.window_s, window.covered_s, window.samples_in_window) == (3.0, 3.0, 4)
    assert window.mean_power_w == pytest.approx(7.0 / 3.0)


def test_window_edges_are_interpolated() -> None:
    # At 0.5 s and 2.5 s the power is 2000 mW: 0.5*(2000+3000)/2 + 3000*1 + 0.5*(3000+2000)/2 = 5500 mW s.
    window = integrate_energy(list(reversed(STEP)), 0.5, 2.5)  # order does not matter
    assert window.energy_j == pytest.approx(5.5)
    assert window.covered_s == pytest.approx(2.0)
    assert window.samples_in_window == 2
    assert energy_per_inference_mj(window.energy_j, 11) == pytest.approx(500.0)  # 5.5 J / 11 = 0.5 J


def test_window_beyond_the_samples_integrates_only_what_was_measured() -> None:
    # [2, 5]: only 2..3 is covered: (3000+1000)/2*1 = 2000 mW s.
    window = integrate_energy(STEP, 2.0, 5.0)
    assert window.energy_j == pytest.approx(2.0)
    assert (window.window_s, window.covered_s) == (3.0, 1.0)
    assert window.mean_power_w == pytest.approx(2.0)


def test_degenerate_inputs() -> None:
    assert integrate_energy([PowerSample(0.0, 5000.0)], 0.0, 1.0).energy_j == 0.0
    assert integrate_energy(STEP, 4.0, 5.0).mean_power_w is None
    with pytest.raises(ValueError, match="ends before"):
        integrate_energy(STEP, 2.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        energy_per_inference_mj(1.0, 0)


def test_idle_power_is_the_mean_of_samples_before_the_run() -> None:
    samples = [PowerSample(0.0, 4000.0), PowerSample(0.1, 4400.0), PowerSample(0.2, 9000.0)]
    assert idle_power_w(samples, before_s=0.15) == pytest.approx(4.2)  # (4000 + 4400) / 2 mW
    assert idle_power_w(samples, before_s=0.0) is None


def test_total_rail_rules_per_board() -> None:
    boards = {rule.board: rule.rails for rule in TOTAL_POWER_RULES}
    assert boards == {
        "Jetson AGX Thor": ("VIN",),
        "Jetson Orin Nano / Orin NX": ("VDD_IN",),
        "Jetson AGX Orin": ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"),
    }
    thor = {"VDD_GPU": 1962.0, "VDD_CPU_SOC_MSS": 5887.0, "VIN_SYS_5V0": 5635.0, "VIN": 19780.0}
    rule = select_total_rule(frozenset(thor))
    assert rule is not None and total_power_mw(thor, rule) == 19780.0
    orin_nano = {"VDD_IN": 4437.0, "VDD_CPU_GPU_CV": 640.0, "VDD_SOC": 1440.0}
    rule = select_total_rule(frozenset(orin_nano))
    assert rule is not None and total_power_mw(orin_nano, rule) == 4437.0
    assert select_total_rule(frozenset({"VDD_GPU_SOC", "VDD_CPU_CV"})) is None  # partial AGX Orin set
    assert total_power_mw({"VDD_SOC": 1.0}, TOTAL_POWER_RULES[1]) is None
