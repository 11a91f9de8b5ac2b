"""TensorRT per-layer timing (``IProfiler``) and engine-inspector reading, for ``layer_profile``.

TensorRT is imported inside the functions, so this module imports on machines without it. Per-layer
timing slows inference (TensorRT times each layer with its own events): profile in a separate run
from the latency measurement, as trtexec does (``--separateProfileRun``, always so since TensorRT 11).

>>> collector = LayerTimeCollector()
>>> context.profiler = make_layer_profiler(collector)
>>> context.enqueue_emits_profile = False      # time asynchronously, report after a sync
>>> for _ in range(n):
...     context.execute_async_v3(stream); sync(stream); context.report_to_profiler()
>>> timings = collector.timings()              # LayerTiming per engine layer, trtexec's statistics
>>> nodes = layer_nodes(engine_layers(engine)) # engine layer -> ONNX nodes (vitrt.deploy.layer_profile)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vitrt.errors import VitrtError

from .layer_profile import EngineLayer, read_engine_layers
from .layer_timing import LayerTiming, layer_timings

if TYPE_CHECKING:
    import tensorrt as trt


class LayerTimeCollector:
    """Every ``report_layer_time(layer, ms)`` call, kept per layer in first-report order (TensorRT
    reports the layers in execution order, once per layer and inference)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def report(self, layer_name: str, ms: float) -> None:
        self.samples.setdefault(layer_name, []).append(float(ms))

    @property
    def iterations(self) -> int:
        """Profiled inferences: the reports of the first layer (trtexec's count)."""
        return len(next(iter(self.samples.values()))) if self.samples else 0

    def timings(self) -> list[LayerTiming]:
        """trtexec's per-layer records (``layer_timing.layer_timings``), in execution order."""
        return layer_timings(self.samples)


def make_layer_profiler(collector: LayerTimeCollector) -> trt.IProfiler:
    """A ``tensorrt.IProfiler`` forwarding every layer time to ``collector``; set it as
    ``IExecutionContext.profiler``."""
    import tensorrt as trt

    class _Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)  # the pybind11 base needs its own __init__ called

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            collector.report(layer_name, ms)

    return _Profiler()


def engine_information(
    engine: trt.ICudaEngine, context: trt.IExecutionContext | None = None
) -> dict[str, Any]:
    """The engine inspector's JSON for ``engine`` (for ``context``'s shapes where given), parsed.

    Raises VitrtError when the engine was not built with ``ProfilingVerbosity.DETAILED``: the
    inspector then lists layer names only, without the ``Metadata`` that maps layers to ONNX nodes.
    """
    import tensorrt as trt

    verbosity = engine.profiling_verbosity
    if verbosity != trt.ProfilingVerbosity.DETAILED:
        raise VitrtError(
            f"the engine was built with profiling verbosity {verbosity}, so its inspector gives layer names "
            "only (no ONNX node metadata); rebuild it with config.profiling_verbosity = "
            "tensorrt.ProfilingVerbosity.DETAILED (trtexec --profilingVerbosity=detailed)"
        )
    inspector = engine.create_engine_inspector()
    if context is not None:
        inspector.execution_context = context
    data: dict[str, Any] = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return data


def engine_layers(engine: trt.ICudaEngine, context: trt.IExecutionContext | None = None) -> list[EngineLayer]:
    """The layers of ``engine`` with their metadata (``engine_information``, DETAILED needed)."""
    return read_engine_layers(engine_information(engine, context))
