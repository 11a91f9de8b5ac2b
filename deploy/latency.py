"""Latency statistics with trtexec's summary fields and rules (min, max, mean, median, p90, p95, p99, std),
in ms.

Percentiles follow trtexec (``nearest_rank``): of N sorted samples, p drops the top
``int((1 - p / 100) N)`` and takes the largest left, so every reported value is a measured sample
(no interpolation); the median is the mean of the two middle samples for even N, as in trtexec.
"""

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
    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    std: float

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
    return latency_stats(samples)


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
    return {name: latency_stats(ms) for name, ms in samples.items()}


def nearest_rank(sorted_samples: np.ndarray, percent: float) -> float:
    """trtexec's percentile of ascending ``sorted_samples``: drop the top ``int((1 - p/100) N)``, take
    the largest that is left. In float32 arithmetic, as trtexec computes it: in float64, p = 90 of 100
    samples would drop 9 (0.1 is 0.0999... there), in float32 it drops 10."""
    n = len(sorted_samples)
    one, f32 = np.float32(1), np.float32
    exclude = int((one - f32(percent) / f32(100)) * f32(n))
    return float(sorted_samples[max(n - 1 - exclude, 0)])


def latency_stats(samples: list[float] | np.ndarray) -> LatencyStats:
    """The statistics of ``samples`` (ms), trtexec's way (module docstring). ValueError when empty."""
    ms = np.sort(np.asarray(samples, dtype=np.float64))
    if ms.size == 0:
        raise ValueError("no latency samples")
    return LatencyStats(
        iterations=int(ms.size),
        min=float(ms[0]),
        max=float(ms[-1]),
        mean=float(ms.mean()),
        median=float(np.median(ms)),
        p90=nearest_rank(ms, 90),
        p95=nearest_rank(ms, 95),
        p99=nearest_rank(ms, 99),
        std=float(ms.std()),
    )
