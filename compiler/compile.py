"""``vitrt compile``: a PyTorch model or an ONNX file -> a verified, profiled artifact for a target, with a
report (``vitrt.compile``).

Stages, each cached in ``OUTDIR/stages/<stage>-<key>/`` by a content hash of its inputs
(``vitrt.compiler.stage_cache``):

1. export    PyTorch -> ONNX (``plugin`` lowering for TensorRT targets, ``portable`` for ``cpu``, where
             OpenVINO cannot run plugin nodes and ONNX Runtime runs them only as slow Python ops); skipped for
             an ONNX input.
2. prepare   ``vitrt.prepare``: simplify, fuse LayerNorm / GELU, module names (checked on ONNX Runtime).
3. precision ``vitrt.calibrate`` (INT8) and / or ``vitrt.fp16``; skipped for fp32. The INT8 form follows the
             runtime that will run it: ``cpu`` with ``runtime`` "auto" or "onnxruntime" gets the ONNX Runtime
             form (int32 biases its int8 kernels fuse, layers too small to gain kept float; standard Q/DQ
             that OpenVINO reads as well, so "auto" still times both runtimes on it); ``cpu`` with
             "openvino", every TensorRT target, and INT8+FP16 (``vitrt fp16`` takes only the TensorRT form)
             get the TensorRT form.
4. build     ``vitrt.build`` for the target; for a TensorRT target on a machine without TensorRT, a bundle
             (``vitrt.bundle``) that the device builds, and the report says so.
5. verify    the artifact (for a bundle: its ONNX on ONNX Runtime, the only runtime here) against the FP32
             reference, PyTorch eager for a model and the given file on ONNX Runtime for an ONNX input: top-1
             accuracy of both on labelled evaluation data (``vitrt.compiler.compile_data``), and top-1
             agreement, cosine and max abs error of the logits always.
6. profile   latency statistics (ms, batch 1) of the artifact and, for a model, of PyTorch eager, timed
             interleaved in one run (``vitrt.compiler.compile_profile``); skipped for a bundle.
7. report    ``OUTDIR/report.json`` / ``report.md`` / ``report.html`` and ``OUTDIR/plots/*.png``
             (``vitrt.compiler.compile_report``); written on every run, since it records which stages ran.

Every check on the options and the input runs before the output folder is created, so a refused run leaves
no folder behind. A stage that fails raises CompileError naming it and the cause; the stages before it keep
their folders and the next run reuses them; the report (all three files, and the plots the stages that ran
allow, an earlier run's others removed) is written with ``status: "failed"``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrt.errors import ConfigError, VitrtError
from vitrt.fileio import file_sha256

from .compile_source import ModelSource, model_source
from .stage_cache import StageCache, StageRun

if TYPE_CHECKING:
    from torch import nn

    from vitrt.models.config import PreprocessConfig

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

STAGES = ("export", "prepare", "precision", "build", "verify", "profile", "report")
PRECISIONS = ("fp32", "fp16", "int8", "int8+fp16")
Progress = Callable[[str], None]


class CompileError(VitrtError):
    """A stage of ``vitrt compile`` failed: ``stage`` names it; the message says why and what is kept."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class StageEntry:
    """One line of the stage log: status is "ran", "cached", "skipped" or "failed"."""

    name: str
    status: str
    seconds: float = 0.0
    built_seconds: float = 0.0
    folder: str | None = None
    key: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "built_seconds": round(self.built_seconds, 3),
            "folder": self.folder,
            "key": self.key,
            "note": self.note,
        }


@dataclass
class CompileResult:
    """What ``compile_model`` produced: the output folder, the report (``report.json``'s content), the stage
    log and the artifact (or bundle) folder."""

    outdir: Path
    report: dict[str, Any]
    stages: list[StageEntry] = field(default_factory=list)
    artifact: Path | None = None

    def summary(self) -> list[str]:
        """The report's summary lines (accuracy, latency, where the report is)."""
        return list(self.report.get("summary", []))


