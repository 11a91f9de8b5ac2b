"""CUDA timing and graph capture, shared by the PyTorch runner, the profiler and the GPU benchmarks."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any, TypeVar

import torch

R = TypeVar("R")


def event_median_ms(fn: Callable[[], object], iters: int, warmup: int = 5) -> float:
    """Median milliseconds of ``fn`` on the current CUDA stream: ``warmup`` untimed calls, then ``iters``
    calls each between two CUDA events (so a call's host launch overhead counts when the GPU waits for
    it, as an application sees it)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(statistics.median(times))


def capture_graph(fn: Callable[[], R], warmup: int = 3) -> tuple[Any, R]:
    """(graph, result) of ``fn`` captured as a CUDA graph; ``graph.replay()`` reruns it into ``result``'s
    tensors. ``warmup`` calls on a side stream come first: module loads, kernel attributes and library
    handles must be set up outside a capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = fn()
    return graph, result
