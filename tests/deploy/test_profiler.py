"""``profile_runner`` / ``vitrt.profile``: trtexec's definitions on a runner whose times are known, the
--exportTimes records, the defaults recorded, the telemetry and per-layer hook points, and profiles of tiny
ONNX Runtime FP32 / INT8 artifacts."""

from __future__ import annotations

import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import vitrt
from vitrt.deploy.latency import latency_stats
from vitrt.deploy.runners import HostTimingMixin, TensorSpec
from vitrt.deploy.trtexec_format import QueryTrace, read_times, times_stats, write_times
from vitrt.errors import VitrtError


class SleepRunner(HostTimingMixin):
    """A host runner whose query takes ``ms`` milliseconds (a sleep) and returns the input's sum."""

    name = "sleep"
    runtime = "test"

    def __init__(self, ms: float) -> None:
        self.ms = ms
        self.calls = 0

    @property
    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec("x", ("batch", 4), "float32")]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # type: ignore[override]
        self.calls += 1
        time.sleep(self.ms / 1e3)
        return {"y": feed["x"].sum(axis=1)}


def test_times_file_round_trips_with_trtexec_statistics(tmp_path: Path) -> None:
    # 10 queries with compute 1..10 ms shuffled, no transfers, enqueue = half of it: p90 drops
    # int(0.1 * 10) = 1 -> 9 ms; written in trtexec's --exportTimes layout and read back
    latencies = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0, 8.0, 6.0, 9.0]
    traces, t = [], 0.0
    for ms in latencies:
        traces.append(QueryTrace(t, t + ms / 2, t, t, t, t + ms, t + ms, t + ms))
        t += ms
    back = read_times(write_times(tmp_path / "times.json", traces))
    assert back == traces
    stats = times_stats(back)
    assert (stats["latency"].median, stats["latency"].p90, stats["latency"].p99) == (5.5, 9.0, 10.0)
    assert (stats["enqueue"].min, stats["enqueue"].max, stats["enqueue"].mean) == (0.5, 5.0, 2.75)
    assert math.isclose(stats["latency"].std, math.sqrt(8.25))


def test_profile_of_a_known_runner_follows_trtexec() -> None:
    runner = SleepRunner(ms=2.0)
    result = vitrt.profile_runner(
        runner, batch=3, warmup_s=0.01, duration_s=0.15, iterations=10, e2e_s=0, progress=False
    )
    n = len(result.times)
    assert result.latency.iterations == n >= 10 and result.batch == 3
    assert result.wall_s >= 0.15 and result.throughput_qps == pytest.approx(n / result.wall_s)
    assert 2.0 <= result.latency.min <= result.latency.median <= result.latency.p99 <= result.latency.max
    # a host runner: no transfers, latency = compute = enqueue..synchronize, GPU compute not measured
    assert result.gpu_compute is None and result.h2d is None
    assert all(t.h2d_ms == t.d2h_ms == 0.0 and t.latency_ms == t.compute_ms for t in result.times)
    assert result.latency == latency_stats([t.latency_ms for t in result.times])
    assert result.enqueue.median <= result.latency.median
    starts = [t.start_enq_ms for t in result.times]
    assert starts == sorted(starts) and starts[0] >= 0.0
    assert result.settings["include_data_transfers"].startswith("n/a")
    assert result.settings["runtime"] == "test" and result.settings["duration_s"] == 0.15
    # the three trtexec defaults are GPU settings: none applied to a host runner ("n/a" in its settings)
    assert result.defaults == {
        "trtexec": "11",
        "values": {"include_data_transfers": False, "cuda_graph": True, "spin_wait": True},
        "applied": [],
    }
    assert result.settings["cuda_graph"] == result.settings["spin_wait"] == "n/a (host runner)"
    ten = vitrt.profile_runner(
        runner, warmup_s=0, duration_s=0, iterations=10, spin_wait=True, trtexec_defaults=10, e2e_s=0
    )  # the int 10 names the line as "10" does; an explicit GPU setting is noted as not applicable
    assert ten.latency.iterations == 10 and ten.defaults["applied"] == [] and ten.defaults["trtexec"] == "10"
    assert ten.defaults["values"]["include_data_transfers"] is True
    assert "spin_wait asked for: not applicable to a host runner (no device)" in ten.notes
    with pytest.raises(VitrtError, match=r"^trtexec_defaults must be one of '11', '10' .*not '9'$"):
        vitrt.profile_runner(runner, trtexec_defaults="9")
    before = runner.calls
    for key, value, message in (
        ("duration_s", "0.2", "duration_s must be a number >= 0, got '0.2'"),
        ("warmup_s", -1.0, "warmup_s must be a number >= 0, got -1.0"),
        ("iterations", 2.5, "iterations must be an integer >= 1, got 2.5"),
        ("batch", 0, "batch must be an integer >= 1, got 0"),
    ):
        with pytest.raises(VitrtError, match=f"^{message}$"):
            vitrt.profile_runner(runner, **{key: value})
    assert runner.calls == before  # refused before any query


