"""Latency profiling of a runner with trtexec's definitions (see ``vitrt.deploy.latency`` for the
statistics).

Per query (one batch): *Enqueue time*, the host time to issue the query; *GPU compute time*, CUDA events
around the query on the device's stream; *Latency*, host time from issuing the query to its result
being ready. Data transfers are not included (the input stays on the device, as TensorRT 11's trtexec
defaults to), and queries run one after another (trtexec enqueues one ahead, so its latency can look
lower than an application's). *Throughput* = queries / host wall time from the first timed query to the
last completion. Time-based warm-up (200 ms) and duration (3 s, at least 10 queries) as in trtexec.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .latency import LatencyStats, latency_stats
from .torch_runner import TorchModelRunner

DEFAULT_WARMUP_S = 0.2
DEFAULT_DURATION_S = 3.0
DEFAULT_MIN_ITERATIONS = 10


@dataclass(frozen=True)
class ProfileResult:
    """One runner's profile: statistics in ms per query, throughput in queries/s (images/s =
    throughput x batch), and the settings that make the numbers comparable."""

    runner: str
    device: str
    batch: int
    latency: LatencyStats
    enqueue: LatencyStats
    gpu_compute: LatencyStats | None
    throughput_qps: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data with stable keys (for ``--json``)."""
        return asdict(self)

    def format(self) -> str:
        """trtexec-style summary lines."""

        def line(name: str, s: LatencyStats) -> str:
            return (
                f"{name}: min = {s.min:.4f} ms, max = {s.max:.4f} ms, mean = {s.mean:.4f} ms, median = "
                f"{s.median:.4f} ms, percentile(90%) = {s.p90:.4f} ms, percentile(95%) = {s.p95:.4f} ms, "
                f"percentile(99%) = {s.p99:.4f} ms"
            )

        lines = [
            f"Throughput: {self.throughput_qps:.2f} qps ({self.throughput_qps * self.batch:.1f} images/s)",
            line("Latency", self.latency),
            line("Enqueue Time", self.enqueue),
        ]
        if self.gpu_compute is not None:
            lines.append(line("GPU Compute Time", self.gpu_compute))
        lines.append(
            f"Queries: {self.latency.iterations}; " + ", ".join(f"{k} {v}" for k, v in self.settings.items())
        )
        return "\n".join(lines)


def profile_torch(
    runner: TorchModelRunner,
    *,
    batch: int = 1,
    img_size: int = 224,
    warmup_s: float = DEFAULT_WARMUP_S,
    duration_s: float = DEFAULT_DURATION_S,
    iterations: int = DEFAULT_MIN_ITERATIONS,
    seed: int = 0,
    progress: bool = True,
) -> ProfileResult:
    """Profile ``runner`` on random images [batch, 3, img_size, img_size] (on the runner's device, drawn
    once from ``seed``): warm up for ``warmup_s``, then time queries for ``duration_s`` and at least
    ``iterations``. A progress bar (stderr) while it runs."""
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, img_size, img_size, generator=g).to(runner.device, runner.dtype)
    cuda = runner.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(runner.device)

    start = time.perf_counter()
    while True:  # warm-up: includes the CUDA graph capture on the first call
        runner.forward(x)
        sync()
        if time.perf_counter() - start >= warmup_s:
            break

    enqueue, latency, compute = [], [], []
    bar = tqdm(
        total=round(duration_s, 1),
        unit="s",
        desc=f"profiling {runner.name}",
        disable=not progress,
        leave=False,
    )
    first = time.perf_counter()
    while True:
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
        t0 = time.perf_counter()
        runner.forward(x)
        if cuda:
            end.record()
        t1 = time.perf_counter()
        if cuda:
            end.synchronize()
        t2 = time.perf_counter()
        enqueue.append((t1 - t0) * 1e3)
        latency.append((t2 - t0) * 1e3)
        if cuda:
            compute.append(begin.elapsed_time(end))
        bar.n = round(min(t2 - first, duration_s), 1)
        bar.refresh()
        if t2 - first >= duration_s and len(latency) >= iterations:
            break
    wall = time.perf_counter() - first
    bar.close()
    settings = {
        "warm-up": f"{warmup_s * 1e3:.0f} ms",
        "duration": f"{duration_s:g} s",
        "data transfers": "no (input on the device)",
        "CUDA graph": "on" if runner.cuda_graph else "off",
        "precision": "fp16" if runner.dtype == torch.float16 else "fp32",
        "sync": "event synchronize" if cuda else "host",
    }
    device = torch.cuda.get_device_name(runner.device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    return ProfileResult(
        runner=runner.name,
        device=device,
        batch=batch,
        latency=latency_stats(latency),
        enqueue=latency_stats(enqueue),
        gpu_compute=latency_stats(compute) if cuda else None,
        throughput_qps=len(latency) / wall,
        settings=settings,
    )
