"""The PNG plots of ``vitrt compile``'s report (matplotlib, Agg backend: no display needed).

Each function takes ``report.json``'s content and writes one PNG, or returns None when the report lacks the
data (a failed run, a bundle with no latency): accuracy FP32 vs the chosen precision, latency statistics of
the artifact and PyTorch eager, sizes on disk, and each stage's time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitrt.fileio import atomic_output

DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def accuracy_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Top-1 of the FP32 reference and the artifact (labelled data), else top-1 agreement and mean cosine,
    in percent."""
    acc = report.get("accuracy")
    if not acc:
        return None
    plt = _pyplot()
    precision = report["options"]["precision"].upper()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if acc.get("top1") is not None:
        labels = ["FP32 reference", precision]
        values = [100 * acc["reference_top1"], 100 * acc["top1"]]
        ax.set_ylabel(f"top-1 accuracy, % ({acc['samples']} images)")
    else:
        labels = [f"top-1 agreement\n{precision} vs FP32", f"mean cosine\n{precision} vs FP32"]
        values = [100 * acc["top1_agreement"], 100 * acc["mean_cosine"]]
        ax.set_ylabel(f"% ({acc['samples']} samples)")
    bars = ax.bar(labels, values, color=["#7f8c8d", "#2e86c1"])
    ax.bar_label(bars, fmt="%.1f")
    low = min(values)
    ax.set_ylim(max(0.0, low - 10), 100.5)
    ax.set_title("accuracy")
    return _save(fig, path)


def latency_plot(report: dict[str, Any], path: Path) -> Path | None:
    """min / median / p90 / p99 latency in ms of the artifact and of PyTorch eager (when given)."""
    lat = report.get("latency")
    if not lat:
        return None
    plt = _pyplot()
    rows = [(f"{report['options']['precision'].upper()} artifact ({lat.get('runtime')})", lat["artifact"])]
    if lat.get("pytorch_eager"):
        rows.append(("PyTorch eager FP32", lat["pytorch_eager"]))
    stats = ("min", "median", "p90", "p99")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(rows)
    for i, (label, values) in enumerate(rows):
        xs = [k + i * width for k in range(len(stats))]
        bars = ax.bar(xs, [values[s] for s in stats], width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([k + width * (len(rows) - 1) / 2 for k in range(len(stats))], stats)
    ax.set_ylabel(f"ms per query (batch {lat.get('batch', 1)})")
    ax.set_title(f"latency, {lat['iterations']} timed queries each, interleaved")
    ax.legend(fontsize=8)
    return _save(fig, path)


def size_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Size on disk in MiB of the FP32 ONNX, the chosen precision's ONNX and the artifact folder."""
    sizes = report.get("sizes") or {}
    rows = [
        (label, sizes[key])
        for label, key in (
            ("FP32 ONNX", "fp32_onnx_bytes"),
            (f"{report['options']['precision'].upper()} ONNX", "final_onnx_bytes"),
            ("artifact", "artifact_bytes"),
        )
        if sizes.get(key)
    ]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar([r[0] for r in rows], [r[1] / 2**20 for r in rows], color="#27ae60")
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylabel("MiB on disk")
    ax.set_title("model size")
    return _save(fig, path)


def stages_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Each stage's seconds in this run; a cached stage also shows (light) the seconds it took when it ran."""
    stages = [s for s in report.get("stages", []) if s["status"] != "skipped"]
    if not stages:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(stages) + 1.2))
    names = [f"{s['name']} ({s['status']})" for s in stages]
    built = [s["built_seconds"] if s["status"] == "cached" else 0.0 for s in stages]
    ax.barh(names, built, color="#d5dbdb", label="when it ran (cached now)")
    bars = ax.barh(names, [s["seconds"] for s in stages], color="#8e44ad", label="this run")
    ax.bar_label(bars, fmt="%.1f s", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("stage times")
    if any(built):
        ax.legend(fontsize=8)
    return _save(fig, path)


PLOTS = {"accuracy": accuracy_plot, "latency": latency_plot, "size": size_plot, "stages": stages_plot}
"""Plot name -> function; the report writes ``plots/<name>.png``."""
