"""Runners: one interface over the backends that execute a model (PyTorch, ONNX Runtime, OpenVINO,
TensorRT).

A runner maps named arrays to named arrays (``infer``) and says what it takes (``input_specs``). For timing
it splits one query into ``prepare(feed)`` (host -> device copies; untimed by the profiler unless data
transfers are included), ``enqueue()`` (issue the computation), ``synchronize()`` (wait for it) and
``fetch()`` (device -> host copies of the outputs). Runners that compute on the host (ONNX Runtime,
OpenVINO, PyTorch on the CPU) compute in ``enqueue`` and do nothing in ``synchronize``
(``HostTimingMixin``). Backends are imported lazily, so this module imports on a machine without
onnxruntime, openvino or tensorrt. ``vitrt.deploy.open_runner`` opens any of them from a path or a name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from vitrt.errors import ConfigError, VitrtError

Feed = Mapping[str, np.ndarray]

ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}
"""ONNX Runtime's input type names -> numpy dtype names."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input: name, shape (ints; a string for a dynamic axis, e.g. "batch") and numpy dtype
    name ("float32")."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class Runner(Protocol):
    """``infer(feed) -> outputs``: {input name: array} -> {output name: array}; ``input_specs``; and the
    split of one query for timing: ``prepare(feed)``, ``enqueue()``, ``synchronize()``, ``fetch()``.

    Every runner also has a ``device`` attribute whose ``str()`` is "cpu" for runners that compute on
    the host and "cuda" / "cuda:N" for GPU runners (their work runs on torch's current CUDA stream, so
    CUDA events recorded there time it); ``runner_device(runner)`` reads it.
    """

    name: str

    @property
    def input_specs(self) -> list[TensorSpec]: ...

    def infer(self, feed: Feed) -> dict[str, np.ndarray]: ...

    def prepare(self, feed: Feed) -> None: ...

    def enqueue(self) -> None: ...

    def synchronize(self) -> None: ...

    def fetch(self) -> dict[str, np.ndarray]: ...


class FeedError(VitrtError):
    """Inputs whose names, shapes or dtypes a runner does not take (``runner.input_specs`` says which)."""


def feed_problem(specs: list[TensorSpec], feed: Feed, *, dtypes: bool = True) -> str | None:
    """What in ``feed`` does not match ``specs`` (missing or unknown names, rank, a fixed axis's size, the
    dtype with ``dtypes``), or None when it matches. Cheap: dict and shape checks only."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feed]
    unknown = [k for k in feed if k not in names]
    if missing or unknown:
        return f"inputs {list(feed)} given, but it takes {names}"
    for spec in specs:
        x = feed[spec.name]
        shape = getattr(x, "shape", None)
        if shape is None:
            return f"input {spec.name!r} is a {type(x).__name__}, not a numpy array"
        if len(shape) != len(spec.shape):
            return f"input {spec.name!r} has shape {list(shape)}: rank {len(shape)}, not {len(spec.shape)}"
        for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
            if isinstance(want, int) and want > 0 and got != want:
                what = "the batch axis" if axis == 0 else f"axis {axis}"
                return f"input {spec.name!r} has shape {list(shape)}: {what} is {got}, the model takes {want}"
        if dtypes and spec.dtype in ORT_TYPES.values() and np.dtype(x.dtype) != np.dtype(spec.dtype):
            return f"input {spec.name!r} is {np.dtype(x.dtype).name}, the model takes {spec.dtype}"
    return None


def check_feed(name: str, specs: list[TensorSpec], feed: Feed, *, dtypes: bool = True) -> None:
    """FeedError naming the problem (``feed_problem``) and every input the runner takes; nothing when the
    feed matches."""
    problem = feed_problem(specs, feed, dtypes=dtypes)
    if problem is not None:
        takes = "; ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in specs)
        raise FeedError(f"{name} cannot run this feed: {problem}. It takes (runner.input_specs): {takes}")


def check_threads(threads: Any) -> None:
    """ConfigError unless ``threads`` is None or a positive integer (intra-op threads)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer (intra-op threads), got {threads!r}")


def runner_device(runner: object) -> str:
    """``str(runner.device)``: "cpu" (also for a runner without the attribute), "cuda", "cuda:N"."""
    return str(getattr(runner, "device", "cpu"))


