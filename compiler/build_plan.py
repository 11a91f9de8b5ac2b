"""The build plan: every decision a TensorRT engine build makes, as plain data, before TensorRT is touched.

``plan_build(target, facts, tensorrt_version, options)`` turns a target profile, the facts of an ONNX file
(``ModelFacts``: what precision its graph holds, its inputs, its plugin nodes, its float32 keep-list) and the
user's options into a ``BuildPlan``: network creation flags, graph rewrites, builder flags, per-layer
precision constraints, memory pool limits, optimisation level, hardware / version compatibility, shape
profiles, DLA, timing cache. ``vitrt.compiler.trt_build`` applies a plan with a handful of TensorRT calls;
everything here is pure Python, so CI checks the plan for every (TensorRT version, target, precision)
without TensorRT.

Precision, the part that differs most between TensorRT 10.x and 11.x (ARCHITECTURE.md section 3):

- TensorRT 11 removed weak typing: no FP16 / INT8 / BF16 / FP8 builder flags, no
  OBEY/PREFER_PRECISION_CONSTRAINTS, no calibrators or calibration caches; ``STRONGLY_TYPED`` is ignored
  because every network is strongly typed. Precision comes from the graph: Q/DQ for INT8, float16 tensors
  and casts for FP16. So an FP16 build of an FP32 file rewrites the graph first (``vitrt.fp16``: float16
  with float32 islands), and INT8 needs vitrt's Q/DQ file (``vitrt calibrate``).
- TensorRT 10.x is weakly typed by default: the same FP16 graph is built with the FP16 flag plus the
  file's float32 keep-list as layer precision constraints (``PrecisionRecipe.layer_constraints()``,
  matched by each layer's ``[ONNX Layer: name]`` metadata) with OBEY_PRECISION_CONSTRAINTS, so 10.x and 11.x
  build the same numerics from one file; explicit Q/DQ with the INT8 flag; or an FP32 file with a
  calibration cache (implicit INT8, deprecated since 10.1). ``strongly_typed=True`` gives 10.x the 11.x
  behaviour instead; FP8 / FP4 Q/DQ graphs are always built strongly typed.

Errors are ``BuildPlanError`` (a ConfigError) naming the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from vitrt.errors import ConfigError

from .targets import Target, get_target, targets_with

BUILD_PRECISIONS = ("fp32", "fp16", "int8", "int8+fp16", "fp8", "fp4")
"""What ``--precision`` accepts. fp8 / fp4: graphs quantized by another tool (NVIDIA Model Optimizer);
vitrt has no FP8 / FP4 calibration."""
HARDWARE_COMPATIBILITY = {
    "none": "NONE",
    "ampere_plus": "AMPERE_PLUS",
    "same_compute_capability": "SAME_COMPUTE_CAPABILITY",
}
"""``--hardware-compat`` -> ``trt.HardwareCompatibilityLevel`` member name."""
PYTHON_PLUGIN_NOTE = (
    "the engine holds vitrt's Python plugins (IPluginV3 in Python): it runs only inside a Python process "
    "that "
    "has called vitrt.register_tensorrt_plugins() (vitrt's runners do), not under trtexec, Triton, "
    "DeepStream "
    "or a C++ runtime; export with --lowering portable for an engine without them"
)


class BuildPlanError(ConfigError):
    """A build that the target, the TensorRT version or the file cannot do; the message names the fix."""


def fixed_batch(shape: Sequence[object] | None) -> int | None:
    """The batch axis (the first) of a tensor's ``shape`` when it is a fixed number, else None (a dynamic
    axis: a name, "?", 0 or -1; or no axes). One rule for every reader of an input's batch: the build plans,
    verify, and the runners' sources."""
    first = shape[0] if shape else None
    return int(first) if isinstance(first, int) and not isinstance(first, bool) and first > 0 else None


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (ints; a string for a dynamic axis) and dtype name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class LayerConstraint:
    """A TensorRT 10 per-layer constraint: the layers made from ONNX node ``node`` (their
    ``[ONNX Layer: node]`` metadata) compute in ``precision`` and write ``output_type``."""

    node: str
    precision: str = "float32"
    output_type: str = "float32"


