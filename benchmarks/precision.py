"""Precision files of vitrt exports and of foreign exports of the same models: latency on ONNX Runtime CPU
and agreement with FP32, beside ONNX Runtime's quantize_static.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/precision.py
        [--models digits_deit digits_t2t_vit deit_small_patch16_224 t2t_vit_14] [--sources vitrt foreign]
        [--threads 2] [--iterations 40] [--repeats 1] [--slow-iterations 5] [--json out.json]

Per model and source (``vitrt``: ``vitrt export``, opset 18, simplified; ``foreign``: the TorchScript
exporter at opset 14, dynamic batch, LayerNorm / GELU in primitive ops, the exporter's node names, no
vitrt metadata, as timm / Hugging Face scripts write them), the FP32 file as given and:

- prepared: ``vitrt.prepare`` of the FP32 file (still FP32: what the preparation alone does);
- INT8: ``vitrt.calibrate`` (graph preparation, Q/DQ on MatMul/Gemm/Conv inputs, entropy ranges), in
  the TensorRT form (the default: float biases, every eligible layer INT8);
- INT8 ORT: the same in the ONNX Runtime form (``runtime="onnxruntime"``, ``--for onnxruntime``: int32
  biases fused into ONNX Runtime's int8 kernels, layers too small to gain there kept float);
- ORT: ``onnxruntime.quantization.quantize_static`` on the FP32 file as given (QDQ, per-channel, its
  default MinMax calibration) from the same calibration samples;
- NNCF: ``nncf.quantize`` (its ONNX backend, ``model_type=TRANSFORMER``, default preset) on the FP32
  file as given from the same samples, when nncf is installed (``pip install 'vitrt[nncf]'``);
- FP16 and INT8+FP16: ``vitrt.fp16`` of the FP32 and of the INT8 file.

Latency: batch 1, ``--threads`` ONNX Runtime threads, median over interleaved blocks
(``vitrt.deploy.latency.measure_interleaved``), every ratio against the FP32 file timed in the same
call. FP32 / INT8 / ORT run ``--iterations`` each, ``--repeats`` times (the ratio is the median of the
repeats, with their range beside it); FP16 and INT8+FP16 run far slower on a CPU (ONNX
Runtime computes most float16 ops by converting to float32 and back), so they get their own
interleaved group with the FP32 file at ``--slow-iterations``. Their purpose is TensorRT, where
float16 is the fast path; their CPU latency is reported as measured.
Agreement: top-1 agreement and mean cosine of the logits vs the FP32 file on held-out samples, and
top-1 accuracy against the labels for the trained digits models (data as in benchmarks/int8.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import int8 as int8_bench  # noqa: E402
import train_digits as td  # noqa: E402

from vitrt.calibration.calibrate import calibrate_onnx  # noqa: E402
from vitrt.calibration.fp16 import fp16_onnx  # noqa: E402
from vitrt.calibration.metrics import agreement  # noqa: E402
from vitrt.calibration.recipe import read_recipe  # noqa: E402
from vitrt.compiler.export import ExportConfig, export_model, model_from_config  # noqa: E402
from vitrt.compiler.prepare import prepare_onnx  # noqa: E402
from vitrt.deploy.latency import measure_interleaved  # noqa: E402
from vitrt.deploy.runners import OnnxRuntimeRunner  # noqa: E402
from vitrt.models.config import PreprocessConfig  # noqa: E402

DIGITS = ROOT / "benchmarks" / "digits"
FAST = ("fp32", "prepared", "int8", "int8ort", "ort", "nncf")
SLOW = ("fp16", "int8+fp16")


def quantize_static_file(fp32: Path, out: Path, calib: np.ndarray, input_name: str) -> None:
    """ONNX Runtime's quantize_static (QDQ, per-channel, MinMax) on ``calib`` (N, C, H, W)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {input_name: x[None]}

    logging.getLogger().setLevel(logging.ERROR)
    chunk = next(k for k in range(24, 64) if len(calib) % k)  # see benchmarks/int8.py
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        extra_options={"CalibMaxIntermediateOutputs": chunk},
    )


