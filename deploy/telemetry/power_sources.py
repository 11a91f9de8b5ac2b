"""Where the sampler's total-power readings come from, one class per source.

Each source gives ``(t_s, total power in mW)`` samples on ``time.monotonic()``: ``Ina3221Source``
reads hwmon sysfs when asked (any interval), ``TegrastatsSource`` runs ``tegrastats --interval`` and
parses each line as it arrives (for boards whose total rail hwmon does not show, e.g. Thor's VIN),
``NvmlPowerSource`` reads NVML's power usage.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path

from .ina3221 import read_ina3221
from .nvml import NvmlReading, NvmlSession
from .power_rails import TotalPowerRule, select_total_rule, total_power_mw
from .tegrastats import parse_tegrastats_line

log = logging.getLogger(__name__)


class Ina3221Source:
    """Total power from the INA3221 rails under ``root``, summed by ``rule``; read on demand."""

    name = "ina3221"

    def __init__(self, root: Path, rule: TotalPowerRule) -> None:
        self.root = root
        self.rule = rule

    def read_mw(self) -> float | None:
        rails = read_ina3221(self.root)
        return total_power_mw({name: rail.power_mw for name, rail in rails.items()}, self.rule)


class NvmlPowerSource:
    """NVML power usage (mW) and, per reading, the clock-event reason mask."""

    name = "nvml"

    def __init__(self, session: NvmlSession) -> None:
        self.session = session
        self.readings: list[NvmlReading] = []

    def read_mw(self) -> float | None:
        reading = self.session.read()
        self.readings.append(reading)
        return reading.power_mw


class TegrastatsSource:
    """A running ``tegrastats --interval <ms>``; every line becomes a sample as it is printed."""

    name = "tegrastats"

    def __init__(self, interval_s: float) -> None:
        self.interval_ms = max(1, round(interval_s * 1e3))
        self.samples: list[tuple[float, float]] = []
        self.rules_seen: set[str] = set()
        self.rails_seen: set[str] = set()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._first_line = threading.Event()

    @staticmethod
    def available() -> bool:
        return shutil.which("tegrastats") is not None

    def start(self, first_line_timeout_s: float = 3.0) -> None:
        self._process = subprocess.Popen(
            ["tegrastats", "--interval", str(self.interval_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read_lines, name="vitrt-tegrastats", daemon=True)
        self._reader.start()
        # Wait for a first reading so that the idle part before a timed window is never empty.
        self._first_line.wait(first_line_timeout_s)

    def _read_lines(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            t = time.monotonic()
            parsed = parse_tegrastats_line(line)
            rails = parsed.rail_instant_mw()
            rule = select_total_rule(frozenset(rails))
            with self._lock:
                self.rails_seen.update(rails)
                if rule is not None:
                    self.rules_seen.add(" + ".join(rule.rails))
                    total = total_power_mw(rails, rule)
                    if total is not None:
                        self.samples.append((t, total))
            self._first_line.set()

    def wait_for_sample_after(self, t_s: float, timeout_s: float) -> None:
        """Block until a sample later than ``t_s`` arrived (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.samples and self.samples[-1][0] > t_s:
                    return
            time.sleep(min(0.01, self.interval_ms / 1e3))

    def snapshot(self) -> list[tuple[float, float]]:
        with self._lock:
            return list(self.samples)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        log.debug("tegrastats stopped after %d samples", len(self.samples))
