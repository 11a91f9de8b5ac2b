"""trtexec's JSON exports, written and read so that tools made for trtexec read vitrt's timings.

Formats as trtexec writes them (NVIDIA/TensorRT ``samples/common/sampleReporting.cpp``,
``exportJSONTrace`` and ``Profiler::exportJSONProfile``; the per-layer statistics in
``sampleReporting.h``):

- ``--exportTimes``: a list with one object per timed query (warm-up queries left out since TensorRT
  8.6), keys ``startEnqMs endEnqMs startH2dMs endH2dMs startComputeMs endComputeMs startD2hMs endD2hMs``
  (time points in ms from one origin) then ``h2dMs computeMs d2hMs latencyMs`` (durations). Latency is
  H2D + compute + D2H, not end minus start. Spelling is trtexec's: ``H2d`` / ``D2h``, and there is no
  ``enqueueMs`` key (enqueue time is ``endEnqMs - startEnqMs``). TensorRT 8.x also wrote ``endToEndMs``
  (``endD2hMs - startH2dMs``); the reader accepts it, the writer leaves it out as current trtexec does.
- ``--exportProfile``: ``[{"count": N}, {"name", "timeMs", "averageMs", "medianMs", "percentage"}, ...]``
  with N the number of profiled inferences, ``timeMs`` a layer's total over them, ``averageMs`` total
  / its samples, ``percentage`` 0-100 of all layers' time (see ``vitrt.deploy.layer_timing``). Files
  from TensorRT before 8.6 have no ``medianMs``: it reads back as NaN.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_write_bytes

from .latency import LatencyStats, latency_stats
from .layer_timing import LayerTiming

TIME_POINT_KEYS = (
    "startEnqMs",
    "endEnqMs",
    "startH2dMs",
    "endH2dMs",
    "startComputeMs",
    "endComputeMs",
    "startD2hMs",
    "endD2hMs",
)
DURATION_KEYS = ("h2dMs", "computeMs", "d2hMs", "latencyMs")
TIMES_KEYS = TIME_POINT_KEYS + DURATION_KEYS
"""The keys of one ``--exportTimes`` record, in trtexec's order."""
PROFILE_KEYS = ("name", "timeMs", "averageMs", "medianMs", "percentage")
"""The keys of one layer of ``--exportProfile``, in trtexec's order."""


@dataclass(frozen=True)
class QueryTrace:
    """Time points of one query in ms from a common origin (trtexec: the start of the run). Without
    data transfers, put the H2D points at the compute start and the D2H points at the compute end, as
    trtexec does (so h2d = d2h = 0)."""

    start_enq_ms: float
    end_enq_ms: float
    start_h2d_ms: float
    end_h2d_ms: float
    start_compute_ms: float
    end_compute_ms: float
    start_d2h_ms: float
    end_d2h_ms: float

    @property
    def enqueue_ms(self) -> float:
        return self.end_enq_ms - self.start_enq_ms

    @property
    def h2d_ms(self) -> float:
        return self.end_h2d_ms - self.start_h2d_ms

    @property
    def compute_ms(self) -> float:
        return self.end_compute_ms - self.start_compute_ms

    @property
    def d2h_ms(self) -> float:
        return self.end_d2h_ms - self.start_d2h_ms

    @property
    def latency_ms(self) -> float:
        """trtexec's Latency: H2D + GPU compute + D2H (the idle gaps between them left out)."""
        return self.h2d_ms + self.compute_ms + self.d2h_ms

    @property
    def end_to_end_ms(self) -> float:
        """trtexec's End-to-End Host Latency: from the H2D start to the D2H end (gaps included)."""
        return self.end_d2h_ms - self.start_h2d_ms

    def to_json(self) -> dict[str, float]:
        """The ``--exportTimes`` record: ``TIMES_KEYS`` in order."""
        points = (
            self.start_enq_ms,
            self.end_enq_ms,
            self.start_h2d_ms,
            self.end_h2d_ms,
            self.start_compute_ms,
            self.end_compute_ms,
            self.start_d2h_ms,
            self.end_d2h_ms,
        )
        durations = (self.h2d_ms, self.compute_ms, self.d2h_ms, self.latency_ms)
        return dict(zip(TIMES_KEYS, points + durations, strict=True))


def _dump(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _load(path: str | os.PathLike[str], what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise VitrtError(f"cannot read {what} {path}: {err}") from err


def write_times(path: str | os.PathLike[str], traces: Iterable[QueryTrace]) -> Path:
    """Write ``traces`` as trtexec's ``--exportTimes`` JSON (atomically); returns the path."""
    return _dump(path, [t.to_json() for t in traces])


def read_times(path: str | os.PathLike[str]) -> list[QueryTrace]:
    """Read a ``--exportTimes`` file (trtexec's or vitrt's). The durations are recomputed from the
    time points; VitrtError when a record lacks a time point."""
    data = _load(path, "trtexec times")
    if not isinstance(data, list):
        raise VitrtError(f"{path}: an --exportTimes file holds a JSON list, got {type(data).__name__}")
    traces = []
    for i, record in enumerate(data):
        missing = [k for k in TIME_POINT_KEYS if k not in record]
        if missing:
            raise VitrtError(f"{path}: query {i} lacks {', '.join(missing)}")
        traces.append(QueryTrace(*(float(record[k]) for k in TIME_POINT_KEYS)))
    return traces


def times_stats(traces: Sequence[QueryTrace]) -> dict[str, LatencyStats]:
    """trtexec's summary of ``traces``: ``latency``, ``end_to_end``, ``enqueue``, ``h2d``, ``compute``
    and ``d2h`` statistics (ms, trtexec's percentile rule)."""
    fields = ("latency", "end_to_end", "enqueue", "h2d", "compute", "d2h")
    return {f: latency_stats([getattr(t, f"{f}_ms") for t in traces]) for f in fields}


def write_profile(path: str | os.PathLike[str], timings: Iterable[LayerTiming], count: int) -> Path:
    """Write per-layer ``timings`` over ``count`` inferences as trtexec's ``--exportProfile`` JSON."""
    records: list[dict[str, Any]] = [{"count": count}]
    for t in timings:
        values = (t.name, t.total_ms, t.average_ms, t.median_ms, t.percentage)
        records.append(dict(zip(PROFILE_KEYS, values, strict=True)))
    return _dump(path, records)


def read_profile(path: str | os.PathLike[str]) -> tuple[int, list[LayerTiming]]:
    """Read a ``--exportProfile`` file: (the inference count N, one record per layer).

    trtexec does not store a layer's own sample count; it is taken as N (every layer runs once per
    inference). ``medianMs`` is NaN where the file predates it (TensorRT < 8.6).
    """
    data = _load(path, "trtexec profile")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "count" not in data[0]:
        raise VitrtError(f'{path}: an --exportProfile file is a JSON list starting with {{"count": N}}')
    count = int(data[0]["count"])
    timings = []
    for i, record in enumerate(data[1:], start=1):
        missing = [k for k in ("name", "timeMs", "averageMs", "percentage") if k not in record]
        if missing:
            raise VitrtError(f"{path}: entry {i} lacks {', '.join(missing)}")
        timings.append(
            LayerTiming(
                name=str(record["name"]),
                count=count,
                total_ms=float(record["timeMs"]),
                average_ms=float(record["averageMs"]),
                median_ms=float(record.get("medianMs", math.nan)),
                percentage=float(record["percentage"]),
            )
        )
    return count, timings
