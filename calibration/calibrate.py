"""``calibrate_onnx``: FP32 ONNX + representative data -> Q/DQ INT8 ONNX, TensorRT cache, report.

>>> result = calibrate_onnx("deit_s.onnx", "images/", "deit_s.int8.onnx", method="entropy",
...                         num_samples=256, error_budget=0.005, cache="deit_s.calib.cache",
...                         report="deit_s.int8.json")
>>> result.agreement.top1_agreement, result.fallen_back

Steps: find the layers (``vitrt.calibration.graph``); for the ONNX Runtime form, keep float the
layers too small to gain on its int8 kernels (``vitrt.calibration.cost``); stream the data through
ONNX Runtime and histogram every activation a layer will quantize (``vitrt.calibration.collect``);
turn histograms into per-tensor amax with the chosen method (``vitrt.calibration.ranges``); rank
layers by the output error their quantization adds on held-out samples and fall the worst back to
float until the error budget holds (``vitrt.calibration.sensitivity``); insert Q/DQ
(``vitrt.calibration.qdq``); run the INT8 model on the held-out samples against FP32; write the
outputs. Every output is validated before anything is written, and each file is written atomically
(``vitrt.fileio``): a failure leaves no partial
file and any earlier file as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrt.compiler.prepare import attention_matmuls, prepare_model, residual_adds
from vitrt.errors import ConfigError
from vitrt.fileio import TWO_GB, atomic_output, check_writable, load_onnx, save_onnx
from vitrt.models.config import PreprocessConfig

from .cache import dumps as cache_text
from .cache import trt_version_number
from .collect import (
    ModelIO,
    RunnerFactory,
    as_numpy,
    collect_ranges,
    default_runner_factory,
    model_io,
    run_model,
)
from .cost import LayerSize, OrtCostModel, apply_cost_model, layer_sizes
from .data import CalibrationData, open_source
from .errors import CalibrationError, NoQuantizableOpError
from .fp16 import has_qdq, is_float16
from .graph import GraphIndex, Layer, ensure_node_names, find_layers, unmatched_patterns
from .metrics import Agreement, agreement, check_budget
from .preprocess import with_overrides
from .qdq import check_form, check_opset, insert_qdq, quantize_weight
from .ranges import ActivationRanges, RangeMethod, scale_from_amax
from .recipe import NodePrecision, PrecisionRecipe, write_recipe
from .sensitivity import Fallback, GatedEvaluator, LayerSensitivity, fallback_until_budget, rank_layers

if TYPE_CHECKING:
    from onnx import ModelProto

log = logging.getLogger(__name__)

METADATA_KEY = "vitrt.calibration"
REPORT_FORMAT = 1
# Per producer op type, the method that replaces the chosen one. Softmax outputs are probabilities:
# their max (<= 1) is the range; a clipped threshold would cut the few large attention weights.
DEFAULT_METHOD_OVERRIDES: Mapping[str, str] = {"Softmax": "minmax"}

PathLike = str | os.PathLike[str]


@dataclass
class CalibrationResult:
    """What ``calibrate_onnx`` produced.

    model: the Q/DQ ONNX (onnx.ModelProto); layers: every MatMul/Gemm/Conv with ``reason`` set for
    the float ones; quantized / fallen_back: layer names; amax: {activation tensor: amax};
    agreement: the INT8 model vs FP32 on the held-out samples (None without them); sensitivity:
    per-layer ranking, worst first (empty when not run); fallback: the budget walk (None without a
    budget); report: the JSON report as a dict; written: {"onnx"|"cache"|"report": path}; held_out:
    False when the source had no samples beyond the calibration ones, so agreement and sensitivity were
    measured on calibration samples.
    """

    model: Any
    layers: list[Layer]
    quantized: list[str]
    fallen_back: list[str]
    amax: dict[str, float]
    agreement: Agreement | None
    sensitivity: list[LayerSensitivity] = field(default_factory=list)
    fallback: Fallback | None = None
    report: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Path] = field(default_factory=dict)
    held_out: bool = True


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def preprocess_for(
    model: ModelProto,
    io: ModelIO,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: int | Sequence[int] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
) -> PreprocessConfig:
    """The preprocessing the model expects.

    A vitrt export records it in its ExportConfig (``extra["preprocess"]`` may set crop_pct and
    interpolation); the options given here override it. A file without one (a foreign export) must
    be told ``mean`` and ``std`` (one value per channel, or one for all); ``size`` (side, or
    (height, width)) defaults to the input's static H x W; crop_pct to 0.9, interpolation to bicubic.
    Raises CalibrationError naming the missing option, or a size that differs from a static input.
    """
    from vitrt.compiler.export import read_export_config

    config = read_export_config(model)
    c, h, w = io.sample_shape
    defaults = PreprocessConfig()
    if config is not None:
        extra = dict(config.extra.get("preprocess", {})) if isinstance(config.extra, dict) else {}
        base = PreprocessConfig(
            input_size=tuple(config.input_size),  # type: ignore[arg-type]
            mean=tuple(config.mean),
            std=tuple(config.std),
            crop_pct=float(extra.get("crop_pct", defaults.crop_pct)),
            interpolation=str(extra.get("interpolation", defaults.interpolation)),
        )
    else:
        missing = [name for name, v in (("--mean", mean), ("--std", std)) if v is None]
        if missing:
            raise CalibrationError(
                f"the model has no vitrt export config, so its preprocessing is unknown: pass "
                f"{' and '.join(missing)} (the normalisation it was trained with, per channel on [0, 1] "
                "pixels; ImageNet models: --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225), and "
                "--size / --crop-pct where they differ from the input's H x W and 0.9"
            )
        if not isinstance(c, int) or c <= 0:
            raise CalibrationError(
                f"the model's input {io.input_name!r} has shape {list(io.input_shape)}: its channel count is "
                "symbolic. Fix: export with a fixed channel count"
            )
        base = PreprocessConfig(input_size=(c, h, w), mean=defaults.mean, std=defaults.std)
    if size is not None:
        sides = (size, size) if isinstance(size, int) else tuple(size)
        if len(sides) == 1:  # --size 224
            sides = (sides[0], sides[0])
        if len(sides) != 2:
            raise ConfigError(f"size must be one side or (height, width), got {size!r}")
        for want, got in zip((h, w), sides, strict=True):
            if isinstance(want, int) and want > 0 and want != got:
                raise CalibrationError(
                    f"size {sides} differs from the model's input {list(io.input_shape)}; pass its size"
                )
        base = replace(base, input_size=(base.input_size[0], int(sides[0]), int(sides[1])))
    elif not all(isinstance(d, int) and d > 0 for d in base.input_size):
        raise CalibrationError(
            f"the input {io.input_name!r} has shape {list(io.input_shape)} with symbolic spatial axes: "
            "pass --size (the side the model was trained at)"
        )
    return with_overrides(base, mean=mean, std=std, crop_pct=crop_pct, interpolation=interpolation)


def _probe_samples(data: CalibrationData, io: ModelIO) -> np.ndarray:
    """The first sample of ``data``, repeated to the model's batch size when that is fixed."""
    first = as_numpy(next(iter(data.batches())))[:1]
    return np.repeat(first, io.batch or 1, axis=0)


