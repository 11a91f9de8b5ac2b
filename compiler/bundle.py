"""``vitrt bundle``: what a device needs to build its own engine, packed on a workstation (``vitrt.bundle``).

An engine is tied to the TensorRT version, GPU and OS it was built with, so the usual way to an engine for a
Jetson is to build it on the Jetson. A bundle makes that one command on the device, with every decision
taken and checked on the workstation:

    BUNDLE/
      model.onnx          the graph to parse, rewrites done (the FP16 / INT8+FP16 graph with float32 islands)
      calib.cache         a TensorRT 10.x calibration cache, when one was given (implicit INT8)
      kernels/            the plugin kernels' sources (+ cuda_common.cuh) and, where built and current, the
                          fatbin covering the target's SM (else the device compiles the sources with NVRTC)
      bundle.json         the manifest the device's build will write, as expected: target and SM, the
                          TensorRT versions it was planned for with the BuildPlan of each, plugin names,
                          versions and kernel hashes, model hash and ExportConfig, build options, file hashes
      README.md           `vitrt build --bundle BUNDLE/`

On the device ``vitrt build --bundle BUNDLE/`` (``build_from_bundle``) checks the files' hashes, compares
``bundle.json`` with the device (GPU SM, TensorRT version, vitrt's plugin kernels: ``manifest.compare``) and
says exactly what differs before TensorRT would fail, installs the bundle's fatbin where the device has none,
and builds with the recorded options into ``BUNDLE/engine/`` (or ``-o``).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitrt.errors import ConfigError, VitrtError
from vitrt.fileio import atomic_directory, load_onnx, save_onnx

from .build import BuildResult, apply_rewrites, build, io_records, model_record, recipe_dict
from .build_plan import (
    PYTHON_PLUGIN_NOTE,
    BuildOptions,
    BuildPlan,
    BuildPlanError,
    plan_build,
    replan_after_rewrites,
)
from .environment import EnvironmentFacts, gather_environment
from .manifest import (
    BUNDLE_NAME,
    Manifest,
    file_record,
    plugin_entries,
    read_manifest,
    require_compatible,
    stamp,
    verify_files,
    write_manifest,
)
from .targets import Target, get_target

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
MODEL_NAME = "model.onnx"
CACHE_NAME = "calib.cache"
KERNELS = "kernels"
README = "README.md"


@dataclass(frozen=True)
class BundleResult:
    """A written bundle: its folder, its ``bundle.json`` and the plan per TensorRT version."""

    path: Path
    manifest: Manifest
    plans: dict[str, BuildPlan]


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` is a bundle (holds bundle.json): one a new ``vitrt bundle`` may replace."""
    return (folder / BUNDLE_NAME).is_file()


def plan_stacks(
    target: Target, facts: Any, options: BuildOptions
) -> tuple[dict[str, BuildPlan], dict[str, str]]:
    """The BuildPlan for each TensorRT version the target's software stacks ship, and, for the versions
    that cannot build this (a calibration cache on 11.x, DLA on 11.4.0), why not. BuildPlanError when no
    version can: the reasons of all."""
    plans: dict[str, BuildPlan] = {}
    refused: dict[str, str] = {}
    for version in target.tensorrt_versions():
        try:
            plans[version] = plan_build(target, facts, version, options)
        except BuildPlanError as err:
            refused[version] = str(err)
    if not plans:
        reasons = list(dict.fromkeys(refused.values()))
        raise BuildPlanError(
            reasons[0] if len(reasons) == 1 else " | ".join(f"{v}: {r}" for v, r in refused.items())
        )
    return plans, refused


def _check_cache_versions(path: str, plans: dict[str, BuildPlan], refused: dict[str, str]) -> None:
    """Drop the plans whose TensorRT would reject the cache's header version (moved to ``refused``)."""
    from vitrt.calibration.cache import read_cache

    cache = read_cache(path)
    for version in list(plans):
        major, minor = (int(p) for p in version.split(".")[:2])
        if cache.version // 100 != major * 100 + minor:
            refused[version] = (
                f"the calibration cache's header is {cache.header}; TensorRT {version} rejects it. Fix: "
                "vitrt "
                f"calibrate ... --cache CACHE --trt-version {version}.0 (the device's exact version)"
            )
            del plans[version]
    if not plans:
        raise BuildPlanError(" | ".join(f"{v}: {r}" for v, r in refused.items()))