@dataclass(frozen=True)
class ModelFacts:
    """What a plan needs to know about an ONNX file (``vitrt.compiler.model_facts.read_model_facts``).

    precision: what the graph holds ("fp32", "fp16", "int8", "int8+fp16", "fp8", "fp4"); plugins: op types
    of vitrt's plugin nodes in it (sorted, unique); lowering: the ExportConfig's ("plugin" / "portable"),
    None for a foreign file; layer_constraints: the float32 keep-list of its precision recipe (empty for a
    file without one, or one whose float layers are float32 anyway).
    """

    precision: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    plugins: tuple[str, ...] = ()
    lowering: str | None = None
    layer_constraints: tuple[LayerConstraint, ...] = ()


@dataclass(frozen=True)
class BuildOptions:
    """What the user asked for (``vitrt build`` options); None means the file's or the target's default.

    workspace_mib: TensorRT WORKSPACE pool limit in MiB; min/opt/max_batch: the shape profile of a
    dynamic batch axis; timing_cache / calib_cache: file paths; hardware_compatibility: a key of
    ``HARDWARE_COMPATIBILITY``; dla_core: run on this DLA core (GPU fallback on); strongly_typed: on
    TensorRT 10.x, take precision from the graph as 11.x does (default: builder flags).
    """

    precision: str | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_mib: int | None = None
    optimization_level: int | None = None
    timing_cache: str | None = None
    calib_cache: str | None = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    dla_core: int | None = None
    strongly_typed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShapeProfile:
    """One input's optimisation-profile shapes (``IOptimizationProfile.set_shape``)."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    """Every builder decision for one (target, TensorRT version, file, options), as data.

    tensorrt: the version planned for ("10.3.0"); precision_source: where precision comes from, "graph"
    (strongly typed), "builder flags" (10.x weak typing + constraints) or "calibration cache" (10.x implicit
    INT8); rewrites: graph rewrites applied before parsing ("fp16": ``vitrt.fp16``, the float16 graph with
    float32 islands); network_flags / builder_flags: ``NetworkDefinitionCreationFlag`` / ``BuilderFlag``
    member names; memory_pools: ``MemoryPoolType`` name -> bytes; hardware_compatibility: a
    ``HardwareCompatibilityLevel`` name; device: "GPU" or "DLA"; notes: what the user should know (printed,
    and kept in the manifest).
    """

    target: str
    sm: str
    tensorrt: str
    precision: str
    precision_source: str
    rewrites: tuple[str, ...] = ()
    network_flags: tuple[str, ...] = ()
    builder_flags: tuple[str, ...] = ()
    layer_constraints: tuple[LayerConstraint, ...] = ()
    calibration_cache: str | None = None
    memory_pools: dict[str, int] = field(default_factory=dict)
    optimization_level: int = 3
    profiling_verbosity: str = "DETAILED"
    hardware_compatibility: str = "NONE"
    version_compatible: bool = False
    timing_cache: str | None = None
    profiles: tuple[ShapeProfile, ...] = ()
    device: str = "GPU"
    dla_core: int | None = None
    plugins: tuple[str, ...] = ()
    needs_python_plugins: bool = False
    notes: tuple[str, ...] = ()

    @property
    def tensorrt_major(self) -> int:
        return parse_tensorrt_version(self.tensorrt)[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildPlan:
        data = dict(data)
        for key in ("rewrites", "network_flags", "builder_flags", "plugins", "notes"):
            data[key] = tuple(data.get(key, ()))
        data["layer_constraints"] = tuple(LayerConstraint(**c) for c in data.get("layer_constraints", ()))
        data["profiles"] = tuple(
            ShapeProfile(p["input"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
            for p in data.get("profiles", ())
        )
        return cls(**data)

    def describe(self) -> list[str]:
        """The plan as the lines ``vitrt build`` prints."""
        flags = " ".join(self.builder_flags) or "none"
        lines = [
            f"TensorRT {self.tensorrt} for {self.target} ({self.sm}, {self.device}"
            + (f" core {self.dla_core}" if self.dla_core is not None else "")
            + f"): {self.precision}, precision from the {self.precision_source}",
            f"  network flags {' '.join(self.network_flags) or 'none'}; builder flags {flags}; "
            f"{len(self.layer_constraints)} layer constraints",
            f"  workspace {self.memory_pools.get('WORKSPACE', 0) / 2**20:.0f} MiB, optimisation level "
            f"{self.optimization_level}, hardware compatibility {self.hardware_compatibility}"
            + (", version compatible" if self.version_compatible else ""),
        ]
        if self.rewrites:
            lines.append(f"  graph rewrites: {', '.join(self.rewrites)}")
        for p in self.profiles:
            lines.append(f"  profile {p.input}: min {list(p.min)} opt {list(p.opt)} max {list(p.max)}")
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def parse_tensorrt_version(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of "10.3", "10.3.0" or "10.3.0.30"; BuildPlanError otherwise."""
    parts = version.strip().split(".")
    try:
        numbers = [int(p) for p in parts[:3]]
    except ValueError:
        numbers = []
    if not numbers or len(parts) < 2:
        raise BuildPlanError(f"TensorRT version {version!r} is not like '10.3.0'")
    major, minor, patch = (*numbers, 0, 0)[:3]
    return major, minor, patch