class _Pipeline:
    """The state of one compile run: the cache, the stage log and what the stages produced."""

    def __init__(self, outdir: Path, progress: Progress | None) -> None:
        self.outdir = outdir
        self.cache = StageCache(outdir)
        self.entries: list[StageEntry] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.progress = progress
        self.failure: tuple[str, str] | None = None

    def _say(self, entry: StageEntry) -> None:
        if self.progress is None:
            return
        where = f"  {entry.folder}" if entry.folder else ""
        note = f"  ({entry.note})" if entry.note and entry.status in ("skipped", "failed") else ""
        self.progress(
            f"[{len(self.entries)}/{len(STAGES)}] {entry.name:<9} {entry.status:<7} "
            f"{entry.seconds:7.1f} s{where}{note}"
        )

    def run(self, name: str, inputs: dict[str, Any], work: Callable[[Path], dict[str, Any]]) -> StageRun:
        """Run (or reuse) stage ``name``; a failure becomes CompileError naming the stage."""
        start = time.perf_counter()
        try:
            run = self.cache.run(name, inputs, work)
        except Exception as err:
            self.fail(name, err, time.perf_counter() - start)
            raise AssertionError("unreachable") from err
        entry = StageEntry(
            name,
            "cached" if run.cached else "ran",
            run.seconds,
            run.built_seconds,
            os.path.relpath(run.folder, self.outdir),
            run.key,
        )
        self.entries.append(entry)
        self.results[name] = run.result
        self._say(entry)
        return run

    def skip(self, name: str, note: str) -> None:
        entry = StageEntry(name, "skipped", note=note)
        self.entries.append(entry)
        self._say(entry)

    def fail(self, name: str, err: BaseException, seconds: float) -> None:
        reason = str(err) if isinstance(err, VitrtError) else f"{type(err).__name__}: {err}"
        entry = StageEntry(name, "failed", seconds, note=reason)
        self.entries.append(entry)
        self._say(entry)
        self.failure = (name, reason)
        raise CompileError(
            name,
            f"stage {name} failed: {reason}. The stages before it are kept in {self.outdir / 'stages'} "
            "and the next run reuses them",
        ) from err


def _int8_form(target_is_cpu: bool, runtime: str, precision: str) -> str:
    """The INT8 form to calibrate (module docstring, stage 3)."""
    if precision == "int8" and target_is_cpu and runtime in ("auto", "onnxruntime"):
        return "onnxruntime"
    return "tensorrt"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _run_batched(
    infer: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int | None
) -> np.ndarray:
    """``infer`` over ``images`` (N, C, H, W) in chunks of the model's fixed ``batch`` (the last padded with
    copies of its first image), or all at once for a dynamic batch (None)."""
    if batch is None:
        return np.concatenate([infer(images[i : i + 64]) for i in range(0, len(images), 64)])
    outs = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - n, axis=0)])
        outs.append(infer(chunk)[:n])
    return np.concatenate(outs)


