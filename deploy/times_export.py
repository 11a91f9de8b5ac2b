"""Per-query records in trtexec's ``--exportTimes`` JSON layout (a minimal writer and reader).

A list with one object per timed query, keys in trtexec's order: the time points ``startEnqMs endEnqMs
startH2dMs endH2dMs startComputeMs endComputeMs startD2hMs endD2hMs`` (ms from the first timed query's
start) then the durations ``h2dMs computeMs d2hMs latencyMs`` (latency = H2D + compute + D2H). Enqueue time
is ``endEnqMs - startEnqMs`` (trtexec writes no enqueue key).

Interim: ``vitrt.deploy.trtexec_format`` (``write_times`` / ``read_times`` over ``QueryTrace``) is the
full implementation of these formats; once it is on main this module should delegate to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_write_bytes

from .latency import LatencyStats, latency_stats

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
"""The keys of one record, in trtexec's order."""


def write_times(path: str | os.PathLike[str], records: Iterable[dict[str, float]]) -> Path:
    """Write ``records`` (dicts with ``TIMES_KEYS``) as trtexec's ``--exportTimes`` JSON, atomically."""
    rows = []
    for i, record in enumerate(records):
        missing = [k for k in TIMES_KEYS if k not in record]
        if missing:
            raise VitrtError(f"query {i} lacks {', '.join(missing)}: not an --exportTimes record")
        rows.append({k: float(record[k]) for k in TIMES_KEYS})
    return atomic_write_bytes(path, (json.dumps(rows, indent=1) + "\n").encode())


def read_times(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The records of an ``--exportTimes`` file (vitrt's or trtexec's); VitrtError for another file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise VitrtError(f"cannot read times file {path}: {err}") from err
    if not isinstance(data, list) or not all(isinstance(r, dict) and "latencyMs" in r for r in data):
        raise VitrtError(f"{path} is not an --exportTimes file (a list of per-query records)")
    return [{k: float(v) for k, v in r.items()} for r in data]


def times_stats(records: list[dict[str, float]]) -> dict[str, LatencyStats]:
    """trtexec's statistics of the records: "latency", "enqueue" (endEnq - startEnq) and "gpu_compute"."""
    return {
        "latency": latency_stats([r["latencyMs"] for r in records]),
        "enqueue": latency_stats([r["endEnqMs"] - r["startEnqMs"] for r in records]),
        "gpu_compute": latency_stats([r["computeMs"] for r in records]),
    }
