"""Applying a BuildPlan with TensorRT: parse the ONNX, configure the builder as the plan says, build, and
describe the engine. Kept thin on purpose: every decision is in the plan (``vitrt.compiler.build_plan``),
checked by CPU tests; this module only turns plan fields into TensorRT calls of the API common to 10.x and
11.x (the plan never names a 10.x-only flag for 11.x).

TensorRT is imported inside the functions (typed by tensorrt-stubs for mypy), so this module imports on
machines without it. ``parse_errors`` and ``onnx_node_names`` are pure and tested with recorded strings.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_write_bytes

from .build_plan import BuildPlan, LayerConstraint

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

ENGINE_NAME = "model.plan"
LAYERS_NAME = "layers.json"
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]*)\]")


class EngineBuildError(VitrtError):
    """TensorRT could not parse the ONNX file or build the engine; the message names the node and the fix."""


@dataclass(frozen=True)
class ParserError:
    """One ONNX parser error as data: the node's name and op type, TensorRT's description and code."""

    node: str
    op_type: str
    description: str
    code: str = ""


@dataclass(frozen=True)
class EngineInfo:
    """What a build produced: the engine's IO tensors (name, mode, shape with -1 for dynamic axes, dtype),
    its size in bytes, the build's wall time in s, layer constraints matched, and the files written."""

    io: list[dict[str, Any]]
    engine_bytes: int
    seconds: float
    constraints_matched: int = 0
    files: list[str] = field(default_factory=list)


def explain_parser_error(error: ParserError, plugin_names: Sequence[str] = ()) -> str:
    """A parser error as one line with the node and the fix."""
    where = f"node {error.node!r} ({error.op_type})" if error.node else "the model"
    text = error.description.strip()
    if error.op_type in plugin_names or "plugin" in text.lower():
        fix = (
            "vitrt's plugin creators must be registered before parsing (vitrt.register_tensorrt_plugins(); "
            "`vitrt build` does it); check `vitrt doctor` for the kernels, or export with --lowering portable"
        )
    elif "importer" in text.lower() or "unsupported" in text.lower() or "not supported" in text.lower():
        fix = (
            f"this TensorRT cannot import {error.op_type}: run `vitrt prepare` on the file (opset >= 17, "
            "fused "
            "LayerNorm / GELU), re-export with --opset 18, or use a newer TensorRT"
        )
    elif "external" in text.lower() or "weights" in text.lower():
        fix = "keep the .onnx.data file beside the .onnx file (its weights live there)"
    else:
        fix = "check the node with `vitrt verify` on ONNX Runtime; run with -v for TensorRT's log"
    return f"{where}: {text}" + (f" [{error.code}]" if error.code else "") + f". Fix: {fix}"


def onnx_node_names(metadata: str) -> list[str]:
    """The ONNX node names in a layer's metadata (``[ONNX Layer: name]``, written by TensorRT's ONNX parser
    since 10.0): how layers map back to vitrt's node names (module paths)."""
    return _ONNX_LAYER.findall(metadata or "")


def _trt() -> Any:
    from vitrt.plugins.cuda_tensorrt import import_tensorrt

    return import_tensorrt()


def _member(enum: Any, name: str, what: str, version: str) -> Any:
    """``enum.<name>``; EngineBuildError when this TensorRT lacks it (a plan made for another version)."""
    try:
        return getattr(enum, name)
    except AttributeError:
        raise EngineBuildError(
            f"TensorRT {version} has no {what} {name}: the plan was made for another TensorRT version. "
            "Fix: plan "
            "again on this machine (`vitrt build` does)"
        ) from None


def create_network(builder: trt.Builder, plan: BuildPlan) -> trt.INetworkDefinition:
    """A network with the plan's creation flags (STRONGLY_TYPED on 10.x when asked; none on 11.x)."""
    import tensorrt as trt

    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(_member(trt.NetworkDefinitionCreationFlag, name, "network flag", trt.__version__))
    return builder.create_network(flags)


def parse_onnx(parser: trt.OnnxParser, path: Path, plan: BuildPlan) -> None:
    """Parse ``path`` (its external weights resolved beside it); EngineBuildError listing every error."""
    if parser.parse_from_file(str(path)):
        return
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        errors.append(ParserError(str(e.node_name()), str(e.node_operator()), str(e.desc()), str(e.code())))
    lines = "\n".join(f"  - {explain_parser_error(e, plan.plugins)}" for e in errors)
    raise EngineBuildError(f"TensorRT's ONNX parser rejected {path.name}:\n{lines}")


