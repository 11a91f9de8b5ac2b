"""PNG plots of profiles with matplotlib's Agg backend (no display needed; the ``report`` extra).

- ``plot_latency``: one artifact's latency histogram (ms) with its cumulative distribution on a second
  axis, median / p90 / p99 marked;
- ``plot_blocks``: horizontal bars of time per block (ms) from a per-layer profile grouped by block;
- ``plot_compare``: median latency per artifact as bars, p90 and p99 as whiskers, each bar labelled with
  its ratio to the first artifact.

Each writes atomically and returns the path; ``plot_report`` writes every plot of a report into a folder.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_write_bytes

from .results import ProfileResult

DPI = 100
SIZE_IN = (8.0, 4.5)
"""Figure size in inches: 800 x 450 pixels at ``DPI``."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise VitrtError("plots need matplotlib: pip install 'vitrt[report]'") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def slug(name: str) -> str:
    """A file-name-safe form of a runner name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "artifact"


def plot_latency(samples_ms: Sequence[float], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Histogram of per-query latency ``samples_ms`` (ms) with its CDF (right axis, 0-1) and the median,
    p90 and p99 (trtexec's nearest rank) as vertical lines."""
    from .latency import latency_stats

    if len(samples_ms) == 0:
        raise VitrtError("no latency samples to plot")
    plt = _pyplot()
    ms = np.sort(np.asarray(samples_ms, dtype=np.float64))
    stats = latency_stats(ms)
    fig, ax = plt.subplots(figsize=SIZE_IN)
    ax.hist(ms, bins=min(50, max(10, len(ms) // 5)), color="#4c72b0", alpha=0.8)
    ax.set_xlabel("latency per query (ms)")
    ax.set_ylabel("queries")
    cdf = ax.twinx()
    cdf.plot(ms, np.arange(1, len(ms) + 1) / len(ms), color="#dd8452", linewidth=1.5)
    cdf.set_ylim(0, 1.02)
    cdf.set_ylabel("fraction of queries <= x")
    for value, label, style in (
        (stats.median, "median", "-"),
        (stats.p90, "p90", "--"),
        (stats.p99, "p99", ":"),
    ):
        ax.axvline(value, color="black", linestyle=style, linewidth=1, label=f"{label} {value:.3f} ms")
    ax.legend(loc="center right", fontsize=8)
    ax.set_title(title or f"latency over {len(ms)} queries")
    fig.tight_layout()
    return _save(fig, path)


def plot_blocks(blocks_ms: Mapping[str, float], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Horizontal bars of time per block (``{block: ms}``, shown in the mapping's order, top down), each
    labelled with its share of the total."""
    if not blocks_ms:
        raise VitrtError("no per-block times to plot")
    plt = _pyplot()
    names = list(blocks_ms)
    values = np.asarray([float(blocks_ms[n]) for n in names])
    height = max(SIZE_IN[1], 0.3 * len(names) + 1.0)
    fig, ax = plt.subplots(figsize=(SIZE_IN[0], height))
    y = np.arange(len(names))
    ax.barh(y, values, color="#55a868")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    total = values.sum()
    for yi, v in zip(y, values, strict=True):
        ax.text(v, yi, f" {v:.3f} ms ({100 * v / total:.1f} %)", va="center", fontsize=7)
    ax.set_xlim(0, values.max() * 1.3 if values.max() > 0 else 1)
    ax.set_xlabel("time per query (ms)")
    ax.set_title(title or f"time per block (total {total:.3f} ms)")
    fig.tight_layout()
    return _save(fig, path)


def plot_compare(results: Sequence[ProfileResult], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Median latency per artifact (bars, ms) with whiskers up to p90 (thick) and p99 (thin), each bar
    labelled with its median and its ratio to the first artifact's median."""
    if not results:
        raise VitrtError("no profiles to compare")
    plt = _pyplot()
    names = [r.runner for r in results]
    med = np.asarray([r.latency.median for r in results])
    p90 = np.asarray([r.latency.p90 for r in results])
    p99 = np.asarray([r.latency.p99 for r in results])
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(SIZE_IN[0], 1.6 * len(results) + 2), SIZE_IN[1]))
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    ax.bar(x, med, color=[colors[i % len(colors)] for i in range(len(results))], width=0.6)
    ax.errorbar(x, med, yerr=[np.zeros_like(med), p90 - med], fmt="none", ecolor="black", elinewidth=2.5)
    ax.errorbar(
        x, med, yerr=[np.zeros_like(med), p99 - med], fmt="none", ecolor="black", elinewidth=1, capsize=6
    )
    for xi, m, top in zip(x, med, p99, strict=True):
        ax.text(xi, top, f"{m:.3f} ms\n{m / med[0]:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, fontsize=8, rotation=10 if len(names) > 3 else 0)
    ax.set_ylabel("latency per query (ms): median, whiskers p90 / p99")
    ax.set_ylim(0, float(p99.max()) * 1.25)
    ax.set_title(title or f"median latency, ratio to {names[0]}")
    fig.tight_layout()
    return _save(fig, path)


def plot_report(
    results: Sequence[ProfileResult], folder: str | os.PathLike[str], *, compare: bool
) -> list[Path]:
    """Write ``latency-<runner>.png`` per result (from its per-query ``times``), ``blocks-<runner>.png`` where
    a result has per-block times, and ``compare.png`` with ``compare``; returns the paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    used: set[str] = set()
    for r in results:
        base = name = slug(r.runner)  # unique in a report from profile(); results put together may repeat
        k = 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        if r.times:
            samples = [t.latency_ms for t in r.times]
            written.append(plot_latency(samples, out / f"latency-{name}.png", title=r.runner))
        if r.layers:
            written.append(plot_blocks(r.layers, out / f"blocks-{name}.png", title=r.runner))
    if compare:
        written.append(plot_compare(results, out / "compare.png"))
    return written
