"""Latency statistics with trtexec's summary fields (min, mean, median, p90, p95, p99), in ms."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock latency of one call, in milliseconds, over ``iterations`` timed calls."""

    iterations: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def format(self) -> str:
        return (
            f"median {self.median:.2f} ms (min {self.min:.2f}, mean {self.mean:.2f}, p90 {self.p90:.2f}, "
            f"p99 {self.p99:.2f}; {self.iterations} runs)"
        )


def measure_latency(
    call: Callable[[], object], *, warmup: int = 3, iterations: int = 20, min_seconds: float = 0.0
) -> LatencyStats:
    """Time ``call()`` after ``warmup`` untimed calls; runs at least ``iterations`` calls and at
    least ``min_seconds`` in total (for short calls, so the percentiles have enough samples)."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < iterations or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
    return _stats(samples)


def measure_interleaved(
    calls: dict[str, Callable[[], object]], *, warmup: int = 3, iterations: int = 20, block: int = 5
) -> dict[str, LatencyStats]:
    """Time several calls in interleaved blocks of ``block`` consecutive calls each, so that load
    from other processes affects them alike and their ratios stay fair; ``{name: LatencyStats}`` in
    ms over ``iterations`` calls each (rounded up to whole blocks).

    Blocks rather than single calls: thread pools (ONNX Runtime's, OpenMP's) spin-wait after a
    call and would slow whichever runtime runs right after; within a block only the first call pays.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(-(-iterations // block)):
        for name, call in calls.items():
            for _ in range(block):
                t0 = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: _stats(ms) for name, ms in samples.items()}


def _stats(samples: list[float]) -> LatencyStats:
    ms = np.asarray(samples)
    return LatencyStats(
        iterations=len(samples),
        min=float(ms.min()),
        mean=float(ms.mean()),
        median=float(np.median(ms)),
        p90=float(np.percentile(ms, 90)),
        p95=float(np.percentile(ms, 95)),
        p99=float(np.percentile(ms, 99)),
    )
