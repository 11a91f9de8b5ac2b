"""The CUDA runtime from Python through cuda-python (``cuda.bindings.runtime``): device and pinned host
buffers, a stream, events and CUDA graph capture, for the TensorRT runner.

Why cuda-python and not torch tensors: a deployed engine should not need torch (hundreds of MB) in the
process; cuda-python is a thin binding over the runtime API that TensorRT itself sits on, the stream and
pointers are the runtime's own, and pinned host memory is what makes asynchronous copies asynchronous
(a copy from pageable memory is staged and synchronous). pycuda users can pass their own pointers and
stream handle to ``TensorRTRunner`` instead.

Every call unpacks cuda-python's ``(error, *values)`` and raises ``CudaError`` naming the call; cuda-python
has no type stubs where vitrt is type-checked, so its module is typed ``Any``.
"""

from __future__ import annotations

import ctypes
import importlib
from typing import Any

import numpy as np

from vitrt.errors import VitrtError


class CudaError(VitrtError):
    """A CUDA runtime call failed; the message names the call and CUDA's error."""


def cudart() -> Any:
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (12.6+), else ``cuda.cudart``."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise VitrtError(
        "cuda-python is not installed: the TensorRT runner allocates its buffers and stream through it. "
        "Fix: pip install 'vitrt[cuda]'"
    )


def check(result: Any, call: str) -> Any:
    """The values of a cuda-python call's ``(error, *values)``; CudaError when error is not cudaSuccess."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        message = text.decode() if isinstance(text, bytes) else str(text)
        raise CudaError(f"{call} failed: {err!r} ({message})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class DeviceBuffer:
    """``nbytes`` of device memory (cudaMalloc), freed by ``free()`` or when collected."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        # cudaMalloc(0) returns a null pointer; keep one byte so every tensor has a distinct address.
        self.ptr = int(check(cudart().cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # interpreter shutdown: the context may be gone already
            pass


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) seen as a numpy array of ``shape`` / ``dtype``: the host side
    of asynchronous copies."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = int(check(cudart().cudaMallocHost(max(self.nbytes, 1)), "cudaMallocHost"))
        raw = memoryview((ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)).cast("B")
        self.array: np.ndarray = np.frombuffer(raw, dtype=np.uint8, count=self.nbytes).view(self.dtype)
        self.array = self.array.reshape(self.shape)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The first prod(shape) elements as an array of ``shape`` (a smaller batch than allocated)."""
        count = int(np.prod(shape, dtype=np.int64))
        return self.array.reshape(-1)[:count].reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = np.empty(0, self.dtype)
            check(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class Stream:
    """A non-blocking CUDA stream (does not synchronise with the legacy default stream)."""

    def __init__(self) -> None:
        rt = cudart()
        self.handle = check(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )

    @property
    def ptr(self) -> int:
        """The stream as the integer TensorRT's ``execute_async_v3`` takes."""
        return int(self.handle)

    def synchronize(self, *, spin_wait: bool = False) -> None:
        """Wait for the stream's work. ``spin_wait``: poll cudaStreamQuery (lower, steadier latency at the
        cost of a busy CPU core, trtexec's ``--useSpinWait``) instead of a blocking cudaStreamSynchronize."""
        rt = cudart()
        if not spin_wait:
            check(rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")
            return
        while True:
            (err,) = rt.cudaStreamQuery(self.handle)
            if err == rt.cudaError_t.cudaSuccess:
                return
            if err != rt.cudaError_t.cudaErrorNotReady:
                check((err,), "cudaStreamQuery")

    def copy_to_device(self, dst: int, src: int, nbytes: int) -> None:
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.handle), "cudaMemcpyAsync (host to device)")

    def copy_to_host(self, dst: int, src: int, nbytes: int) -> None:
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.handle), "cudaMemcpyAsync (device to host)")

    def destroy(self) -> None:
        if self.handle is not None:
            check(cudart().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class Event:
    """A CUDA event with timing, for GPU compute time (elapsed ms between two events on one stream)."""

    def __init__(self) -> None:
        self.handle = check(cudart().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(cudart().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds from ``start`` to this event (both recorded and complete)."""
        check(cudart().cudaEventSynchronize(self.handle), "cudaEventSynchronize")
        return float(check(cudart().cudaEventElapsedTime(start.handle, self.handle), "cudaEventElapsedTime"))


class Graph:
    """A CUDA graph captured from the work one call issues on ``stream``, replayed with ``launch()``: one
    launch instead of one per kernel, which is what trtexec's ``--useCudaGraph`` measures."""

    def __init__(self, stream: Stream, issue: Any) -> None:
        rt = cudart()
        # Thread-local capture mode: other threads' CUDA calls (a telemetry sampler, torch) are not captured
        # and do not invalidate the capture.
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
        try:
            issue()
        finally:
            graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        self.graph = graph
        self.exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self.stream = stream

    def launch(self) -> None:
        check(cudart().cudaGraphLaunch(self.exec, self.stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        rt = cudart()
        check(rt.cudaGraphExecDestroy(self.exec), "cudaGraphExecDestroy")
        check(rt.cudaGraphDestroy(self.graph), "cudaGraphDestroy")


def device_memory_used() -> int:
    """Bytes of device memory in use on the current device (total - free, every process)."""
    free, total = check(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(total) - int(free)