def nncf_quantize_file(fp32: Path, out: Path, calib: np.ndarray, input_name: str) -> str | None:
    """NNCF's post-training INT8 (ONNX backend, transformer model type) on ``calib``. Returns None on
    success, else why there is no NNCF file (not installed, or NNCF's error, reported in the row)."""
    try:
        import nncf
    except ImportError:
        return "nncf is not installed (pip install 'vitrt[nncf]')"
    import onnx

    dataset = nncf.Dataset(list(calib), lambda x: {input_name: x[None]})
    try:
        quantized = nncf.quantize(
            onnx.load(str(fp32)), dataset, subset_size=len(calib), model_type=nncf.ModelType.TRANSFORMER
        )
    except Exception as err:  # NNCF raises from deep inside its algorithms; the row records it
        return f"nncf.quantize failed: {type(err).__name__}: {err}"
    onnx.save(quantized, str(out))
    return None


def build_fp32(name: str, source: str, path: Path) -> tuple[Any, PreprocessConfig]:
    """The FP32 file of ``name`` from ``source`` and its preprocessing."""
    if name.startswith("digits_"):
        if source == "vitrt":
            td.export_digits(name, DIGITS, path)
        else:
            model, _ = td.load_trained(DIGITS, name)
            td.export_foreign(model, path, model.preprocess.input_size[-1])
        return "trained", td.preprocess_for(name)
    config = ExportConfig(name, seed=0)
    model = model_from_config(config)
    if source == "vitrt":
        export_model(model, path, config)
    else:
        td.export_foreign(model, path, 224)
    return "random init (seed 0)", PreprocessConfig(input_size=(3, 224, 224))