class FakeGpuRunner(SleepRunner):
    """A runner that says it runs on a GPU and times its own stream (as the TensorRT runner does)."""

    device = "cuda:0"
    cuda_graph = True
    spin_wait = False

    def enqueue(self, timed: bool = False) -> None:
        super().enqueue()

    def last_compute_ms(self) -> float:
        return self.ms


def test_the_trtexec_defaults_applied_to_a_gpu_runner_are_listed() -> None:
    gpu = vitrt.profile_runner(
        FakeGpuRunner(ms=1.0), warmup_s=0, duration_s=0, iterations=10, e2e_s=0, layers=False, progress=False
    )
    assert gpu.defaults["applied"] == ["include_data_transfers", "cuda_graph", "spin_wait"]
    assert (gpu.settings["cuda_graph"], gpu.settings["spin_wait"]) == (True, True)
    ten = vitrt.profile_runner(
        FakeGpuRunner(ms=1.0), warmup_s=0, duration_s=0, iterations=10, spin_wait=False,
        trtexec_defaults="10", e2e_s=0, layers=False, progress=False, telemetry=False,
    )  # fmt: skip
    assert ten.defaults["applied"] == ["include_data_transfers", "cuda_graph"]
    assert ten.settings["include_data_transfers"] is True and ten.h2d is not None


def test_telemetry_and_layer_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = SleepRunner(ms=0.5)
    plain = vitrt.profile_runner(runner, warmup_s=0, duration_s=0, e2e_s=0, progress=False)
    # vitrt's sampler on this machine: a CPU, its static facts recorded
    assert plain.telemetry["recorded"] is True and plain.telemetry["platform"] == "cpu"
    # a runner without a per-layer profiler: nothing recorded, the reason said
    assert plain.layers is None and any(
        "per-layer profile not recorded: no per-layer" in n for n in plain.notes
    )
    monkeypatch.setitem(sys.modules, "vitrt.deploy.telemetry", None)  # the module absent: import fails
    absent = vitrt.profile_runner(runner, warmup_s=0, duration_s=0, e2e_s=0, progress=False, telemetry=True)
    assert absent.telemetry["recorded"] is False and "not available" in absent.telemetry["reason"]
    assert any(n.startswith("telemetry not recorded") for n in absent.notes)
    off = vitrt.profile_runner(runner, warmup_s=0, duration_s=0, e2e_s=0, progress=False, telemetry=False)
    assert off.telemetry == {"recorded": False, "reason": "telemetry not asked for"}

    class State:
        def to_dict(self) -> dict[str, float]:
            return {"gpu_clock_mhz": 1980.0}

    class Sampler:  # TelemetrySampler's protocol
        def __init__(self, threads: int | None = None) -> None:
            self.window: list[object] = []

        def __enter__(self) -> Sampler:
            return self

        def begin_timed(self) -> None:
            self.window.append("begin")

        def end_timed(self, inferences: int) -> None:
            self.window.append(inferences)

        def __exit__(self, *exc: object) -> None:
            return None

        def result(self) -> State:
            # the timed window: 10 queries of one image (duration 0, at least 10 iterations)
            assert self.window == ["begin", 10]
            return State()

    telemetry = types.ModuleType("vitrt.deploy.telemetry")
    telemetry.TelemetrySampler = Sampler  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vitrt.deploy.telemetry", telemetry)
    wired = vitrt.profile_runner(runner, warmup_s=0, duration_s=0, e2e_s=0, progress=False, layers=False)
    assert wired.telemetry == {"recorded": True, "gpu_clock_mhz": 1980.0}
    assert wired.layers is None and wired.notes == ["per-layer profile not asked for"]


@pytest.mark.parametrize("key", ["fp32.cpu", "int8.cpu", "fp16.cpu"])
def test_profile_of_tiny_ort_artifacts(tiny: dict[str, Path], key: str) -> None:
    duration = 0.25
    t0 = time.perf_counter()
    result = vitrt.profile_artifact(tiny[key], warmup_s=0.05, duration_s=duration, e2e_s=0.05, progress=False)
    elapsed = time.perf_counter() - t0
    lat = result.latency
    assert lat.iterations >= 10 and 0 < lat.min <= lat.median <= lat.p90 <= lat.p99 <= lat.max
    assert duration <= result.wall_s <= duration + 0.5 and elapsed < duration + 10
    assert result.settings["runtime"] == "onnxruntime" and result.settings["threads"] == 1
    assert result.settings["precision"] == key.split(".")[0]
    assert result.e2e is not None and result.preprocess is not None
    assert result.e2e.median >= result.preprocess.median > 0 and result.e2e.iterations >= 10
    assert result.memory["host_peak_rss_mib"] >= result.memory["host_start_rss_mib"] > 0
    assert result.memory["device_peak_mib"] is None and result.source == str(tiny[key])


