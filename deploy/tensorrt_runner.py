"""A TensorRT engine behind vitrt's runner interface: deserialised with vitrt's plugins registered, device
buffers, pinned host buffers and a stream from cuda-python (``vitrt.deploy.cuda_runtime``),
``execute_async_v3``, optional CUDA graph capture.

The engine is deserialised after ``vitrt.register_tensorrt_plugins()`` when it holds vitrt's Python plugins
(restored from their serialised fields by vitrt's creators), and, through
``vitrt.deploy.artifact.load_artifact``, after the manifest check has said the TensorRT version, GPU and
plugin kernels fit. TensorRT and cuda-python are imported in the constructor, so this module imports
without them.

One query = ``prepare(feed)`` (host arrays -> pinned buffers -> device, asynchronous), ``enqueue()`` (the
engine, or the captured CUDA graph), ``synchronize()``, ``fetch()`` (device -> pinned -> numpy copies).
``infer(feed)`` does all four. The profiler times the parts separately, as trtexec does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrt.errors import VitrtError

from .runners import Feed

if TYPE_CHECKING:
    import tensorrt as trt

    from .cuda_runtime import DeviceBuffer, Graph, PinnedBuffer, Stream
    from .trt_profiler import LayerTimeCollector


class BatchTooLargeError(VitrtError):
    """A batch outside the engine's optimisation profile; the message names the profile and the fix."""