def compile_model(
    model: Any,
    output: PathLike,
    *,
    target: str = "cpu",
    precision: str = "fp32",
    checkpoint: PathLike | None = None,
    fusion: Any = None,
    attention: Any = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    name: str | None = None,
    lowering: str | None = None,
    runtime: str = "auto",
    calib_data: PathLike | None = None,
    calib_samples: int | None = None,
    eval_data: PathLike | None = None,
    eval_samples: int = 500,
    convert_channels: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: int | Sequence[int] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    iterations: int = 50,
    threads: int | None = None,
    verbose: bool = False,
    progress: Progress | None = None,
) -> CompileResult:
    """Compile ``model`` for ``target`` into the folder ``output``: ``vitrt compile`` as a function
    (``vitrt.compile``); the stages and the cache are in the module docstring.

    Args:
        model: a registered model name, a model description ``.json`` (``vitrt.compiler.compile_source``), an
            ``nn.Module``, or an ``.onnx`` file (exported elsewhere: the export stage is skipped).
        output: the output folder (created): ``stages/``, ``report.{json,md,html}``, ``plots/``.
        target: a name from ``vitrt targets`` (default ``cpu``).
        precision: fp32, fp16, int8 or int8+fp16.
        checkpoint / fusion / attention / img_size / num_classes / name: the PyTorch model (as
            ``vitrt.create_model``; ``name`` is what reports call a module).
        lowering: of the plugin ops at export (default: ``plugin`` for TensorRT targets, ``portable`` for
            cpu).
        runtime: ``cpu`` only: auto (time ONNX Runtime and OpenVINO, keep the faster), onnxruntime, openvino.
        calib_data / calib_samples: INT8 calibration source (required for int8, refused otherwise) and how
            many samples (default 256; int8 only).
        eval_data / eval_samples: the evaluation source (labelled: top-1 accuracy; default ``synthetic``,
            16 samples, agreement only) and at most how many samples.
        convert_channels: replicate grayscale data to the model's channels (calibration and evaluation).
        mean / std / size / crop_pct / interpolation: the preprocessing of an ONNX file without vitrt's
            export config (mean and std required then: ConfigError before any stage runs); overrides
            otherwise.
        iterations: timed calls per runtime in the profile stage.
        threads: intra-op threads of both the artifact's runtime and PyTorch in the profile stage (default:
            each runtime's own default; on a shared machine 1 keeps thread pools from fighting over cores).
        verbose: let other packages' warnings and logs through (``vitrt compile -v``).
        progress: called with one line per stage (stage, status, seconds, folder); None: silent.

    Returns a CompileResult. Raises ConfigError for bad options (before any stage) and CompileError for a
    failed stage.
    """
    from .export import quiet_export_tracing
    from .quiet import quiet_third_party
    from .targets import get_target

    spec = get_target(target)
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if spec.uses_tensorrt and not spec.supports(precision):
        raise ConfigError(
            f"{spec.name} has no {precision} hardware support; its precisions: {spec.precisions}"
        )
    if runtime != "auto" and spec.uses_tensorrt:
        raise ConfigError("--runtime is for --target cpu; TensorRT targets run on TensorRT")
    if precision.startswith("int8") and calib_data is None:
        raise ConfigError(
            f"--precision {precision} needs calibration data: pass --calib-data (an image folder, .npy/.npz, "
            "skimage, sklearn-digits, ...)"
        )
    if not precision.startswith("int8") and (calib_data is not None or calib_samples is not None):
        # they would change nothing in the artifact (and would re-run the precision stage for nothing)
        given = [
            flag
            for flag, value in (("--calib-data", calib_data), ("--calib-samples", calib_samples))
            if value is not None
        ]
        flags = " and ".join(given)
        raise ConfigError(
            f"{flags} only {'apply' if len(given) > 1 else 'applies'} to --precision int8 or int8+fp16 "
            f"(calibration data sets the INT8 scales); {precision} has no calibration: leave {flags} out, or "
            "pass --precision int8"
        )
    calib_samples = 256 if calib_samples is None else calib_samples
    for label, count in (
        ("calib_samples", calib_samples),
        ("eval_samples", eval_samples),
        ("iterations", iterations),
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"{label} must be a positive integer, got {count!r}")
    lowering = lowering or ("plugin" if spec.uses_tensorrt else "portable")
    is_onnx = isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".onnx")
    if is_onnx:
        # The file fixes its weights, fusion and input: these would be ignored ("none" is no fusion).
        fixed = {
            "checkpoint": checkpoint,
            "fusion": None if fusion in ("none", "") else fusion,
            "attention": attention,
            "img_size": img_size,
            "num_classes": num_classes,
        }
        given = [f"--{key.replace('_', '-')}" for key, value in fixed.items() if value is not None]
        if given:
            raise ConfigError(
                f"{model} is an ONNX file, made with its weights, fusion and input size: {', '.join(given)} "
                "only apply to a model name or description. Leave them out, or compile the model itself "
                "(`vitrt compile MODEL --checkpoint W --fusion ...`)"
            )
    for flag, spec_ in (("--calib-data", calib_data), ("--eval-data", eval_data)):
        if spec_ is not None:
            _check_data_spec(flag, spec_)
    foreign_pre = {
        "mean": mean,
        "std": std,
        "size": size,
        "crop_pct": crop_pct,
        "interpolation": interpolation,
    }
    outdir = Path(output)
    source: ModelSource | None = None
    onnx_input: Path | None = None
    onnx_pre: PreprocessConfig | None = None
    if is_onnx:
        onnx_input = Path(model)
        if not onnx_input.is_file():
            raise ConfigError(f"{onnx_input} does not exist")
        with quiet_third_party(not verbose):
            onnx_pre = _onnx_preprocess(onnx_input, foreign_pre)
    else:
        source = model_source(
            model,
            checkpoint=checkpoint,
            fusion=fusion,
            attention=attention,
            img_size=img_size,
            num_classes=num_classes,
            name=name,
        )
    # only now, after every check on the input: a refused run leaves no (empty) output folder behind
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VitrtError(f"cannot create the output folder {outdir}: {err.strerror}") from err
    pipe = _Pipeline(outdir, progress)
    built: dict[str, Any] = {}

    def torch_model() -> nn.Module:
        assert source is not None
        if "module" not in built:
            built["module"] = source.build()
        module: nn.Module = built["module"]
        return module

    def preprocess() -> PreprocessConfig:
        if onnx_pre is not None:
            return onnx_pre
        assert source is not None
        return source.preprocess(torch_model())

    options = {
        "target": spec.name,
        "precision": precision,
        "lowering": lowering if source is not None else None,
        "runtime": runtime if not spec.uses_tensorrt else None,
        "calib_data": os.fspath(calib_data) if calib_data is not None else None,
        "calib_samples": calib_samples if precision.startswith("int8") else None,
        "eval_data": os.fspath(eval_data) if eval_data is not None else None,
        "eval_samples": eval_samples,
        "convert_channels": convert_channels,
        "iterations": iterations,
        "threads": threads,
    }
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t_total = time.perf_counter()
    try:
        with quiet_third_party(not verbose), quiet_export_tracing(not verbose):
            _stages(
                pipe,
                spec=spec,
                source=source,
                onnx_input=onnx_input,
                torch_model=torch_model,
                preprocess=preprocess,
                foreign_pre=foreign_pre,
                options=options,
            )
    except CompileError as err:
        from .compile_report import write_report

        # all three files and the plots, so none left from an earlier run in this folder still reads "ok"
        with quiet_third_party(not verbose):
            write_report(
                outdir,
                _report_data(
                    pipe, source, onnx_input, options, started, time.perf_counter() - t_total, error=err
                ),
            )
        raise
    from .compile_report import write_report

    t0 = time.perf_counter()
    data = _report_data(pipe, source, onnx_input, options, started, time.perf_counter() - t_total)
    entry = StageEntry("report", "ran", folder=".")
    pipe.entries.append(entry)
    data["stages"] = [e.to_dict() for e in pipe.entries]
    with quiet_third_party(not verbose):
        write_report(outdir, data)
    entry.seconds = entry.built_seconds = time.perf_counter() - t0
    data["stages"] = [e.to_dict() for e in pipe.entries]
    from .compile_report import write_json

    write_json(outdir, data)  # with the report stage's own time
    pipe._say(entry)
    artifact = pipe.results.get("artifact_path", {}).get("path")
    return CompileResult(outdir, data, pipe.entries, Path(artifact) if artifact else None)


