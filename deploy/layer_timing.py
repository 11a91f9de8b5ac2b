"""Per-layer timing records with trtexec's definitions (``--dumpProfile`` / ``--exportProfile``).

A profiler reports one time per layer per inference (TensorRT's ``IProfiler.report_layer_time``, ONNX
Runtime's ``<node>_kernel_time`` events). trtexec keeps every sample of a layer and derives, per layer
(``samples/common/sampleReporting.h`` in NVIDIA/TensorRT, ``Profiler::getTotalTime / getAvgTime /
getMedianTime``):

- total = sum of its samples, average = total / number of its samples, median = the middle sample
  (mean of the two middle ones for an even count);
- percentage = 100 x its total / the sum of all layers' totals.

All times in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LayerTiming:
    """One layer's time over ``count`` samples (one per inference), in ms; ``percentage`` of all
    layers' total time (0-100)."""

    name: str
    count: int
    total_ms: float
    average_ms: float
    median_ms: float
    percentage: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def layer_timings(samples: Mapping[str, Sequence[float]]) -> list[LayerTiming]:
    """``{layer name: [ms per inference, ...]}`` -> one record per layer, in the mapping's order
    (execution order, as the profilers report it). A layer with no samples gets zeros; the percentages
    are 0 when every time is 0 (TensorRT reports 0 ms for no-op layers)."""
    totals = {name: float(np.sum(np.asarray(ms, dtype=np.float64))) for name, ms in samples.items()}
    grand = sum(totals.values())
    records = []
    for name, ms in samples.items():
        values = np.asarray(ms, dtype=np.float64)
        count = int(values.size)
        total = totals[name]
        records.append(
            LayerTiming(
                name=name,
                count=count,
                total_ms=total,
                average_ms=total / count if count else 0.0,
                median_ms=float(np.median(values)) if count else 0.0,
                percentage=100.0 * total / grand if grand > 0 else 0.0,
            )
        )
    return records


def total_ms(timings: Iterable[LayerTiming]) -> float:
    """Sum of the layers' totals (ms): the profiled time of all inferences together."""
    return sum(t.total_ms for t in timings)
