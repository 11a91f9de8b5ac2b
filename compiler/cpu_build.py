"""The ``cpu`` target: ONNX Runtime or OpenVINO, whichever is faster here, as an artifact folder.

Both CPU runtimes read the same files: FP32, vitrt's Q/DQ INT8, FP16 and INT8+FP16. What each artifact holds:

- ``onnxruntime``: ``model.onnx`` as ONNX Runtime saves it after its offline graph optimisations (level
  EXTENDED: fused LayerNorm / GELU / attention matmuls, Q/DQ pairs folded into its int8 kernels such as
  QLinearMatMul), so loading skips them; the hardware-specific layout pass (level ALL) runs at load time on
  whatever CPU loads it. vitrt's plugin nodes stay ``vitrt::`` nodes (run through Python ops).
- ``openvino``: the OpenVINO IR (``model.xml`` + ``model.bin``, weights kept in their precision: no
  compression to float16). Not for files with vitrt's plugin nodes (OpenVINO cannot run them).

``CpuPlan`` is the decision as data: which runtimes were candidates and why others were not, the inference
precision (f32 unless asked: OpenVINO's own default on a bf16-capable CPU is bf16, which is faster and less
exact, so it is an explicit, recorded choice) and threads. With ``runtime="auto"`` both candidates are built,
timed in interleaved blocks on the same input (``vitrt.deploy.latency.measure_interleaved``), and the faster
kept; the timings and the CPU's name and flags go into the manifest. Every artifact is run once against
the ONNX file it came from, on ONNX Runtime, and the agreement (cosine, max abs error) recorded.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import VitrtError

from .build_plan import BuildPlanError, ModelFacts, fixed_batch, precision_steps

log = logging.getLogger(__name__)

CPU_RUNTIMES = ("onnxruntime", "openvino")
RUNTIME_CHOICES = ("auto", *CPU_RUNTIMES)
INFERENCE_PRECISIONS = ("f32", "bf16")
MODEL_FILES = {"onnxruntime": "model.onnx", "openvino": "model.xml"}


@dataclass(frozen=True)
class CpuPlan:
    """The cpu target's decisions as data (module docstring). candidates: the runtimes still in the running
    (one: no timing needed); dropped: runtime -> why not; rewrites: graph rewrites before building
    ("fp16"); batch: the batch timed and checked (a fixed batch axis's own)."""

    runtime: str
    candidates: tuple[str, ...]
    dropped: dict[str, str]
    precision: str
    rewrites: tuple[str, ...]
    inference_precision: str
    threads: int | None
    batch: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_cpu(
    facts: ModelFacts,
    *,
    runtime: str = "auto",
    precision: str | None = None,
    inference_precision: str | None = None,
    threads: int | None = None,
    batch: int | None = None,
    available: dict[str, bool] | None = None,
) -> CpuPlan:
    """The CpuPlan for ``facts``' file (pure: ``available`` says which runtimes import here, default: try).

    Raises BuildPlanError naming the fix: an unknown runtime or inference precision, a ``batch`` a fixed
    batch axis does not take, a precision the file cannot become here (INT8 needs ``vitrt calibrate``; the
    CPU runtimes read INT8 Q/DQ, not FP8 / FP4), or no runtime able to run the file (OpenVINO missing or
    facing plugin nodes, bf16 asked of ONNX Runtime).
    """
    if runtime not in RUNTIME_CHOICES:
        raise BuildPlanError(f"unknown CPU runtime {runtime!r}; one of {', '.join(RUNTIME_CHOICES)}")
    infer = inference_precision or "f32"
    if infer not in INFERENCE_PRECISIONS:
        raise BuildPlanError(
            f"unknown inference precision {infer!r}; one of {', '.join(INFERENCE_PRECISIONS)}"
        )
    wanted = precision or facts.precision
    if "fp8" in (wanted, facts.precision) or "fp4" in (wanted, facts.precision):
        raise BuildPlanError(
            "the CPU runtimes here run FP32, INT8 (Q/DQ) and FP16 files, not FP8 / FP4. Fix: build the "
            "FP32 or "
            "INT8 file for --target cpu; FP8 is for TensorRT targets that have it"
        )
    rewrites = precision_steps(facts.precision, wanted)
    available = available if available is not None else {r: _importable(r) for r in CPU_RUNTIMES}
    dropped: dict[str, str] = {}
    if not available.get("openvino"):
        dropped["openvino"] = "OpenVINO is not installed (pip install 'vitrt[openvino]')"
    elif facts.plugins:
        dropped["openvino"] = (
            f"the graph holds vitrt plugin nodes ({', '.join(facts.plugins)}), which OpenVINO cannot run "
            "(export with --lowering portable for it)"
        )
    if not available.get("onnxruntime"):
        dropped["onnxruntime"] = "ONNX Runtime is not installed (pip install 'vitrt[onnx]')"
    elif infer == "bf16":
        dropped["onnxruntime"] = "ONNX Runtime's CPU provider has no bf16 inference precision (f32 only)"
    asked = CPU_RUNTIMES if runtime == "auto" else (runtime,)
    candidates = tuple(r for r in asked if r not in dropped)
    if not candidates:
        reasons = "; ".join(f"{r}: {dropped[r]}" for r in asked)
        raise BuildPlanError(f"no CPU runtime can run this build: {reasons}")
    if batch is not None and batch < 1:
        raise BuildPlanError(f"batch must be >= 1, got {batch}")
    fixed = {b for t in facts.inputs if (b := fixed_batch(t.shape)) is not None}
    if batch is not None and fixed and fixed != {batch}:
        size = min(fixed)
        raise BuildPlanError(
            f"the model's input has a fixed batch of {size}, so --opt {batch} (the batch to time) cannot be "
            f"run. Fix: leave out --opt (or --opt {size}), or re-export with `vitrt export ... "
            "--dynamic-batch`"
        )
    if batch is None and len(fixed) == 1:
        batch = next(iter(fixed))  # the batch the file takes is the one timed and checked
    return CpuPlan(
        runtime=candidates[0] if len(candidates) == 1 else "auto",
        candidates=candidates,
        dropped={r: why for r, why in dropped.items() if r in asked},
        precision=wanted,
        rewrites=rewrites,
        inference_precision=infer,
        threads=threads,
        batch=batch or 1,
    )


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def save_onnxruntime(source: Path, dest: Path) -> list[str]:
    """ONNX Runtime's offline-optimised copy of ``source`` as ``dest/model.onnx``; returns the file names."""
    import onnx
    import onnxruntime as ort

    from vitrt.fileio import load_onnx, save_onnx
    from vitrt.plugins.lowering import (
        from_onnxruntime,
        has_plugin_nodes,
        ort_custom_ops_library,
        to_onnxruntime,
    )

    proto = load_onnx(source)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    out = dest / MODEL_FILES["onnxruntime"]
    options.optimized_model_filepath = str(out)
    plugins = has_plugin_nodes(proto)
    model: str | bytes = str(source)
    if plugins:  # ORT runs vitrt's nodes as onnxruntime-extensions Python ops, in its own domain
        options.register_custom_ops_library(ort_custom_ops_library())
        model = bytes(to_onnxruntime(proto).SerializeToString())
    try:
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT's own exception types
        raise VitrtError(f"ONNX Runtime cannot load {source}: {str(err).strip().splitlines()[-1]}") from err
    if plugins:  # back to vitrt's domain, as every vitrt file has it (the runner moves it again)
        save_onnx(from_onnxruntime(onnx.load(str(out))), out)
    return [p.name for p in dest.iterdir()]


def save_openvino(source: Path, dest: Path) -> list[str]:
    """``source`` read by OpenVINO's ONNX frontend and saved as IR in ``dest`` (``model.xml`` /
    ``model.bin``, weights uncompressed); returns the file names."""
    from vitrt.deploy.openvino_runner import check_no_plugin_nodes, import_openvino

    ov = import_openvino()
    check_no_plugin_nodes(source)
    try:
        model = ov.Core().read_model(str(source))
        ov.save_model(model, str(dest / MODEL_FILES["openvino"]), compress_to_fp16=False)
    except Exception as err:  # OpenVINO's RuntimeError subclasses
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VitrtError(f"OpenVINO cannot convert {source}: {first}") from err
    return [p.name for p in dest.iterdir()]


def cpu_runner(runtime: str, folder: Path, *, threads: int | None, inference_precision: str = "f32") -> Any:
    """The runner of a CPU artifact's model in ``folder`` (``OnnxRuntimeRunner`` or ``OpenVinoRunner``)."""
    from vitrt.deploy.openvino_runner import OpenVinoRunner
    from vitrt.deploy.runners import OnnxRuntimeRunner

    path = folder / MODEL_FILES[runtime]
    if runtime == "openvino":
        return OpenVinoRunner(path, threads=threads, inference_precision=inference_precision)
    return OnnxRuntimeRunner(path, threads=threads)


def sample_feed(facts: ModelFacts, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic normal(0, 1) input per graph input, its dynamic batch axis set to ``batch``."""
    rng = np.random.default_rng(seed)
    feed = {}
    for t in facts.inputs:
        shape = [batch if i == 0 and not isinstance(d, int) else int(d) for i, d in enumerate(t.shape)]
        feed[t.name] = rng.standard_normal(shape).astype(t.dtype if t.dtype != "undefined" else "float32")
    return feed


def output_agreement(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per float output: cosine and max abs error of ``actual`` vs ``reference`` (``calibration.metrics``)."""
    from vitrt.calibration.metrics import agreement

    out = {}
    for name, ref in reference.items():
        if name in actual and np.issubdtype(np.asarray(ref).dtype, np.floating):
            a = agreement(np.asarray(ref, np.float64), np.asarray(actual[name], np.float64))
            out[name] = {"cosine": a.mean_cosine, "max_abs": a.max_abs_error}
    return out


def build_cpu_artifact(
    source: Path, original: Path, out_dir: Path, plan: CpuPlan, facts: ModelFacts, *, iterations: int = 20
) -> dict[str, Any]:
    """Build ``source`` (the ONNX after the plan's rewrites) into ``out_dir`` for the plan's runtime, or for
    each candidate with the faster kept; check it against ``original`` (the file as the user gave it) on ONNX
    Runtime. Returns the manifest's "runtime", "files", "timings" and "agreement" entries."""
    from vitrt.deploy.latency import measure_interleaved
    from vitrt.deploy.runners import OnnxRuntimeRunner

    feed = sample_feed(facts, plan.batch)
    scratch = {r: out_dir / f".{r}" for r in plan.candidates}
    runners = {}
    for runtime, folder in scratch.items():
        folder.mkdir()
        (save_openvino if runtime == "openvino" else save_onnxruntime)(source, folder)
        runners[runtime] = cpu_runner(
            runtime, folder, threads=plan.threads, inference_precision=plan.inference_precision
        )
    timings: dict[str, Any] = {}
    chosen = plan.candidates[0]
    if len(runners) > 1:
        calls: dict[str, Callable[[], object]] = {r: partial(run.infer, feed) for r, run in runners.items()}
        stats = measure_interleaved(calls, warmup=3, iterations=iterations)
        timings = {r: s.to_dict() for r, s in stats.items()}
        chosen = min(stats, key=lambda r: stats[r].median)
        log.info("cpu runtimes: %s", ", ".join(f"{r} {s.median:.2f} ms" for r, s in stats.items()))
    reference = OnnxRuntimeRunner(original, threads=plan.threads).infer(feed)
    agreement = output_agreement(reference, runners[chosen].infer(feed))
    effective = getattr(runners[chosen], "effective_inference_precision", plan.inference_precision)
    runners.clear()  # close the sessions before moving their files
    files = []
    for path in scratch[chosen].iterdir():
        os.replace(path, out_dir / path.name)
        files.append(path.name)
    for folder in scratch.values():
        shutil.rmtree(folder, ignore_errors=True)
    version = _runtime_version(chosen)
    return {
        "runtime": {
            "name": chosen,
            "version": version,
            "inference_precision": plan.inference_precision,
            "effective_inference_precision": effective,  # what the CPU plugin compiled for on this CPU
            "threads": plan.threads,
            "model_file": MODEL_FILES[chosen],
            "graph_optimization": "ORT_ENABLE_EXTENDED offline; layout (ALL) at load"
            if chosen == "onnxruntime"
            else "OpenVINO IR, uncompressed weights",
        },
        "files": sorted(files),
        "timings": {"batch": plan.batch, "iterations": iterations, "ms": timings, "chosen": chosen}
        if timings
        else {},
        "agreement": {"vs": f"{original.name} on ONNX Runtime, one normal(0, 1) input", "outputs": agreement},
    }


def _runtime_version(runtime: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(runtime)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - it just ran
        raise VitrtError(f"{runtime} ran but has no package metadata") from None
