"""Which power rail is the board's total, per Jetson board: data, not code paths.

The rail names are those tegrastats prints and the hwmon ``in*_label`` files hold. A rule names the
rails whose sum is the total; a rule applies only when all its rails were read, so a board whose
total rail is missing (seen on AGX Thor when its INA238 input monitor is not exposed) gets no total
rather than a partial sum that would under-report energy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TotalPowerRule:
    """``rails`` summed give the total power of ``board``; ``note`` says what that total covers."""

    board: str
    rails: tuple[str, ...]
    note: str


# Order matters: the first rule whose rails are all present wins. Thor's "VIN" comes first because an
# AGX Thor also reports VIN_SYS_5V0, a sub-rail, and the names are matched exactly.
TOTAL_POWER_RULES: tuple[TotalPowerRule, ...] = (
    TotalPowerRule(
        board="Jetson AGX Thor",
        rails=("VIN",),
        note="VIN: the INA238 on the module input, the whole module (JetPack 7)",
    ),
    TotalPowerRule(
        board="Jetson Orin Nano / Orin NX",
        rails=("VDD_IN",),
        note="VDD_IN: the module's input rail (VDD_CPU_GPU_CV and VDD_SOC are parts of it)",
    ),
    TotalPowerRule(
        board="Jetson AGX Orin",
        rails=("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"),
        note=(
            "AGX Orin has no input rail: the sum of its four monitored rails, which leaves out "
            "regulator losses and the carrier board, so it reads below a meter at the supply"
        ),
    ),
)


def select_total_rule(rail_names: set[str] | frozenset[str]) -> TotalPowerRule | None:
    """The first rule in ``TOTAL_POWER_RULES`` whose rails are all in ``rail_names``, or None."""
    for rule in TOTAL_POWER_RULES:
        if all(rail in rail_names for rail in rule.rails):
            return rule
    return None


def total_power_mw(rails_mw: Mapping[str, float], rule: TotalPowerRule) -> float | None:
    """The total power in mW under ``rule`` from per-rail powers in mW; None if a rail is missing."""
    if not all(rail in rails_mw for rail in rule.rails):
        return None
    return float(sum(rails_mw[rail] for rail in rule.rails))
