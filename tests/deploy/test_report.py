"""Profile reports: the JSON round trip, the Markdown, the PNG plots (valid PNGs of the documented size)
and ``vitrt profile`` writing all of them for two artifacts."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vitrt.compiler.cli import main
from vitrt.deploy.latency import latency_stats
from vitrt.deploy.plots import plot_blocks, plot_compare, plot_latency
from vitrt.deploy.report import ProfileReport, comparison, read_report, write_json
from vitrt.deploy.results import ProfileResult
from vitrt.deploy.trtexec_format import read_times, times_stats

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk; AssertionError for anything else."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _result(name: str, samples: list[float]) -> ProfileResult:
    stats = latency_stats(samples)
    return ProfileResult(
        runner=name,
        device="cpu (2 cores)",
        batch=1,
        latency=stats,
        enqueue=latency_stats([s / 2 for s in samples]),
        gpu_compute=None,
        throughput_qps=1e3 / stats.mean,
        settings={"warmup_s": 0.2, "duration_s": 3.0, "cuda_graph": "n/a (host runner)"},
        source=f"{name}/",
        wall_s=sum(samples) / 1e3,
        e2e=latency_stats([s + 10 for s in samples]),
        defaults={"trtexec": "11", "values": {"spin_wait": True}, "applied": ["spin_wait"]},
        memory={"host_peak_rss_mib": 300.0, "device_peak_mib": None},
        layers=(
            {"blocks.0.attn": 1.5, "blocks.1.fusion": 1.0, "head": 1.0, "blocks.1.attn": 0.5}
            if name == "int8"
            else None
        ),
        telemetry={"recorded": False, "reason": "absent"},
        notes=["a note"],
    )


def test_json_round_trip_and_markdown(tmp_path: Path) -> None:
    fp32 = _result("fp32", [4.0, 2.0, 6.0, 8.0, 10.0])
    int8 = _result("int8", [2.0, 1.0, 3.0, 4.0, 5.0])
    assert comparison([fp32]) is None
    report = ProfileReport(
        [fp32, int8], machine={"cpu": "x", "cpu_count": 2}, compare=comparison([fp32, int8])
    )
    # medians 6 and 3, p99s 10 and 5: both ratios 0.5
    assert report.compare == {
        "baseline": "fp32",
        "median_ratio": {"fp32": 1.0, "int8": 0.5},
        "p99_ratio": {"fp32": 1.0, "int8": 0.5},
    }
    data = json.loads(write_json(tmp_path / "r.json", report).read_text())
    assert data["version"] == 1 and [a["runner"] for a in data["artifacts"]] == ["fp32", "int8"]
    assert data["artifacts"][0]["throughput_ips"] == data["artifacts"][0]["throughput_qps"]
    assert set(data["artifacts"][0]) >= {
        "latency",
        "enqueue",
        "gpu_compute",
        "e2e",
        "memory",
        "layers",
        "telemetry",
    }
    back = read_report(tmp_path / "r.json")
    assert back == report and back.to_dict() == data
    text = report.to_markdown()
    assert "| fp32 | 1 | 6.000 | 10.000 | 10.000 |" in text and "| 0.50 |" in text
    assert "| Latency | 1.000 | 3.000 | 3.000 | 5.000 | 5.000 | 5.000 | 5.000 |" in text
    assert "Latency: min = 2.0000 ms" in text and "| blocks.0.attn | 1.5000 |" in text
    # the parts summed over the blocks, with their shares of the per-layer total (4 ms)
    parts = ["| blocks.*.attn | 2.0000 | 50.0 % |", "| blocks.*.fusion | 1.0000 | 25.0 % |"]
    assert "\n".join([*parts, "| head | 1.0000 | 25.0 % |"]) in text
    summary = (
        "Time by part (per-layer run, summed over the blocks): blocks.*.attn 50.0 %, blocks.*.fusion 25.0 %"
    )
    assert f"{summary}, head 25.0 %\n" in int8.format() + "\n" and "Time by part" not in fp32.format()
    assert "Defaults: trtexec 11 line (applied to spin_wait)" in text


def test_plots_are_pngs_of_the_documented_size(tmp_path: Path) -> None:
    samples = [1.0 + 0.01 * i for i in range(100)]
    assert png_size(plot_latency(samples, tmp_path / "lat.png", title="t")) == (800, 450)
    blocks = {"patch_embed": 0.2, **{f"blocks.{i}": 0.5 + 0.1 * i for i in range(4)}, "head": 0.05}
    assert png_size(plot_blocks(blocks, tmp_path / "blocks.png")) == (800, 450)
    results = [_result("fp32", [4.0, 6.0, 8.0]), _result("int8", [2.0, 3.0, 4.0])]
    assert png_size(plot_compare(results, tmp_path / "cmp.png")) == (800, 450)
    assert png_size(plot_blocks({f"b{i}": 1.0 for i in range(20)}, tmp_path / "tall.png")) == (800, 700)


def test_profile_command_writes_every_report(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = {k: tmp_path / f for k, f in (("json", "r.json"), ("md", "r.md"), ("times", "t.json"))}
    argv = ["profile", str(tiny["fp32.cpu"]), str(tiny["int8.cpu"]), "--duration-s", "0.1", "--warmup-s", "0"]
    argv += ["--e2e-s", "0", "--quiet", "--compare", "--json", str(out["json"]), "--report", str(out["md"])]
    argv += ["--export-times", str(out["times"]), "--plots", str(tmp_path / "plots")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("Latency: min =") == 2 and "median latency vs fp32.cpu (onnxruntime)" in text
    report = read_report(out["json"])
    assert [a.settings["precision"] for a in report.artifacts] == ["fp32", "int8"]
    assert report.compare is not None and report.compare["median_ratio"]["fp32.cpu (onnxruntime)"] == 1.0
    # the per-query times re-read give the report's statistics
    for i, result in enumerate(report.artifacts):
        stats = times_stats(read_times(tmp_path / f"t.{i}.json"))
        assert stats["latency"] == result.latency and stats["enqueue"] == result.enqueue
    assert "# vitrt profile" in out["md"].read_text()
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    # per-block bars too: ONNX Runtime's per-layer run maps every node to a block
    assert pngs == [
        "blocks-fp32.cpu_onnxruntime.png",
        "blocks-int8.cpu_onnxruntime.png",
        "compare.png",
        "latency-fp32.cpu_onnxruntime.png",
        "latency-int8.cpu_onnxruntime.png",
    ]
    assert all(png_size(tmp_path / "plots" / p)[0] == 800 for p in pngs)
