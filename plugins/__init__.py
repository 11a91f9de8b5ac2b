"""vitrt's plugin ops. Each op lives in one folder: spec, PyTorch reference, ONNX lowerings,
CUDA kernels and TensorRT plugin, and everything else imports it from there.

Importing this package is cheap (no torch, onnx or tensorrt): the TensorRT plugin path imports it on
machines that have only some of vitrt's dependencies. The op folders are listed once, in
``OP_PACKAGES``, and imported on demand.
"""

from __future__ import annotations

if __name__.partition(".")[0] != "vitrt":  # the repository root on sys.path exposes the folder too
    raise ImportError(f"import vitrt.{__name__}, not {__name__}: vitrt's stages have one import name")

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitrt.models.base import ClassTokenViT

OP_PACKAGES = ("vitrt.plugins.token_fusion", "vitrt.plugins.lsh_attention")
"""Every op folder. Each has ``spec``, ``integration`` (its ``create_model`` option), ``onnx_lowering``
(torch op + ONNX schema) and ``tensorrt_plugin`` modules, imported on demand by the functions here and
in ``vitrt.plugins.lowering``."""


def load_model_options() -> None:
    """Import every op's ``integration`` module, which registers the ``create_model`` option it
    provides (``fusion=``, ``attention=``) with ``vitrt.models``. Idempotent."""
    for pkg in OP_PACKAGES:
        importlib.import_module(f"{pkg}.integration")


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    img_size: int = 224,
    fusion: Any = None,
    attention: Any = None,
    **kwargs: Any,
) -> ClassTokenViT:
    """``vitrt.models.create_model`` with every op's options loaded: a registered model with fresh
    weights, its blocks changed as ``fusion`` (token fusion: "mctf", "mctf-fast", "tome", a dict)
    and ``attention`` ("dense", "scatterbrain", "lsh", "performer", a dict) say, in eval mode.

    ``name``: see ``vitrt.list_models()``; ``img_size``: square input side in pixels;
    ``num_classes``: classifier outputs (0: features); ``kwargs``: architecture overrides
    (``drop_path_rate``, ``qk_scale``...). Raises ConfigError for an unknown name or a bad option.
    This is ``vitrt.create_model``.
    """
    from vitrt.models import create_model as build

    load_model_options()
    return build(
        name, num_classes=num_classes, img_size=img_size, fusion=fusion, attention=attention, **kwargs
    )


def register_tensorrt_plugins(registry: Any = None) -> list[Any]:
    """Register the TensorRT plugin creator of every vitrt op (``TokenFusion``,
    ``ScatterbrainAttention``) under its spec's namespace, so that TensorRT's ONNX parser builds vitrt's
    plugin nodes; call it before parsing or deserialising an engine that holds them.

    registry: a ``trt.IPluginRegistry`` (default: ``trt.get_plugin_registry()``). Idempotent per
    registry. Returns the registered creators. TensorRT is imported here, lazily: raises VitrtError
    naming the fix where it is missing.
    """
    from .cuda_tensorrt import import_tensorrt, register_creator

    trt = import_tensorrt()
    registry = registry if registry is not None else trt.get_plugin_registry()
    creators = []
    for pkg in OP_PACKAGES:
        plugin = importlib.import_module(f"{pkg}.tensorrt_plugin")
        spec = importlib.import_module(f"{pkg}.spec")
        creators.append(register_creator(registry, plugin.create_creator(), spec.PLUGIN_NAMESPACE))
    return creators
