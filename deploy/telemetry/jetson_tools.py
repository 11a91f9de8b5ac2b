"""Jetson board identity and the read-only tools: ``nvpmodel -q`` and ``jetson_clocks --show``.

The parsers are pure functions of the tools' text; ``run_readonly_tool`` is the only place that runs
a tool, and it accepts only the two read-only command lines in ``READONLY_TOOL_COMMANDS`` (``nvpmodel``
without ``-q`` changes the power mode, ``jetson_clocks`` without ``--show`` pins every clock to its
maximum: telemetry must never change what it measures).

Units: ``jetson_clocks --show`` prints CPU frequencies in kHz (cpufreq's unit) and GPU / EMC
frequencies in Hz; the dataclasses hold MHz throughout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .not_recorded import NotRecorded

NVPMODEL_QUERY = ("nvpmodel", "-q")
JETSON_CLOCKS_SHOW = ("jetson_clocks", "--show")
READONLY_TOOL_COMMANDS: frozenset[tuple[str, ...]] = frozenset({NVPMODEL_QUERY, JETSON_CLOCKS_SHOW})

# A tool runner: a read-only command line -> its standard output, or why there is none.
ToolRunner = Callable[[tuple[str, ...]], "str | NotRecorded"]


@dataclass(frozen=True)
class JetsonBoard:
    """What the board says it is: the device-tree model and the first line of /etc/nv_tegra_release."""

    model: str | None
    l4t_release: str | None


@dataclass(frozen=True)
class PowerMode:
    """The nvpmodel power mode: its name (``15W``, ``MAXN_SUPER``, ``120W``) and its id."""

    name: str
    mode_id: int | None


@dataclass(frozen=True)
class CpuClock:
    """One CPU core as ``jetson_clocks --show`` reports it; frequencies in MHz."""

    cpu: int
    online: bool
    governor: str | None
    min_mhz: float
    max_mhz: float
    current_mhz: float


@dataclass(frozen=True)
class EngineClock:
    """The GPU or the EMC (memory controller): min / max / current frequency in MHz."""

    min_mhz: float
    max_mhz: float
    current_mhz: float


@dataclass(frozen=True)
class JetsonClocks:
    """Parsed ``jetson_clocks --show``; ``fan`` is the fan line as printed (its form varies per release)."""

    soc_family: str | None
    machine: str | None
    cpus: tuple[CpuClock, ...]
    gpu: EngineClock | None
    emc: EngineClock | None
    fan: str | None
    power_mode: str | None

    def cpu_clusters(self) -> list[dict[str, object]]:
        """Cores grouped by identical (min, max) MHz limits: on Jetson these are the CPU clusters."""
        groups: dict[tuple[float, float], list[CpuClock]] = {}
        for cpu in self.cpus:
            groups.setdefault((cpu.min_mhz, cpu.max_mhz), []).append(cpu)
        return [
            {
                "cpus": [c.cpu for c in members],
                "online": [c.cpu for c in members if c.online],
                "min_mhz": lo,
                "max_mhz": hi,
                "current_mhz": [c.current_mhz for c in members],
            }
            for (lo, hi), members in groups.items()
        ]


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_jetson_board(root: Path = Path("/")) -> JetsonBoard:
    """Read the device-tree model and the L4T release line under ``root``."""
    model = _read_text(root / "sys/firmware/devicetree/base/model")
    release = _read_text(root / "etc/nv_tegra_release")
    # The device-tree string ends in a NUL byte.
    model = model.replace("\x00", "").strip() if model is not None else None
    release_line = release.splitlines()[0].strip() if release else None
    return JetsonBoard(model=model or None, l4t_release=release_line or None)


def is_jetson(root: Path = Path("/")) -> bool:
    """True where /etc/nv_tegra_release exists or the device-tree model names a Jetson or Thor."""
    if (root / "etc/nv_tegra_release").is_file():
        return True
    model = read_jetson_board(root).model or ""
    return "NVIDIA Jetson" in model or "Thor" in model


_POWER_MODE = re.compile(r"^NV Power Mode:\s*(\S.*?)\s*$", re.MULTILINE)


def parse_nvpmodel_query(text: str) -> PowerMode | None:
    """Parse ``nvpmodel -q``: ``NV Power Mode: <NAME>`` then the mode id on a line of its own.

    Other lines (``NV Fan Mode:...`` on older releases, ``NVPM WARN`` messages) are skipped. None when
    the text names no power mode.
    """
    match = _POWER_MODE.search(text)
    if match is None:
        return None
    mode_id: int | None = None
    for line in text[match.end() :].splitlines():
        if line.strip().isdigit():
            mode_id = int(line.strip())
            break
    return PowerMode(name=match.group(1), mode_id=mode_id)


_KEY_VALUE = re.compile(r"(\w+)=(\S*)")
_CPU_LINE = re.compile(r"^cpu(\d+):\s*(.*)$")


def _cpu_list(spec: str) -> set[int]:
    """``0-3,6`` -> {0, 1, 2, 3, 6}."""
    cpus: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if "-" in part:
            lo, hi = part.split("-", 1)
            if lo.isdigit() and hi.isdigit():
                cpus.update(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            cpus.add(int(part))
    return cpus


def _engine(fields: dict[str, str]) -> EngineClock | None:
    try:
        return EngineClock(
            min_mhz=int(fields["MinFreq"]) / 1e6,
            max_mhz=int(fields["MaxFreq"]) / 1e6,
            current_mhz=int(fields["CurrentFreq"]) / 1e6,
        )
    except (KeyError, ValueError):
        return None


def parse_jetson_clocks_show(text: str) -> JetsonClocks:
    """Parse ``jetson_clocks --show`` (JetPack 5 / 6 layouts: with or without ``Online=`` per core)."""
    soc_family = machine = fan = power_mode = None
    online_cpus: set[int] | None = None
    cpus: list[CpuClock] = []
    gpu = emc = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("SOC family:"):
            head, _, rest = line.partition("Machine:")
            soc_family = head.removeprefix("SOC family:").strip() or None
            machine = rest.strip() or None
        elif line.startswith("Online CPUs:"):
            # "Online CPUs: 0-5" or, on newer releases, "Online CPUs: 0-11, Offline CPUs: "
            spec = line.removeprefix("Online CPUs:").split("Offline CPUs:")[0]
            online_cpus = _cpu_list(spec.strip().rstrip(","))
        elif match := _CPU_LINE.match(line):
            fields = dict(_KEY_VALUE.findall(match.group(2)))
            cpu = int(match.group(1))
            if "Online" in fields:
                online = fields["Online"] == "1"
            else:
                online = online_cpus is None or cpu in online_cpus
            try:
                cpus.append(
                    CpuClock(
                        cpu=cpu,
                        online=online,
                        governor=fields.get("Governor"),
                        min_mhz=int(fields["MinFreq"]) / 1e3,
                        max_mhz=int(fields["MaxFreq"]) / 1e3,
                        current_mhz=int(fields["CurrentFreq"]) / 1e3,
                    )
                )
            except (KeyError, ValueError):
                continue
        elif line.startswith("GPU ") and "MinFreq=" in line:
            gpu = _engine(dict(_KEY_VALUE.findall(line)))
        elif line.startswith("EMC ") and "MinFreq=" in line:
            emc = _engine(dict(_KEY_VALUE.findall(line)))
        elif line.lower().startswith("fan"):
            fan = line
        elif line.startswith("NV Power Mode:"):
            power_mode = line.removeprefix("NV Power Mode:").strip() or None
    return JetsonClocks(
        soc_family=soc_family,
        machine=machine,
        cpus=tuple(sorted(cpus, key=lambda c: c.cpu)),
        gpu=gpu,
        emc=emc,
        fan=fan,
        power_mode=power_mode,
    )


def run_readonly_tool(argv: tuple[str, ...], timeout_s: float = 10.0) -> str | NotRecorded:
    """Run one of ``READONLY_TOOL_COMMANDS`` and return its standard output, or why it gave none.

    Never raises for a missing tool, a refusal (``jetson_clocks --show`` needs root on some
    releases) or a time-out; refuses (ValueError) any command line outside the read-only set.
    """
    if argv not in READONLY_TOOL_COMMANDS:
        raise ValueError(f"telemetry runs only read-only commands, not {' '.join(argv)!r}")
    what = " ".join(argv)
    if shutil.which(argv[0]) is None:
        return NotRecorded(what, f"{argv[0]} is not on PATH")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return NotRecorded(what, f"{argv[0]} failed: {error}")
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        return NotRecorded(what, f"exit status {done.returncode}: {message[0] if message else 'no message'}")
    return done.stdout