class HostTimingMixin:
    """The timing split for runners that compute on the host: ``prepare`` keeps C-contiguous copies of
    the feed, ``enqueue`` runs ``infer`` on them, ``synchronize`` does nothing, ``fetch`` returns the
    outputs of the last ``enqueue``."""

    device = "cpu"
    _prepared: dict[str, np.ndarray] | None = None
    _outputs: dict[str, np.ndarray] | None = None

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def prepare(self, feed: Feed) -> None:
        self._prepared = {k: np.ascontiguousarray(v) for k, v in feed.items()}

    def enqueue(self) -> None:
        if self._prepared is None:
            raise VitrtError("enqueue() before prepare(feed): give the runner its inputs first")
        self._outputs = self.infer(self._prepared)

    def synchronize(self) -> None:
        return None

    def fetch(self) -> dict[str, np.ndarray]:
        if self._outputs is None:
            raise VitrtError("fetch() before enqueue(): nothing has run yet")
        return self._outputs


class TorchRunner(HostTimingMixin):
    """Runs a PyTorch model (images -> logits) on CPU in float32 without autograd.

    input_size: (channels, height, width) of ``images`` for ``input_specs`` (None: unknown spatial axes).
    """

    def __init__(
        self, model: nn.Module, name: str = "torch", *, input_size: tuple[int, int, int] | None = None
    ) -> None:
        self.model = model.eval()
        self.name = name
        self.input_size = input_size

    @property
    def input_specs(self) -> list[TensorSpec]:
        """One input, ``images`` [batch, C, H, W] float32."""
        shape: tuple[int | str, ...] = ("batch", *(self.input_size or (3, "height", "width")))
        return [TensorSpec("images", shape, "float32")]

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(feed["images"])))
        return {"logits": logits.numpy()}


class OnnxRuntimeRunner(HostTimingMixin):
    """Runs an ONNX file with ONNX Runtime's CPU provider.

    ``threads``: intra-op threads (None: ORT's default, one per core). ``custom_ops_library``:
    a shared library of vitrt's plugin ops for the plugin lowering (registered with the session).
    ``profile_prefix``: write ONNX Runtime's per-node profile (``enable_profiling``) under this path prefix;
    ``session.end_profiling()`` returns the file (``vitrt.deploy.layer_runs``).
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        custom_ops_library: str | None = None,
        profile_prefix: str | None = None,
        name: str = "onnxrt",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise VitrtError("onnxruntime is not installed: pip install 'vitrt[onnx]'") from err
        check_threads(threads)
        options = ort.SessionOptions()
        # x86 CPUs without VNNI multiply int8 u8 x s8 with VPMADDUBSW, whose int16 pair sums saturate: ORT's
        # QDQ int8 GEMMs were off by up to 1.0 on such a CPU (tests/calibration/test_qdq.py). This promotes
        # them to int16 there (slower, exact); on other CPUs ORT ignores it.
        options.add_session_config_entry("session.x64quantprecision", "1")
        if threads is not None:
            options.intra_op_num_threads = threads
        if custom_ops_library is not None:
            options.register_custom_ops_library(custom_ops_library)
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        self.name = name
        self.path = Path(path)
        self.threads = threads
        model: str | bytes = str(path)
        if custom_ops_library is None:
            model = self._with_plugin_kernels(str(path), options)
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types (Fail, InvalidGraph, NoSuchFile...)
            raise VitrtError(f"ONNX Runtime cannot load {path}: {str(err).strip().splitlines()[-1]}") from err

    @staticmethod
    def _with_plugin_kernels(path: str, options: Any) -> str | bytes:
        """The model to load: the file itself, or, when it holds vitrt plugin nodes, a copy whose
        nodes ONNX Runtime runs with vitrt's CPU kernels (``vitrt.plugins.lowering``)."""
        import onnx

        from vitrt.plugins.lowering import has_plugin_nodes, ort_custom_ops_library, to_onnxruntime

        try:
            proto = onnx.load(path, format="protobuf", load_external_data=False)
        except Exception:  # not ONNX: let ONNX Runtime report the problem in its own words
            return path
        if not has_plugin_nodes(proto):
            return path
        options.register_custom_ops_library(ort_custom_ops_library())
        full = onnx.load(path, format="protobuf")
        return bytes(to_onnxruntime(full).SerializeToString())

    @property
    def input_shapes(self) -> dict[str, list[Any]]:
        """Input name -> shape (ints, or strings for dynamic axes)."""
        return {i.name: list(i.shape) for i in self.session.get_inputs()}

    @property
    def input_specs(self) -> list[TensorSpec]:
        """The session's inputs; ORT's type "tensor(float)" is reported as "float32"."""
        return [
            TensorSpec(i.name, tuple(i.shape), ORT_TYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        ]

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        try:
            outputs = self.session.run(names, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        except Exception:  # ORT's ValueError / InvalidArgument: say which input is wrong, with the specs
            check_feed(self.name, self.input_specs, feed)  # checked only here: nothing on the hot path
            raise
        return dict(zip(names, outputs, strict=True))
