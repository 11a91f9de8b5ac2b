"""``vitrt build``: one ONNX file -> an artifact folder for a target (``vitrt.build``).

For a TensorRT target the artifact is the engine (``model.plan``), the engine inspector's per-layer JSON
(``layers.json``) and ``manifest.json``; for ``cpu`` it is the ONNX Runtime model saved after its offline
optimisations or the OpenVINO IR, whichever runtime was asked for or timed faster, and the manifest
(``vitrt.compiler.manifest`` for the schema). The folder is assembled in a temporary sibling and renamed
into place at the end (``vitrt.fileio.atomic_directory``): a failed build leaves no artifact.

Order of a TensorRT build: read the file's facts, plan (``vitrt.compiler.build_plan``: every refusal, FP8 or
DLA asked of a target without it, a calibration cache on TensorRT 11, comes here, before TensorRT is needed),
check that TensorRT and the target's GPU are here (else say the three ways forward: install TensorRT, build
for ``--target cpu``, or ``vitrt bundle`` for the device), apply the plan's graph rewrites, plan again on
the rewritten graph (its keep-list becomes 10.x's layer constraints), build (``vitrt.compiler.trt_build``),
write the manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitrt.errors import ConfigError, VitrtError
from vitrt.fileio import atomic_directory, file_sha256, load_onnx

from .build_plan import BuildOptions, BuildPlan, BuildPlanError, ModelFacts, plan_build, replan_after_rewrites
from .cpu_build import CpuPlan, build_cpu_artifact, plan_cpu
from .environment import EnvironmentFacts, gather_environment
from .manifest import MANIFEST_NAME, Manifest, file_record, plugin_entries, stamp, write_manifest
from .targets import Target, get_target

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class TensorRTMissingError(VitrtError):
    """A TensorRT target asked of a machine without TensorRT; the message says the three ways forward."""


class TargetMismatchError(VitrtError):
    """A TensorRT build on a machine whose GPU is not the target's."""


@dataclass(frozen=True)
class BuildResult:
    """A built artifact: its folder, its manifest and the plan it was built by."""

    path: Path
    manifest: Manifest
    plan: BuildPlan | CpuPlan


def is_artifact(folder: Path) -> bool:
    """Whether ``folder`` is an artifact vitrt built (holds a manifest.json): one a new build may replace."""
    return (folder / MANIFEST_NAME).is_file()


def io_records(facts: ModelFacts) -> list[dict[str, Any]]:
    return [{**t.to_dict(), "mode": "input"} for t in facts.inputs] + [
        {**t.to_dict(), "mode": "output"} for t in facts.outputs
    ]


def model_record(source: Path, built_from: Path, proto: Any, file: str) -> dict[str, Any]:
    from dataclasses import asdict

    from vitrt.compiler.export import read_export_config

    config = read_export_config(proto)
    return {
        "file": file,
        "source": str(source),
        "source_sha256": file_sha256(source),
        "built_from_sha256": file_sha256(built_from),
        "export_config": asdict(config) if config is not None else None,
    }


def recipe_dict(proto: Any) -> dict[str, Any] | None:
    from vitrt.calibration.recipe import read_recipe

    recipe = read_recipe(proto)
    return recipe.to_dict() if recipe is not None else None


def apply_rewrites(model: Path, rewrites: tuple[str, ...], work: Path) -> Path:
    """Apply the plan's graph rewrites to ``model`` in ``work``; returns the file to build."""
    current = model
    for step in rewrites:
        if step != "fp16":
            raise BuildPlanError(f"unknown graph rewrite {step!r}: a vitrt bug, please report it")
        from vitrt.calibration.fp16 import fp16_onnx

        out = work / f"{current.stem}.fp16.onnx"
        fp16_onnx(current, out, check=False)  # the artifact's own agreement check covers it
        current = out
    return current


def tensorrt_missing(target: Target, reason: str) -> TensorRTMissingError:
    """The error for a TensorRT target on a machine without TensorRT, with the three ways forward."""
    install = (
        "build on the Jetson itself (TensorRT comes with JetPack: sudo apt install nvidia-jetpack)"
        if target.kind == "jetson"
        else "pip install tensorrt on a machine with the target's GPU and build there"
    )
    return TensorRTMissingError(
        f"building for {target.name} needs TensorRT, which cannot be imported here ({reason}). Fix: "
        f"{install}; or build for this machine's CPU with --target cpu; or pack a bundle here and build it "
        f"on the device: vitrt bundle MODEL.onnx --target {target.name} -o BUNDLE/, then on the device: "
        "vitrt build --bundle BUNDLE/"
    )