def precision_steps(held: str, wanted: str) -> tuple[str, ...]:
    """The graph rewrites that turn a file holding ``held`` into one holding ``wanted`` (TensorRT 11 and
    the CPU runtimes read precision from the graph): () when they agree, ("fp16",) for FP32 -> FP16 and
    INT8 -> INT8+FP16 (``vitrt.fp16``). BuildPlanError naming the command that makes the right file
    otherwise."""
    if wanted not in BUILD_PRECISIONS:
        raise BuildPlanError(f"unknown precision {wanted!r}; one of {', '.join(BUILD_PRECISIONS)}")
    if held == wanted:
        return ()
    if (held, wanted) in (("fp32", "fp16"), ("int8", "int8+fp16")):
        return ("fp16",)
    if wanted in ("fp8", "fp4"):
        raise BuildPlanError(
            f"the file holds {held}, not {wanted.upper()} Q/DQ: vitrt has no {wanted.upper()} calibration. "
            "Fix: "
            f"quantize the FP32 file with NVIDIA Model Optimizer (python -m modelopt.onnx.quantization "
            f"--quantize_mode {wanted}) and build that file"
        )
    if held == "fp32" and wanted.startswith("int8"):
        fix = "vitrt calibrate MODEL.onnx --data IMAGES -o MODEL.int8.onnx, then build MODEL.int8.onnx"
        if wanted == "int8+fp16":
            fix += " with --precision int8+fp16"
        raise BuildPlanError(f"the file is FP32 and holds no INT8 scales. Fix: {fix}")
    raise BuildPlanError(
        f"the file holds {held}; it cannot be built as {wanted}. Fix: build it as --precision {held}, or "
        f"build from the FP32 file it was made from"
    )


def _check_precision(target: Target, precision: str) -> None:
    if precision not in BUILD_PRECISIONS:
        raise BuildPlanError(f"unknown precision {precision!r}; one of {', '.join(BUILD_PRECISIONS)}")
    if not target.supports(precision):
        missing = [p for p in precision.split("+") if p not in target.precisions]
        have = targets_with(precision)
        raise BuildPlanError(
            f"{target.name} ({target.sm}) has no {'/'.join(p.upper() for p in missing)} hardware support. "
            f"Fix: a precision it has ({', '.join(target.precisions)})"
            + (f", or a target with it: {', '.join(have)}" if have else "")
        )