def _check_data_spec(flag: str, spec: PathLike) -> None:
    """ConfigError naming ``flag`` when ``spec`` is neither a built-in data source nor an existing folder or
    data file: found before any stage runs, not after the export."""
    from vitrt.calibration.data import BUILTIN_SOURCES, IMAGE_EXTENSIONS

    text = os.fspath(spec)
    if text in BUILTIN_SOURCES:
        return
    path = Path(text).expanduser()
    fix = f"give an image folder (jpg/png), a .npy/.npz file, or one of {', '.join(BUILTIN_SOURCES)}"
    if not path.exists():
        raise ConfigError(f"{flag} {text!r}: no such file or folder. Fix: {fix}")
    if path.is_file() and path.suffix.lower() not in (".npy", ".npz", *IMAGE_EXTENSIONS):
        raise ConfigError(f"{flag} {text!r}: not a data source vitrt reads. Fix: {fix}")


def _onnx_preprocess(path: Path, given: dict[str, Any]) -> PreprocessConfig:
    """The preprocessing of an ONNX input (``vitrt.calibration.calibrate.preprocess_for``); ConfigError naming
    the missing --mean / --std for a file without vitrt's export config."""
    from vitrt.calibration.calibrate import preprocess_for
    from vitrt.calibration.collect import model_io
    from vitrt.calibration.errors import CalibrationError
    from vitrt.fileio import load_onnx

    proto = load_onnx(path)
    try:
        return preprocess_for(proto, model_io(proto), **given)
    except CalibrationError as err:
        raise ConfigError(f"{path}: {err}") from err