def _stack(data: CalibrationData) -> np.ndarray:
    """All samples of ``data`` as one (N, C, H, W) float32 array."""
    return np.concatenate([as_numpy(b) for b in data.batches()])


def _activation_amax(
    ranges: ActivationRanges,
    tensors: Sequence[str],
    method: RangeMethod,
    index: GraphIndex,
    overrides: Mapping[str, str],
) -> tuple[dict[str, float], dict[str, str]]:
    """{tensor: amax} by ``method`` (or the override for its producer's op type), and the method used."""
    amax: dict[str, float] = {}
    used: dict[str, str] = {}
    for name in tensors:
        producer = index.producer.get(name)
        override = overrides.get(producer.op_type) if producer is not None else None
        chosen = RangeMethod(override, num_bins=method.num_bins) if override else method
        amax[name] = ranges[name].compute_amax(chosen)
        used[name] = chosen.method
    return amax, used


def _vitrt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitrt")
    except PackageNotFoundError:
        return "0+unknown"


def calibrate_onnx(
    model: PathLike,
    data: PathLike | CalibrationData,
    output: PathLike | None = None,
    *,
    method: str | RangeMethod = "entropy",
    percentile: float | None = None,
    num_samples: int = 256,
    batch_size: int = 32,
    seed: int = 0,
    convert_channels: bool = False,
    npz_key: str | None = None,
    exclude: Sequence[str] = (),
    eval_data: PathLike | CalibrationData | None = None,
    eval_samples: int = 64,
    error_budget: float | None = None,
    budget_metric: str = "cosine",
    sensitivity: bool = True,
    sensitivity_samples: int = 16,
    cache: PathLike | None = None,
    trt_version: str | int = "10.3.0",
    report: PathLike | None = None,
    threads: int | None = None,
    custom_ops_library: str | None = None,
    runner_factory: RunnerFactory | None = None,
    method_overrides: Mapping[str, str] = DEFAULT_METHOD_OVERRIDES,
    progress: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: int | Sequence[int] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    prepare: bool = True,
    runtime: str = "tensorrt",
    cost_model: OrtCostModel | None = None,
) -> CalibrationResult:
    """Calibrate ``model`` (an FP32 ONNX file) on ``data`` and write its explicit-Q/DQ INT8 twin:
    ``vitrt calibrate`` as a function (``vitrt.calibrate``), with the same options.

    Args:
        model: path of an FP32 ONNX model with one image input [B, C, H, W] (vitrt's export, or a
            foreign one: then ``mean`` and ``std`` must be given).
        data: representative data: an image folder, .npy/.npz, "skimage", "sklearn-digits",
            "sklearn-images", "synthetic" (``vitrt.calibration.open_source``), or a CalibrationData.
        output: the Q/DQ ONNX to write (None: return it only).
        method: activation range method, "minmax", "percentile", "entropy", "mse" or a RangeMethod.
            Tensors made by an op in ``method_overrides`` (Softmax: minmax) use that method instead.
        percentile: for "percentile", in (0, 100] (default 99.99); ConfigError with another method.
        num_samples / batch_size / seed / convert_channels / npz_key: see ``open_source``; a source
            with fewer samples is used whole, with a warning.
        exclude: node-name patterns (fnmatch: ``blocks.0.*``, ``head/Gemm_1``; one string is one pattern)
            of layers kept float; ConfigError for one that matches no MatMul/Gemm/Conv node (a typo).
        eval_data / eval_samples: held-out samples for the FP32-vs-INT8 agreement and the
            sensitivity pass; default: the next ``eval_samples`` samples of ``data``'s seeded order
            (disjoint from the calibration samples; the calibration samples themselves, with a
            warning, when the source has no more).
        error_budget / budget_metric: fall layers back to float until the error holds: "cosine"
            bounds 1 - mean cosine of the outputs, "top1" the fraction of top-1 changes (0.01 = 1
            point), both vs FP32 on the first ``sensitivity_samples`` held-out samples.
        sensitivity: rank every layer by its quantization error (a budget needs it: ConfigError for
            ``sensitivity=False`` with ``error_budget``).
        cache / trt_version: also write a TensorRT calibration cache for implicit INT8 on TensorRT
            10.x (``trt_version`` must be that of the builder, e.g. "10.3.0" on JetPack 6; ConfigError
            for 11.x, which has no calibrators).
        report: also write the JSON report (ranges per tensor, per-layer sensitivity, agreement).
        threads / custom_ops_library: ONNX Runtime's intra-op threads (None: its default) and a
            custom-op shared library for plugin nodes, for every session vitrt opens.
        runner_factory: path -> Runner for every ONNX Runtime session, instead of the default one
            that ``threads`` and ``custom_ops_library`` set up.
        progress: show progress bars on stderr.
        mean / std / size / crop_pct / interpolation: the preprocessing (``preprocess_for``): required
            (mean and std) for a file without vitrt's ExportConfig, overrides for one with it.
        prepare: run the graph preparation first (``vitrt.compiler.prepare``: simplify, fuse
            LayerNorm / GELU, stable node names, checked on ONNX Runtime); it makes foreign exports
            (unsimplified, opset < 17, default names) fast and readable as INT8.
        runtime: the INT8 form to write (recorded in the recipe as ``int8_form``). "tensorrt" (default):
            float biases, every eligible layer quantized (TensorRT chooses int8 or float per layer
            itself). "onnxruntime": int32 biases that ONNX Runtime fuses into its int8 kernels
            (``vitrt.calibration.qdq``), and the layers too small to gain on those kernels kept float,
            each with its reason (``cost_model``, default ``OrtCostModel()``; ``vitrt.calibration.cost``).

    Returns a CalibrationResult. Raises ConfigError (bad options), DataSourceError (data),
    NoQuantizableOpError (nothing to quantize), CalibrationError, VitrtError (unreadable model or
    unwritable output), before any file is written.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    check_form(runtime)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)  # one pattern, not its characters
    if cost_model is not None and runtime != "onnxruntime":
        raise ConfigError("cost_model is the ONNX Runtime form's: pass it with runtime='onnxruntime'")
    if isinstance(method, RangeMethod):
        if percentile is not None:
            raise ConfigError("percentile goes with a method name; a RangeMethod carries its own")
        range_method = method
    elif percentile is not None and method != "percentile":
        raise ConfigError(
            f"percentile={percentile!r} applies to method='percentile' only; method={method!r} would ignore "
            "it. Fix: drop percentile, or pass method='percentile' (--method percentile)"
        )
    else:
        range_method = RangeMethod(method) if percentile is None else RangeMethod(method, percentile)
    if runner_factory is not None and (threads is not None or custom_ops_library is not None):
        raise ConfigError("pass threads / custom_ops_library or a runner_factory, not both")
    _positive_int("num_samples", num_samples)
    _positive_int("batch_size", batch_size)
    _positive_int("eval_samples", eval_samples)
    _positive_int("sensitivity_samples", sensitivity_samples)
    if error_budget is not None:
        check_budget(budget_metric, error_budget)
        if not sensitivity:
            raise ConfigError(
                "--error-budget needs the sensitivity pass (the layers it ranks most harmful are the ones "
                "kept float): drop --no-sensitivity (sensitivity=False) or --error-budget"
            )
    if cache is not None and trt_version_number(trt_version) >= 110000:
        raise ConfigError(
            f"--trt-version {trt_version}: TensorRT 11 has no calibrators, so it reads no calibration cache "
            "(its INT8 is explicit: it builds the Q/DQ ONNX this writes). Fix: drop --cache, or give the "
            "TensorRT 10.x version that builds the engine"
        )
    targets = {
        k: Path(v) for k, v in (("onnx", output), ("cache", cache), ("report", report)) if v is not None
    }
    resolved = [p.resolve() for p in targets.values()]
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"output paths must differ: {[str(p) for p in targets.values()]}")
    if Path(model).resolve() in resolved:
        raise ConfigError(f"an output path is the input model {model}; write the INT8 model elsewhere")
    for path in targets.values():
        check_writable(path)  # fail now, not after minutes of calibration
    for op, name in method_overrides.items():
        RangeMethod(name)  # validates the override's method name
        if not op:
            raise ConfigError("method_overrides keys are op types such as 'Softmax'")

    proto = load_onnx(model)
    if has_qdq(proto):
        raise CalibrationError(
            f"{model} already holds QuantizeLinear / DequantizeLinear nodes: calibrate the float32 file it "
            "came from (for INT8 + FP16 run `vitrt fp16` on the INT8 file)"
        )
    if is_float16(proto):
        raise CalibrationError(
            f"{model} already holds float16 tensors: calibrate the float32 file, then run `vitrt fp16` "
            "on the INT8 file for INT8 + FP16"
        )
    factory = runner_factory or default_runner_factory(threads, custom_ops_library)
    prepared_report = None
    if prepare:
        proto, report_of_preparation = prepare_model(proto, runner_factory=factory)
        prepared_report = report_of_preparation.to_dict()
    ensure_node_names(proto)
    io = model_io(proto)
    layers = find_layers(proto, exclude)
    if not layers:
        raise NoQuantizableOpError(
            f"{model} has no MatMul, Gemm or Conv node, the ops vitrt quantizes: nothing to calibrate"
        )
    unmatched = unmatched_patterns(proto, exclude)
    if unmatched:
        raise ConfigError(
            f"--exclude {', '.join(map(repr, unmatched))} matches no MatMul/Gemm/Conv node of the model "
            f"(the layers vitrt quantizes). Their names look like {layers[len(layers) // 2].label!r}"
        )
    candidates = [layer for layer in layers if layer.reason is None]
    if not candidates:
        reasons = sorted({str(layer.reason) for layer in layers})
        raise NoQuantizableOpError(
            f"none of the {len(layers)} MatMul/Gemm/Conv nodes of {model} can be quantized: {reasons[:3]}. "
            "Fix: loosen --exclude"
        )
    check_opset(proto)

    # -- data -------------------------------------------------------------------------------------
    preprocess = preprocess_for(
        proto, io, mean=mean, std=std, size=size, crop_pct=crop_pct, interpolation=interpolation
    )
    if isinstance(data, CalibrationData):
        calib = data
    else:
        calib = open_source(
            data,
            preprocess,
            num_samples,
            batch_size,
            seed,
            convert_channels=convert_channels,
            npz_key=npz_key,
            progress=progress,
        )
    held: CalibrationData | None
    if isinstance(eval_data, CalibrationData):
        held = eval_data
    elif eval_data is not None:
        held = open_source(
            eval_data,
            preprocess,
            eval_samples,
            batch_size,
            seed,
            convert_channels=convert_channels,
            npz_key=npz_key,
            progress=progress,
        )
    else:
        held = calib.following(eval_samples)
    held_out = held is not None
    if held is None:
        log.warning(
            "calibration data %s has no samples beyond the %d used for calibration: agreement and "
            "sensitivity are measured on calibration samples, not held-out ones. Fix: pass eval data",
            calib.spec,
            calib.num_samples,
        )

    # -- the ONNX Runtime form: layers too small to gain stay float ---------------------------------
    sizes: dict[str, LayerSize] = {}
    cost: OrtCostModel | None = None
    if runtime == "onnxruntime":
        cost = cost_model or OrtCostModel()
        t0 = time.perf_counter()
        sizes = layer_sizes(proto, layers, _probe_samples(calib, io), runner_factory=factory)
        timings["sizes_s"] = time.perf_counter() - t0
        apply_cost_model(layers, sizes, cost)
        candidates = [layer for layer in layers if layer.reason is None]
        if not candidates:
            raise NoQuantizableOpError(
                f"no layer of {model} is large enough to gain from INT8 on ONNX Runtime ({cost}): the "
                "FP32 file is the faster one there. For TensorRT, calibrate with runtime 'tensorrt' "
                "(--for tensorrt)"
            )

    # -- ranges -----------------------------------------------------------------------------------
    index = GraphIndex.build(proto)
    act_tensors = list(dict.fromkeys(t for layer in candidates for t in layer.activations))
    out_tensors = [layer.output for layer in candidates] if cache is not None else []
    t0 = time.perf_counter()
    ranges = collect_ranges(proto, act_tensors + out_tensors, calib.batches(), runner_factory=factory)
    timings["collect_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    amax, used_method = _activation_amax(
        ranges, act_tensors + out_tensors, range_method, index, method_overrides
    )
    timings["ranges_s"] = time.perf_counter() - t0

    # -- held-out samples and FP32 reference ---------------------------------------------------------
    eval_x = _stack(held if held is not None else calib)
    if held is None:
        eval_x = eval_x[:eval_samples]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vitrt-calib-") as tmp:
        fp32_runner = factory(save_onnx(proto, Path(tmp) / "fp32.onnx"))
        reference = run_model(fp32_runner, io, [eval_x])
        del fp32_runner
    timings["reference_s"] = time.perf_counter() - t0

    # -- sensitivity and fallback -------------------------------------------------------------------
    enabled = [layer.name for layer in candidates]
    ranking: list[LayerSensitivity] = []
    fallback: Fallback | None = None
    if sensitivity or error_budget is not None:
        n_sens = min(sensitivity_samples, len(eval_x))
        t0 = time.perf_counter()
        with GatedEvaluator(
            proto, candidates, amax, eval_x[:n_sens], reference[:n_sens], runner_factory=factory
        ) as evaluator:
            ranking = rank_layers(evaluator, enabled, budget_metric, progress)
            if error_budget is not None:
                fallback = fallback_until_budget(
                    evaluator, ranking, enabled, budget_metric, error_budget, progress
                )
        timings["sensitivity_s"] = time.perf_counter() - t0
        if fallback is not None:
            enabled = [n for n in enabled if n not in set(fallback.fallen_back)]
            for layer in layers:
                if layer.name in fallback.fallen_back:
                    step = fallback.fallen_back.index(layer.name) + 1
                    layer.reason = (
                        f"sensitivity fallback #{step} (error budget {budget_metric} <= {error_budget})"
                    )
            if not enabled:
                raise CalibrationError(
                    f"the error budget ({budget_metric} <= {error_budget}) holds only with every layer in "
                    f"float (error with all quantized: {fallback.before.error(budget_metric):.4g}). Fix: "
                    "a larger --error-budget, another --method, or more representative data"
                )
            if not fallback.met:
                log.warning("error budget not met: %s", fallback.after)

    # -- the Q/DQ model and its agreement with FP32 ------------------------------------------------------
    int8 = insert_qdq(proto, layers, amax, set(enabled), form=runtime)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vitrt-calib-") as tmp:
        int8_runner = factory(save_onnx(int8, Path(tmp) / "int8.onnx"))
        outputs = run_model(int8_runner, io, [eval_x])
        del int8_runner
    final = agreement(reference, outputs)
    timings["evaluate_s"] = time.perf_counter() - t0

    fallen = list(fallback.fallen_back) if fallback else []
    record = {
        "format": REPORT_FORMAT,
        "vitrt_version": _vitrt_version(),
        "method": range_method.to_dict(),
        "method_overrides": dict(method_overrides),
        "activations": "int8 per-tensor symmetric, zero point 0, scale = amax / 127",
        "weights": "int8 per-channel symmetric on the output-channel axis, values in [-127, 127]",
        "int8_form": runtime,
        "biases": (
            "int32, scale = activation scale x weight scale (fused into ONNX Runtime's int8 kernels)"
            if runtime == "onnxruntime"
            else "float (a Gemm's bias in an Add after it)"
        ),
        "cost_model": None if cost is None else asdict(cost),
        "data": calib.describe(),
        "eval_data": (held.describe() if held is not None else None),
        "held_out": held_out,
        "exclude": list(exclude),
        "error_budget": None
        if error_budget is None
        else {"metric": budget_metric, "max_error": error_budget},
        "layers": {"total": len(layers), "quantized": len(enabled), "fallen_back": fallen},
        "agreement": final.to_dict(),
    }
    meta = int8.metadata_props.add()
    meta.key, meta.value = METADATA_KEY, json.dumps(record, sort_keys=True)
    write_recipe(
        int8,
        PrecisionRecipe(
            precision="int8",
            int8_form=runtime,
            int8_layers=tuple(enabled),
            not_quantized=tuple(
                NodePrecision(layer.name, layer.op_type, layer.reason or "")
                for layer in layers
                if layer.name not in set(enabled)
            ),
            residual_adds=tuple(residual_adds(proto)),
            attention_matmuls=attention_matmuls(proto),
            plugins=tuple(
                {"node": n.name, "op_type": n.op_type, "io_type": "float32", "accumulate": "float32"}
                for n in proto.graph.node
                if n.domain == "vitrt"
            ),
            prepared=prepared_report,
            agreement={"vs": f"float32, {_samples_word(held_out)}", **final.to_dict()},
        ),
    )
    if int8.ByteSize() >= TWO_GB:
        raise CalibrationError("the INT8 model is over 2 GB; external-data output is not supported yet")

    # cache: scales of the activations and outputs of the quantized layers (TensorRT names = ONNX names)
    cache_body: str | None = None
    if cache is not None:
        scales: dict[str, float] = {}
        for layer in layers:
            if layer.name in set(enabled):
                for t in [*layer.activations, layer.output]:
                    scales[t] = scale_from_amax(amax[t])
        cache_body = cache_text(scales, trt_version=trt_version)

    timings["total_s"] = time.perf_counter() - t_start
    report_dict = _report(
        model,
        output,
        layers,
        set(enabled),
        ranges,
        amax,
        used_method,
        index,
        ranking,
        fallback,
        final,
        record,
        sizes,
    )
    report_dict["timings"] = {k: round(v, 3) for k, v in timings.items()}

    # -- write everything, each file atomically ------------------------------------------------------
    written: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        temps = {
            k: stack.enter_context(atomic_output(p, suffix=p.suffix or ".tmp")) for k, p in targets.items()
        }
        if "onnx" in temps:
            import onnx

            onnx.save_model(int8, str(temps["onnx"]))
        if "cache" in temps and cache_body is not None:
            temps["cache"].write_text(cache_body)
        if "report" in temps:
            temps["report"].write_text(json.dumps(report_dict, indent=1) + "\n")
    written = dict(targets)
    log.info(
        "calibrated %s: %d/%d layers INT8, agreement on %s %s",
        model,
        len(enabled),
        len(layers),
        _samples_word(held_out),
        final,
    )
    return CalibrationResult(
        model=int8,
        layers=layers,
        quantized=list(enabled),
        fallen_back=fallen,
        amax={t: amax[t] for t in act_tensors},
        agreement=final,
        sensitivity=ranking,
        fallback=fallback,
        report=report_dict,
        written=written,
        held_out=held_out,
    )


def _samples_word(held_out: bool) -> str:
    """What the agreement samples are: held out, or (a source with nothing left) calibration samples."""
    return "held-out samples" if held_out else "calibration samples (none held out)"


def _report(
    model: PathLike,
    output: PathLike | None,
    layers: Sequence[Layer],
    enabled: set[str],
    ranges: ActivationRanges,
    amax: Mapping[str, float],
    used_method: Mapping[str, str],
    index: GraphIndex,
    ranking: Sequence[LayerSensitivity],
    fallback: Fallback | None,
    final: Agreement,
    record: Mapping[str, Any],
    sizes: Mapping[str, LayerSize],
) -> dict[str, Any]:
    """The JSON report: per tensor ranges, per layer placement and sensitivity, agreement."""
    consumers: dict[str, list[str]] = {}
    for layer in layers:
        for t in layer.activations:
            consumers.setdefault(t, []).append(layer.name)
    tensors = {}
    for name in amax:
        collector = ranges[name]
        tensors[name] = {
            "method": used_method[name],
            "amax": amax[name],
            "max_abs": collector.amax,
            "scale": scale_from_amax(amax[name]),
            "clipped_fraction": _clipped(collector, amax[name]),
            "values": collector.count,
            "layers": consumers.get(name, []),
            "role": "activation" if name in consumers else "layer output (cache only)",
        }
    by_layer = {s.layer: s for s in ranking}
    rank_of = {s.layer: i + 1 for i, s in enumerate(ranking)}
    layer_rows = []
    for layer in layers:
        weights = []
        for w in layer.weights:
            qw = quantize_weight(index.constant_array(w.tensor), w.axis)
            weights.append(
                {
                    "tensor": w.tensor,
                    "axis": w.axis,
                    "channels": int(qw.scale.size),
                    "scale_min": float(qw.scale.min()),
                    "scale_max": float(qw.scale.max()),
                }
            )
        s = by_layer.get(layer.name)
        layer_rows.append(
            {
                "name": layer.name,
                "label": layer.label,
                "op_type": layer.op_type,
                "int8": layer.name in enabled,
                "reason": layer.reason,
                "activations": layer.activations,
                "weights": weights,
                "size": asdict(sizes[layer.name]) if layer.name in sizes else None,
                "sensitivity": None if s is None else {**s.to_dict(), "rank": rank_of[layer.name]},
            }
        )
    return {
        "model": str(model),
        "output": None if output is None else str(output),
        "calibration": dict(record),
        "agreement": final.to_dict(),
        "fallback": None if fallback is None else fallback.to_dict(),
        "sensitivity_ranking": [s.layer for s in ranking],
        "layers": layer_rows,
        "tensors": tensors,
    }


def _clipped(collector: Any, amax: float) -> float:
    """Fraction of the collected |x| above ``amax`` (the values the scale saturates)."""
    if collector.count == 0 or amax >= collector.amax:
        return 0.0
    hist = collector.histogram()
    above = hist.counts[hist.edges[1:] > amax].sum()
    return float(above / collector.count)
