"""Parse tegrastats lines (Jetson Orin on JetPack 6, Jetson Thor on JetPack 7).

Formats, as NVIDIA's tegrastats documentation describes them and as recorded lines show
(tests/deploy/fixtures/telemetry/ holds the recorded lines and says where each came from):

- optional leading ``MM-DD-YYYY HH:MM:SS`` (printed by newer releases);
- ``RAM used/totalMB`` and ``SWAP used/totalMB`` (MB);
- ``CPU [load%@freq,...]`` per core, load in % and frequency in MHz, ``off`` for a core that is down;
- ``EMC_FREQ load%@freq`` (memory controller; MHz);
- ``GR3D_FREQ load%@[f0,f1,...]`` (iGPU; one frequency per GPC in MHz). Orin prints the load; Thor on
  JetPack 7.0 prints ``GR3D_FREQ @[314,314,314]`` without it, and JetPack 7.2 drops the field;
- temperatures ``name@43.5C`` (Celsius);
- power rails ``NAME instant/average`` in mW on JetPack 6 and 7.0, and ``NAME instant/average/peak``
  on JetPack 7.2 (the third value equals the largest reading so far in the recorded lines, hence
  ``peak_mw``).

Unknown fields (NVENC, NVDLA, APE, VIC, ...) are ignored: they change per board and release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TIMESTAMP = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CPU_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
# A temperature is a word, "@", a number and "C" at a word end; CPU entries ("1%@1510") carry a "%"
# before the "@" and no "C", so they never match.
_TEMPERATURE = re.compile(r"(?<![\w%])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW(?:/(\d+)mW)?(?:/(\d+)mW)?")


@dataclass(frozen=True)
class RailReading:
    """One rail in mW: the instant reading, tegrastats' running average, and (JetPack 7.2) the peak."""

    instant_mw: float
    average_mw: float | None = None
    peak_mw: float | None = None


@dataclass(frozen=True)
class TegrastatsLine:
    """One parsed tegrastats line; a field the line lacks is None (or empty)."""

    timestamp: str | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_load_percent: tuple[float | None, ...] = ()  # None: core off
    cpu_freq_mhz: tuple[int | None, ...] = ()
    emc_load_percent: float | None = None
    emc_freq_mhz: int | None = None
    gpu_load_percent: float | None = None
    gpu_freq_mhz: tuple[int, ...] = ()
    temperatures_c: dict[str, float] = field(default_factory=dict)
    rails: dict[str, RailReading] = field(default_factory=dict)

    def rail_instant_mw(self) -> dict[str, float]:
        """Instant power per rail, in mW."""
        return {name: reading.instant_mw for name, reading in self.rails.items()}


def _cpu_cores(body: str) -> tuple[tuple[float | None, ...], tuple[int | None, ...]]:
    loads: list[float | None] = []
    freqs: list[int | None] = []
    for entry in (e.strip() for e in body.split(",")):
        match = _CPU_CORE.match(entry)
        if match is None:  # "off", or a form not known: the core is counted, its values are not
            loads.append(None)
            freqs.append(None)
            continue
        loads.append(float(match.group(1)))
        freqs.append(int(match.group(2)) if match.group(2) else None)
    return tuple(loads), tuple(freqs)


def _pair(pattern: re.Pattern[str], line: str) -> tuple[int | None, int | None]:
    match = pattern.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else (None, None)


def parse_tegrastats_line(line: str) -> TegrastatsLine:
    """Parse one tegrastats line (any supported release) into a ``TegrastatsLine``."""
    line = line.strip()
    timestamp = match.group(1) if (match := _TIMESTAMP.match(line)) else None
    ram_used, ram_total = _pair(_RAM, line)
    swap_used, swap_total = _pair(_SWAP, line)
    cpu_load, cpu_freq = _cpu_cores(match.group(1)) if (match := _CPU.search(line)) else ((), ())
    emc_load: float | None = None
    emc_freq: int | None = None
    if match := _EMC.search(line):
        emc_load = float(match.group(1))
        emc_freq = int(match.group(2)) if match.group(2) else None
    gpu_load: float | None = None
    gpu_freq: tuple[int, ...] = ()
    if match := _GR3D.search(line):
        gpu_load = float(match.group(1)) if match.group(1) else None
        gpu_freq = tuple(int(f) for f in match.group(2).split(",") if f) if match.group(2) else ()
    rails = {
        name: RailReading(
            instant_mw=float(instant),
            average_mw=float(average) if average else None,
            peak_mw=float(peak) if peak else None,
        )
        for name, instant, average, peak in _RAIL.findall(line)
    }
    return TegrastatsLine(
        timestamp=timestamp,
        ram_used_mb=ram_used,
        ram_total_mb=ram_total,
        swap_used_mb=swap_used,
        swap_total_mb=swap_total,
        cpu_load_percent=cpu_load,
        cpu_freq_mhz=cpu_freq,
        emc_load_percent=emc_load,
        emc_freq_mhz=emc_freq,
        gpu_load_percent=gpu_load,
        gpu_freq_mhz=gpu_freq,
        temperatures_c={name: float(v) for name, v in _TEMPERATURE.findall(line)},
        rails=rails,
    )


def parse_tegrastats(text: str) -> list[TegrastatsLine]:
    """Parse every non-empty line of tegrastats output; lines starting with ``#`` are comments."""
    return [
        parse_tegrastats_line(line) for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