def _stages(
    pipe: _Pipeline,
    *,
    spec: Any,
    source: ModelSource | None,
    onnx_input: Path | None,
    torch_model: Callable[[], nn.Module],
    preprocess: Callable[[], PreprocessConfig],
    foreign_pre: dict[str, Any],
    options: dict[str, Any],
) -> None:
    """Stages 1-6 (module docstring), recorded in ``pipe``."""
    from dataclasses import asdict

    from .compile_data import DEFAULT_EVAL, data_identity

    precision, runtime = options["precision"], options["runtime"] or "auto"

    # 1. export
    if source is not None:

        def export(folder: Path) -> dict[str, Any]:
            from .export import ExportConfig, export_model

            module = torch_model()
            pre = preprocess()
            config = ExportConfig(
                model=source.name,
                lowering=options["lowering"],
                batch=1,
                input_size=(pre.input_size[0], source.img_size, source.img_size),
                mean=tuple(pre.mean),
                std=tuple(pre.std),
                img_size=source.img_size,
                num_classes=source.num_classes,
                fusion=source.fusion,
                attention=source.attention,
                checkpoint=str(source.checkpoint) if source.checkpoint else None,
                checkpoint_sha256=source.identity["checkpoint_sha256"],
                extra={
                    "preprocess": {"crop_pct": pre.crop_pct, "interpolation": pre.interpolation},
                    **({"arch": source.arch} if source.arch else {}),
                },
            )
            timings: dict[str, float] = {}
            path = export_model(module, folder / "model.onnx", config, timings=timings)
            return {"file": path.name, "sha256": file_sha256(path), "timings": timings}

        run = pipe.run("export", {"model": source.identity, "lowering": options["lowering"]}, export)
        fp32_file = run.folder / run.result["file"]
    else:
        assert onnx_input is not None
        pipe.skip("export", "an ONNX file was given")
        fp32_file = onnx_input
    fp32_sha = file_sha256(fp32_file)
    pipe.results["fp32"] = {"path": str(fp32_file), "sha256": fp32_sha, "bytes": fp32_file.stat().st_size}

    # 2. prepare
    def prepare(folder: Path) -> dict[str, Any]:
        from .prepare import prepare_onnx

        path, _ = prepare_onnx(fp32_file, folder / "model.onnx")
        return {"file": path.name, "sha256": file_sha256(path)}

    run = pipe.run("prepare", {"model_sha256": fp32_sha}, prepare)
    current = run.folder / run.result["file"]
    current_sha = run.result["sha256"]

    # 3. precision
    form = _int8_form(not spec.uses_tensorrt, runtime, precision) if precision.startswith("int8") else None
    if precision == "fp32":
        pipe.skip("precision", "fp32: the prepared file is built as it is")
    else:
        calib = options["calib_data"]
        inputs = {
            "model_sha256": current_sha,
            "precision": precision,
            "int8_form": form,
            "calib": data_identity(calib) if calib is not None else None,
            "calib_samples": options["calib_samples"],
            "convert_channels": options["convert_channels"],
            "preprocess": foreign_pre,
        }
        prepared = current

        def precision_stage(folder: Path) -> dict[str, Any]:
            from vitrt.calibration.calibrate import calibrate_onnx
            from vitrt.calibration.fp16 import fp16_onnx

            result: dict[str, Any] = {"precision": precision, "int8_form": form}
            src = prepared
            if precision.startswith("int8"):
                assert form is not None
                out = folder / ("model.onnx" if precision == "int8" else "model.int8.onnx")
                cal = calibrate_onnx(
                    src,
                    calib,
                    out,
                    num_samples=options["calib_samples"],
                    convert_channels=options["convert_channels"],
                    report=folder / "calibration.json",
                    progress=False,
                    prepare=False,  # stage 2 prepared it
                    runtime=form,
                    **foreign_pre,
                )
                result["calibration"] = {
                    "layers_int8": len(cal.quantized),
                    "layers_float": len(cal.layers) - len(cal.quantized),
                    "agreement": cal.agreement.to_dict() if cal.agreement is not None else None,
                    "report": "calibration.json",
                }
                src = out
            if precision.endswith("fp16"):
                out = folder / "model.onnx"
                fp = fp16_onnx(src, out, prepare=False)
                result["fp16_agreement"] = fp.agreement
            final = folder / "model.onnx"
            result.update(file=final.name, sha256=file_sha256(final), bytes=final.stat().st_size)
            return result

        run = pipe.run("precision", inputs, precision_stage)
        current = run.folder / run.result["file"]
        current_sha = run.result["sha256"]
    pipe.results["final_onnx"] = {
        "path": str(current),
        "sha256": current_sha,
        "bytes": current.stat().st_size,
    }

    # 4. build (or bundle)
    final_onnx = current

    def build_stage(folder: Path) -> dict[str, Any]:
        from .build import TensorRTMissingError, build
        from .bundle import bundle

        if not spec.uses_tensorrt:
            res = build(final_onnx, folder / "artifact", target=spec.name, runtime=runtime)
            kind, note = "cpu", ""
        else:
            try:
                res = build(final_onnx, folder / "artifact", target=spec.name)
                kind, note = "engine", ""
            except TensorRTMissingError:
                res = bundle(final_onnx, folder / "bundle", target=spec.name)  # type: ignore[assignment]
                kind, note = "bundle", ""  # said after the stage, where the bundle's final path is known
        files = {
            p.relative_to(res.path).as_posix(): p.stat().st_size
            for p in sorted(res.path.rglob("*"))
            if p.is_file()
        }
        manifest = res.manifest
        return {
            "kind": kind,
            "path": res.path.name,
            "runtime": manifest.runtime.get("name") if manifest.runtime else None,
            "runtime_version": manifest.runtime.get("version") if manifest.runtime else None,
            "files": files,
            "bytes": sum(files.values()),
            "manifest_sha256": file_sha256(
                res.path / ("manifest.json" if kind != "bundle" else "bundle.json")
            )
            if (res.path / ("manifest.json" if kind != "bundle" else "bundle.json")).is_file()
            else None,
            "cpu_timings": manifest.extra.get("timings") if kind == "cpu" else None,
            "note": note,
        }

    run = pipe.run(
        "build",
        {"model_sha256": current_sha, "target": spec.name, "runtime": options["runtime"]},
        build_stage,
    )
    build_result = run.result
    artifact = run.folder / build_result["path"]
    pipe.results["artifact_path"] = {"path": str(artifact)}
    if build_result["kind"] == "bundle":
        # the bundle is made already (the build stage ran `vitrt bundle`): the one step left is on the device
        build_result["note"] = (
            f"TensorRT is not installed here, so no engine was built: {artifact} is a bundle to build on the "
            f"{spec.description}: copy that folder to the device and run `vitrt build --bundle {artifact}` "
            "there"
        )
    if build_result.get("note"):
        pipe.entries[-1].note = build_result["note"]
    artifact_id = build_result.get("manifest_sha256") or current_sha
    reference_id = source.identity if source is not None else {"onnx_sha256": fp32_sha}

    def artifact_runner(threads: int | None = None) -> Any:
        if build_result["kind"] == "bundle":
            from vitrt.deploy.runners import OnnxRuntimeRunner

            return OnnxRuntimeRunner(final_onnx, threads=threads)
        from vitrt.deploy.artifact import load_artifact

        return load_artifact(artifact, threads=threads)

    def io() -> tuple[str, int | None, str]:
        from vitrt.calibration.collect import model_io
        from vitrt.fileio import load_onnx

        mio = model_io(load_onnx(final_onnx))
        return mio.input_name, mio.batch, mio.output_name

    # 5. verify
    eval_spec = options["eval_data"] or DEFAULT_EVAL
    eval_n = options["eval_samples"] if options["eval_data"] else min(16, options["eval_samples"])

    def verify(folder: Path) -> dict[str, Any]:
        import torch

        from vitrt.calibration.metrics import agreement

        from .compile_data import open_eval_set

        data = open_eval_set(eval_spec, preprocess(), eval_n, convert_channels=options["convert_channels"])
        runner = artifact_runner()
        name_in, batch, name_out = io()
        actual = _run_batched(lambda x: np.asarray(runner.infer({name_in: x})[name_out]), data.images, batch)
        if source is not None:
            module = torch_model()

            def ref_infer(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return np.asarray(module(torch.from_numpy(np.ascontiguousarray(x))).numpy())

            expected = _run_batched(ref_infer, data.images, None)
            reference = f"PyTorch FP32 eager ({source.name})"
        else:
            from vitrt.deploy.runners import OnnxRuntimeRunner

            assert onnx_input is not None
            ref_runner = OnnxRuntimeRunner(onnx_input)
            ref_in = next(iter(ref_runner.input_shapes))
            ref_batch = ref_runner.input_shapes[ref_in][0]
            expected = _run_batched(
                lambda x: np.asarray(next(iter(ref_runner.infer({ref_in: x}).values()))),
                data.images,
                ref_batch if isinstance(ref_batch, int) and ref_batch > 0 else None,
            )
            reference = f"FP32 ONNX on ONNX Runtime ({onnx_input.name})"
        agree = agreement(expected, actual)
        result: dict[str, Any] = {
            "eval_data": data.source,
            "samples": len(data.images),
            "labelled": data.labelled,
            "reference": reference,
            "ran_on": "ONNX Runtime (CPU), the bundle's ONNX: no engine here"
            if build_result["kind"] == "bundle"
            else f"the artifact ({build_result['runtime']})",
            "reference_top1": None,
            "top1": None,
            **asdict(agree),
        }
        if data.labels is not None:
            result["reference_top1"] = float((expected.argmax(1) == data.labels).mean())
            result["top1"] = float((actual.argmax(1) == data.labels).mean())
        return result

    pipe.run(
        "verify",
        {
            "artifact": artifact_id,
            "reference": reference_id,
            "eval": data_identity(eval_spec),
            "eval_samples": eval_n,
            "convert_channels": options["convert_channels"],
            "preprocess": foreign_pre,
        },
        verify,
    )

    # 6. profile
    if build_result["kind"] == "bundle":
        pipe.skip("profile", "a bundle: latency is measured on the device after `vitrt build --bundle`")
        return

    def profile(folder: Path) -> dict[str, Any]:
        import torch

        from .compile_profile import profile_stage

        name_in, batch, _ = io()
        pre = preprocess()
        x = np.random.default_rng(0).standard_normal((batch or 1, *pre.input_size)).astype(np.float32)
        eager: Callable[[], object] | None = None
        if source is not None:
            module = torch_model()
            xt = torch.from_numpy(x)

            def run_eager() -> object:
                with torch.no_grad():
                    return module(xt)

            eager = run_eager
        threads = options["threads"]
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            runner = artifact_runner(threads)
            result = profile_stage(runner, {name_in: x}, eager=eager, iterations=options["iterations"])
            result["torch_threads"] = torch.get_num_threads()
        finally:
            torch.set_num_threads(before)
        result["threads"] = threads
        result["runtime"] = build_result["runtime"]
        return result

    pipe.run(
        "profile",
        {
            "artifact": artifact_id,
            "reference": reference_id,
            "iterations": options["iterations"],
            "threads": options["threads"],
        },
        profile,
    )


def _report_data(
    pipe: _Pipeline,
    source: ModelSource | None,
    onnx_input: Path | None,
    options: dict[str, Any],
    started: str,
    seconds: float,
    error: CompileError | None = None,
) -> dict[str, Any]:
    from .compile_report import report_data

    return report_data(
        outdir=pipe.outdir,
        entries=[e.to_dict() for e in pipe.entries],
        results=pipe.results,
        model=source.describe() if source is not None else {"kind": "onnx", "file": str(onnx_input)},
        options=options,
        started=started,
        seconds=seconds,
        error={"stage": error.stage, "message": str(error)} if error is not None else None,
    )
