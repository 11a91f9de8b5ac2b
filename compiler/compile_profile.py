"""The profile stage of ``vitrt compile``: latency of the artifact's runner, and of PyTorch eager in the same
run when a PyTorch model was given (for the ratio).

A small function over ``vitrt.deploy.latency`` for now; ``vitrt.profile`` (trtexec-style timing with warm-up
and duration) replaces it when it lands. Both are timed in interleaved blocks
(``measure_interleaved``), so load from other processes affects them alike and the ratio stays fair.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def profile_stage(
    runner: Any,
    feed: Mapping[str, np.ndarray],
    *,
    eager: Callable[[], object] | None = None,
    iterations: int = 50,
    warmup: int = 5,
) -> dict[str, Any]:
    """Latency statistics, in ms, of ``runner.infer(feed)`` and of ``eager()`` if given.

    Returns ``{"artifact": LatencyStats dict, "pytorch_eager": dict or None, "ratio_vs_eager": artifact
    median / eager median or None, "iterations": n, "batch": the feed's batch}``.
    """
    from vitrt.deploy.latency import measure_interleaved

    calls: dict[str, Callable[[], object]] = {"artifact": lambda: runner.infer(feed)}
    if eager is not None:
        calls["pytorch_eager"] = eager
    stats = measure_interleaved(calls, warmup=warmup, iterations=iterations)
    artifact = stats["artifact"]
    base = stats.get("pytorch_eager")
    return {
        "artifact": artifact.to_dict(),
        "pytorch_eager": base.to_dict() if base is not None else None,
        "ratio_vs_eager": artifact.median / base.median if base is not None else None,
        "iterations": artifact.iterations,
        "batch": int(next(iter(feed.values())).shape[0]),
    }
