"""Runners: one interface over the backends that execute a model (PyTorch, ONNX Runtime, TensorRT).

A runner maps named float32 arrays to named float32 arrays. Backends are imported lazily, so this
module imports on a machine without onnxruntime or tensorrt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from vitrt.errors import VitrtError

Feed = Mapping[str, np.ndarray]


class Runner(Protocol):
    """``infer(feed) -> outputs``: {input name: array} -> {output name: array}."""

    name: str

    def infer(self, feed: Feed) -> dict[str, np.ndarray]: ...


class TorchRunner:
    """Runs a PyTorch model (images -> logits) on CPU in float32 without autograd."""

    def __init__(self, model: nn.Module, name: str = "torch") -> None:
        self.model = model.eval()
        self.name = name

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(feed["images"])))
        return {"logits": logits.numpy()}


class OnnxRuntimeRunner:
    """Runs an ONNX file with ONNX Runtime's CPU provider.

    ``threads``: intra-op threads (None: ORT's default, one per core). ``custom_ops_library``:
    a shared library of vitrt's plugin ops for the plugin lowering (registered with the session).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        custom_ops_library: str | None = None,
        name: str = "onnxrt",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise VitrtError("onnxruntime is not installed: pip install 'vitrt[onnx]'") from err
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        if custom_ops_library is not None:
            options.register_custom_ops_library(custom_ops_library)
        self.name = name
        self.path = Path(path)
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

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        outputs = self.session.run(names, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        return dict(zip(names, outputs, strict=True))
