"""TelemetrySampler on this machine (the CPU path, for real) and on a recorded Jetson sysfs tree.

The Jetson tests point ``root`` at a tree built in tmp_path from the kernel's INA3221 layout and replay
the recorded outputs of ``nvpmodel -q`` / ``jetson_clocks --show`` (fixtures): the sampler's readers run
unchanged on them. Power there is constant, so the energy is exactly power x window.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests._support.telemetry import build_orin_nano_sysfs, recorded, write_ina3221_channel
from vitrt.deploy.telemetry import NotRecorded, TelemetrySampler


def _why(state_dict: dict[str, Any]) -> dict[str, str]:
    items = state_dict["not_recorded"]
    assert isinstance(items, list)
    return {item["what"]: item["why"] for item in items}


def test_cpu_path_on_this_machine() -> None:
    with TelemetrySampler(threads=2) as telemetry:
        telemetry.begin_timed()
        time.sleep(0.01)
        telemetry.end_timed(inferences=4)
    state: dict[str, Any] = telemetry.result().to_dict()
    json.dumps(state)  # the report is plain JSON
    assert state["platform"] == "cpu"
    text = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), None
    )
    static = state["static"]
    assert isinstance(static, dict)
    assert static["cpu"]["model_name"] == model
    assert static["cpu"]["logical_cores"] == sum(ln.startswith("processor") for ln in text.splitlines())
    assert static["cpu"]["threads_used"] == 2
    assert (state["energy_j"], state["energy_per_inference_mj"], state["idle_power_w"]) == (None, None, None)
    samples = state["samples"]
    assert isinstance(samples, dict) and samples["source"] is None and samples["count"] == 0
    assert samples["window_s"] > 0.0
    why = _why(state)
    assert "power and energy" in why and "RAPL" in why["power and energy"]
    assert "GPU state (NVML)" in why  # no GPU and no driver on this machine
    governors = list(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor"))
    assert ("CPU scaling governor" in why) == (not governors)


def _replay(
    outputs: dict[tuple[str, ...], str], calls: list[tuple[str, ...]]
) -> Callable[[tuple[str, ...]], str | NotRecorded]:
    """A tool runner that replays recorded outputs and logs every command line it was asked to run."""

    def run(argv: tuple[str, ...]) -> str | NotRecorded:
        calls.append(argv)
        return outputs[argv]

    return run


def test_jetson_path_on_a_recorded_tree(tmp_path: Path) -> None:
    build_orin_nano_sysfs(tmp_path)  # VDD_IN = 5000 mW, constant
    calls: list[tuple[str, ...]] = []
    tools: dict[tuple[str, ...], str] = {
        ("nvpmodel", "-q"): recorded("nvpmodel_q_jp6_orin_nano.txt"),
        ("jetson_clocks", "--show"): recorded("jetson_clocks_show_jp6_orin_nano_super.txt"),
    }
    with TelemetrySampler(
        root=tmp_path, interval_s=0.02, threads=6, run_tool=_replay(tools, calls)
    ) as telemetry:
        time.sleep(0.1)  # idle
        t0 = telemetry.begin_timed()
        time.sleep(0.2)
        t1 = telemetry.end_timed(inferences=50)
    state: dict[str, Any] = telemetry.result().to_dict()
    json.dumps(state)
    # Read-only: exactly the two query command lines, nothing that changes the power mode or clocks.
    assert calls == [("nvpmodel", "-q"), ("jetson_clocks", "--show")]
    assert state["platform"] == "jetson"
    jetson = state["static"]["jetson"]
    assert jetson["model"] == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert jetson["l4t_release"].startswith("# R36 (release), REVISION: 4.3")
    assert jetson["power_mode"] == {"name": "MAXN_SUPER", "id": 2}
    assert jetson["clocks"]["gpu"] == {"min_mhz": 306.0, "max_mhz": 918.0, "current_mhz": 306.0}
    assert jetson["clocks"]["emc"]["current_mhz"] == 665.6
    assert jetson["clocks"]["cpu_clusters"][0]["max_mhz"] == 1344.0
    samples = state["samples"]
    assert isinstance(samples, dict)
    assert (samples["source"], samples["total_rail"], samples["interval_s"]) == ("ina3221", "VDD_IN", 0.02)
    assert samples["count"] >= 4
    assert samples["window_s"] == pytest.approx(t1 - t0)
    assert samples["covered_s"] == pytest.approx(t1 - t0)  # readings at both edges
    assert (samples["mean_power_w"], samples["peak_power_w"]) == (pytest.approx(5.0), 5.0)
    assert state["idle_power_w"] == pytest.approx(5.0)
    # 5000 mW constant over the window: E = 5 W x (t1 - t0); per inference E / 50 in mJ.
    assert state["energy_j"] == pytest.approx(5.0 * (t1 - t0), rel=1e-9)
    assert state["energy_per_inference_mj"] == pytest.approx(5.0 * (t1 - t0) * 1e3 / 50, rel=1e-9)
    assert state["throttle_reasons"] is None
    why = _why(state)
    # The recorded tree has no cpufreq, and arm64's /proc/cpuinfo names no model.
    assert set(why) == {"throttle reasons", "CPU scaling governor", "CPU model name"}
    cpu = state["static"]["cpu"]
    assert (cpu["logical_cores"], cpu["flags"], cpu["threads_used"]) == (
        2,
        ["asimd", "asimdhp", "asimddp"],
        6,
    )


@pytest.mark.skipif(shutil.which("nvpmodel") is not None, reason="nvpmodel is installed here")
def test_jetson_tools_missing_are_not_recorded(tmp_path: Path) -> None:
    build_orin_nano_sysfs(tmp_path)
    with TelemetrySampler(root=tmp_path, interval_s=0.05) as telemetry:
        pass
    state: dict[str, Any] = telemetry.result().to_dict()
    jetson = state["static"]["jetson"]
    assert jetson["power_mode"] is None and jetson["clocks"] is None
    why = _why(state)
    assert why["power mode (nvpmodel -q)"] == "nvpmodel is not on PATH"
    assert why["clocks (jetson_clocks --show)"] == "jetson_clocks is not on PATH"
    assert "no timed window" in why["energy"]
    assert state["energy_j"] is None


def test_jetson_without_a_total_rail(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R38 (release), REVISION: 2.0\n")
    hwmon = tmp_path / "sys/bus/i2c/drivers/ina3221/2-0040/hwmon/hwmon4"
    write_ina3221_channel(hwmon, 1, "VDD_GPU", 19000, 0)
    write_ina3221_channel(hwmon, 2, "VDD_CPU_SOC_MSS", 19000, 300)
    refused = NotRecorded("jetson_clocks --show", "exit status 1: Error: Run this script as a root user")
    tools: dict[tuple[str, ...], str | NotRecorded] = {
        ("nvpmodel", "-q"): recorded("nvpmodel_q_jp7_thor.txt"),
        ("jetson_clocks", "--show"): refused,
    }
    with TelemetrySampler(root=tmp_path, run_tool=lambda argv: tools[argv]) as telemetry:
        telemetry.begin_timed()
        telemetry.end_timed(inferences=1)
    state: dict[str, Any] = telemetry.result().to_dict()
    assert state["static"]["jetson"]["power_mode"] == {"name": "120W", "id": 1}
    assert state["energy_j"] is None and state["samples"]["source"] is None
    why = _why(state)
    assert "VDD_CPU_SOC_MSS, VDD_GPU" in why["power and energy"]
    assert why["clocks (jetson_clocks --show)"].endswith("root user")


def test_readonly_runner_refuses_commands_that_change_state() -> None:
    from vitrt.deploy.telemetry import run_readonly_tool

    for argv in [("jetson_clocks",), ("nvpmodel", "-m", "0"), ("jetson_clocks", "--restore")]:
        with pytest.raises(ValueError, match="read-only"):
            run_readonly_tool(argv)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TelemetrySampler(interval_s=0)