TENSORRT_FLAGS = {
    "min_batch": "--min",
    "max_batch": "--max",
    "workspace_mib": "--workspace",
    "optimization_level": "--opt-level",
    "timing_cache": "--timing-cache",
    "calib_cache": "--calib-cache",
    "hardware_compatibility": "--hardware-compat",
    "version_compatible": "--version-compatible",
    "dla_core": "--dla-core",
    "strongly_typed": "--[no-]strongly-typed",
}
"""The ``vitrt build`` flag of each TensorRT-only BuildOptions field (what a cpu build names, refusing it)."""


def _tensorrt_options_for_cpu(options: BuildOptions) -> list[str]:
    """The TensorRT-only options given, as "--flag (field)" (the command's flag, the API's keyword)."""
    defaults = BuildOptions(precision=options.precision, opt_batch=options.opt_batch)
    return [
        f"{TENSORRT_FLAGS.get(k, k)} ({k})" for k, v in options.to_dict().items() if v != getattr(defaults, k)
    ]


def build(
    model: PathLike | None = None,
    output: PathLike | None = None,
    *,
    target: str | None = None,
    precision: str | None = None,
    runtime: str = "auto",
    inference_precision: str | None = None,
    threads: int | None = None,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    workspace_mib: int | None = None,
    optimization_level: int | None = None,
    timing_cache: PathLike | None = None,
    calib_cache: PathLike | None = None,
    hardware_compatibility: str = "none",
    version_compatible: bool = False,
    dla_core: int | None = None,
    strongly_typed: bool | None = None,
    bundle: PathLike | None = None,
    verbose: bool = False,
    environment: EnvironmentFacts | None = None,
) -> BuildResult:
    """Build ``model`` (an ONNX file) for ``target`` into the artifact folder ``output``: ``vitrt build``
    as a function (``vitrt.build``).

    Args:
        model: the ONNX file: FP32, vitrt's INT8 Q/DQ (``vitrt calibrate``), FP16 / INT8+FP16 (``vitrt
            fp16``), or an FP8 Q/DQ file from NVIDIA Model Optimizer for targets with FP8.
        output: the artifact folder (created; an earlier artifact there is replaced, anything else refused).
        target: a name from ``vitrt targets`` (``vitrt.compiler.targets``).
        precision: fp32, fp16, int8, int8+fp16, fp8, fp4 (default: what the file holds); FP16 from an FP32
            file and INT8+FP16 from an INT8 file are made by ``vitrt.fp16`` on the way.
        runtime / inference_precision / threads: ``cpu`` only: "auto" (time ONNX Runtime and OpenVINO,
            keep the faster), "onnxruntime" or "openvino"; "f32" (default) or "bf16" (OpenVINO); intra-op
            threads.
        min_batch / opt_batch / max_batch: the optimisation profile of a dynamic batch axis (``cpu``:
            opt_batch is the batch timed).
        workspace_mib / optimization_level: TensorRT WORKSPACE limit in MiB and builder level 0-5 (default:
            the target's).
        timing_cache: TensorRT timing cache file, read if present and written back after the build.
        calib_cache: TensorRT 10.x calibration cache for implicit INT8 of an FP32 file (refused on 11.x).
        hardware_compatibility: "none", "ampere_plus", "same_compute_capability"; version_compatible: an
            engine newer TensorRT of the same major version can run (not with vitrt's Python plugins).
        dla_core: run on this DLA core, GPU fallback on (targets with DLA; FP16 / INT8).
        strongly_typed: TensorRT 10.x: precision from the graph as on 11.x (default: builder flags and the
            float32 keep-list as layer constraints).
        bundle: build a bundle from ``vitrt bundle`` instead (on the device); ``model`` and the options come
            from it.
        verbose: TensorRT's verbose log.
        environment: this machine's facts (default: ``gather_environment()``).

    Returns a BuildResult. Raises ConfigError / BuildPlanError (options the target, the TensorRT version or
    the file cannot do), TensorRTMissingError, TargetMismatchError, EngineBuildError, VitrtError (not ONNX,
    unwritable output), all before the artifact folder appears.
    """
    if bundle is not None:
        from .bundle import build_from_bundle

        given = {
            "model": model, "target": target, "precision": precision, "calib_cache": calib_cache,
            "dla_core": dla_core, "workspace_mib": workspace_mib, "optimization_level": optimization_level,
        }  # fmt: skip
        fixed = [k for k, v in given.items() if v is not None]
        if fixed:
            raise ConfigError(
                f"a bundle fixes the model and its build options; drop {', '.join(fixed)} with --bundle"
            )
        return build_from_bundle(
            bundle, output, timing_cache=timing_cache, verbose=verbose, environment=environment
        )
    if model is None or output is None or target is None:
        raise ConfigError("give the ONNX model, --target and -o OUT (or --bundle BUNDLE/)")
    spec = get_target(target)
    from vitrt.deploy.runners import check_threads

    check_threads(threads)  # before the model is read: not a TypeError from inside ONNX Runtime
    from .model_facts import load_model_facts

    source, proto, facts = load_model_facts(model)
    options = BuildOptions(
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_mib=workspace_mib,
        optimization_level=optimization_level,
        timing_cache=str(timing_cache) if timing_cache is not None else None,
        calib_cache=str(calib_cache) if calib_cache is not None else None,
        hardware_compatibility=hardware_compatibility,
        version_compatible=version_compatible,
        dla_core=dla_core,
        strongly_typed=strongly_typed,
    )
    env = environment or gather_environment()
    if not spec.uses_tensorrt:
        return _build_cpu(
            spec, source, proto, facts, options, Path(output), env, runtime, inference_precision, threads
        )
    if runtime != "auto" or inference_precision is not None or threads is not None:
        raise ConfigError(
            "--runtime, --inference-precision and --threads are for --target cpu; TensorRT targets ignore "
            "them"
        )
    return _build_tensorrt(spec, source, facts, options, Path(output), env, verbose)


