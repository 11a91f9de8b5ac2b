"""A TensorRT engine behind vitrt's runner interface (``infer(feed) -> outputs``), on torch's CUDA stream.

The engine is deserialised after ``vitrt.register_tensorrt_plugins()`` when it holds vitrt's Python plugins
(they are restored from their serialised fields by vitrt's creators), and after the manifest check of
``vitrt.deploy.artifact.load_artifact`` has said the TensorRT version, GPU and plugin kernels fit. Device
buffers are torch CUDA tensors (torch is vitrt's dependency; the kernels and TensorRT share its stream).
TensorRT is imported inside the constructor, so this module imports without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import VitrtError

from .runners import Feed, TensorSpec


class TensorRTRunner:
    """Runs a serialised engine (``model.plan``): numpy arrays in, numpy arrays out, shapes set per call
    within the engine's optimisation profile. ``plugins``: register vitrt's plugin creators first.

    Timing split: ``prepare`` copies the feed to device buffers (host -> device) and sets the shapes,
    ``enqueue`` calls ``execute_async_v3`` on torch's current stream, ``synchronize`` waits for that stream,
    ``fetch`` copies the outputs back (device -> host). No CUDA graph here (the cuda-python rewrite adds it).
    """

    device = "cuda"
    runtime = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], *, plugins: bool = True, name: str = "tensorrt") -> None:
        import torch

        from vitrt.plugins.cuda_tensorrt import import_tensorrt

        import_tensorrt()
        import tensorrt as trt

        if not torch.cuda.is_available():
            raise VitrtError("a TensorRT engine needs a CUDA GPU, and torch sees none here")
        if plugins:
            from vitrt.plugins import register_tensorrt_plugins

            register_tensorrt_plugins()
        self.name = name
        self.path = Path(path)
        self._trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise VitrtError(
                f"TensorRT could not deserialise {self.path} (its log above says why). Fix: rebuild the "
                "engine "
                "on this machine; `vitrt.deploy.artifact.load_artifact` checks the manifest first"
            )
        self.engine: trt.ICudaEngine = engine
        self.context: trt.IExecutionContext = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._buffers: dict[str, Any] = {}

    @property
    def input_specs(self) -> list[TensorSpec]:
        """The engine's inputs; -1 (a dynamic axis within the optimisation profile) is reported as "?"."""
        trt = self._trt
        specs = []
        for name in self.inputs:
            dims = self.engine.get_tensor_shape(name)
            shape = tuple(int(dims[k]) if int(dims[k]) >= 0 else "?" for k in range(len(dims)))
            specs.append(
                TensorSpec(name, shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name)
            )
        return specs

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        self.prepare(feed)
        self.enqueue()
        self.synchronize()
        return self.fetch()

    def prepare(self, feed: Feed) -> None:
        """Copy ``feed`` to device buffers, set the input shapes, allocate the outputs (synchronised)."""
        import torch

        trt = self._trt
        keep: dict[str, Any] = {}
        for name in self.inputs:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            tensor = torch.from_numpy(np.ascontiguousarray(feed[name], dtype=dtype)).cuda()
            keep[name] = tensor
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        for name in self.outputs:
            dims = self.context.get_tensor_shape(name)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = [dims[k] for k in range(len(dims))]
            keep[name] = torch.empty(shape, dtype=getattr(torch, dtype.name), device="cuda")
            self.context.set_tensor_address(name, keep[name].data_ptr())
        torch.cuda.current_stream().synchronize()
        self._buffers = keep

    def enqueue(self) -> None:
        """``execute_async_v3`` on torch's current stream (returns before the engine finishes)."""
        import torch

        if not self._buffers:
            raise VitrtError("enqueue() before prepare(feed): give the runner its inputs first")
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise VitrtError(f"TensorRT failed to run {self.path} (its log above says why)")

    def synchronize(self) -> None:
        import torch

        torch.cuda.current_stream().synchronize()

    def fetch(self) -> dict[str, np.ndarray]:
        """The outputs of the last ``enqueue`` as numpy (device -> host)."""
        return {name: self._buffers[name].cpu().numpy() for name in self.outputs}