@dataclass(frozen=True)
class IOTensor:
    """One engine input or output: name, shape (-1 for a dynamic axis), numpy dtype, and for inputs the
    optimisation profile's (min, opt, max) shapes (None for a static input)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    is_input: bool
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


def dims(value: Any) -> tuple[int, ...]:
    """A TensorRT ``Dims`` (or any sequence of ints) as a tuple: Dims has ``__len__`` and ``__getitem__``."""
    return tuple(int(value[i]) for i in range(len(value)))


def input_shape(tensor: IOTensor, batch: int) -> tuple[int, ...]:
    """The shape to run ``tensor`` at ``batch`` (axis 0), checked against its profile / static shape.

    BatchTooLargeError (or a smaller-than-minimum batch) names the engine's range and how to build a wider
    one: ``vitrt build --min/--opt/--max``.
    """
    if batch < 1:
        raise VitrtError(f"batch must be >= 1, got {batch}")
    if tensor.profile is None:
        if tensor.shape[0] not in (-1, batch):
            raise BatchTooLargeError(
                f"input {tensor.name!r} of this engine has a static batch of {tensor.shape[0]}, asked "
                f"{batch}. Fix: profile with --batch {tensor.shape[0]}, or export with a dynamic batch and "
                "build with --min/--opt/--max"
            )
        return (batch, *tensor.shape[1:])
    low, _, high = tensor.profile
    if not low[0] <= batch <= high[0]:
        raise BatchTooLargeError(
            f"batch {batch} is outside this engine's optimisation profile for {tensor.name!r} "
            f"(batch {low[0]} to {high[0]}). Fix: rebuild with `vitrt build --min {min(low[0], batch)} "
            f"--max {max(high[0], batch)}`, or profile with --batch {high[0]}"
        )
    return (batch, *high[1:])


class TensorRTRunner:
    """Runs a serialised engine (``model.plan``): numpy arrays in, numpy arrays out.

    batch: the batch to allocate for and run (default: the profile's opt batch, or the static batch);
    cuda_graph: capture one query's enqueue as a CUDA graph on first use and replay it (trtexec's
    ``--useCudaGraph``; falls back to plain enqueue, with a note in ``notes``, when TensorRT's enqueue
    cannot be captured); spin_wait: poll instead of blocking synchronisation; plugins: register vitrt's
    plugin creators first (needed when the engine holds vitrt's Python plugins); profile_layers: attach
    an ``IProfiler`` (``vitrt.deploy.trt_profiler``) so every enqueue reports each layer's time to
    ``layer_times`` (per-layer timing synchronises after each layer, so it turns the CUDA graph off and
    its query times are not the engine's latency: profile layers in a separate run, as trtexec does).
    """

    device = "cuda"  # the runner interface: a GPU runner (it times its own stream)
    runtime = "tensorrt"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        plugins: bool = True,
        batch: int | None = None,
        cuda_graph: bool = False,
        spin_wait: bool = False,
        profile_layers: bool = False,
        name: str = "tensorrt",
    ) -> None:
        from vitrt.plugins.cuda_tensorrt import import_tensorrt

        from . import cuda_runtime

        import_tensorrt()
        import tensorrt as trt

        self._rt = cuda_runtime
        cuda_runtime.cudart()  # a clear error without cuda-python, before anything is allocated
        if plugins:
            from vitrt.plugins import register_tensorrt_plugins

            register_tensorrt_plugins()
        self.name = name
        self.path = Path(path)
        self.plugins = plugins
        self._trt = trt
        self.spin_wait = spin_wait
        self.cuda_graph = cuda_graph
        self.notes: list[str] = []
        self.logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise VitrtError(
                f"TensorRT could not deserialise {self.path} (its log above says why). Fix: rebuild the "
                "engine on this machine; `vitrt check` compares its manifest with this machine"
            )
        self.engine: trt.ICudaEngine = engine
        context = engine.create_execution_context()
        if context is None:
            raise VitrtError(
                f"TensorRT could not create an execution context for {self.path} (out of memory?)"
            )
        self.context: trt.IExecutionContext = context
        self.layer_times: LayerTimeCollector | None = None
        if profile_layers:
            from .trt_profiler import LayerTimeCollector, make_layer_profiler

            self.layer_times = LayerTimeCollector()
            self.context.profiler = make_layer_profiler(self.layer_times)
            if cuda_graph:
                self.notes.append("per-layer profiling: timed without a CUDA graph")
                self.cuda_graph = cuda_graph = False
        self.tensors = [self._describe(engine.get_tensor_name(i)) for i in range(engine.num_io_tensors)]
        self.inputs = [t for t in self.tensors if t.is_input]
        self.outputs = [t for t in self.tensors if not t.is_input]
        self.stream: Stream = cuda_runtime.Stream()
        self._device: dict[str, DeviceBuffer] = {}
        self._host: dict[str, PinnedBuffer] = {}
        self._graph: Graph | None = None
        self._start = cuda_runtime.Event()
        self._end = cuda_runtime.Event()
        self.batch = 0
        self.set_batch(batch if batch is not None else self._default_batch())

    def _describe(self, name: str) -> IOTensor:
        trt = self._trt
        engine = self.engine
        shape = dims(engine.get_tensor_shape(name))
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        profile = None
        if is_input and -1 in shape:
            low, opt, high = engine.get_tensor_profile_shape(name, 0)
            profile = (dims(low), dims(opt), dims(high))
        return IOTensor(name, shape, dtype, is_input, profile)

    def _default_batch(self) -> int:
        first = self.inputs[0]
        if first.profile is not None:
            return int(first.profile[1][0])
        return first.shape[0] if first.shape[0] > 0 else 1

    @property
    def input_specs(self) -> list[IOTensor]:
        return list(self.inputs)

    def set_batch(self, batch: int) -> None:
        """Set every input's shape for ``batch``, (re)allocate the buffers, and drop a captured graph."""
        if batch == self.batch:
            return
        shapes = {t.name: input_shape(t, batch) for t in self.inputs}
        for t in self.inputs:
            if not self.context.set_input_shape(t.name, shapes[t.name]):
                raise VitrtError(f"TensorRT refused shape {shapes[t.name]} for input {t.name!r}")
        for t in self.outputs:
            shapes[t.name] = dims(self.context.get_tensor_shape(t.name))
        self._release_buffers()
        for t in self.tensors:
            host = self._rt.PinnedBuffer(shapes[t.name], np.dtype(t.dtype))
            self._host[t.name] = host
            self._device[t.name] = self._rt.DeviceBuffer(host.nbytes)
            self.context.set_tensor_address(t.name, self._device[t.name].ptr)
        self.batch = batch

    def prepare(self, feed: Feed) -> None:
        """Copy the inputs into pinned memory and enqueue their host-to-device copies."""
        batch = int(next(iter(feed.values())).shape[0])
        self.set_batch(batch)
        for t in self.inputs:
            if t.name not in feed:
                raise VitrtError(f"input {t.name!r} is missing from the feed (has {', '.join(feed)})")
            host = self._host[t.name]
            np.copyto(host.array, np.asarray(feed[t.name]).reshape(host.shape), casting="same_kind")
            self.stream.copy_to_device(self._device[t.name].ptr, host.ptr, host.nbytes)

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.ptr):
            raise VitrtError(f"TensorRT failed to enqueue {self.path} (its log above says why)")

    def enqueue(self, *, timed: bool = False) -> None:
        """Issue one query on the stream: the CUDA graph when captured, else ``execute_async_v3``.
        ``timed``: record events around it (``last_compute_ms`` after synchronisation)."""
        if self.cuda_graph and self._graph is None:
            self._capture()
        if timed:
            self._start.record(self.stream)
        if self._graph is not None:
            self._graph.launch()
        else:
            self._execute()
        if timed:
            self._end.record(self.stream)

    def _capture(self) -> None:
        # One plain enqueue first: TensorRT finishes shape-dependent set-up on the first enqueue after a
        # shape change, and that work (allocations, synchronisations) cannot be captured.
        self._execute()
        self.stream.synchronize()
        try:
            self._graph = self._rt.Graph(self.stream, self._execute)
        except self._rt.CudaError as err:
            self.cuda_graph = False
            self.notes.append(f"CUDA graph capture failed ({err}); timed without a graph")

    def synchronize(self) -> None:
        self.stream.synchronize(spin_wait=self.spin_wait)

    def last_compute_ms(self) -> float:
        """GPU time of the last ``enqueue(timed=True)``, in ms (CUDA events)."""
        return self._end.elapsed_ms(self._start)

    def fetch(self) -> dict[str, np.ndarray]:
        """Copy the outputs device -> pinned -> new numpy arrays (waits for the stream)."""
        for t in self.outputs:
            host = self._host[t.name]
            self.stream.copy_to_host(host.ptr, self._device[t.name].ptr, host.nbytes)
        self.synchronize()
        return {t.name: self._host[t.name].array.copy() for t in self.outputs}

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        self.prepare(feed)
        self.enqueue()
        return self.fetch()

    def _release_buffers(self) -> None:
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None
        for buffers in (self._device, self._host):
            for buffer in buffers.values():
                buffer.free()
            buffers.clear()

    def close(self) -> None:
        """Free the buffers, the graph and the stream (also done when the runner is collected)."""
        self._release_buffers()
        self.stream.destroy()

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
