"""Device state during a profiling run, read-only: Jetson power mode, clocks and rail power; NVML on
datacenter GPUs; CPU model, governor and flags; energy per inference. See README.md beside this file.
"""

from .cpu import CpuInfo, parse_cpuinfo, read_cpu_info, read_scaling_governor
from .energy import PowerSample, WindowEnergy, energy_per_inference_mj, idle_power_w, integrate_energy
from .ina3221 import RailPower, read_ina3221
from .jetson_tools import (
    JetsonBoard,
    JetsonClocks,
    PowerMode,
    is_jetson,
    parse_jetson_clocks_show,
    parse_nvpmodel_query,
    read_jetson_board,
    run_readonly_tool,
)
from .not_recorded import NotRecorded
from .nvml import CLOCK_EVENT_REASONS, NvmlSession, decode_clock_event_reasons
from .power_rails import TOTAL_POWER_RULES, TotalPowerRule, select_total_rule, total_power_mw
from .sampler import DeviceState, TelemetrySampler, detect_platform
from .tegrastats import RailReading, TegrastatsLine, parse_tegrastats, parse_tegrastats_line

__all__ = [
    "CLOCK_EVENT_REASONS",
    "TOTAL_POWER_RULES",
    "CpuInfo",
    "DeviceState",
    "JetsonBoard",
    "JetsonClocks",
    "NotRecorded",
    "NvmlSession",
    "PowerMode",
    "PowerSample",
    "RailPower",
    "RailReading",
    "TegrastatsLine",
    "TelemetrySampler",
    "TotalPowerRule",
    "WindowEnergy",
    "decode_clock_event_reasons",
    "detect_platform",
    "energy_per_inference_mj",
    "idle_power_w",
    "integrate_energy",
    "is_jetson",
    "parse_cpuinfo",
    "parse_jetson_clocks_show",
    "parse_nvpmodel_query",
    "parse_tegrastats",
    "parse_tegrastats_line",
    "read_cpu_info",
    "read_ina3221",
    "read_jetson_board",
    "read_scaling_governor",
    "run_readonly_tool",
    "select_total_rule",
    "total_power_mw",
]
