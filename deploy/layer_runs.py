"""Per-layer profiles of a runner, taken in a run of their own and grouped by model block.

Per-layer timing changes what it measures (TensorRT's ``IProfiler`` synchronises after every layer and turns
CUDA graphs off; ONNX Runtime's profiler writes an event per node), so ``vitrt profile`` takes it after the
timed run, from a second session or context on the same file, and never mixes it into the latency figures.

- TensorRT: a second ``TensorRTRunner`` on the engine with ``profile_layers=True`` (``vitrt.deploy.
  trt_profiler``), the layers' ONNX nodes from the engine inspector's metadata (``[ONNX Layer: ...]``, needs
  the DETAILED profiling verbosity ``vitrt build`` sets);
- ONNX Runtime: a second session with ``enable_profiling`` and the timed session's graph optimisations
  (all of them: an unfused session would time Q/DQ pairs that the real run folds into int8 kernels), its
  per-node ``_kernel_time`` events (``vitrt.deploy.layer_profile.read_ort_profile``). A fused node keeps the
  name of the node it started from as a prefix (``blocks.2.attn.core/MatMul_1/MatMulScaleFusion/``), so its
  module path survives; nodes ONNX Runtime made under names of its own (``Gelu_token_56``) take the group of
  their neighbours in the file where they are in it, else ``other``;
- OpenVINO and PyTorch: not recorded (the reason says what to use instead).

Module groups come from node names (``vitrt.deploy.module_groups``: vitrt's exports name nodes after their
module paths, ``blocks.3.attn.qkv/MatMul_1``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import VitrtError

from .layer_profile import GroupTime, group_times, layer_nodes, read_ort_profile
from .layer_timing import LayerTiming, layer_timings
from .module_groups import OTHER, group_graph, group_nodes, module_group

DEFAULT_LAYER_ITERATIONS = 20


class LayersNotAvailable(VitrtError):
    """This runner has no per-layer profiler; the message says why and what to use instead."""


@dataclass(frozen=True)
class LayerProfile:
    """A per-layer profile over ``iterations`` inferences: trtexec's per-layer records (``timings``, ms),
    their per-block totals (``groups``, ms over all iterations, largest first), and how it was taken."""

    timings: list[LayerTiming]
    iterations: int
    groups: list[GroupTime]
    method: str
    notes: list[str] = field(default_factory=list)

    def block_ms(self) -> dict[str, float]:
        """Module group label -> ms per inference (the report's ``layers``), largest first."""
        n = max(self.iterations, 1)
        return {g.label: g.total_ms / n for g in self.groups}


def profile_layers(
    runner: Any, feed: dict[str, np.ndarray], iterations: int = DEFAULT_LAYER_ITERATIONS
) -> LayerProfile:
    """The per-layer profile of the file ``runner`` runs, over ``iterations`` runs of ``feed`` (after one
    warm-up run). LayersNotAvailable for runtimes without a per-layer profiler here."""
    runtime = getattr(runner, "runtime", None)
    if runtime == "tensorrt":
        return _tensorrt(runner, feed, iterations)
    if runtime == "onnxruntime":
        return _onnxruntime(runner, feed, iterations)
    if runtime == "openvino":
        raise LayersNotAvailable(
            "OpenVINO's per-layer counters are not mapped to module names by vitrt; profile the same ONNX "
            "file on ONNX Runtime (--runtime onnxruntime) for the per-block split"
        )
    raise LayersNotAvailable(
        f"no per-layer profiler for a {runtime or type(runner).__name__} runner (PyTorch: torch.profiler)"
    )


def _onnxruntime(runner: Any, feed: dict[str, np.ndarray], iterations: int) -> LayerProfile:
    import onnx

    from .runners import OnnxRuntimeRunner

    path = Path(runner.path)
    with tempfile.TemporaryDirectory(prefix="vitrt-ort-profile-") as tmp:
        threads = getattr(runner, "threads", None)
        profiled = OnnxRuntimeRunner(path, threads=threads, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(iterations + 1):
            profiled.infer(feed)
        # ONNX Runtime profiles from the session's first run (no way to start later from Python): that run's
        # one-time costs (allocations, first touches) would dominate small nodes, so each node's first sample
        # is dropped, as trtexec's warm-up would have kept it out.
        samples = read_ort_profile(profiled.session.end_profiling())
        del profiled  # release the session before its folder goes
        timings = layer_timings({node: runs[1:] for node, runs in samples.items() if len(runs) > 1})
    proto = onnx.load(str(path), load_external_data=False)
    in_file = group_graph(proto.graph.node)
    node_groups = {t.name: in_file.get(t.name) or module_group(t.name) or OTHER for t in timings}
    groups = group_times(timings, {}, node_groups)
    count = timings[0].count if timings else 0
    return LayerProfile(
        timings=timings,
        iterations=count,
        groups=groups,
        method="ONNX Runtime profiler (enable_profiling), the timed session's graph optimisations",
    )


def _tensorrt(runner: Any, feed: dict[str, np.ndarray], iterations: int) -> LayerProfile:
    from .tensorrt_runner import TensorRTRunner
    from .trt_profiler import LayerTimeCollector, engine_layers, make_layer_profiler

    with TensorRTRunner(
        runner.path,
        plugins=bool(getattr(runner, "plugins", True)),
        batch=int(runner.batch),
        profile_layers=True,
        name=f"{runner.name} layers",
    ) as layered:
        layered.infer(feed)  # warm-up (first-enqueue set-up); a fresh collector leaves its reports out
        collector = LayerTimeCollector()
        layered.context.profiler = make_layer_profiler(collector)
        for _ in range(iterations):
            layered.infer(feed)
        layers = engine_layers(layered.engine, layered.context)
    timings = collector.timings()
    nodes_of_layer = layer_nodes(layers)
    ordered: list[str] = []
    for layer in layers:
        for node in nodes_of_layer.get(layer.name, []):
            if node not in ordered:
                ordered.append(node)
    groups = group_times(timings, nodes_of_layer, group_nodes(ordered))
    return LayerProfile(
        timings=timings,
        iterations=collector.iterations,
        groups=groups,
        method="TensorRT IProfiler, layers mapped through the engine inspector's [ONNX Layer: ...] metadata",
        notes=[
            "a fused TensorRT layer spanning several blocks is split evenly among them (TensorRT reports no "
            "time per original node)"
        ]
        if any(g.shared_layers for g in groups)
        else [],
    )
