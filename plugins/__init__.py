"""vitrt's plugin ops. Each op lives in one folder: spec, PyTorch reference, ONNX lowerings,
CUDA kernels and TensorRT plugin, and everything else imports it from there."""

from __future__ import annotations

from typing import Any


def register_tensorrt_plugins(registry: Any = None) -> list[Any]:
    """Register the TensorRT plugin creator of every vitrt op (``TokenFusion``,
    ``ScatterbrainAttention``) under its spec's namespace, so that TensorRT's ONNX parser builds vitrt's
    plugin nodes; call it before parsing or deserialising an engine that holds them.

    registry: a ``trt.IPluginRegistry`` (default: ``trt.get_plugin_registry()``). Idempotent per
    registry. Returns the registered creators. TensorRT is imported here, lazily: raises VitrtError
    naming the fix where it is missing.
    """
    import importlib

    from .cuda_tensorrt import import_tensorrt, register_creator
    from .lowering import OP_PACKAGES

    trt = import_tensorrt()
    registry = registry if registry is not None else trt.get_plugin_registry()
    creators = []
    for pkg in OP_PACKAGES:
        plugin = importlib.import_module(f"{pkg}.tensorrt_plugin")
        spec = importlib.import_module(f"{pkg}.spec")
        creators.append(register_creator(registry, plugin.create_creator(), spec.PLUGIN_NAMESPACE))
    return creators
