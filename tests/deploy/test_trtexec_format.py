"""trtexec's --exportTimes / --exportProfile JSON: exact keys, round trips, trtexec-written files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vitrt.deploy.latency import latency_stats
from vitrt.deploy.layer_timing import LayerTiming, layer_timings
from vitrt.deploy.trtexec_format import (
    PROFILE_KEYS,
    TIMES_KEYS,
    QueryTrace,
    read_profile,
    read_times,
    times_stats,
    write_profile,
    write_times,
)
from vitrt.errors import VitrtError

FIXTURES = Path(__file__).parent / "fixtures" / "layers"

# Five queries, numbers exact in binary: (start enq, end enq, h2d start/end, compute start/end, d2h start/end)
_QUERIES = [
    (0.0, 0.25, 0.0, 0.5, 0.5, 2.5, 2.5, 2.75),
    (3.0, 3.125, 3.0, 3.25, 3.25, 6.25, 6.5, 7.0),
    (7.0, 7.5, 7.0, 7.5, 7.5, 8.5, 8.5, 8.75),
    (9.0, 9.25, 9.0, 9.125, 9.25, 13.25, 13.25, 13.5),
    (14.0, 14.0625, 14.0, 14.25, 14.25, 15.75, 15.75, 16.0),
]
# latency = h2d + compute + d2h, by hand: 0.5+2+0.25, 0.25+3+0.5, 0.5+1+0.25, 0.125+4+0.25, 0.25+1.5+0.25
_LATENCY = [2.75, 3.75, 1.75, 4.375, 2.0]
_END_TO_END = [2.75, 4.0, 1.75, 4.5, 2.0]  # d2h end - h2d start


def test_times_round_trip_keeps_keys_durations_and_percentiles(tmp_path: Path) -> None:
    traces = [QueryTrace(*q) for q in _QUERIES]
    path = write_times(tmp_path / "times.json", traces)
    raw = json.loads(path.read_text())
    assert [list(r) for r in raw] == [list(TIMES_KEYS)] * 5
    assert TIMES_KEYS == (
        "startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs",
        "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs",
    )  # fmt: skip
    assert [r["latencyMs"] for r in raw] == _LATENCY
    assert [r["computeMs"] for r in raw] == [2.0, 3.0, 1.0, 4.0, 1.5]

    back = read_times(path)
    assert back == traces
    stats = times_stats(back)
    assert stats["latency"] == latency_stats(_LATENCY)
    assert stats["end_to_end"] == latency_stats(_END_TO_END)
    assert stats["enqueue"] == latency_stats([0.25, 0.125, 0.5, 0.25, 0.0625])
    # by hand, sorted latency [1.75, 2.0, 2.75, 3.75, 4.375]: median 2.75, p90 drops int(0.1 * 5) = 0
    assert stats["latency"].median == 2.75 and stats["latency"].p90 == 4.375
    assert stats["latency"].mean == pytest.approx(14.625 / 5)


def test_reads_a_trtexec_written_times_file() -> None:
    traces = read_times(FIXTURES / "trtexec_times.json")
    assert len(traces) == 2
    assert [t.latency_ms for t in traces] == [1.75, 2.5]
    assert [t.end_to_end_ms for t in traces] == [1.875, 2.5]  # trtexec 8's endToEndMs
    assert [t.enqueue_ms for t in traces] == [0.25, 0.125]
    assert traces[1].compute_ms == 2.0


def test_profile_round_trip_and_trtexec_statistics(tmp_path: Path) -> None:
    # two layers over 3 inferences; by hand: a total 7, average 7/3, median 2; b total 9, average 3
    timings = layer_timings({"a": [1.0, 2.0, 4.0], "b": [3.0, 2.0, 4.0]})
    assert timings[0] == LayerTiming("a", 3, 7.0, 7.0 / 3, 2.0, 100 * 7 / 16)
    assert timings[1] == LayerTiming("b", 3, 9.0, 3.0, 3.0, 56.25)
    path = write_profile(tmp_path / "profile.json", timings, count=3)
    raw = json.loads(path.read_text())
    assert raw[0] == {"count": 3}
    assert [list(r) for r in raw[1:]] == [list(PROFILE_KEYS)] * 2
    assert PROFILE_KEYS == ("name", "timeMs", "averageMs", "medianMs", "percentage")
    count, back = read_profile(path)
    assert count == 3 and back == timings


def test_reads_a_trtexec_written_profile() -> None:
    count, timings = read_profile(FIXTURES / "trtexec_profile.json")
    assert count == 4
    assert [t.name for t in timings] == [
        "patch_embed.proj/Conv_1",
        "{ForeignNode[patch_embed/Reshape_1...blocks.0.attn.qkv/MatMul_1]}",
    ]
    assert [(t.total_ms, t.average_ms, t.median_ms, t.percentage) for t in timings] == [
        (0.5, 0.125, 0.125, 25.0),
        (1.5, 0.375, 0.25, 75.0),
    ]


def test_profile_without_median_reads_nan_and_bad_files_raise(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text('[{"count": 1}, {"name": "x", "timeMs": 1, "averageMs": 1, "percentage": 100}]')
    _, (t,) = read_profile(old)
    assert math.isnan(t.median_ms) and t.total_ms == 1.0
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "x"}]')
    with pytest.raises(VitrtError, match="count"):
        read_profile(bad)
    bad.write_text('[{"startEnqMs": 1}]')
    with pytest.raises(VitrtError, match="endEnqMs"):
        read_times(bad)