def _copy_kernels(target: Target, used: tuple[str, ...], dest: Path) -> list[str]:
    """Copy the used plugins' kernel sources (and the fatbins that are current and cover the target's SM)
    into ``dest``; returns notes."""
    from vitrt.plugins.cuda_build import (
        COMMON_HEADER,
        fatbin_entries,
        fatbin_is_current,
        fatbin_path,
        kernel_sources,
    )
    from vitrt.plugins.cuda_launcher import compatible_image

    from .environment import plugin_records

    sources = {r["source"] for r in plugin_records().values() if r["name"] in used}
    dest.mkdir()
    shutil.copy2(COMMON_HEADER, dest / COMMON_HEADER.name)
    notes = []
    for src in kernel_sources():
        if src.name not in sources:
            continue
        shutil.copy2(src.path, dest / src.path.name)
        fatbin = fatbin_path(src.name)
        assert target.compute_capability is not None
        if (
            fatbin.is_file()
            and fatbin_is_current(src) is True
            and compatible_image(fatbin_entries(fatbin.read_bytes()), target.compute_capability) is not None
        ):
            shutil.copy2(fatbin, dest / fatbin.name)
            record = fatbin.with_name(fatbin.name + ".json")
            if record.is_file():
                shutil.copy2(record, dest / record.name)
        else:
            notes.append(
                f"{src.name}: kernel sources only (no current fatbin for {target.sm} here: `vitrt plugins "
                "build` "
                "with nvcc adds one); the device compiles them with NVRTC at first use (pip install "
                "nvidia-cuda-nvrtc) or with `vitrt plugins build`"
            )
    return notes


