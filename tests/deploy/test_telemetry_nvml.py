"""NVML: the clock-event reason decoding on bit masks, and the live path on this GPU-less machine."""

from __future__ import annotations

import importlib.util

import pytest

from vitrt.deploy.telemetry import NotRecorded, NvmlSession, decode_clock_event_reasons


@pytest.mark.parametrize(
    ("mask", "names"),
    [
        (0, []),
        (0x1, ["gpu_idle"]),
        (0x4, ["sw_power_cap"]),
        # sw_power_cap | hw_slowdown | hw_thermal_slowdown = 0x4 + 0x8 + 0x40
        (0x4C, ["sw_power_cap", "hw_slowdown", "hw_thermal_slowdown"]),
        (0x60, ["sw_thermal_slowdown", "hw_thermal_slowdown"]),
        (0x80 | 0x100, ["hw_power_brake_slowdown", "display_clock_setting"]),
        (0x200 | 0x400, ["board_limit", "reliability"]),
        (0x1 | 0x1000, ["gpu_idle", "unknown_0x1000"]),
    ],
)
def test_decode_clock_event_reasons(mask: int, names: list[str]) -> None:
    assert decode_clock_event_reasons(mask) == names


def test_decode_agrees_with_pynvml_constants() -> None:
    pynvml = pytest.importorskip("pynvml")
    assert decode_clock_event_reasons(pynvml.nvmlClocksEventReasonSwPowerCap) == ["sw_power_cap"]
    assert decode_clock_event_reasons(pynvml.nvmlClocksEventReasonHwThermalSlowdown) == [
        "hw_thermal_slowdown"
    ]
    assert len(decode_clock_event_reasons(pynvml.nvmlClocksEventReasonAll)) == 9


def test_decode_rejects_negative_masks() -> None:
    with pytest.raises(ValueError):
        decode_clock_event_reasons(-1)


def test_live_nvml_without_a_gpu_says_why() -> None:
    session = NvmlSession.open()
    if isinstance(session, NvmlSession):  # pragma: no cover - only on a machine with a GPU
        session.close()
        pytest.skip("this machine has an NVIDIA GPU")
    assert isinstance(session, NotRecorded) and session.what == "NVML"
    if importlib.util.find_spec("pynvml") is None:
        assert "pynvml is not installed" in session.why
    else:
        # No driver here: pynvml cannot load libnvidia-ml.so.1.
        assert session.why.startswith("NVML did not initialise")
