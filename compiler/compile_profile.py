"""The profile stage of ``vitrt compile``: latency of the artifact's runner against PyTorch eager in the same
run when a PyTorch model was given (the ratio), then the artifact's own profile the ``vitrt profile`` way.

The ratio is timed in interleaved blocks (``measure_interleaved``), so load from other processes affects
both alike and the ratio stays fair; the profile (``vitrt.deploy.profiler.profile_runner``: trtexec's
definitions, warm-up and duration, per-block times from a per-layer run, device telemetry) describes the
artifact alone.
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
    profile_s: float = 1.0,
) -> dict[str, Any]:
    """Latency statistics, in ms, of ``runner.infer(feed)`` and of ``eager()`` if given, and the artifact's
    profile over ``profile_s`` seconds (0: none).

    Returns ``{"artifact": LatencyStats dict, "pytorch_eager": dict or None, "ratio_vs_eager": artifact
    median / eager median or None, "iterations": n, "batch": the feed's batch, "profile":
    ``ProfileResult.to_dict()`` or None}``.
    """
    from vitrt.deploy.latency import measure_interleaved

    calls: dict[str, Callable[[], object]] = {"artifact": lambda: runner.infer(feed)}
    if eager is not None:
        calls["pytorch_eager"] = eager
    stats = measure_interleaved(calls, warmup=warmup, iterations=iterations)
    artifact = stats["artifact"]
    base = stats.get("pytorch_eager")
    profile = None
    if profile_s > 0:
        from vitrt.deploy.profiler import profile_runner

        profile = profile_runner(
            runner, feed=dict(feed), warmup_s=0.2, duration_s=profile_s, e2e_s=0, progress=False
        ).to_dict()
    return {
        "profile": profile,
        "artifact": artifact.to_dict(),
        "pytorch_eager": base.to_dict() if base is not None else None,
        "ratio_vs_eager": artifact.median / base.median if base is not None else None,
        "iterations": artifact.iterations,
        "batch": int(next(iter(feed.values())).shape[0]),
    }