def _build_cpu(
    spec: Target,
    source: Path,
    proto: Any,
    facts: ModelFacts,
    options: BuildOptions,
    output: Path,
    env: EnvironmentFacts,
    runtime: str,
    inference_precision: str | None,
    threads: int | None,
) -> BuildResult:
    extra = _tensorrt_options_for_cpu(options)
    if extra:
        raise ConfigError(
            f"{', '.join(extra)}: TensorRT options, which the cpu target does not use. Fix: leave them out; "
            "the cpu target takes --precision, --runtime, --inference-precision, --threads and --opt (the "
            "batch it times)"
        )
    plan = plan_cpu(
        facts,
        runtime=runtime,
        precision=options.precision,
        inference_precision=inference_precision,
        threads=threads,
        batch=options.opt_batch,
    )
    start = time.perf_counter()
    with atomic_directory(output, replaceable=is_artifact) as tmp:
        work = tmp / ".work"
        work.mkdir()
        built_from = apply_rewrites(source, plan.rewrites, work)
        built_proto = load_onnx(built_from) if built_from != source else proto
        from .model_facts import read_model_facts

        built = build_cpu_artifact(built_from, source, tmp, plan, read_model_facts(built_proto))
        model = model_record(source, built_from, proto, built["runtime"]["model_file"])
        shutil.rmtree(work)
        chosen = built["runtime"]["name"]
        notes = [f"{r} not used: {why}" for r, why in plan.dropped.items()]
        if facts.plugins:
            notes.append(
                "vitrt's plugin nodes run on ONNX Runtime through Python ops calling the PyTorch "
                "reference (the "
                "verification path, slow); export with --lowering portable for speed"
            )
        manifest = Manifest(
            kind="cpu",
            target=spec.to_dict(),
            runtime=built["runtime"],
            environment=env.to_dict(),
            precision=plan.precision,
            model=model,
            build_options={
                **options.to_dict(),
                "runtime": runtime,
                "inference_precision": inference_precision,
                "threads": threads,
            },
            plan={**plan.to_dict(), "runtime": chosen},
            precision_recipe=recipe_dict(built_proto),
            plugins=plugin_entries(facts.plugins) if facts.plugins else [],
            needs_python_plugins=bool(facts.plugins),
            python_plugins="ONNX Runtime runs them as onnxruntime-extensions Python ops"
            if facts.plugins
            else "",
            files={name: file_record(tmp / name) for name in built["files"]},
            io=io_records(facts),
            notes=notes,
            extra={"timings": built["timings"], "agreement": built["agreement"]},
            build_seconds=round(time.perf_counter() - start, 3),
            **stamp({}),
        )
        write_manifest(tmp, manifest)
    log.info("built %s for cpu (%s)", output, chosen)
    return BuildResult(output, manifest, plan)


