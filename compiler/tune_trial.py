"""One trial of ``vitrt tune``: export a model (``export_trial``, shared by trials that differ only in
precision), build and judge a configuration (``build_trial``), and time built artifacts one after another on
one device (``LatencyProfiler``).

All are plain Python, so they run and are tested without Ray; ``vitrt.compiler.tune`` wraps them as Ray
tasks and a Ray actor. Exports and artifacts travel as tar bytes (a few MB for small models), so neither a
build host nor a profiling host needs a shared file system.
"""

from __future__ import annotations

import io
import json
import logging
import platform
import socket
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .tune_model import ModelSource
from .tune_space import TrialConfig

log = logging.getLogger(__name__)


def pack_folder(folder: Path) -> bytes:
    """The folder's files as an uncompressed tar (names relative to the folder)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return buf.getvalue()


def unpack_folder(data: bytes, folder: Path) -> Path:
    """Extract ``pack_folder``'s bytes into ``folder`` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(folder, filter="data")
    return folder


def _run_all(runner: Any, images: np.ndarray) -> np.ndarray:
    """Logits of every image, one at a time (artifacts are built for batch 1)."""
    return np.concatenate([runner.infer({"images": images[i : i + 1]})["logits"] for i in range(len(images))])


def export_key(config: TrialConfig) -> str:
    """What a trial's ONNX file depends on besides the model: its fusion and attention. Trials with the same
    key (the FP32 and INT8 baselines, or one configuration at two precisions) can share one export."""
    return json.dumps({"fusion": config.fusion, "attention": config.attention}, sort_keys=True)


def export_trial(source: ModelSource, config: TrialConfig, *, weights: Any) -> dict[str, Any]:
    """Build ``config``'s model of ``source`` (its fusion and attention; its precision plays no part) and
    export it (portable lowering, batch 1).

    weights: the checkpoint's tensors (None: random init). Never raises. Returns {"status": "exported",
    "folder": tar bytes of model.onnx (and model.onnx.data over 2 GB), "tokens": the token schedule,
    "seconds": export seconds}, or {"status": "failed", "stage": "model" | "export", "error", "traceback"}.
    """
    from .export import ExportConfig, export_model

    stage = "model"
    try:
        t0 = time.perf_counter()
        model = source.build(fusion=config.fusion, attention=config.attention, state_dict=weights)
        tokens = [int(n) for n in model.token_schedule()]
        stage = "export"
        pre = model.preprocess
        export = ExportConfig(
            model=source.name,
            lowering="portable",
            batch=1,
            input_size=tuple(pre.input_size),
            mean=tuple(pre.mean),
            std=tuple(pre.std),
            img_size=source.img_size,
            num_classes=source.num_classes,
            fusion=config.fusion,
            attention=config.attention,
            checkpoint=source.checkpoint,
            extra={"arch": source.arch} if source.arch else {},
        )
        with tempfile.TemporaryDirectory(prefix="vitrt-tune-export-") as tmp:
            export_model(model, Path(tmp) / "model.onnx", export)
            folder = pack_folder(Path(tmp))
        return {"status": "exported", "folder": folder, "tokens": tokens, "seconds": time.perf_counter() - t0}
    except Exception as err:  # the trials that use this export record it; the search goes on
        log.info("export of %s failed at %s: %s", config.name, stage, err)
        return {
            "status": "failed",
            "stage": stage,
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=6),
        }


