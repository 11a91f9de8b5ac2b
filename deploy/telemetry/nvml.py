"""Datacenter NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

Read: GPU name, driver version, SM and memory clocks (current and maximum, MHz), clock-event
(throttle) reasons, power usage (NVML reports mW), temperature (C) and the cumulative energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver loaded). Energy over a window comes from
that counter read at both ends rather than from power samples: on A100 / H100 a power reading
covers only part of each sampling period, the counter covers all of it.

pynvml is imported lazily: without the package, the NVML library or a GPU, ``NvmlSession.open``
returns a ``NotRecorded`` with the reason, and nothing raises.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .not_recorded import NotRecorded

# nvmlClocksEventReason* bits (nvml.h; the same values as the older nvmlClocksThrottleReason*), named
# as nvidia-smi names the ``clocks_event_reasons.*`` query fields.
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x0001, "gpu_idle"),
    (0x0002, "applications_clocks_setting"),
    (0x0004, "sw_power_cap"),
    (0x0008, "hw_slowdown"),
    (0x0010, "sync_boost"),
    (0x0020, "sw_thermal_slowdown"),
    (0x0040, "hw_thermal_slowdown"),
    (0x0080, "hw_power_brake_slowdown"),
    (0x0100, "display_clock_setting"),
    (0x0200, "board_limit"),
    (0x0400, "reliability"),
)


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the clock-event (throttle) reason bits set in ``mask``, lowest bit first.

    Bits NVML may add later are reported as ``unknown_0x...`` rather than dropped; 0 gives [].
    """
    if mask < 0:
        raise ValueError(f"a clock-event reason mask is non-negative, got {mask}")
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    known = 0
    for bit, _ in CLOCK_EVENT_REASONS:
        known |= bit
    unknown = mask & ~known
    bit = 1
    while unknown:
        if unknown & bit:
            names.append(f"unknown_{bit:#x}")
            unknown &= ~bit
        bit <<= 1
    return names


@dataclass(frozen=True)
class NvmlStatic:
    """One GPU's identity and clocks at the start of a run; clocks in MHz."""

    name: str
    driver_version: str
    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    memory_clock_mhz: int | None
    memory_clock_max_mhz: int | None


@dataclass(frozen=True)
class NvmlReading:
    """One sample: power in mW, temperature in C, clock-event reason mask (None where unsupported)."""

    power_mw: float | None
    temperature_c: float | None
    clock_event_mask: int | None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSession:
    """An initialised NVML and one device handle; ``close`` shuts NVML down."""

    def __init__(self, nvml: ModuleType, handle: Any) -> None:
        self._nvml = nvml
        self._handle = handle

    @classmethod
    def open(cls, device_index: int = 0) -> NvmlSession | NotRecorded:
        """Initialise NVML and take device ``device_index``, or say why that is not possible."""
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return NotRecorded("NVML", "pynvml is not installed (pip install 'vitrt[nvml]')")
        try:
            nvml.nvmlInit()
        except Exception as error:  # pynvml raises NVMLError subclasses, built at import time
            return NotRecorded("NVML", f"NVML did not initialise: {error}")
        try:
            count = nvml.nvmlDeviceGetCount()
            if device_index >= count:
                nvml.nvmlShutdown()
                return NotRecorded("NVML", f"no GPU {device_index}: NVML sees {count}")
            return cls(nvml, nvml.nvmlDeviceGetHandleByIndex(device_index))
        except Exception as error:
            nvml.nvmlShutdown()
            return NotRecorded("NVML", f"NVML could not open GPU {device_index}: {error}")

    def _maybe(self, call: str, *args: object) -> Any:
        """``pynvml.<call>(handle, *args)``, or None where the GPU does not support it."""
        try:
            return getattr(self._nvml, call)(self._handle, *args)
        except Exception:
            return None

    def static(self) -> NvmlStatic:
        """Name, driver and clocks of the device now."""
        sm, mem = self._nvml.NVML_CLOCK_SM, self._nvml.NVML_CLOCK_MEM
        try:
            driver = _text(self._nvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = "unknown"
        return NvmlStatic(
            name=_text(self._maybe("nvmlDeviceGetName") or "unknown"),
            driver_version=driver,
            sm_clock_mhz=self._maybe("nvmlDeviceGetClockInfo", sm),
            sm_clock_max_mhz=self._maybe("nvmlDeviceGetMaxClockInfo", sm),
            memory_clock_mhz=self._maybe("nvmlDeviceGetClockInfo", mem),
            memory_clock_max_mhz=self._maybe("nvmlDeviceGetMaxClockInfo", mem),
        )

    def energy_mj(self) -> int | None:
        """The cumulative energy counter in mJ (Volta and newer), or None where unsupported."""
        value = self._maybe("nvmlDeviceGetTotalEnergyConsumption")
        return int(value) if value is not None else None

    def read(self) -> NvmlReading:
        """Power (mW), temperature (C) and the clock-event reason mask now."""
        power = self._maybe("nvmlDeviceGetPowerUsage")
        temperature = self._maybe("nvmlDeviceGetTemperature", self._nvml.NVML_TEMPERATURE_GPU)
        # The "event" name replaced "throttle" in NVML 12.x; older bindings only have the latter.
        mask = self._maybe("nvmlDeviceGetCurrentClocksEventReasons")
        if mask is None:
            mask = self._maybe("nvmlDeviceGetCurrentClocksThrottleReasons")
        return NvmlReading(
            power_mw=float(power) if power is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            clock_event_mask=int(mask) if mask is not None else None,
        )

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass
