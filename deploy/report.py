"""Profile reports: JSON with stable keys, Markdown (tables + trtexec-style summary lines).

JSON schema (``version`` 1; every time in ms, memory in MiB, throughput per second)::

    {"version": 1,
     "machine": {"platform": "Linux-6.8-x86_64", "python": "3.11.9", "vitrt": "0.1.0",
                 "cpu": "Intel(R) Xeon(R) ...", "cpu_count": 2, "gpu": "NVIDIA H100 80GB HBM3" | null},
     "artifacts": [                       # one per profiled artifact / file / model, in the order given
        {"runner": "deit_t.cpu (onnxruntime)", "source": "deit_t.cpu", "device": "cpu (2 cores)",
         "batch": 1, "throughput_qps": 812.3, "throughput_ips": 812.3, "wall_s": 3.001,
         "latency":     {"iterations", "min", "max", "mean", "median", "p90", "p95", "p99", "std"},
         "enqueue":     {... same keys ...},
         "gpu_compute": {...} | null,     # CUDA events, GPU runners only
         "h2d": {...} | null, "d2h": {...} | null,    # only with include_data_transfers
         "e2e": {...} | null,             # image file -> logits (decode + preprocess + query)
         "preprocess": {...} | null,      # the decode + preprocess part of e2e
         "settings": {"warmup_s", "duration_s", "min_iterations", "include_data_transfers", "cuda_graph",
                      "spin_wait", "sync", "runtime"?, "threads"?, "precision"?, "inference_precision"?},
         "defaults": {"trtexec": "11" | "10", "values": {...}, "applied": ["spin_wait", ...]},
                                          # applied: the defaults that took effect (none on a host runner)
         "memory": {"host_peak_rss_mib", "host_start_rss_mib", "host_process_maxrss_mib", "host_method",
                    "device_peak_mib", "device_free_drop_mib"?, "device_note"},
                                          # peak: RSS sampled in the timed window; maxrss: the kernel's
                                          # lifetime high-water mark, approximate (can read a little lower)
         "layers": {"blocks.0": 0.12, ...} | null,        # per-block ms, when a per-layer profile ran
         "telemetry": {"recorded": true, ...DeviceState...} | {"recorded": false, "reason": "..."},
         "notes": ["..."]}],
     "compare": {"baseline": "<runner of artifacts[0]>",
                 "median_ratio": {"<runner>": 1.0, ...}, "p99_ratio": {...}} | null,
     "notes": ["..."]}

``ProfileReport.from_dict(json.loads(text))`` reads it back (``to_dict`` of the result equals the input).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_write_bytes

from .latency import LatencyStats
from .module_groups import part_totals
from .results import ProfileResult

REPORT_VERSION = 1


def machine_facts() -> dict[str, Any]:
    """The machine a profile ran on: platform, Python, vitrt version, CPU name and cores, GPU (or None)."""
    import sys

    import vitrt
    from vitrt.compiler.environment import cpu_facts

    gpu = None
    if "torch" in sys.modules:  # never import torch (or start CUDA) just to name the machine
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vitrt": vitrt.__version__,
        "cpu": cpu_facts()[0],
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
    }


def comparison(results: list[ProfileResult]) -> dict[str, Any] | None:
    """Median and p99 latency of each result as a ratio to the first's (None for fewer than two)."""
    if len(results) < 2:
        return None
    base = results[0].latency
    return {
        "baseline": results[0].runner,
        "median_ratio": {r.runner: r.latency.median / base.median for r in results},
        "p99_ratio": {r.runner: r.latency.p99 / base.p99 for r in results},
    }