def build_trial(
    source: ModelSource,
    config: TrialConfig,
    *,
    weights: Any,
    calibration: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray | None,
    reference: np.ndarray,
    target: str = "cpu",
    runtime: str = "onnxruntime",
    threads: int = 1,
    exported: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``config`` of ``source`` (``export_trial``, unless ``exported`` holds its result for the same
    ``export_key``), calibrate it for INT8 if asked, build a ``target`` artifact with ``vitrt.build``, load it
    with ``vitrt.load_artifact`` and judge it on ``images``.

    weights: the checkpoint's tensors (None: random init; unused when ``exported`` is given); calibration:
    INT8 calibration images; labels: top-1 against them when given; reference: the unfused FP32 PyTorch
    logits of ``images`` (agreement %). Never raises: a failure is returned as {"status": "failed",
    "error": ..., "stage": ...}. Returns seconds per stage (``export``: the export's own seconds, shared by
    every trial that uses it), accuracy / agreement in %, the token schedule, and the artifact as tar bytes
    (``artifact``).
    """
    import vitrt

    record: dict[str, Any] = {"config": config.to_dict(), "status": "failed", "host": socket.gethostname()}
    seconds: dict[str, float] = {}
    if exported is None:
        exported = export_trial(source, config, weights=weights)
    if exported["status"] != "exported":
        record.update({k: exported[k] for k in ("stage", "error", "traceback")})
        record["seconds"] = seconds
        return record
    record["tokens"] = exported["tokens"]
    seconds["export"] = exported["seconds"]
    stage = "build"
    try:
        with tempfile.TemporaryDirectory(prefix="vitrt-tune-") as tmp:
            work = Path(tmp)
            onnx_path = unpack_folder(exported["folder"], work / "export") / "model.onnx"
            built = onnx_path
            if config.precision == "int8":
                stage = "calibrate"
                t0 = time.perf_counter()
                np.save(work / "calibration.npy", calibration.astype(np.float32))
                result = vitrt.calibrate(
                    onnx_path,
                    work / "calibration.npy",
                    work / "model.int8.onnx",
                    num_samples=len(calibration),
                    sensitivity=False,
                    threads=threads,
                    progress=False,
                    runtime="onnxruntime" if runtime == "onnxruntime" else "tensorrt",
                )
                record["int8_layers"] = {"quantized": len(result.quantized), "float": len(result.fallen_back)}
                built = work / "model.int8.onnx"
                seconds["calibrate"] = time.perf_counter() - t0
            stage = "build"
            t0 = time.perf_counter()
            vitrt.build(built, work / "artifact", target=target, runtime=runtime, threads=threads)
            seconds["build"] = time.perf_counter() - t0
            stage = "accuracy"
            t0 = time.perf_counter()
            runner = vitrt.load_artifact(work / "artifact")
            logits = _run_all(runner, images)
            del runner
            predicted = logits.argmax(1)
            record["agreement"] = float(100.0 * (predicted == reference.argmax(1)).mean())
            record["top1"] = float(100.0 * (predicted == labels).mean()) if labels is not None else None
            record["accuracy"] = record["top1"] if labels is not None else record["agreement"]
            seconds["accuracy"] = time.perf_counter() - t0
            record["artifact"] = pack_folder(work / "artifact")
            record["status"] = "built"
    except Exception as err:  # every failure becomes the trial's record, never the search's end
        record["stage"] = stage
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc(limit=6)
        log.info("trial %s failed at %s: %s", config.name, stage, record["error"])
    record["seconds"] = seconds
    return record


class LatencyProfiler:
    """Times artifacts on this host, one at a time, each interleaved with a reference artifact.

    One instance per device: ``vitrt.compiler.tune`` makes it a Ray actor holding the device's whole
    profiling resource, and an actor runs its method calls one after another, so two timings never share
    the device. Each trial is timed in interleaved blocks with the reference (the unfused INT8 baseline), so
    load from other processes slows both alike: ``ratio`` = trial median / reference median in the same
    call, and ``latency_ms`` = ratio x the reference's median over all calls on this device (its typical
    speed), the number the Pareto front uses; ``median_ms`` is the trial's own median in its call.
    """

    def __init__(
        self, input_size: tuple[int, int, int], threads: int = 1, iterations: int = 200, block: int = 10
    ) -> None:
        """input_size: (C, H, W) of the models' ``images``; threads: intra-op threads of every runner;
        iterations / block: timed calls per trial and calls per interleaved block."""
        self.input_size = tuple(input_size)
        self.threads = threads
        self.iterations = iterations
        self.block = block
        self._tmp = tempfile.TemporaryDirectory(prefix="vitrt-tune-latency-")
        self._reference: Any = None
        self._reference_ms: list[float] = []
        self._count = 0

    def host(self) -> dict[str, str]:
        """Where this profiler runs: host name, machine, processor."""
        return {"host": socket.gethostname(), "machine": platform.machine(), "cpu": _cpu_name()}

    def _load(self, artifact: bytes) -> Any:
        import vitrt

        self._count += 1
        folder = unpack_folder(artifact, Path(self._tmp.name) / f"a{self._count}")
        return vitrt.load_artifact(folder, threads=self.threads)

    def set_reference(self, artifact: bytes | None) -> None:
        """The artifact every trial is timed against (None: time trials alone)."""
        self._reference = self._load(artifact) if artifact is not None else None

    def measure(self, artifact: bytes) -> dict[str, Any]:
        """Latency of one artifact at batch 1 (ms); {"status": "failed", "error"} if it cannot run here."""
        from functools import partial

        from vitrt.deploy.latency import measure_interleaved

        try:
            runner = self._load(artifact)
            feed = {"images": _feed(self.input_size)}
            calls: dict[str, Callable[[], object]] = {"trial": partial(runner.infer, feed)}
            if self._reference is not None:
                calls["reference"] = partial(self._reference.infer, feed)
            stats = measure_interleaved(calls, warmup=5, iterations=self.iterations, block=self.block)
        except Exception as err:
            return {"status": "failed", "stage": "latency", "error": f"{type(err).__name__}: {err}"}
        out: dict[str, Any] = {
            "status": "ok",
            "stats": stats["trial"].to_dict(),
            "median_ms": stats["trial"].median,
        }
        if "reference" in stats:
            ref = stats["reference"].median
            self._reference_ms.append(ref)
            out["reference_ms"] = ref
            out["ratio"] = stats["trial"].median / ref
        return out

    def reference_median(self) -> float | None:
        """Median of the reference's medians over every call so far (ms), None without a reference."""
        return float(np.median(self._reference_ms)) if self._reference_ms else None


def _feed(input_size: tuple[int, ...]) -> np.ndarray:
    """One seeded normal(0, 1) image batch [1, C, H, W], float32."""
    return np.random.default_rng(0).standard_normal((1, *input_size)).astype(np.float32)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