def bench(name: str, source: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    paths = {k: tmp / f"{name}.{source}.{k}.onnx" for k in (*FAST, *SLOW)}
    weights, cfg = build_fp32(name, source, paths["fp32"])
    labels = None
    if name.startswith("digits_"):
        calib, held, labels, data_text = int8_bench.digits_data(name)
        held, labels = held[: args.eval_samples], labels[: args.eval_samples]
    else:
        calib, held, data_text = int8_bench.natural_data(cfg)
        held = held[: args.eval_samples]
    np.save(tmp / "calib.npy", calib)
    np.save(tmp / "held.npy", held)
    input_name = OnnxRuntimeRunner(paths["fp32"], threads=1).session.get_inputs()[0].name
    seconds: dict[str, float] = {}
    calibrated = {}
    for key, runtime in (("int8", "tensorrt"), ("int8ort", "onnxruntime")):
        t = time.perf_counter()
        calibrated[key] = calibrate_onnx(
            paths["fp32"],
            tmp / "calib.npy",
            paths[key],
            num_samples=len(calib),
            eval_data=tmp / "held.npy",
            eval_samples=len(held),
            sensitivity=False,
            progress=False,
            threads=args.threads,
            mean=cfg.mean,
            std=cfg.std,
            crop_pct=cfg.crop_pct,
            interpolation=cfg.interpolation,
            runtime=runtime,
        )
        seconds[f"vitrt_{key}"] = time.perf_counter() - t
    result, ort_form = calibrated["int8"], calibrated["int8ort"]
    prepare_onnx(paths["fp32"], paths["prepared"])
    t = time.perf_counter()
    quantize_static_file(paths["fp32"], paths["ort"], calib, input_name)
    seconds["ort_int8"] = time.perf_counter() - t
    t = time.perf_counter()
    nncf_failure = nncf_quantize_file(paths["fp32"], paths["nncf"], calib, input_name)
    if nncf_failure is None:
        seconds["nncf_int8"] = time.perf_counter() - t
    else:
        del paths["nncf"]
        logging.getLogger("vitrt").warning("%s %s: no NNCF file: %s", name, source, nncf_failure)
    t = time.perf_counter()
    fp16 = fp16_onnx(paths["fp32"], paths["fp16"])
    mixed = fp16_onnx(paths["int8"], paths["int8+fp16"])
    seconds["vitrt_fp16"] = time.perf_counter() - t
    runners = {k: OnnxRuntimeRunner(p, threads=args.threads) for k, p in paths.items()}
    logits = {
        k: np.concatenate([r.infer({input_name: held[i : i + 1]})["logits"] for i in range(len(held))])
        for k, r in runners.items()
    }
    feed = {input_name: held[:1]}
    calls = {k: (lambda r=r: r.infer(feed)) for k, r in runners.items()}
    repeats = [
        measure_interleaved({k: calls[k] for k in FAST if k in calls}, warmup=3, iterations=args.iterations)
        for _ in range(args.repeats)
    ]
    ratios = {k: [r[k].median / r["fp32"].median for r in repeats] for k in repeats[0]}
    fast_ms = {k: float(np.median([r[k].median for r in repeats])) for k in repeats[0]}
    # blocks of 3: a call right after another runtime's pays for its spinning thread pool (see
    # measure_interleaved), so single-call blocks would slow the FP32 baseline most
    slow = measure_interleaved(
        {k: calls[k] for k in ("fp32", *SLOW)}, warmup=2, iterations=args.slow_iterations, block=3
    )
    row: dict[str, Any] = {
        "model": name,
        "source": source,
        "weights": weights,
        "data": data_text,
        "held_out": len(held),
        "vitrt_int8_layers": f"{len(result.quantized)}/{len(result.layers)}",
        "vitrt_int8_ort_layers": f"{len(ort_form.quantized)}/{len(ort_form.layers)}",
        "preparation": (read_recipe(result.model).prepared or {}) if read_recipe(result.model) else {},
        "fp16_keep_fp32": len(fp16.recipe.keep_fp32),
        "int8_fp16_keep_fp32": len(mixed.recipe.keep_fp32),
        "latency_ms": fast_ms | {k: slow[k].median for k in SLOW},
        "latency_ratio": {k: float(np.median(v)) for k, v in ratios.items()}
        | {k: slow[k].median / slow["fp32"].median for k in SLOW},
        "latency_ratio_range": {k: [min(v), max(v)] for k, v in ratios.items()},
        "repeats": args.repeats,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "nncf_failure": nncf_failure,
    }
    for k in [k for k in (*FAST[1:], *SLOW) if k in logits]:
        a = agreement(logits["fp32"], logits[k])
        row[k] = {"top1_agreement": a.top1_agreement, "mean_cosine": a.mean_cosine}
    if labels is not None:
        row["top1_accuracy"] = {k: float((v.argmax(1) == labels).mean()) for k, v in logits.items()}
    row["total_s"] = round(time.perf_counter() - t0, 1)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | source | file | vs FP32 latency | top-1 agree | mean cosine | top-1 acc |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    labels = {"fp32": "FP32", "prepared": "vitrt prepare (FP32)", "int8": "vitrt INT8"}
    labels["int8ort"] = "vitrt INT8 --for onnxruntime"
    labels |= {"ort": "quantize_static INT8", "nncf": "NNCF INT8"}
    labels["fp16"] = "vitrt FP16"
    labels["int8+fp16"] = "vitrt INT8+FP16"
    for r in rows:
        acc = r.get("top1_accuracy")
        for k in [k for k in (*FAST, *SLOW) if k in r["latency_ratio"]]:
            agree = "-" if k == "fp32" else f"{100 * r[k]['top1_agreement']:.1f}"
            cos = "-" if k == "fp32" else f"{r[k]['mean_cosine']:.5f}"
            accuracy = "-" if acc is None else f"{100 * acc[k]:.1f}"
            spread = r.get("latency_ratio_range", {}).get(k)
            ratio = f"{r['latency_ratio'][k]:.2f}"
            if spread is not None and r.get("repeats", 1) > 1 and k != "fp32":
                ratio += f" [{spread[0]:.2f}-{spread[1]:.2f}]"
            lines.append(
                f"| {r['model']} | {r['source']} | {labels[k]} | {ratio} "
                f"({r['latency_ms'][k]:.2f} ms) | {agree} | {cos} | {accuracy} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["digits_deit", "digits_t2t_vit", "deit_small_patch16_224", "t2t_vit_14"],
    )
    parser.add_argument("--sources", nargs="+", default=["vitrt", "foreign"], choices=["vitrt", "foreign"])
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    parser.add_argument("--iterations", type=int, default=40, help="timed runs of FP32/INT8/ORT (default 40)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="times the FP32/INT8/ORT group is timed; ratios are their median",
    )
    parser.add_argument(
        "--slow-iterations", type=int, default=6, help="timed runs of the float16 files (blocks of 3)"
    )
    parser.add_argument("--eval-samples", type=int, default=64, help="held-out samples (default 64)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(
        f"# {platform.processor() or platform.machine()}, {args.threads} ORT thread(s), onnxruntime "
        f"{onnxruntime.__version__}, batch 1, interleaved medians",
        flush=True,
    )
    rows = []
    for name in args.models:
        for source in args.sources:
            with tempfile.TemporaryDirectory(prefix="vitrt-precision-bench-") as tmp:
                row = bench(name, source, args, Path(tmp))
            rows.append(row)
            print(
                json.dumps({k: row[k] for k in ("model", "source", "latency_ratio", "total_s")}), flush=True
            )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
