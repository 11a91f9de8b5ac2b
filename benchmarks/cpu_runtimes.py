"""The cpu target's runtimes on the same files: ONNX Runtime and OpenVINO, FP32 and INT8, vitrt's INT8 and
NNCF's, f32 and bf16 inference, as latency ratios against ONNX Runtime FP32 measured in the same run.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cpu_runtimes.py
        [--models deit_tiny_patch16_224 deit_small_patch16_224 t2t_vit_14 deit_tiny_patch16_224+mctf
                  deit_small_patch16_224+mctf t2t_vit_14+mctf]
        [--threads 2] [--iterations 40] [--calib-samples 128] [--eval-samples 16] [--json out.json]

Per model (random init, seed 0, 224 x 224, batch 1; ``+mctf``: MCTF token fusion in the portable lowering,
the form OpenVINO can read):

- files: ``vitrt export`` (FP32); ``vitrt calibrate`` (INT8 Q/DQ, entropy ranges, no sensitivity fallback)
  and NNCF 3.4 (``nncf.quantize`` on the OpenVINO model, ``model_type=TRANSFORMER``, default preset), both
  from the same natural-image crops (``benchmarks/int8.py``: the images that ship with scikit-image and
  scikit-learn);
- artifacts: ``vitrt.build(file, target="cpu", runtime=..., inference_precision=...)`` loaded with
  ``vitrt.load_artifact``, and NNCF's IR through ``vitrt.OpenVinoRunner``; ``auto``: the runtime
  ``vitrt build --target cpu`` keeps for the INT8 file (it times both itself).

All configurations of a model are timed in one interleaved group (``measure_interleaved``, blocks of 5 calls,
``--threads`` intra-op threads for both runtimes), every ratio against ORT FP32 of that group. Agreement:
mean cosine and top-1 agreement of the logits with ORT FP32 on ``--eval-samples`` held-out crops (random-init
logits: the cosine is the measure, top-1 agreement a weak signal).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import int8 as int8_bench  # noqa: E402

import vitrt  # noqa: E402
from vitrt.calibration.metrics import agreement  # noqa: E402
from vitrt.compiler.export import ExportConfig, export_model, model_from_config  # noqa: E402
from vitrt.deploy.latency import measure_interleaved  # noqa: E402
from vitrt.models.config import PreprocessConfig  # noqa: E402

CONFIGS = {
    "ort_fp32": ("ONNX Runtime", "FP32", "f32"),
    "ort_int8": ("ONNX Runtime", "vitrt INT8", "f32"),
    "ov_fp32_f32": ("OpenVINO", "FP32", "f32"),
    "ov_fp32_bf16": ("OpenVINO", "FP32", "bf16"),
    "ov_nncf_f32": ("OpenVINO", "NNCF INT8", "f32"),
    "ov_nncf_bf16": ("OpenVINO", "NNCF INT8", "bf16"),
    "ov_int8_f32": ("OpenVINO", "vitrt INT8", "f32"),
    "ov_int8_bf16": ("OpenVINO", "vitrt INT8", "bf16"),
}
"""name -> (runtime, file, inference precision); ``ort_fp32`` is the baseline."""


def nncf_openvino(fp32: Path, out: Path, calib: np.ndarray) -> Path:
    """NNCF's INT8 of the OpenVINO model read from ``fp32`` (transformer preset), saved uncompressed."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    dataset = nncf.Dataset(list(calib), lambda x: x[None])
    quantized = nncf.quantize(model, dataset, subset_size=len(calib), model_type=nncf.ModelType.TRANSFORMER)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def bench(spec: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    name, _, fusion = spec.partition("+")
    config = ExportConfig(name, lowering="portable", fusion=fusion or None, seed=0)
    fp32 = export_model(model_from_config(config), tmp / f"{spec}.onnx", config)
    cfg = PreprocessConfig(input_size=(3, 224, 224))
    calib, held, data_text = int8_bench.natural_data(cfg)
    calib, held = calib[: args.calib_samples], held[: args.eval_samples]
    np.save(tmp / "calib.npy", calib)
    np.save(tmp / "held.npy", held)
    int8 = tmp / f"{spec}.int8.onnx"
    vitrt.calibrate(
        fp32,
        tmp / "calib.npy",
        int8,
        num_samples=len(calib),
        eval_data=tmp / "held.npy",
        eval_samples=len(held),
        sensitivity=False,
        progress=False,
        threads=args.threads,
    )
    nncf_ir = nncf_openvino(fp32, tmp / f"{spec}.nncf.xml", calib)
    runners: dict[str, Any] = {}
    for key, (runtime, file, precision) in CONFIGS.items():
        if file == "NNCF INT8":
            runners[key] = vitrt.OpenVinoRunner(nncf_ir, threads=args.threads, inference_precision=precision)
            continue
        source = fp32 if file == "FP32" else int8
        out = tmp / f"{spec}.{key}"
        rt = "onnxruntime" if runtime == "ONNX Runtime" else "openvino"
        vitrt.build(
            source, out, target="cpu", runtime=rt, inference_precision=precision, threads=args.threads
        )
        runners[key] = vitrt.load_artifact(out)
    auto = vitrt.build(int8, tmp / f"{spec}.auto", target="cpu", threads=args.threads).manifest.runtime[
        "name"
    ]
    logits = {
        k: np.concatenate([r.infer({"images": held[i : i + 1]})["logits"] for i in range(len(held))])
        for k, r in runners.items()
    }
    feed = {"images": held[:1]}
    stats = measure_interleaved(
        {k: partial(r.infer, feed) for k, r in runners.items()}, warmup=3, iterations=args.iterations
    )
    base = stats["ort_fp32"].median
    rows = {}
    for k, s in stats.items():
        a = agreement(logits["ort_fp32"], logits[k])
        rows[k] = {
            "ms": s.median,
            "ratio": s.median / base,
            "cosine": a.mean_cosine,
            "top1_agreement": a.top1_agreement,
            "effective_inference_precision": getattr(runners[k], "effective_inference_precision", "f32"),
        }
    return {
        "model": spec,
        "data": data_text,
        "auto": auto,
        "rows": rows,
        "total_s": round(time.perf_counter() - t0, 1),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | runtime | file | inference | latency (vs ORT FP32) | cosine to ORT FP32 | top-1 agree |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for k, (runtime, file, _) in CONFIGS.items():
            row = r["rows"][k]
            cos = "-" if k == "ort_fp32" else f"{row['cosine']:.5f}"
            agree = "-" if k == "ort_fp32" else f"{100 * row['top1_agreement']:.1f} %"
            lines.append(
                f"| {r['model']} | {runtime} | {file} | {row['effective_inference_precision']} | "
                f"{row['ms']:.2f} ms ({row['ratio']:.2f}) | {cos} | {agree} |"
            )
        lines.append(
            f"| {r['model']} | `vitrt build --target cpu` (auto) keeps | {r['auto']} for INT8 | | | | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=[
            "deit_tiny_patch16_224",
            "deit_small_patch16_224",
            "t2t_vit_14",
            "deit_tiny_patch16_224+mctf",
            "deit_small_patch16_224+mctf",
            "t2t_vit_14+mctf",
        ],
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    header = int8_bench.machine_line(
        ("onnxruntime", "openvino", "nncf", "torch"), args.threads, with_flags=True, batch=False
    )
    int8_bench.run_models(args.models, bench, table, args, header)


if __name__ == "__main__":
    main()