def test_per_layer_profile_of_an_ort_artifact_maps_every_node_to_a_block(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    import onnx

    from vitrt.deploy.module_groups import OTHER, group_graph, module_group
    from vitrt.deploy.trtexec_format import read_profile

    out = tmp_path / "profile.json"
    report = vitrt.profile(
        tiny["fp32.cpu"], warmup_s=0, duration_s=0, e2e_s=0, telemetry=False, quiet=True, export_profile=out
    )
    result = report.artifacts[0]
    lp = result.layer_profile
    assert lp is not None and result.layers is not None and lp.iterations == 20
    graph = onnx.load(str(tiny["fp32.cpu"] / "model.onnx")).graph
    names = {n.name for n in graph.node}
    # the layers are the file's nodes, or nodes ONNX Runtime derived from them (a fused node keeps its
    # first name as a prefix: patch_embed.proj/Conv_1:0_nchwc); its own layout nodes (ReorderOutput) are rare
    derived = [t for t in lp.timings if t.name in names or any(t.name.startswith(n) for n in names)]
    assert sum(t.total_ms for t in derived) >= 0.95 * sum(t.total_ms for t in lp.timings)
    groups = group_graph(graph.node)
    expected: dict[str, float] = {}
    for t in lp.timings:  # the per-block figure is the sum of its nodes' times, per inference
        label = (groups.get(t.name) or module_group(t.name) or OTHER).label
        expected[label] = expected.get(label, 0.0) + t.total_ms / lp.iterations
    assert result.layers.keys() == expected.keys()
    for label, ms in expected.items():
        assert result.layers[label] == pytest.approx(ms, rel=1e-9)
    assert {"patch_embed", "blocks.0.attn", "blocks.0.mlp", "head.head"} <= result.layers.keys()
    # ONNX Runtime's own transposes / squeezes are placed by their neighbours: little is left in "other"
    assert result.layers.get("other", 0.0) <= 0.05 * sum(result.layers.values())
    count, timings = read_profile(out)  # trtexec's --exportProfile, read back
    assert count == lp.iterations and [t.name for t in timings] == [t.name for t in lp.timings]
    assert [t.total_ms for t in timings] == pytest.approx([t.total_ms for t in lp.timings], rel=1e-6)
    assert sum(t.percentage for t in timings) == pytest.approx(100.0, abs=1e-3)


def test_same_named_sources_get_unique_names_ratios_and_plots(tiny: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.onnx").symlink_to(tiny["fp32"])
    sources = [tmp_path / "A" / "model.onnx", tmp_path / "B" / "model.onnx", tiny["fp32"], tiny["fp32"]]
    report = vitrt.profile(
        sources, warmup_s=0, duration_s=0, e2e_s=0, layers=False, telemetry=False, quiet=True,
        compare=True, plots=tmp_path / "plots",
    )  # fmt: skip
    names = [r.runner for r in report.artifacts]
    assert names == [
        "A/model.onnx (onnxruntime)",
        "B/model.onnx (onnxruntime)",
        "deit_t.onnx (onnxruntime)",
        "deit_t.onnx (onnxruntime) #2",
    ]
    assert report.compare is not None and report.compare["baseline"] == names[0]
    assert list(report.compare["median_ratio"]) == names and report.compare["median_ratio"][names[0]] == 1.0
    rows = [line for line in report.to_markdown().splitlines() if line.startswith("| A/model.onnx")]
    assert len(rows) == 1 and rows[0].endswith("| 1.00 |")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "compare.png",
        "latency-A_model.onnx_onnxruntime.png",
        "latency-B_model.onnx_onnxruntime.png",
        "latency-deit_t.onnx_onnxruntime.png",
        "latency-deit_t.onnx_onnxruntime_2.png",
    ]


def test_profile_options_are_checked_before_anything_runs(tiny: dict[str, Path], tmp_path: Path) -> None:
    from vitrt.deploy.sources import SourceError

    with pytest.raises(SourceError, match=r"^no sources given: profile takes one or more artifact folders"):
        vitrt.profile([])
    for options, message in (
        ({"duration_s": "0.2"}, r"^duration_s must be a number >= 0, got '0.2'$"),
        ({"iterations": 0}, r"^iterations must be an integer >= 1, got 0$"),
        ({"trtexec_defaults": 9}, r"^trtexec_defaults must be one of '11', '10' .*, not 9$"),
    ):
        with pytest.raises(VitrtError, match=message):  # a missing source: the options are said first
            vitrt.profile(tmp_path / "missing.onnx", json=tmp_path / "r.json", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "r.json").exists()
    ten = vitrt.profile(
        tiny["fp32"], trtexec_defaults=10, warmup_s=0, duration_s=0, e2e_s=0, layers=False, quiet=True,
        telemetry=False,
    )  # fmt: skip
    assert ten.artifacts[0].defaults["trtexec"] == "10" and ten.artifacts[0].defaults["applied"] == []
