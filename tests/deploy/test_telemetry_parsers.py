"""Jetson and CPU parsers on recorded tool outputs (tests/deploy/fixtures/telemetry/), and the INA3221
reader on a sysfs tree laid out as the kernel driver lays it out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._support.telemetry import FIXTURES, build_orin_nano_sysfs, recorded, write_ina3221_channel
from vitrt.deploy.telemetry import (
    CpuInfo,
    parse_cpuinfo,
    parse_jetson_clocks_show,
    parse_nvpmodel_query,
    parse_tegrastats,
    read_cpu_info,
    read_ina3221,
    read_scaling_governor,
    select_total_rule,
    total_power_mw,
)
from vitrt.deploy.telemetry.cpu import FLAGS_OF_INTEREST


def test_tegrastats_jp6_orin_nano() -> None:
    lines = parse_tegrastats((FIXTURES / "tegrastats_jp6_orin_nano.txt").read_text())
    assert len(lines) == 4
    first = lines[0]
    assert first.timestamp is None
    assert (first.ram_used_mb, first.ram_total_mb, first.swap_used_mb, first.swap_total_mb) == (
        2450,
        7620,
        0,
        3810,
    )
    assert first.cpu_load_percent == (2.0, 0.0, 1.0, 0.0, None, None)  # two cores "off"
    assert first.cpu_freq_mhz == (1510, 1510, 1510, 1510, None, None)
    assert (first.emc_load_percent, first.emc_freq_mhz) == (0.0, 2133)
    assert (first.gpu_load_percent, first.gpu_freq_mhz) == (0.0, (305,))
    assert first.temperatures_c == {
        "cpu": 47.5,
        "soc2": 45.937,
        "soc0": 46.093,
        "gpu": 46.281,
        "tj": 47.5,
        "soc1": 45.75,
    }
    assert first.rail_instant_mw() == {"VDD_IN": 4437.0, "VDD_CPU_GPU_CV": 640.0, "VDD_SOC": 1440.0}
    loaded = lines[2].rails["VDD_IN"]
    assert (loaded.instant_mw, loaded.average_mw, loaded.peak_mw) == (9859.0, 7971.0, None)
    assert (lines[2].gpu_load_percent, lines[2].gpu_freq_mhz) == (98.0, (624,))
    # The Super sample prints GR3D_FREQ with a load and no frequency.
    assert (lines[3].gpu_load_percent, lines[3].gpu_freq_mhz) == (0.0, ())
    rule = select_total_rule(frozenset(first.rails))
    assert rule is not None and rule.rails == ("VDD_IN",)
    assert [total_power_mw(line.rail_instant_mw(), rule) for line in lines] == [
        4437.0,
        9617.0,
        9859.0,
        7256.0,
    ]


def test_tegrastats_jp6_agx_orin() -> None:
    lines = parse_tegrastats((FIXTURES / "tegrastats_jp6_agx_orin.txt").read_text())
    assert len(lines) == 2
    line = lines[0]
    assert line.timestamp == "11-21-2025 08:49:48"
    assert (line.ram_used_mb, line.ram_total_mb) == (13983, 62780)
    assert len(line.cpu_load_percent) == 12 and line.cpu_load_percent[0] == 90.0
    assert set(line.cpu_freq_mhz) == {2201}
    assert (line.gpu_load_percent, line.gpu_freq_mhz) == (14.0, (407, 407))
    assert line.temperatures_c["CPU"] == 77.281 and line.temperatures_c["tj"] == 77.281
    assert line.temperatures_c["Tboard"] == 62.0
    assert len(line.temperatures_c) == 11
    assert "NVDLA0_FREQ" not in line.rails and "APE" not in line.rails
    rule = select_total_rule(frozenset(line.rails))
    assert rule is not None and rule.board == "Jetson AGX Orin"
    # No input rail on AGX Orin: 3150 + 14312 + 4968 + 1091 mW.
    assert total_power_mw(line.rail_instant_mw(), rule) == 23521.0
    assert total_power_mw(lines[1].rail_instant_mw(), rule) == 3071 + 14233 + 4968 + 1091


def test_tegrastats_jp7_thor() -> None:
    lines = parse_tegrastats((FIXTURES / "tegrastats_jp7_thor.txt").read_text())
    assert len(lines) == 3
    jp71, no_vin, jp72 = lines
    assert len(jp71.cpu_load_percent) == 14 and jp71.cpu_load_percent[11] == 8.0
    # Thor prints three GPC frequencies and no GPU load.
    assert (jp71.gpu_load_percent, jp71.gpu_freq_mhz) == (None, (314, 314, 314))
    assert (jp71.emc_load_percent, jp71.emc_freq_mhz) == (0.0, 2750)
    assert jp71.temperatures_c == {
        "cpu": 37.343,
        "tj": 38.875,
        "soc012": 37.468,
        "gpu": 38.875,
        "soc345": 37.406,
    }
    assert jp71.rails["VIN"].instant_mw == 19780.0 and jp71.rails["VIN"].peak_mw is None
    rule = select_total_rule(frozenset(jp71.rails))
    assert rule is not None and rule.rails == ("VIN",)  # not VIN_SYS_5V0, a sub-rail
    assert total_power_mw(jp71.rail_instant_mw(), rule) == 19780.0
    # Without VIN no rule applies: summing the sub-rails would under-report.
    assert set(no_vin.rails) == {"VDD_GPU", "VDD_CPU_SOC_MSS", "VIN_SYS_5V0"}
    assert select_total_rule(frozenset(no_vin.rails)) is None
    # JetPack 7.2: instant / average / peak, no GR3D_FREQ.
    vin = jp72.rails["VIN"]
    assert (vin.instant_mw, vin.average_mw, vin.peak_mw) == (87426.0, 43713.0, 87426.0)
    assert jp72.rails["VDD_GPU"].instant_mw == 37528.0
    assert (jp72.gpu_load_percent, jp72.gpu_freq_mhz, jp72.emc_freq_mhz) == (None, (), None)
    assert (jp72.swap_used_mb, jp72.swap_total_mb) == (11, 4096)


@pytest.mark.parametrize(
    ("fixture", "name", "mode_id"),
    [("nvpmodel_q_jp6_orin_nano.txt", "MAXN_SUPER", 2), ("nvpmodel_q_jp7_thor.txt", "120W", 1)],
)
def test_nvpmodel_query(fixture: str, name: str, mode_id: int) -> None:
    mode = parse_nvpmodel_query(recorded(fixture))
    assert mode is not None and (mode.name, mode.mode_id) == (name, mode_id)


def test_nvpmodel_query_skips_other_lines_and_rejects_other_text() -> None:
    mode = parse_nvpmodel_query("NV Fan Mode:quiet\nNV Power Mode: MODE_15W\n0\n")
    assert mode is not None and (mode.name, mode.mode_id) == ("MODE_15W", 0)
    assert parse_nvpmodel_query("nvpmodel: command not found\n") is None


def test_jetson_clocks_show_with_online_per_core() -> None:
    clocks = parse_jetson_clocks_show(recorded("jetson_clocks_show_jp6_orin_nano.txt"))
    assert clocks.soc_family == "tegra234"
    assert clocks.machine == "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
    assert [c.cpu for c in clocks.cpus] == [0, 1, 2, 3, 4, 5] and all(c.online for c in clocks.cpus)
    assert clocks.cpus[1].governor == "schedutil"
    # kHz -> MHz: 729600 -> 729.6, 1510400 -> 1510.4, 1497600 -> 1497.6
    assert (clocks.cpus[1].min_mhz, clocks.cpus[1].max_mhz, clocks.cpus[1].current_mhz) == (
        729.6,
        1510.4,
        1497.6,
    )
    # Hz -> MHz
    assert clocks.gpu is not None and (clocks.gpu.min_mhz, clocks.gpu.max_mhz, clocks.gpu.current_mhz) == (
        306.0,
        624.75,
        306.0,
    )
    assert clocks.emc is not None and (clocks.emc.max_mhz, clocks.emc.current_mhz) == (2133.0, 2133.0)
    assert clocks.fan == "FAN Dynamic Speed Control=nvfancontrol hwmon0_pwm1=42"
    assert clocks.power_mode == "MAXN_SUPER"
    (cluster,) = clocks.cpu_clusters()
    assert cluster == {
        "cpus": [0, 1, 2, 3, 4, 5],
        "online": [0, 1, 2, 3, 4, 5],
        "min_mhz": 729.6,
        "max_mhz": 1510.4,
        "current_mhz": [1510.4, 1497.6, 1190.4, 1113.6, 729.6, 883.2],
    }


def test_jetson_clocks_show_newer_layout() -> None:
    clocks = parse_jetson_clocks_show(recorded("jetson_clocks_show_jp6_orin_nano_super.txt"))
    assert [c.online for c in clocks.cpus] == [True] * 6  # from "Online CPUs: 0-5, Offline CPUs: "
    assert clocks.cpus[5].current_mhz == 1267.2 and clocks.cpus[5].max_mhz == 1344.0
    assert clocks.gpu is not None and clocks.gpu.max_mhz == 918.0
    assert clocks.emc is not None and (clocks.emc.max_mhz, clocks.emc.current_mhz) == (3199.0, 665.6)
    assert clocks.power_mode == "25W"


def test_jetson_clocks_show_marks_cores_outside_the_online_list_offline() -> None:
    text = (
        "Online CPUs: 0-1\n"
        "cpu0: Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=729600\n"
        "cpu2: Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=729600\n"
    )
    clocks = parse_jetson_clocks_show(text)
    assert [(c.cpu, c.online) for c in clocks.cpus] == [(0, True), (2, False)]
    assert clocks.gpu is None and clocks.emc is None and clocks.fan is None


def test_cpuinfo_x86_with_amx() -> None:
    info = parse_cpuinfo(recorded("cpuinfo_x86_sapphire_rapids.txt"))
    assert info.model_name == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert info.logical_cores == 2
    assert info.flags == (
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    )


def test_cpuinfo_aarch64() -> None:
    info = parse_cpuinfo(recorded("cpuinfo_jetson_orin.txt"))
    assert info.model_name is None  # arm64 prints no model name
    assert info.logical_cores == 2
    assert info.flags == ("asimd", "asimdhp", "asimddp")


def test_cpu_reader_on_this_machine() -> None:
    text = Path("/proc/cpuinfo").read_text()
    info = read_cpu_info()
    assert isinstance(info, CpuInfo)
    lines = text.splitlines()
    expected_model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), None)
    assert info.model_name == expected_model
    assert info.logical_cores == sum(ln.startswith("processor") for ln in lines)
    flags_line = next(ln for ln in lines if ln.startswith(("flags", "Features")))
    present = set(flags_line.split(":", 1)[1].split())
    assert set(info.flags) == present & set(FLAGS_OF_INTEREST)


def test_scaling_governor_from_a_sysfs_tree(tmp_path: Path) -> None:
    for cpu, governor in [(0, "schedutil"), (1, "schedutil"), (10, "performance")]:
        path = tmp_path / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        path.parent.mkdir(parents=True)
        path.write_text(governor + "\n")
    assert read_scaling_governor(tmp_path) == "mixed: schedutil (cpu0, cpu1), performance (cpu10)"
    (tmp_path / "sys/devices/system/cpu/cpu10/cpufreq/scaling_governor").write_text("schedutil\n")
    assert read_scaling_governor(tmp_path) == "schedutil"


def test_scaling_governor_absent_is_not_recorded(tmp_path: Path) -> None:
    missing = read_scaling_governor(tmp_path)
    assert not isinstance(missing, str) and missing.what == "CPU scaling governor"
    assert "scaling_governor" in missing.why


def test_ina3221_tree(tmp_path: Path) -> None:
    hwmon = build_orin_nano_sysfs(tmp_path)
    # An unlabelled (not connected) channel on a second monitor is skipped, never named.
    write_ina3221_channel(tmp_path / "sys/bus/i2c/drivers/ina3221/1-0041/hwmon/hwmon2", 1, None, 5000, 10)
    rails = read_ina3221(tmp_path)
    assert sorted(rails) == ["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"]
    assert rails["VDD_IN"].power_mw == 5000.0  # 5000 mV x 1000 mA / 1000
    assert rails["VDD_CPU_GPU_CV"].power_mw == 1000.0
    assert (rails["VDD_SOC"].voltage_mv, rails["VDD_SOC"].current_ma, rails["VDD_SOC"].power_mw) == (
        5000,
        300,
        1500,
    )
    assert rails["VDD_IN"].source == str(hwmon.relative_to(tmp_path))


def test_ina3221_prefers_a_direct_power_reading(tmp_path: Path) -> None:
    hwmon = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    write_ina3221_channel(hwmon, 1, "VDD_IN", 5080, 1000)
    (hwmon / "power1_input").write_text("5123000\n")  # hwmon ABI: microwatts
    assert read_ina3221(tmp_path)["VDD_IN"].power_mw == 5123.0


def test_ina3221_absent_gives_no_rails(tmp_path: Path) -> None:
    assert read_ina3221(tmp_path) == {}