def apply_layer_constraints(network: trt.INetworkDefinition, constraints: Sequence[LayerConstraint]) -> int:
    """Set layer precision and float output types of every layer whose ``[ONNX Layer: name]`` names a
    constrained node (TensorRT 10.x weak typing; the plan lists none for 11.x). Returns how many of the
    nodes matched a layer; a node the parser folded away (a Cast of a constant) matches none."""
    import tensorrt as trt

    wanted = {c.node: c for c in constraints}
    types = {"float32": trt.float32, "float16": trt.float16}
    matched: set[str] = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for node in onnx_node_names(layer.metadata):
            c = wanted.get(node)
            if c is None:
                continue
            layer.precision = types[c.precision]
            for k in range(layer.num_outputs):
                if layer.get_output(k).dtype in (trt.float32, trt.float16):  # never retype shapes or indices
                    layer.set_output_type(k, types[c.output_type])
            matched.add(node)
    if constraints and not matched:
        raise EngineBuildError(
            "no layer carries [ONNX Layer: ...] metadata matching the keep-list, so the float32 islands "
            "cannot "
            "be constrained. Fix: TensorRT >= 10.0's ONNX parser, or --strongly-typed (precision from the "
            "graph)"
        )
    return len(matched)


def configure(
    builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig, plan: BuildPlan
) -> int:
    """Apply the plan's builder settings to ``config``; returns the layer constraints matched."""
    import tensorrt as trt

    version = trt.__version__
    for name in plan.builder_flags:
        config.set_flag(_member(trt.BuilderFlag, name, "builder flag", version))
    for pool, size in plan.memory_pools.items():
        config.set_memory_pool_limit(_member(trt.MemoryPoolType, pool, "memory pool", version), size)
    config.builder_optimization_level = plan.optimization_level
    config.profiling_verbosity = _member(
        trt.ProfilingVerbosity, plan.profiling_verbosity, "profiling verbosity", version
    )
    config.hardware_compatibility_level = _member(
        trt.HardwareCompatibilityLevel, plan.hardware_compatibility, "hardware compatibility level", version
    )
    if plan.device == "DLA" and plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    if plan.profiles:
        profile = builder.create_optimization_profile()
        for p in plan.profiles:
            profile.set_shape(p.input, trt.Dims(list(p.min)), trt.Dims(list(p.opt)), trt.Dims(list(p.max)))
        config.add_optimization_profile(profile)
        if plan.calibration_cache:
            config.set_calibration_profile(profile)
    return apply_layer_constraints(network, plan.layer_constraints)


def _io(engine: trt.ICudaEngine) -> list[dict[str, Any]]:
    import numpy as np
    import tensorrt as trt

    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        dims = engine.get_tensor_shape(name)
        io.append({"name": name, "mode": mode, "shape": [dims[k] for k in range(len(dims))], "dtype": dtype})
    return io


def build_engine(plan: BuildPlan, onnx_path: Path, out_dir: Path, *, verbose: bool = False) -> EngineInfo:
    """Build ``onnx_path`` as ``plan`` says into ``out_dir`` (``model.plan`` and ``layers.json``, the engine
    inspector's per-layer JSON: DETAILED verbosity keeps each layer's ONNX node names, so per-layer profiles
    map back to modules). Loads and updates the plan's timing cache. Raises EngineBuildError."""
    _trt()  # VitrtError naming the install where TensorRT is missing
    import tensorrt as trt

    if int(trt.__version__.split(".")[0]) != plan.tensorrt_major:
        raise EngineBuildError(
            f"the plan is for TensorRT {plan.tensorrt}, this is {trt.__version__}. Fix: plan again on this "
            "machine"
        )
    if plan.needs_python_plugins:
        from vitrt.plugins import register_tensorrt_plugins

        register_tensorrt_plugins()
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = create_network(builder, plan)
    parser = trt.OnnxParser(network, logger)
    parse_onnx(parser, onnx_path, plan)
    config = builder.create_builder_config()
    matched = configure(builder, network, config, plan)
    cache_path = Path(plan.timing_cache) if plan.timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), False):
        log.warning("timing cache %s does not fit this TensorRT / GPU; starting a new one", cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    calibrator: Any = None
    if plan.calibration_cache:
        from vitrt.calibration.trt_calibrator import make_entropy_calibrator

        calibrator = make_entropy_calibrator(None, plan.calibration_cache)
        config.int8_calibrator = calibrator
    start = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
        if calibrator is not None:
            calibrator.raise_if_failed()
    finally:
        if calibrator is not None:
            calibrator.close()
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build the engine for {plan.target} (its log above says why; -v for more). "
            "Fix: a larger --workspace, a lower --opt-level, or `vitrt verify` the ONNX"
        )
    data = bytes(memoryview(serialized))
    atomic_write_bytes(out_dir / ENGINE_NAME, data)
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    engine = trt.Runtime(logger).deserialize_cuda_engine(data)
    if engine is None:
        raise EngineBuildError("TensorRT built an engine it cannot load back; see its log above")
    layers = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    atomic_write_bytes(out_dir / LAYERS_NAME, str(layers).encode())
    return EngineInfo(_io(engine), len(data), seconds, matched, [ENGINE_NAME, LAYERS_NAME])