def _readme(target: Target, plans: dict[str, BuildPlan], refused: dict[str, str], notes: list[str]) -> str:
    lines = [
        f"# vitrt bundle for {target.name} ({target.description}, {target.sm})",
        "",
        "On the device, with vitrt and TensorRT installed:",
        "",
        "```bash",
        "vitrt build --bundle BUNDLE/            # -> BUNDLE/engine/ (model.plan + manifest.json); -o "
        "elsewhere",
        "```",
        "",
        "where BUNDLE/ is this folder. The build first checks this folder's files and compares bundle.json",
        "with the device (GPU, TensorRT version, vitrt's plugin kernels) and says what differs.",
        "",
        f"Planned for TensorRT {', '.join(plans)}"
        + (f"; not for {', '.join(f'{v} ({why})' for v, why in refused.items())}" if refused else "")
        + ".",
    ]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def bundle(
    model: PathLike,
    output: PathLike,
    *,
    target: str,
    precision: str | None = None,
    calib_cache: PathLike | None = None,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    workspace_mib: int | None = None,
    optimization_level: int | None = None,
    hardware_compatibility: str = "none",
    version_compatible: bool = False,
    dla_core: int | None = None,
    strongly_typed: bool | None = None,
    environment: EnvironmentFacts | None = None,
) -> BundleResult:
    """Pack ``model`` into the bundle folder ``output`` for ``target``: ``vitrt bundle`` as a function
    (``vitrt.bundle``). The options are ``vitrt.build``'s; every one is planned here for each TensorRT
    version the target ships (module docstring for the contents). Needs no TensorRT, GPU or nvcc.

    Returns a BundleResult. Raises BuildPlanError when no TensorRT version of the target can build it (the
    reasons), ConfigError for a cpu target, VitrtError for a file that is not ONNX or an unwritable output.
    """
    spec = get_target(target)
    if not spec.uses_tensorrt:
        raise ConfigError(
            "a bundle is for a TensorRT target; `vitrt build --target cpu` builds for this CPU here"
        )
    from .model_facts import load_model_facts, read_model_facts

    source, proto, facts = load_model_facts(model)
    options = BuildOptions(
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_mib=workspace_mib,
        optimization_level=optimization_level,
        calib_cache=CACHE_NAME if calib_cache is not None else None,
        hardware_compatibility=hardware_compatibility,
        version_compatible=version_compatible,
        dla_core=dla_core,
        strongly_typed=strongly_typed,
    )
    plans, refused = plan_stacks(spec, facts, options)
    if calib_cache is not None:
        _check_cache_versions(str(calib_cache), plans, refused)
    env = environment or gather_environment()
    rewrites = next(iter(plans.values())).rewrites
    with atomic_directory(output, replaceable=is_bundle) as tmp:
        work = tmp / ".work"
        work.mkdir()
        built_from = apply_rewrites(source, rewrites, work)
        built_proto = load_onnx(built_from)
        if rewrites:
            built_facts = read_model_facts(built_proto)
            plans = {v: replan_after_rewrites(p, spec, built_facts, options) for v, p in plans.items()}
        save_onnx(built_proto, tmp / MODEL_NAME)
        shutil.rmtree(work)
        notes: list[str] = []
        if calib_cache is not None:
            shutil.copy2(calib_cache, tmp / CACHE_NAME)
        if facts.plugins:
            notes += _copy_kernels(spec, facts.plugins, tmp / KERNELS)
        first = next(iter(plans.values()))
        notes += list(first.notes)
        (tmp / README).write_text(_readme(spec, plans, refused, notes))
        files = {str(p.relative_to(tmp)): file_record(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = Manifest(
            kind="bundle",
            target=spec.to_dict(),
            runtime={"name": "tensorrt", "versions": list(plans)},
            environment=env.to_dict(),
            precision=first.precision,
            model=model_record(source, tmp / MODEL_NAME, proto, MODEL_NAME),
            build_options=options.to_dict(),
            plan={"by_tensorrt": {v: p.to_dict() for v, p in plans.items()}, "not_buildable": refused},
            precision_recipe=recipe_dict(built_proto),
            plugins=plugin_entries(facts.plugins, tmp / KERNELS) if facts.plugins else [],
            needs_python_plugins=bool(facts.plugins),
            python_plugins=PYTHON_PLUGIN_NOTE if facts.plugins else "",
            files=files,
            io=io_records(facts),
            notes=notes,
            extra={
                "expected": {
                    "sm": spec.sm,
                    "gpu": spec.gpu,
                    "tensorrt": list(plans),
                    "plugins": {p["name"]: p["source_sha256"] for p in plugin_entries(facts.plugins)},
                }
            },
            **stamp({}),
        )
        write_manifest(tmp, manifest, BUNDLE_NAME)
    return BundleResult(Path(output), manifest, plans)


def check_bundle(path: PathLike, environment: EnvironmentFacts | None = None) -> Manifest:
    """Read and verify a bundle (files present with the recorded hashes, the plans readable), then compare it
    with the machine ``environment`` describes (default: this one). Returns its manifest; raises
    IncompatibleArtifactError naming what differs."""
    folder = Path(path)
    manifest = read_manifest(folder)
    if manifest.kind != "bundle":
        raise VitrtError(
            f"{folder} is a built {manifest.kind} artifact, not a bundle; load it with vitrt.load_artifact"
        )
    verify_files(folder, manifest)
    for data in (manifest.plan or {}).get("by_tensorrt", {}).values():
        BuildPlan.from_dict(data)
    require_compatible(manifest, environment, where=str(folder))
    return manifest


def install_fatbins(folder: Path, manifest: Manifest) -> list[Path]:
    """Copy the bundle's fatbins into this machine's kernel build folder where it has none (kernel sources
    are equal: ``check_bundle`` compared their hashes), so the plugins load them instead of compiling with
    NVRTC. Returns the files installed."""
    from vitrt.plugins.cuda_build import default_build_dir

    installed = []
    dest = default_build_dir()
    for fatbin in sorted((folder / KERNELS).glob("*.fatbin")) if (folder / KERNELS).is_dir() else []:
        if not (dest / fatbin.name).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            for path in (fatbin, fatbin.with_name(fatbin.name + ".json")):
                if path.is_file():
                    shutil.copy2(path, dest / path.name)
            installed.append(dest / fatbin.name)
    return installed


def build_from_bundle(
    path: PathLike,
    output: PathLike | None = None,
    *,
    timing_cache: PathLike | None = None,
    verbose: bool = False,
    environment: EnvironmentFacts | None = None,
) -> BuildResult:
    """``vitrt build --bundle BUNDLE/``: check the bundle against this device, then build its model with its
    options into ``output`` (default ``BUNDLE/engine``)."""
    folder = Path(path)
    env = environment or gather_environment()
    manifest = check_bundle(folder, env)
    for fatbin in install_fatbins(folder, manifest):
        log.info("installed the bundle's kernels %s", fatbin)
    options = dict(manifest.build_options)
    cache = options.pop("calib_cache", None)
    options.pop("timing_cache", None)
    return build(
        folder / MODEL_NAME,
        output if output is not None else folder / "engine",
        target=manifest.target_name,
        calib_cache=folder / cache if cache else None,
        timing_cache=timing_cache,
        verbose=verbose,
        environment=env,
        **options,
    )
