"""CPU facts for a profiling run: model, logical cores, the threads the run used, the cpufreq
governor and the instruction-set flags that decide which kernels ONNX Runtime / OpenVINO pick.

Sources: /proc/cpuinfo (``model name`` and ``flags`` on x86; ``Features`` and, where the kernel prints
one, ``model name`` / ``Hardware`` on ARM) and
/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor (absent in most containers and VMs: then the
governor is not recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .not_recorded import NotRecorded

# Flags that change which kernels a runtime picks: x86 vector / matrix extensions, ARM SIMD ones.
FLAGS_OF_INTEREST: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "neon",  # 32-bit ARM
    "asimd",  # AArch64 NEON
    "asimdhp",
    "asimddp",
    "bf16",
    "i8mm",
    "sve",
    "sve2",
)


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says: model name (None where it names none), logical CPUs, flags of interest."""

    model_name: str | None
    logical_cores: int
    flags: tuple[str, ...]


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse /proc/cpuinfo text (x86 or ARM)."""
    model: str | None = None
    fallback_model: str | None = None
    processors = 0
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        elif key == "model name" and model is None:
            model = value
        elif key in ("Hardware", "Model") and fallback_model is None:
            fallback_model = value
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return CpuInfo(
        model_name=model or fallback_model,
        logical_cores=processors,
        flags=tuple(f for f in FLAGS_OF_INTEREST if f in flags),
    )


def read_scaling_governor(root: Path = Path("/")) -> str | NotRecorded:
    """The cpufreq governor of every CPU under ``root``: one name, or ``mixed: a (cpu0-1), b (cpu2)``."""
    files = sorted(
        root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"),
        key=lambda p: int(p.parent.parent.name.removeprefix("cpu")),
    )
    by_governor: dict[str, list[str]] = {}
    for path in files:
        try:
            governor = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        by_governor.setdefault(governor, []).append(path.parent.parent.name)
    if not by_governor:
        return NotRecorded(
            "CPU scaling governor",
            "no /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor (cpufreq is not exposed here, "
            "as in most containers and VMs)",
        )
    if len(by_governor) == 1:
        return next(iter(by_governor))
    return "mixed: " + ", ".join(f"{g} ({', '.join(cpus)})" for g, cpus in by_governor.items())


def read_cpu_info(root: Path = Path("/")) -> CpuInfo | NotRecorded:
    """Parse ``root``/proc/cpuinfo, or say why it could not be read."""
    try:
        text = (root / "proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return NotRecorded("CPU model and flags", f"cannot read /proc/cpuinfo: {error}")
    return parse_cpuinfo(text)