def _build_tensorrt(
    spec: Target,
    source: Path,
    facts: ModelFacts,
    options: BuildOptions,
    output: Path,
    env: EnvironmentFacts,
    verbose: bool,
) -> BuildResult:
    assert spec.default_stack is not None  # every TensorRT target lists its software
    # Plan first, for the installed TensorRT or the target's default one: what the target or the file cannot
    # do is said here even on a machine without TensorRT.
    plan = plan_build(spec, facts, env.tensorrt or spec.default_stack.tensorrt, options)
    if env.tensorrt is None:
        from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason

        raise tensorrt_missing(spec, tensorrt_missing_reason() or "not installed")
    if env.sm != spec.sm and plan.hardware_compatibility == "NONE":
        raise TargetMismatchError(
            f"this machine's GPU is {env.sm or 'missing'} ({env.gpu_name or 'no CUDA driver'}), "
            f"{spec.name} is "
            f"{spec.sm}: an engine is tied to the GPU it is built on. Fix: build on the {spec.description} "
            "(copy "
            f"a bundle there: vitrt bundle MODEL.onnx --target {spec.name} -o BUNDLE/), or --target for "
            "this GPU"
        )
    if options.calib_cache is not None:
        check_calibration_cache(options.calib_cache, env.tensorrt)
    from .trt_build import build_engine

    start = time.perf_counter()
    with atomic_directory(output, replaceable=is_artifact) as tmp:
        work = tmp / ".work"
        work.mkdir()
        built_from = apply_rewrites(source, plan.rewrites, work)
        built_proto = load_onnx(built_from)
        if plan.rewrites:
            from .model_facts import read_model_facts

            plan = replan_after_rewrites(plan, spec, read_model_facts(built_proto), options)
        for line in plan.describe():
            log.info("%s", line)
        info = build_engine(plan, built_from, tmp, verbose=verbose)
        model = model_record(source, built_from, load_onnx(source), "model.plan")
        shutil.rmtree(work)
        manifest = Manifest(
            kind="engine",
            target=spec.to_dict(),
            runtime={"name": "tensorrt", "version": env.tensorrt, "cuda_driver": env.cuda_driver},
            environment=env.to_dict(),
            precision=plan.precision,
            model=model,
            build_options=options.to_dict(),
            plan=plan.to_dict(),
            precision_recipe=recipe_dict(built_proto),
            plugins=plugin_entries(plan.plugins),
            needs_python_plugins=plan.needs_python_plugins,
            python_plugins=_python_plugin_text(plan),
            files={name: file_record(tmp / name) for name in info.files},
            io=info.io,
            notes=list(plan.notes),
            extra={
                "engine_bytes": info.engine_bytes,
                "engine_build_seconds": round(info.seconds, 3),
                "layer_constraints_matched": info.constraints_matched,
            },
            build_seconds=round(time.perf_counter() - start, 3),
            **stamp({}),
        )
        write_manifest(tmp, manifest)
    return BuildResult(output, manifest, plan)


def _python_plugin_text(plan: BuildPlan) -> str:
    from .build_plan import PYTHON_PLUGIN_NOTE

    return PYTHON_PLUGIN_NOTE if plan.needs_python_plugins else ""


def check_calibration_cache(path: str, tensorrt: str) -> None:
    """ConfigError unless the calibration cache at ``path`` was written for TensorRT ``tensorrt`` (TensorRT
    10 rejects a cache whose header names another version)."""
    from vitrt.calibration.cache import read_cache, trt_version_number

    cache = read_cache(path)
    wanted = trt_version_number(".".join(tensorrt.split(".")[:3]))
    if cache.version != wanted:
        raise ConfigError(
            f"calibration cache {path} was written for {cache.header.split('-')[1]} (header {cache.header}); "
            f"TensorRT {tensorrt} expects TRT-{wanted}-... and would recalibrate without data. Fix: vitrt "
            "calibrate "
            f"... --cache {path} --trt-version {'.'.join(tensorrt.split('.')[:3])}"
        )
