"""OpenVINO on the CPU behind vitrt's runner interface (``infer(feed) -> outputs``).

OpenVINO reads ONNX files (FP32, vitrt's Q/DQ INT8 as they are, float16 graphs) and its own IR
(``model.xml`` + ``model.bin``, what ``vitrt build --target cpu --runtime openvino`` saves). Its CPU plugin
decides the *inference* precision separately from the file: on CPUs with AVX512_BF16 or AMX it computes
in bf16 unless told otherwise, which changes both speed and numerics, so vitrt always sets
``INFERENCE_PRECISION_HINT`` explicitly (default f32) and records it. It cannot run vitrt's plugin nodes
(``vitrt::TokenFusion`` / ``ScatterbrainAttention``): export with ``--lowering portable`` for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import VitrtError

from .runners import Feed, HostTimingMixin, TensorSpec, check_feed, check_threads

INFERENCE_PRECISIONS = {"f32": "f32", "bf16": "bf16"}
"""vitrt's names -> OpenVINO's INFERENCE_PRECISION_HINT values."""


def import_openvino() -> Any:
    """The ``openvino`` module; VitrtError naming the install otherwise (typed Any: no stubs)."""
    try:
        import openvino
    except ImportError as err:
        raise VitrtError(
            f"OpenVINO is not installed ({err}). Fix: pip install 'vitrt[openvino]', or --runtime onnxruntime"
        ) from err
    return openvino


def check_no_plugin_nodes(path: str | os.PathLike[str]) -> None:
    """VitrtError when the ONNX file at ``path`` holds vitrt plugin nodes, which OpenVINO cannot run."""
    import onnx

    from vitrt.plugins.lowering import DOMAIN

    proto = onnx.load(str(path), format="protobuf", load_external_data=False)
    ops = sorted({n.op_type for n in proto.graph.node if n.domain == DOMAIN})
    if ops:
        raise VitrtError(
            f"{path} holds vitrt plugin nodes ({', '.join(ops)}), which only TensorRT and ONNX Runtime "
            "(through "
            "Python ops) run; OpenVINO cannot. Fix: `vitrt export MODEL --lowering portable` (then "
            "calibrate / "
            "fp16 that file), or --runtime onnxruntime"
        )


class OpenVinoRunner(HostTimingMixin):
    """Runs an ONNX file or an OpenVINO IR (``.xml``) on OpenVINO's CPU plugin.

    threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, every core); inference_precision: "f32"
    or "bf16" (``INFERENCE_PRECISION_HINT``; set explicitly, see the module docstring). Latency-oriented
    (``PERFORMANCE_HINT`` LATENCY: one stream, as a batch-1 deployment runs). Inputs and outputs are named
    as in the ONNX file.
    """

    runtime = "openvino"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        inference_precision: str = "f32",
        name: str = "openvino",
    ) -> None:
        check_threads(threads)
        ov = import_openvino()
        if inference_precision not in INFERENCE_PRECISIONS:
            raise VitrtError(
                f"inference precision {inference_precision!r} is not one of {', '.join(INFERENCE_PRECISIONS)}"
            )
        self.path = Path(path)
        self.name = name
        self.inference_precision = inference_precision
        self.threads = threads
        if self.path.suffix == ".onnx":
            check_no_plugin_nodes(self.path)
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[inference_precision],
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        except Exception as err:  # OpenVINO raises RuntimeError subclasses with long C++ messages
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise VitrtError(f"OpenVINO cannot load {path}: {first}") from err
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    @property
    def effective_inference_precision(self) -> str:
        """The precision OpenVINO compiled for ("f32", "bf16"): the hint, unless the CPU lacks it."""
        return str(self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string())

    @property
    def input_shapes(self) -> dict[str, list[Any]]:
        """Input name -> shape (ints, or "?" for a dynamic axis)."""
        shapes = {}
        for port in self.compiled.inputs:
            dims = port.get_partial_shape()
            shapes[port.get_any_name()] = [d.get_length() if d.is_static else "?" for d in dims]
        return shapes

    @property
    def input_specs(self) -> list[TensorSpec]:
        """The compiled model's inputs ("?" for a dynamic axis), dtypes as numpy names."""
        shapes = self.input_shapes
        return [
            TensorSpec(
                port.get_any_name(),
                tuple(shapes[port.get_any_name()]),
                np.dtype(port.get_element_type().to_dtype()).name,
            )
            for port in self.compiled.inputs
        ]

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        try:
            result = self.request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        except Exception:  # OpenVINO's RuntimeError: say which input is wrong, with the specs
            check_feed(self.name, self.input_specs, feed)
            raise
        by_name = {port.get_any_name(): value for port, value in result.items()}
        return {name: np.array(by_name[name], copy=True) for name in self.output_names}