def _precision_flags(precision: str) -> list[str]:
    return {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"], "int8+fp16": ["INT8", "FP16"]}[precision]


def shape_profiles(
    inputs: tuple[TensorInfo, ...],
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
) -> tuple[tuple[ShapeProfile, ...], list[str]]:
    """The optimisation profile of each input with a dynamic batch axis (axis 0), and notes.

    Batch defaults: min 1, opt = the given opt or max or min, max = the given max or opt. An input with a
    fixed batch takes no profile; asking a batch range of it is a BuildPlanError (re-export with a
    dynamic batch), as is any other dynamic axis (vitrt exports fix every axis but the batch).
    """
    given = [b for b in (min_batch, opt_batch, max_batch) if b is not None]
    if any(b < 1 for b in given):
        raise BuildPlanError(
            f"batch sizes must be >= 1, got --min {min_batch} --opt {opt_batch} --max {max_batch}"
        )
    profiles: list[ShapeProfile] = []
    notes: list[str] = []
    for t in inputs:
        dynamic = [i for i, d in enumerate(t.shape) if not isinstance(d, int) or d < 1]
        if not dynamic:
            if given and any(b != t.shape[0] for b in given):
                raise BuildPlanError(
                    f"input {t.name!r} has a fixed batch of {t.shape[0]}; --min/--opt/--max need a dynamic "
                    "batch axis. Fix: re-export with `vitrt export ... --dynamic-batch`"
                )
            continue
        if dynamic != [0]:
            raise BuildPlanError(
                f"input {t.name!r} has dynamic axes {dynamic} (shape {list(t.shape)}); vitrt builds a "
                "dynamic "
                "batch axis only. Fix: export with a fixed image size"
            )
        low = min_batch or 1
        opt = opt_batch or max_batch or low
        high = max_batch or max(opt, low)
        if not low <= opt <= high:
            raise BuildPlanError(f"need --min <= --opt <= --max, got {low}, {opt}, {high}")
        if not given:
            notes.append(f"input {t.name!r} has a dynamic batch but no --min/--opt/--max: built for batch 1")
        rest = tuple(int(d) for d in t.shape[1:])
        profiles.append(ShapeProfile(t.name, (low, *rest), (opt, *rest), (high, *rest)))
    return tuple(profiles), notes


def plan_build(
    target: Target | str,
    facts: ModelFacts,
    tensorrt: str,
    options: BuildOptions | None = None,
) -> BuildPlan:
    """The BuildPlan for building ``facts``' file for ``target`` with TensorRT ``tensorrt`` (module
    docstring for the precision rules). A plan with ``rewrites`` describes the graph after them; the
    layer constraints of the rewritten graph's recipe come from planning again on its facts (as
    ``vitrt.build`` does). Raises BuildPlanError naming the fix for anything the target, the version or the
    file cannot do."""
    target = get_target(target) if isinstance(target, str) else target
    options = options or BuildOptions()
    if not target.uses_tensorrt or target.sm is None or target.compute_capability is None:
        raise BuildPlanError(
            f"target {target.name!r} does not use TensorRT; `vitrt build --target cpu` builds for the CPU "
            "runtimes"
        )
    version = parse_tensorrt_version(tensorrt)
    if version < (10, 0, 0):
        raise BuildPlanError(
            f"TensorRT {tensorrt} is too old: vitrt's plugins are IPluginV3 (TensorRT >= 10.0). Fix: JetPack "
            "6.1 or newer (TensorRT 10.3) on Jetson, `pip install tensorrt` elsewhere"
        )
    strong_only = version[0] >= 11
    precision = options.precision or facts.precision
    _check_precision(target, precision)
    notes: list[str] = []

    implicit = options.calib_cache is not None
    if implicit:
        if strong_only:
            raise BuildPlanError(
                f"TensorRT {tensorrt} has no calibration caches (removed in 11.0: precision comes from the "
                "graph). Fix: build vitrt's Q/DQ file (vitrt calibrate MODEL.onnx -o MODEL.int8.onnx) "
                "without "
                "--calib-cache"
            )
        if precision != "int8" or facts.precision != "fp32":
            raise BuildPlanError(
                "a calibration cache is for implicit INT8 of an FP32 file (this one holds "
                f"{facts.precision}, "
                f"--precision {precision}). Fix: drop --calib-cache"
                + (
                    "; the file's Q/DQ scales are what TensorRT uses"
                    if facts.precision.startswith("int8")
                    else ""
                )
            )
        rewrites: tuple[str, ...] = ()
        notes.append(
            "implicit INT8 from a calibration cache: deprecated since TensorRT 10.1 and removed in 11.0; "
            "vitrt's Q/DQ file builds on both"
        )
    else:
        rewrites = precision_steps(facts.precision, precision)

    strongly_typed = options.strongly_typed
    network_flags: tuple[str, ...] = ()
    builder_flags: list[str] = []
    constraints: tuple[LayerConstraint, ...] = ()
    if strong_only:
        if strongly_typed is False:
            raise BuildPlanError(
                f"TensorRT {tensorrt} networks are always strongly typed (weak typing was removed in 11.0). "
                "Fix: drop --no-strongly-typed"
            )
        source = "graph"  # STRONGLY_TYPED is ignored in 11.x: every network is
    else:
        if strongly_typed is None:
            strongly_typed = precision in ("fp8", "fp4")
        if strongly_typed and implicit:
            raise BuildPlanError(
                "a strongly typed network takes INT8 from Q/DQ in the graph, not from a calibration cache. "
                "Fix: drop --strongly-typed, or build vitrt's Q/DQ file"
            )
        if not strongly_typed and precision in ("fp8", "fp4"):
            raise BuildPlanError(
                f"{precision.upper()} Q/DQ graphs build strongly typed on TensorRT 10.x. Fix: drop "
                "--no-strongly-typed"
            )
        if strongly_typed:
            network_flags, source = ("STRONGLY_TYPED",), "graph"
        else:
            builder_flags = _precision_flags(precision)
            if precision in ("fp16", "int8+fp16"):
                # The float32 islands: without OBEY, weak typing may run a LayerNorm in float16 whatever the
                # graph's casts say (the overflow the islands exist to prevent).
                constraints = () if rewrites else facts.layer_constraints
                builder_flags.append("OBEY_PRECISION_CONSTRAINTS")
            source = "calibration cache" if implicit else ("builder flags" if builder_flags else "graph")

    device, dla_core = "GPU", None
    if options.dla_core is not None:
        if not target.dla_cores:
            raise BuildPlanError(
                f"{target.name} has no DLA. Fix: drop --dla-core (the GPU runs everything), or a target "
                "with DLA: "
                f"{', '.join(targets_with(dla=True))}"
            )
        if not 0 <= options.dla_core < target.dla_cores:
            raise BuildPlanError(
                f"{target.name} has DLA cores 0-{target.dla_cores - 1}; --dla-core {options.dla_core} is "
                "not one"
            )
        if strong_only and version < (11, 4, 1):
            raise BuildPlanError(
                f"TensorRT {tensorrt} has no DLA (TensorRT 11.0-11.4.0 dropped it; 11.4.1 brings it back "
                "on AGX "
                "Orin with JetPack 7.2.2+). Fix: TensorRT 10.x (JetPack 6), 11.4.1+, or drop --dla-core"
            )
        if precision not in ("fp16", "int8", "int8+fp16"):
            raise BuildPlanError(
                f"DLA computes in FP16 and INT8 only, not {precision}. Fix: --precision fp16 or int8"
            )
        device, dla_core = "DLA", options.dla_core
        builder_flags.append("GPU_FALLBACK")
        notes.append(
            "layers DLA cannot run (vitrt's plugins, and most of a transformer's attention) fall back to "
            "the GPU"
        )

    workspace = options.workspace_mib or target.workspace_mib
    if workspace < 1 or workspace > target.memory_gib * 1024:
        raise BuildPlanError(
            f"workspace {workspace} MiB is outside 1 .. {target.memory_gib * 1024:.0f} MiB ({target.name}'s "
            "memory). Fix: a smaller --workspace"
        )
    level = target.optimization_level if options.optimization_level is None else options.optimization_level
    if not 0 <= level <= 5:
        raise BuildPlanError(f"builder optimisation level must be 0-5 (TensorRT's default 3), got {level}")

    compat = options.hardware_compatibility.lower().replace("-", "_")
    if compat not in HARDWARE_COMPATIBILITY:
        raise BuildPlanError(
            f"unknown hardware compatibility {options.hardware_compatibility!r}; one of "
            f"{', '.join(HARDWARE_COMPATIBILITY)}"
        )
    if compat != "none":
        if device == "DLA":
            raise BuildPlanError("a DLA engine is tied to its device: drop --hardware-compat or --dla-core")
        major, minor = target.compute_capability
        others = "Ampere and newer" if compat == "ampere_plus" else f"compute capability {major}.{minor}"
        notes.append(
            f"hardware compatibility {compat}: runs on other GPUs ({others}), at some speed (no cuDNN / "
            "cuBLAS tactics, 48 KiB shared memory for TensorRT's kernels)"
        )
        if target.kind == "jetson":
            notes.append(f"a {target.name} builds for its own GPU; hardware compatibility buys it nothing")

    if options.version_compatible:
        if facts.plugins:
            raise BuildPlanError(
                "a version-compatible engine runs in the lean runtime, which loads plugins from shared "
                "libraries "
                f"only; this graph holds vitrt's Python plugins ({', '.join(facts.plugins)}). Fix: export "
                "with "
                "--lowering portable, or drop --version-compatible"
            )
        builder_flags.append("VERSION_COMPATIBLE")
        notes.append(
            f"version compatible: runs on TensorRT {version[0]}.x from {tensorrt} on (lean runtime inside)"
        )

    profiles, profile_notes = shape_profiles(
        facts.inputs, options.min_batch, options.opt_batch, options.max_batch
    )
    notes += profile_notes
    if device == "DLA" and any(p.min != p.max for p in profiles):
        raise BuildPlanError("DLA needs static shapes. Fix: --min, --opt and --max the same batch")
    if facts.plugins:
        notes.append(PYTHON_PLUGIN_NOTE)

    return BuildPlan(
        target=target.name,
        sm=target.sm,
        tensorrt=".".join(str(v) for v in version),
        precision=precision,
        precision_source=source,
        rewrites=rewrites,
        network_flags=network_flags,
        builder_flags=tuple(builder_flags),
        layer_constraints=constraints,
        calibration_cache=options.calib_cache,
        memory_pools={"WORKSPACE": workspace * 2**20},
        optimization_level=level,
        hardware_compatibility=HARDWARE_COMPATIBILITY[compat],
        version_compatible=options.version_compatible,
        timing_cache=options.timing_cache,
        profiles=profiles,
        device=device,
        dla_core=dla_core,
        plugins=facts.plugins,
        needs_python_plugins=bool(facts.plugins),
        notes=tuple(notes),
    )


def replan_after_rewrites(
    plan: BuildPlan, target: Target | str, facts: ModelFacts, options: BuildOptions
) -> BuildPlan:
    """The final plan once ``plan.rewrites`` made the graph whose facts are ``facts``: planned again (the
    layer constraints now come from the rewritten graph's recipe), recording the rewrites done."""
    again = plan_build(target, facts, plan.tensorrt, options)
    if again.rewrites:
        raise BuildPlanError(
            f"the rewritten graph still needs {again.rewrites}: a vitrt bug, please report it"
        )
    return replace(again, rewrites=plan.rewrites)
