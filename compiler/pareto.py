"""Latency vs accuracy: the Pareto front, the choice under a latency budget, a Markdown table and a plot.

Pure functions over ``(latency_ms, accuracy)`` points (accuracy in percent, higher is better; latency in
milliseconds, lower is better), so they are tested on hand-made points; ``plot_front`` draws with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Point = tuple[float, float]
"""(latency in ms, accuracy in %)."""


def _finite(p: Point | None) -> bool:
    return p is not None and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)


def pareto_front(points: Sequence[Point | None]) -> list[int]:
    """Indices of the non-dominated points, by increasing latency.

    A point dominates another when it is no slower and no less accurate, and strictly better in one of
    the two. Missing (None) or non-finite points (failed trials) are never on the front. Of exact
    duplicates the first index is kept.
    """
    valid = [(p[0], p[1], i) for i, p in enumerate(points) if _finite(p) and p is not None]
    valid.sort(key=lambda t: (t[0], -t[1], t[2]))  # fastest first; of equal latency, most accurate first
    front: list[int] = []
    best_acc = -math.inf
    for _lat, acc, i in valid:
        if acc > best_acc:
            front.append(i)
            best_acc = acc
    return front


def choose(points: Sequence[Point | None], budget_ms: float) -> int | None:
    """The index of the most accurate point with latency <= ``budget_ms`` (the faster on a tie), or None
    when no point fits the budget. The chosen point is always on the Pareto front."""
    fits = [
        (p[1], -p[0], -i) for i, p in enumerate(points) if _finite(p) and p is not None and p[0] <= budget_ms
    ]
    if not fits:
        return None
    return -max(fits)[2]


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` (dicts) with ``columns`` as (header, key) pairs; floats with 2 decimals,
    missing values as "-"."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    lines += ["| " + " | ".join(cell(row.get(k)) for _, k in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_front(
    path: str | os.PathLike[str],
    points: Sequence[Point | None],
    *,
    front: Sequence[int],
    budget_ms: float,
    chosen: int | None,
    labels: Mapping[int, str],
    title: str,
) -> Path:
    """Write the latency-accuracy plot to ``path`` (PNG, atomically): every point, the front as a step
    line, the budget as a vertical dashed line, the chosen point ringed, and ``labels`` {index: text}
    written beside their points (the baselines). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitrt.fileio import atomic_output

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    ok = [(i, p) for i, p in enumerate(points) if _finite(p) and p is not None]
    ax.scatter([p[0] for _, p in ok], [p[1] for _, p in ok], s=28, color="0.55", label="trials", zorder=2)
    if front:
        fx = [points[i][0] for i in front]  # type: ignore[index]
        fy = [points[i][1] for i in front]  # type: ignore[index]
        ax.plot(fx, fy, "-o", drawstyle="steps-post", color="tab:blue", ms=5, label="Pareto front", zorder=3)
    ax.axvline(budget_ms, color="tab:red", ls="--", lw=1.2, label=f"budget {budget_ms:g} ms")
    if chosen is not None and _finite(points[chosen]):
        cx, cy = points[chosen]  # type: ignore[misc]
        ax.scatter(
            [cx], [cy], s=220, facecolors="none", edgecolors="tab:green", lw=2.2, label="chosen", zorder=4
        )
    for i, text in labels.items():
        p = points[i]
        if _finite(p) and p is not None:
            ax.annotate(text, p, textcoords="offset points", xytext=(6, -12), fontsize=8, color="black")
            ax.scatter([p[0]], [p[1]], marker="s", s=40, color="black", zorder=5)
    ax.set_xlabel("latency, median at batch 1 (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    dest = Path(path)
    with atomic_output(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return dest
