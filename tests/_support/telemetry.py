"""Shared helpers for the telemetry tests: recorded tool outputs and a sysfs tree built from them."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "deploy" / "fixtures" / "telemetry"


def recorded(name: str) -> str:
    """A fixture's text without its ``#`` header lines (the tool's output as it printed it)."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


def write_ina3221_channel(hwmon: Path, k: int, label: str | None, millivolts: int, milliamps: int) -> None:
    """One INA3221 channel as the kernel driver lays it out.

    Files: in<k>_label, in<k>_input (mV), curr<k>_input (mA); no label for a channel not connected.
    """
    hwmon.mkdir(parents=True, exist_ok=True)
    if label is not None:
        (hwmon / f"in{k}_label").write_text(label + "\n")
    (hwmon / f"in{k}_input").write_text(f"{millivolts}\n")
    (hwmon / f"curr{k}_input").write_text(f"{milliamps}\n")


def build_orin_nano_sysfs(root: Path) -> Path:
    """A Jetson Orin Nano root: nv_tegra_release, /proc/cpuinfo, device-tree model, its INA3221 at 1-0040.

    Channel values: VDD_IN 5000 mV x 1000 mA = 5000 mW; VDD_CPU_GPU_CV 5000 mV x 200 mA = 1000 mW;
    VDD_SOC 5000 mV x 300 mA = 1500 mW; the shunt-sum channel in7 has no current and is skipped.
    """
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025\n"
        "# KERNEL_VARIANT: oot\n"
    )
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text(recorded("cpuinfo_jetson_orin.txt"))
    model = root / "sys/firmware/devicetree/base/model"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00")
    hwmon = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    write_ina3221_channel(hwmon, 1, "VDD_IN", 5000, 1000)
    write_ina3221_channel(hwmon, 2, "VDD_CPU_GPU_CV", 5000, 200)
    write_ina3221_channel(hwmon, 3, "VDD_SOC", 5000, 300)
    (hwmon / "in7_label").write_text("sum of shunt voltages\n")
    (hwmon / "in7_input").write_text("24\n")
    return hwmon
