"""Per-rail power from the Jetson INA3221 power monitors, read from hwmon sysfs.

Layout (Linux ``Documentation/hwmon/ina3221.rst`` and the hwmon sysfs ABI):
``/sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmon<N>/`` holds, per channel ``k`` in 1..3,
``in<k>_label`` (the rail name from the device tree, e.g. ``VDD_IN``), ``in<k>_input`` (bus voltage,
mV) and ``curr<k>_input`` (current, mA); ``in4``..``in6`` are shunt voltages and ``in7`` the
"sum of shunt voltages", which have no current and are skipped. Power is ``mV x mA / 1000`` mW. Where a
driver also exposes ``power<k>_input`` (the hwmon ABI unit is microwatts), that direct reading is used
instead of the product. Unlabelled channels (not connected on the board) are skipped: a rail is never
given a made-up name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

INA3221_GLOB = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
_LABEL = re.compile(r"^in(\d+)_label$")


@dataclass(frozen=True)
class RailPower:
    """One rail: ``power_mw`` in mW, from ``voltage_mv`` x ``current_ma`` or a direct power reading."""

    name: str
    power_mw: float
    voltage_mv: float | None
    current_ma: float | None
    source: str  # the hwmon directory, relative to the root


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def find_ina3221_dirs(root: Path = Path("/")) -> list[Path]:
    """The hwmon directories of every bound ina3221 device under ``root``, sorted."""
    return sorted(root.glob(INA3221_GLOB))


def read_ina3221(root: Path = Path("/")) -> dict[str, RailPower]:
    """Every labelled INA3221 rail under ``root``, by rail name; empty where there is none."""
    rails: dict[str, RailPower] = {}
    for hwmon in find_ina3221_dirs(root):
        for label_file in sorted(hwmon.iterdir()):
            match = _LABEL.match(label_file.name)
            if match is None:
                continue
            k = match.group(1)
            try:
                name = label_file.read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if not name or name == "NC":
                continue
            voltage = _read_number(hwmon / f"in{k}_input")
            current = _read_number(hwmon / f"curr{k}_input")
            power_uw = _read_number(hwmon / f"power{k}_input")
            if power_uw is not None:
                power = power_uw / 1e3
            elif voltage is not None and current is not None:
                power = voltage * current / 1e3
            else:
                continue  # a shunt-voltage channel (in4..in7) or an unreadable one
            rails[name] = RailPower(
                name=name,
                power_mw=power,
                voltage_mv=voltage,
                current_ma=current,
                source=str(hwmon.relative_to(root)),
            )
    return rails
