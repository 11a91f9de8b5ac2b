"""``TelemetrySampler``: device state around a profiling run, read-only, never failing for a missing sensor.

Usage::

    with TelemetrySampler(threads=2) as telemetry:
        ...                                   # idle: samples here give the idle power
        telemetry.begin_timed()
        for _ in range(n): run_once()
        telemetry.end_timed(inferences=n)
    state = telemetry.result()                # DeviceState; state.to_dict() for the report

Platform detection, in order: a Jetson (``/etc/nv_tegra_release``, or a device-tree model naming
"NVIDIA Jetson" or "Thor"); an NVIDIA GPU that NVML opens; otherwise a CPU. Static facts are read
once at the start; power is sampled in a background thread every ``interval_s`` (INA3221 hwmon or
NVML) or by ``tegrastats --interval`` where the board's total rail is only visible there.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

from .cpu import read_cpu_info, read_scaling_governor
from .energy import PowerSample, energy_per_inference_mj, idle_power_w, integrate_energy
from .ina3221 import read_ina3221
from .jetson_tools import (
    JETSON_CLOCKS_SHOW,
    NVPMODEL_QUERY,
    ToolRunner,
    is_jetson,
    parse_jetson_clocks_show,
    parse_nvpmodel_query,
    read_jetson_board,
    run_readonly_tool,
)
from .not_recorded import NotRecorded
from .nvml import NvmlSession, decode_clock_event_reasons
from .power_rails import TotalPowerRule, select_total_rule
from .power_sources import Ina3221Source, NvmlPowerSource, TegrastatsSource

log = logging.getLogger(__name__)

PLATFORM_JETSON = "jetson"
PLATFORM_NVIDIA_GPU = "nvidia_gpu"
PLATFORM_CPU = "cpu"


@dataclass
class DeviceState:
    """What the sampler recorded. ``to_dict()`` keys (stable; units in the names or below):

    - ``platform``: ``"jetson"``, ``"nvidia_gpu"`` or ``"cpu"``;
    - ``static``: facts read at the start: ``cpu`` (model_name, logical_cores, threads_used,
      scaling_governor, flags) on every platform; ``jetson`` (model, l4t_release, power_mode
      {name, id}, clocks {cpu_clusters [MHz], gpu / emc {min_mhz, max_mhz, current_mhz}, fan}) or
      ``gpu`` (name, driver_version, sm_clock_mhz, sm_clock_max_mhz, memory_clock_mhz,
      memory_clock_max_mhz);
    - ``samples``: source (``ina3221`` / ``tegrastats`` / ``nvml`` / None), total_rail, interval_s,
      count, window_s, covered_s (seconds of the timed window the samples span), mean_power_w and
      peak_power_w over the timed window, energy_source;
    - ``idle_power_w``: mean power (W) of the samples taken before the timed window;
    - ``energy_j``: energy (J) over the timed window; ``energy_per_inference_mj``: mJ per inference;
    - ``throttle_reasons``: clock-event reason names seen during the window (NVML), else None;
    - ``not_recorded``: a list of {what, why}: everything that was not read, and why.
    """

    platform: str
    static: dict[str, object] = field(default_factory=dict)
    samples: dict[str, object] = field(default_factory=dict)
    idle_power_w: float | None = None
    energy_j: float | None = None
    energy_per_inference_mj: float | None = None
    throttle_reasons: list[str] | None = None
    not_recorded: list[NotRecorded] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "platform": self.platform,
            "static": self.static,
            "samples": self.samples,
            "idle_power_w": self.idle_power_w,
            "energy_j": self.energy_j,
            "energy_per_inference_mj": self.energy_per_inference_mj,
            "throttle_reasons": self.throttle_reasons,
            "not_recorded": [item.to_dict() for item in self.not_recorded],
        }


def detect_platform(root: Path = Path("/")) -> tuple[str, NvmlSession | NotRecorded | None]:
    """The platform under ``root``, and the NVML session (or why there is none) when not a Jetson.

    NVML is the live library whatever ``root`` is: it has no file tree to redirect.
    """
    if is_jetson(root):
        return PLATFORM_JETSON, None
    session = NvmlSession.open()
    if isinstance(session, NvmlSession):
        return PLATFORM_NVIDIA_GPU, session
    return PLATFORM_CPU, session


class TelemetrySampler:
    """Context manager that records device state and power around a timed run (see the module doc).

    ``root`` redirects every file read (tests point it at a recorded sysfs tree); ``run_tool`` runs
    the read-only tools (``nvpmodel -q``, ``jetson_clocks --show``) and is only ever called with those
    command lines; ``threads`` is the number of threads the run used, recorded as given.
    """

    def __init__(
        self,
        *,
        root: Path = Path("/"),
        interval_s: float = 0.1,
        threads: int | None = None,
        run_tool: ToolRunner = run_readonly_tool,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.root = root
        self.interval_s = interval_s
        self.threads = threads
        self.run_tool = run_tool
        self._state = DeviceState(platform=PLATFORM_CPU)
        self._source: Ina3221Source | NvmlPowerSource | TegrastatsSource | None = None
        self._nvml: NvmlSession | None = None
        self._samples: list[PowerSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self._t1: float | None = None
        self._inferences: int | None = None
        self._energy_counter_mj: list[int | None] = []
        self._result: DeviceState | None = None

    # ---- context manager -------------------------------------------------------------------------

    def __enter__(self) -> TelemetrySampler:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _missing(self, what: str, why: str) -> None:
        self._state.not_recorded.append(NotRecorded(what, why))

    def start(self) -> None:
        """Detect the platform, read the static state, and start sampling power."""
        platform, nvml = detect_platform(self.root)
        self._state = DeviceState(platform=platform)
        self._state.static["cpu"] = self._cpu_facts()
        if platform == PLATFORM_JETSON:
            self._state.static["jetson"] = self._jetson_facts()
            self._source = self._jetson_power_source()
        elif isinstance(nvml, NvmlSession):
            self._nvml = nvml
            static = nvml.static()
            self._state.static["gpu"] = {
                "name": static.name,
                "driver_version": static.driver_version,
                "sm_clock_mhz": static.sm_clock_mhz,
                "sm_clock_max_mhz": static.sm_clock_max_mhz,
                "memory_clock_mhz": static.memory_clock_mhz,
                "memory_clock_max_mhz": static.memory_clock_max_mhz,
            }
            self._source = NvmlPowerSource(nvml)
        else:
            if isinstance(nvml, NotRecorded):
                self._missing("GPU state (NVML)", nvml.why)
            self._missing(
                "power and energy",
                "no power sensor is read on a CPU-only machine (CPU package power via RAPL is not read)",
            )
        if self._source is None:
            return
        if isinstance(self._source, TegrastatsSource):
            self._source.start()
        else:
            self._take_sample()
            self._thread = threading.Thread(target=self._poll, name="vitrt-telemetry", daemon=True)
            self._thread.start()

    def _cpu_facts(self) -> dict[str, object]:
        facts: dict[str, object] = {"threads_used": self.threads}
        info = read_cpu_info(self.root)
        if isinstance(info, NotRecorded):
            self._state.not_recorded.append(info)
        else:
            facts.update(model_name=info.model_name, logical_cores=info.logical_cores, flags=list(info.flags))
            if info.model_name is None:
                self._missing("CPU model name", "/proc/cpuinfo names no model on this CPU")
        governor = read_scaling_governor(self.root)
        if isinstance(governor, NotRecorded):
            self._state.not_recorded.append(governor)
            facts["scaling_governor"] = None
        else:
            facts["scaling_governor"] = governor
        return facts

    def _jetson_facts(self) -> dict[str, object]:
        board = read_jetson_board(self.root)
        facts: dict[str, object] = {"model": board.model, "l4t_release": board.l4t_release}
        query = self.run_tool(NVPMODEL_QUERY)
        mode = parse_nvpmodel_query(query) if isinstance(query, str) else None
        if isinstance(query, NotRecorded):
            self._state.not_recorded.append(NotRecorded("power mode (nvpmodel -q)", query.why))
        elif mode is None:
            self._missing("power mode (nvpmodel -q)", "its output names no power mode")
        facts["power_mode"] = {"name": mode.name, "id": mode.mode_id} if mode else None
        show = self.run_tool(JETSON_CLOCKS_SHOW)
        if isinstance(show, NotRecorded):
            self._state.not_recorded.append(NotRecorded("clocks (jetson_clocks --show)", show.why))
            facts["clocks"] = None
        else:
            clocks = parse_jetson_clocks_show(show)
            facts["clocks"] = {
                "cpu_clusters": clocks.cpu_clusters(),
                "gpu": asdict(clocks.gpu) if clocks.gpu else None,
                "emc": asdict(clocks.emc) if clocks.emc else None,
                "fan": clocks.fan,
            }
        return facts

    def _jetson_power_source(self) -> Ina3221Source | TegrastatsSource | None:
        rails = read_ina3221(self.root)
        rule: TotalPowerRule | None = select_total_rule(frozenset(rails))
        if rule is not None:
            self._state.samples["total_rail"] = " + ".join(rule.rails)
            self._state.samples["total_rail_note"] = rule.note
            return Ina3221Source(self.root, rule)
        # Thor's total (VIN) comes from an INA238 that tegrastats reads; other boards may hide hwmon.
        if self.root == Path("/") and TegrastatsSource.available():
            return TegrastatsSource(self.interval_s)
        seen = ", ".join(sorted(rails)) or "none"
        self._missing(
            "power and energy",
            f"no total power rail: INA3221 rails under /sys/bus/i2c/drivers/ina3221 are [{seen}], none "
            "of the known totals (power_rails.TOTAL_POWER_RULES), and tegrastats is not available",
        )
        return None

    # ---- sampling --------------------------------------------------------------------------------

    def _take_sample(self) -> float:
        """Read the source once (hwmon / NVML); returns the reading's timestamp (s, monotonic)."""
        t = time.monotonic()
        source = self._source
        if source is None or isinstance(source, TegrastatsSource):
            return t
        try:
            power = source.read_mw()
        except Exception as error:  # a sensor that vanishes mid-run must not end the run
            log.debug("power read failed: %s", error)
            power = None
        if power is not None:
            with self._lock:
                self._samples.append(PowerSample(t, power))
        return t

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take_sample()

    def _read_energy_counter(self) -> None:
        if self._nvml is not None:
            self._energy_counter_mj.append(self._nvml.energy_mj())

    def begin_timed(self) -> float:
        """Mark the start of the timed window; returns its ``time.monotonic()`` timestamp (s)."""
        self._read_energy_counter()
        # The window starts at a reading of its own, so the samples cover it from its first instant
        # (that reading counts in the window, not in the idle power).
        self._t0 = self._take_sample()
        return self._t0

    def end_timed(self, inferences: int) -> float:
        """Mark the end of the timed window after ``inferences`` inferences; returns its timestamp (s)."""
        self._t1 = self._take_sample()
        self._inferences = inferences
        self._read_energy_counter()
        if isinstance(self._source, TegrastatsSource):
            self._source.wait_for_sample_after(self._t1, timeout_s=3 * self._source.interval_ms / 1e3 + 1.0)
        return self._t1

    def stop(self) -> None:
        """Stop sampling and compute the result (idempotent)."""
        if self._result is not None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.interval_s + 1.0)
        if isinstance(self._source, TegrastatsSource):
            self._source.stop()
            with self._lock:
                self._samples = [PowerSample(t, p) for t, p in self._source.snapshot()]
            rules = sorted(self._source.rules_seen)
            self._state.samples["total_rail"] = rules[0] if len(rules) == 1 else rules or None
            if not rules:
                seen = ", ".join(sorted(self._source.rails_seen)) or "none"
                self._missing("power and energy", f"tegrastats printed no known total rail (rails: {seen})")
        self._result = self._summarise()
        if self._nvml is not None:
            self._nvml.close()

    # ---- summary ---------------------------------------------------------------------------------

    def _summarise(self) -> DeviceState:
        state = self._state
        with self._lock:
            samples = list(self._samples)
        source = self._source
        state.samples.update(
            source=source.name if source is not None else None,
            interval_s=self.interval_s if source is not None else None,
            count=len(samples),
        )
        if self._t0 is None or self._t1 is None:
            if source is not None:
                self._missing("energy", "no timed window was marked (begin_timed / end_timed)")
            return state
        state.samples["window_s"] = self._t1 - self._t0
        if source is None:
            return state
        state.idle_power_w = idle_power_w(samples, self._t0)
        if state.idle_power_w is None:
            self._missing("idle power", "no power sample was taken before the timed window")
        window = integrate_energy(samples, self._t0, self._t1)
        in_window = [s.power_mw for s in samples if self._t0 <= s.t_s <= self._t1]
        state.samples.update(
            covered_s=window.covered_s,
            mean_power_w=window.mean_power_w,
            peak_power_w=max(in_window) / 1e3 if in_window else None,
        )
        energy_j: float | None = window.energy_j if window.covered_s > 0 else None
        state.samples["energy_source"] = "power samples (trapezoid)" if energy_j is not None else None
        counter = self._energy_counter_mj
        if len(counter) == 2 and counter[0] is not None and counter[1] is not None:
            energy_j = (counter[1] - counter[0]) / 1e3  # NVML's counter covers every microsecond
            state.samples["energy_source"] = "NVML total energy counter"
        elif window.covered_s < 0.99 * window.window_s:
            self._missing(
                "energy over the whole timed window",
                f"power samples span {window.covered_s:.3f} s of the {window.window_s:.3f} s window; "
                "energy_j covers only that part",
            )
        state.energy_j = energy_j
        if energy_j is not None and self._inferences:
            state.energy_per_inference_mj = energy_per_inference_mj(energy_j, self._inferences)
        if isinstance(source, NvmlPowerSource):
            mask = 0
            for reading in source.readings:
                mask |= reading.clock_event_mask or 0
            state.throttle_reasons = decode_clock_event_reasons(mask)
        else:
            self._missing(
                "throttle reasons",
                "only NVML reports clock-event reasons; Jetson throttling is not read by this sampler",
            )
        return state

    def result(self) -> DeviceState:
        """The recorded ``DeviceState`` (stops the sampler first if it is still running)."""
        self.stop()
        assert self._result is not None
        return self._result