@dataclass(frozen=True)
class ProfileReport:
    """A profile of one or more artifacts on one machine (module docstring for the JSON)."""

    artifacts: list[ProfileResult]
    machine: dict[str, Any] = field(default_factory=dict)
    compare: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    version: int = REPORT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "machine": dict(self.machine),
            "artifacts": [r.to_dict() for r in self.artifacts],
            "compare": self.compare,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileReport:
        if data.get("version") != REPORT_VERSION:
            raise VitrtError(f"profile report version {data.get('version')!r} is not {REPORT_VERSION}")
        return cls(
            artifacts=[ProfileResult.from_dict(a) for a in data["artifacts"]],
            machine=dict(data.get("machine") or {}),
            compare=data.get("compare"),
            notes=list(data.get("notes") or []),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        return markdown(self)


def read_report(path: str | os.PathLike[str]) -> ProfileReport:
    """A report written by ``write_json``; VitrtError for another file."""
    try:
        return ProfileReport.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VitrtError(f"cannot read profile report {path}: {err}") from err


def write_json(path: str | os.PathLike[str], report: ProfileReport) -> Path:
    return atomic_write_bytes(path, (report.to_json() + "\n").encode())


def write_markdown(path: str | os.PathLike[str], report: ProfileReport) -> Path:
    return atomic_write_bytes(path, (report.to_markdown() + "\n").encode())


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _stats_row(name: str, s: LatencyStats | None) -> str | None:
    if s is None:
        return None
    cells = [s.min, s.median, s.mean, s.p90, s.p95, s.p99, s.max, s.std]
    return f"| {name} | " + " | ".join(_fmt(v) for v in cells) + f" | {s.iterations} |"


def markdown(report: ProfileReport) -> str:
    """The report as Markdown: a summary table (one row per artifact), then per artifact its statistics
    table, settings, memory and the trtexec-style summary lines."""
    m = report.machine
    lines = ["# vitrt profile", ""]
    if m:
        gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
        lines += [
            f"Machine: {m.get('cpu')} ({m.get('cpu_count')} cores){gpu}; {m.get('platform')}; "
            f"vitrt {m.get('vitrt')}, Python {m.get('python')}",
            "",
        ]
    ratios = (report.compare or {}).get("median_ratio", {})
    lines += [
        "| artifact | batch | median ms | p90 ms | p99 ms | throughput qps | e2e median ms | peak RSS MiB "
        "| x first |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.artifacts:
        e2e = r.e2e.median if r.e2e is not None else None
        ratio = ratios.get(r.runner)
        lines.append(
            f"| {r.runner} | {r.batch} | {_fmt(r.latency.median)} | {_fmt(r.latency.p90)} | "
            f"{_fmt(r.latency.p99)} | {r.throughput_qps:.1f} | {_fmt(e2e)} | "
            f"{_fmt(r.memory.get('host_peak_rss_mib'), 0)} | {_fmt(ratio, 2)} |"
        )
    for r in report.artifacts:
        lines += ["", f"## {r.runner}", "", f"Device: {r.device}; source: {r.source}; batch {r.batch}", ""]
        lines += [
            "| ms | min | median | mean | p90 | p95 | p99 | max | std | queries |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, stats in (
            ("Latency", r.latency),
            ("Enqueue", r.enqueue),
            ("H2D", r.h2d),
            ("GPU compute", r.gpu_compute),
            ("D2H", r.d2h),
            ("End-to-end", r.e2e),
            ("Preprocessing", r.preprocess),
        ):
            row = _stats_row(name, stats)
            if row:
                lines.append(row)
        lines += ["", "Settings: " + ", ".join(f"{k} = {v}" for k, v in r.settings.items())]
        applied = r.defaults.get("applied") or []
        if r.defaults:
            lines.append(
                f"Defaults: trtexec {r.defaults.get('trtexec')} line"
                + (f" (applied to {', '.join(applied)})" if applied else " (none applied)")
            )
        if r.layers:
            total = sum(r.layers.values()) or 1.0
            lines += ["", "| part, summed over the blocks | ms | share |", "| --- | --- | --- |"]
            lines += [
                f"| {k} | {_fmt(v, 4)} | {100 * v / total:.1f} % |" for k, v in part_totals(r.layers).items()
            ]
            lines += ["", "| block | ms |", "| --- | --- |"]
            lines += [f"| {k} | {_fmt(v, 4)} |" for k, v in r.layers.items()]
        lines += ["", "```", r.format(), "```"]
    if report.notes:
        lines += ["", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines)
