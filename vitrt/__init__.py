"""vitrt: an edge deployment compiler for efficient vision transformers.

The public Python API, one plain function per stage with the options of its ``vitrt`` command:

>>> import vitrt
>>> model = vitrt.create_model("deit_small_patch16_224", fusion="mctf")
>>> vitrt.load_checkpoint(model, "deit_small.pth")
>>> vitrt.export_onnx("deit_small_patch16_224", "deit_s.onnx", fusion="mctf", checkpoint="deit_small.pth")
>>> report, _, _ = vitrt.verify_onnx("deit_s.onnx")
>>> vitrt.calibrate("deit_s.onnx", "images/", "deit_s.int8.onnx", error_budget=0.005)
>>> vitrt.fp16("deit_s.int8.onnx", "deit_s.int8.fp16.onnx")   # INT8 + FP16 with float32 islands
>>> vitrt.build("deit_s.int8.onnx", "deit_s.cpu/", target="cpu")   # ONNX Runtime or OpenVINO, the faster
>>> vitrt.bundle("deit_s.int8.fp16.onnx", "bundle/", target="jetson-orin-nano")  # the device builds it
>>> runner = vitrt.load_artifact("deit_s.cpu/")                  # manifest checked against this machine
>>> vitrt.compile("deit_small_patch16_224", "out/", target="cpu", precision="int8", calib_data="images/")

The stage packages live at the repository's top level (``compiler/ plugins/ calibration/ deploy/
models/``) and are importable only as ``vitrt.<stage>``: ``vitrt/<stage>`` is a symbolic link to each.
Below every stage sit ``vitrt.errors`` (the exception types), ``vitrt.fileio`` (atomic file writing,
cache folders) and ``vitrt.logs`` (logging).

Importing ``vitrt`` is cheap: each function is imported from its stage on first use (PEP 562), so
``import vitrt`` loads neither torch nor onnx, and ``vitrt.plugins.cuda_launcher`` (say) can be
imported without the stages it does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vitrt.errors import CheckpointError, ConfigError, VitrtError

if TYPE_CHECKING:  # the real signatures, for mypy and IDEs; at run time __getattr__ imports them
    from vitrt.calibration.calibrate import calibrate_onnx as calibrate
    from vitrt.calibration.fp16 import fp16_onnx as fp16
    from vitrt.calibration.recipe import PrecisionRecipe, read_recipe
    from vitrt.compiler.build import build
    from vitrt.compiler.build_plan import BuildPlan, plan_build
    from vitrt.compiler.bundle import bundle
    from vitrt.compiler.compile import compile_model as compile
    from vitrt.compiler.export import export_onnx
    from vitrt.compiler.inspect import model_card
    from vitrt.compiler.manifest import check_artifact
    from vitrt.compiler.prepare import prepare_onnx as prepare
    from vitrt.compiler.targets import targets
    from vitrt.compiler.tune import tune
    from vitrt.compiler.verify import verify_onnx
    from vitrt.deploy.artifact import load_artifact
    from vitrt.deploy.openvino_runner import OpenVinoRunner
    from vitrt.deploy.predict import run
    from vitrt.deploy.profiler import profile_runner
    from vitrt.deploy.profiling import profile, profile_artifact
    from vitrt.deploy.report import ProfileReport, read_report
    from vitrt.deploy.runners import OnnxRuntimeRunner
    from vitrt.deploy.sources import open_runner
    from vitrt.deploy.tensorrt_runner import TensorRTRunner
    from vitrt.deploy.torch_profile import profile_torch
    from vitrt.deploy.torch_runner import TorchModelRunner
    from vitrt.models import list_models, load_checkpoint
    from vitrt.plugins import create_model, register_tensorrt_plugins

__version__ = "0.1.0"

_API: dict[str, tuple[str, str]] = {
    # models (+ the plugin ops' options)             `vitrt list-models`, `vitrt inspect`
    "create_model": ("vitrt.plugins", "create_model"),
    "list_models": ("vitrt.models", "list_models"),
    "load_checkpoint": ("vitrt.models", "load_checkpoint"),
    "model_card": ("vitrt.compiler.inspect", "model_card"),
    # stages                        `vitrt export`, `verify`, `prepare`, `calibrate`, `fp16`
    "export_onnx": ("vitrt.compiler.export", "export_onnx"),
    "verify_onnx": ("vitrt.compiler.verify", "verify_onnx"),
    "calibrate": ("vitrt.calibration.calibrate", "calibrate_onnx"),
    "fp16": ("vitrt.calibration.fp16", "fp16_onnx"),
    "prepare": ("vitrt.compiler.prepare", "prepare_onnx"),
    "PrecisionRecipe": ("vitrt.calibration.recipe", "PrecisionRecipe"),
    "read_recipe": ("vitrt.calibration.recipe", "read_recipe"),
    # engines and CPU artifacts for a target, bundles for a device          `vitrt targets`, `build`, `bundle`
    "targets": ("vitrt.compiler.targets", "targets"),
    "build": ("vitrt.compiler.build", "build"),
    "bundle": ("vitrt.compiler.bundle", "bundle"),
    "plan_build": ("vitrt.compiler.build_plan", "plan_build"),
    "BuildPlan": ("vitrt.compiler.build_plan", "BuildPlan"),
    "check_artifact": ("vitrt.compiler.manifest", "check_artifact"),  # `vitrt check`
    # the whole chain, stages cached, with a report                                    `vitrt compile`
    "compile": ("vitrt.compiler.compile", "compile_model"),
    # search fusion / attention / precision under a latency budget, trials on Ray      `vitrt tune`
    "tune": ("vitrt.compiler.tune", "tune"),
    # runners: an artifact (manifest checked first), or a model file on one runtime
    "load_artifact": ("vitrt.deploy.artifact", "load_artifact"),
    "OnnxRuntimeRunner": ("vitrt.deploy.runners", "OnnxRuntimeRunner"),
    "OpenVinoRunner": ("vitrt.deploy.openvino_runner", "OpenVinoRunner"),
    "TensorRTRunner": ("vitrt.deploy.tensorrt_runner", "TensorRTRunner"),
    "open_runner": ("vitrt.deploy.sources", "open_runner"),  # any of the above from a path or a model name
    # classify images (the model's own preprocessing)                                      `vitrt run`
    "run": ("vitrt.deploy.predict", "run"),
    # latency with trtexec's definitions, reports and plots                            `vitrt profile`
    "profile": ("vitrt.deploy.profiling", "profile"),
    "profile_artifact": ("vitrt.deploy.profiling", "profile_artifact"),
    "profile_runner": ("vitrt.deploy.profiler", "profile_runner"),
    "ProfileReport": ("vitrt.deploy.report", "ProfileReport"),
    "read_report": ("vitrt.deploy.report", "read_report"),
    # runtime: before TensorRT parses or deserialises a model with vitrt's plugin nodes
    "register_tensorrt_plugins": ("vitrt.plugins", "register_tensorrt_plugins"),
    # PyTorch on the CPU or a CUDA GPU (vitrt's kernels), and its latency   `vitrt profile`
    "TorchModelRunner": ("vitrt.deploy.torch_runner", "TorchModelRunner"),
    "profile_torch": ("vitrt.deploy.torch_profile", "profile_torch"),
}
"""Public name -> (module, attribute), imported on first access."""

_STAGES = ("calibration", "compiler", "deploy", "models", "plugins")
_SHARED = ("errors", "fileio", "logs")

__all__ = [
    "BuildPlan",
    "CheckpointError",
    "ConfigError",
    "OnnxRuntimeRunner",
    "OpenVinoRunner",
    "PrecisionRecipe",
    "ProfileReport",
    "TensorRTRunner",
    "TorchModelRunner",
    "VitrtError",
    "__version__",
    "build",
    "bundle",
    "calibrate",
    "check_artifact",
    "compile",
    "create_model",
    "export_onnx",
    "fp16",
    "list_models",
    "load_artifact",
    "load_checkpoint",
    "model_card",
    "open_runner",
    "plan_build",
    "prepare",
    "profile",
    "profile_artifact",
    "profile_runner",
    "profile_torch",
    "read_recipe",
    "read_report",
    "register_tensorrt_plugins",
    "run",
    "targets",
    "tune",
    "verify_onnx",
]


def __getattr__(name: str) -> Any:
    """Import a public function (or a stage package, ``vitrt.models``...) on first access."""
    if name in _API:
        module, attribute = _API[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _STAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    """The public API, the stage packages and the shared modules (not this module's own imports)."""
    return sorted({*__all__, *_STAGES, *_SHARED})
