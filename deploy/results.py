"""``ProfileResult``: one runner's profile as data (no torch import), with its trtexec-style summary.

Statistics are ``LatencyStats`` in ms per query (one query = one batch); throughput in queries/s (images/s =
throughput x batch); memory in MiB. ``to_dict`` / ``from_dict`` round-trip through JSON (the per-query
records, ``times``, are left out: ``--export-times`` writes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .latency import LatencyStats
from .module_groups import part_totals
from .trtexec_format import QueryTrace

STAT_KEYS = ("latency", "enqueue", "gpu_compute", "h2d", "d2h", "e2e", "preprocess")
"""The LatencyStats entries of a ProfileResult (None where not measured)."""
PARTS_SHOWN = 5  # the summary line's largest parts (the Markdown report lists them all)


def stats_from_dict(data: dict[str, Any] | None) -> LatencyStats | None:
    """A LatencyStats from its ``to_dict``, None for None."""
    if data is None:
        return None
    return LatencyStats(
        iterations=int(data["iterations"]),
        min=float(data["min"]),
        max=float(data["max"]),
        mean=float(data["mean"]),
        median=float(data["median"]),
        p90=float(data["p90"]),
        p95=float(data["p95"]),
        p99=float(data["p99"]),
        std=float(data["std"]),
    )


@dataclass(frozen=True)
class ProfileResult:
    """One runner's profile.

    runner / device: names; batch: images per query; latency: trtexec's Latency (H2D + compute + D2H; the
    transfers only where included); enqueue: host time to issue a query; gpu_compute: CUDA events around
    the query (GPU runners; None on the CPU); h2d / d2h: the transfers when included; throughput_qps:
    queries / host wall time of the timed window (wall_s, s); e2e: one query from image file to logits
    (decode + resize + normalise of ``batch`` synthetic images, then the query; no overlap); preprocess: the
    decode + preprocessing part of it; settings: what was used (warm-up, duration, transfers, CUDA graph,
    spin-wait, runtime, threads, precision); defaults: which trtexec line's defaults filled unset options;
    memory: peak host RSS and device memory (MiB); layers: per-block time in ms (None: not recorded);
    telemetry: the device state during the run, or {"recorded": False, "reason": ...}; notes: anything
    the numbers need said. times: per-query ``QueryTrace``s (``--exportTimes`` records), not in to_dict;
    layer_profile: the per-layer records behind ``layers`` (``vitrt.deploy.layer_runs.LayerProfile``,
    ``--exportProfile``), not in to_dict either.
    """

    runner: str
    device: str
    batch: int
    latency: LatencyStats
    enqueue: LatencyStats
    gpu_compute: LatencyStats | None
    throughput_qps: float
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    wall_s: float = 0.0
    h2d: LatencyStats | None = None
    d2h: LatencyStats | None = None
    e2e: LatencyStats | None = None
    preprocess: LatencyStats | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, float] | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    times: list[QueryTrace] = field(default_factory=list, repr=False, compare=False)
    layer_profile: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data with stable keys (``vitrt.deploy.report`` documents them); ``times`` left out."""
        out: dict[str, Any] = {
            "runner": self.runner,
            "source": self.source,
            "device": self.device,
            "batch": self.batch,
            "throughput_qps": self.throughput_qps,
            "throughput_ips": self.throughput_qps * self.batch,
            "wall_s": self.wall_s,
        }
        for key in STAT_KEYS:
            value = getattr(self, key)
            out[key] = value.to_dict() if value is not None else None
        out |= {
            "settings": dict(self.settings),
            "defaults": dict(self.defaults),
            "memory": dict(self.memory),
            "layers": dict(self.layers) if self.layers is not None else None,
            "telemetry": dict(self.telemetry),
            "notes": list(self.notes),
        }
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileResult:
        """The inverse of ``to_dict`` (``throughput_ips`` is derived, so it is not read)."""
        stats = {key: stats_from_dict(data.get(key)) for key in STAT_KEYS}
        latency, enqueue = stats["latency"], stats["enqueue"]
        if latency is None or enqueue is None:
            raise ValueError("a profile needs latency and enqueue statistics")
        return cls(
            runner=str(data["runner"]),
            device=str(data["device"]),
            batch=int(data["batch"]),
            latency=latency,
            enqueue=enqueue,
            throughput_qps=float(data["throughput_qps"]),
            settings=dict(data.get("settings") or {}),
            source=str(data.get("source", "")),
            wall_s=float(data.get("wall_s", 0.0)),
            defaults=dict(data.get("defaults") or {}),
            memory=dict(data.get("memory") or {}),
            layers=dict(data["layers"]) if data.get("layers") is not None else None,
            telemetry=dict(data.get("telemetry") or {}),
            notes=list(data.get("notes") or []),
            gpu_compute=stats["gpu_compute"],
            h2d=stats["h2d"],
            d2h=stats["d2h"],
            e2e=stats["e2e"],
            preprocess=stats["preprocess"],
        )

    def format(self) -> str:
        """trtexec-style summary lines."""

        def line(name: str, s: LatencyStats) -> str:
            return (
                f"{name}: min = {s.min:.4f} ms, max = {s.max:.4f} ms, mean = {s.mean:.4f} ms, median = "
                f"{s.median:.4f} ms, percentile(90%) = {s.p90:.4f} ms, percentile(95%) = {s.p95:.4f} ms, "
                f"percentile(99%) = {s.p99:.4f} ms"
            )

        lines = [
            f"Throughput: {self.throughput_qps:.2f} qps ({self.throughput_qps * self.batch:.1f} images/s)",
            line("Latency", self.latency),
            line("Enqueue Time", self.enqueue),
        ]
        for name, stats in (
            ("H2D Latency", self.h2d),
            ("GPU Compute Time", self.gpu_compute),
            ("D2H Latency", self.d2h),
            ("End-to-End (image file to logits)", self.e2e),
            ("Preprocessing", self.preprocess),
        ):
            if stats is not None:
                lines.append(line(name, stats))
        lines.append(
            f"Queries: {self.latency.iterations}; " + ", ".join(f"{k} {v}" for k, v in self.settings.items())
        )
        if self.memory:
            shown = [
                f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in self.memory.items()
                if v is not None
            ]
            lines.append("Memory: " + ", ".join(shown))
        if self.layers:
            # the per-layer run's split, as shares (its own total is not the timed latency)
            total = sum(self.layers.values()) or 1.0
            parts = list(part_totals(self.layers).items())
            shares = [f"{label} {100 * ms / total:.1f} %" for label, ms in parts[:PARTS_SHOWN]]
            rest = f", {len(parts) - PARTS_SHOWN} more" if len(parts) > PARTS_SHOWN else ""
            lines.append("Time by part (per-layer run, summed over the blocks): " + ", ".join(shares) + rest)
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)
