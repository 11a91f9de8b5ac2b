"""Latency profiling of a PyTorch runner (``profile_torch``), kept as the PyTorch face of
``vitrt.deploy.profiler.profile_runner`` (trtexec's definitions; ``vitrt.deploy.latency`` for the
statistics). ``ProfileResult`` lives in ``vitrt.deploy.results``.
"""

from __future__ import annotations

import numpy as np

from .profiler import DEFAULT_DURATION_S, DEFAULT_MIN_ITERATIONS, DEFAULT_WARMUP_S, profile_runner
from .results import ProfileResult
from .torch_runner import TorchModelRunner

__all__ = [
    "DEFAULT_DURATION_S",
    "DEFAULT_MIN_ITERATIONS",
    "DEFAULT_WARMUP_S",
    "ProfileResult",
    "profile_torch",
]


def profile_torch(
    runner: TorchModelRunner,
    *,
    batch: int = 1,
    img_size: int | None = None,
    warmup_s: float = DEFAULT_WARMUP_S,
    duration_s: float = DEFAULT_DURATION_S,
    iterations: int = DEFAULT_MIN_ITERATIONS,
    seed: int = 0,
    progress: bool = True,
) -> ProfileResult:
    """Profile ``runner`` on random images [batch, 3, img_size, img_size] (img_size None: the runner's
    ``input_size``, its model's own; drawn once from ``seed``,
    copied to the runner's device before timing): warm up for ``warmup_s``, then time queries for
    ``duration_s`` (s) and at least ``iterations``. The input stays on the device (no transfers) and the
    runner's own CUDA graph setting is used; no end-to-end figure. A progress bar (stderr) while it runs."""
    size = tuple(runner.input_size[1:]) if img_size is None else (img_size, img_size)
    channels = runner.input_size[0]
    x = np.random.default_rng(seed).standard_normal((batch, channels, *size)).astype(np.float32)
    return profile_runner(
        runner,
        feed={"images": x},
        warmup_s=warmup_s,
        duration_s=duration_s,
        iterations=iterations,
        include_data_transfers=False,
        cuda_graph=runner.cuda_graph,
        spin_wait=False,
        e2e_s=0.0,
        progress=progress,
        source=runner.name,
    )
