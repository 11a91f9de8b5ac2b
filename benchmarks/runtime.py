"""vitrt's CPU runtime against PyTorch eager: ONNX Runtime FP32, vitrt INT8, FP32 + MCTF and INT8 + MCTF as
latency ratios against PyTorch eager (float32) measured in the same interleaved run.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/runtime.py
        [--models deit_small_patch16_224 t2t_vit_14] [--threads 2] [--iterations 40]
        [--calib-samples 64] [--json out.json]

Per model (random init, seed 0, 224 x 224, batch 1):

- files: ``vitrt export`` (portable lowering: the form ONNX Runtime runs without Python ops), dense and
  with MCTF token fusion (``fusion="mctf"``, the repository's settings); ``vitrt calibrate`` of each (INT8
  Q/DQ in ONNX Runtime's form, entropy ranges, no sensitivity fallback) on natural-image crops
  (``benchmarks/int8.py``: the images that ship with scikit-image and scikit-learn);
- runners: ``vitrt.build(file, target="cpu", runtime="onnxruntime", threads=T)`` opened with
  ``vitrt.open_runner``; PyTorch eager is ``vitrt.TorchRunner`` on the same weights with
  ``torch.set_num_threads(T)``.

All five of a model are timed in one interleaved group (``measure_interleaved``, blocks of 5 calls), every
ratio against PyTorch eager of that group (below 1: faster than PyTorch). Agreement: mean cosine of the
logits with PyTorch eager's on ``--eval-samples`` held-out crops (random-init logits: the cosine is the
measure). MCTF rows compare with the dense model's PyTorch eager (the same weights, fewer tokens).
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
from vitrt.deploy.runners import TorchRunner  # noqa: E402
from vitrt.models.config import PreprocessConfig  # noqa: E402

CONFIGS = {
    "torch": "PyTorch eager FP32",
    "ort_fp32": "ONNX Runtime FP32",
    "ort_int8": "ONNX Runtime vitrt INT8",
    "ort_fp32_mctf": "ONNX Runtime FP32 + MCTF",
    "ort_int8_mctf": "ONNX Runtime INT8 + MCTF",
}
"""name -> row label; ``torch`` is the baseline."""


def bench(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    cfg = PreprocessConfig(input_size=(3, 224, 224))
    calib, held, data_text = int8_bench.natural_data(cfg)
    calib, held = calib[: args.calib_samples], held[: args.eval_samples]
    np.save(tmp / "calib.npy", calib)
    runners: dict[str, Any] = {}
    for fusion in (None, "mctf"):
        suffix = "_mctf" if fusion else ""
        config = ExportConfig(name, lowering="portable", fusion=fusion, seed=0)
        model = model_from_config(config)
        if fusion is None:
            runners["torch"] = TorchRunner(model, name="torch", input_size=(3, 224, 224))
        fp32 = export_model(model, tmp / f"{name}{suffix}.onnx", config)
        int8 = tmp / f"{name}{suffix}.int8.onnx"
        vitrt.calibrate(
            fp32,
            tmp / "calib.npy",
            int8,
            num_samples=len(calib),
            sensitivity=False,
            progress=False,
            threads=args.threads,
        )
        for precision, file in (("fp32", fp32), ("int8", int8)):
            out = tmp / f"{name}{suffix}.{precision}.cpu"
            vitrt.build(file, out, target="cpu", runtime="onnxruntime", threads=args.threads)
            runners[f"ort_{precision}{suffix}"] = vitrt.open_runner(out)
    runners = {k: runners[k] for k in CONFIGS}
    logits = {
        k: np.concatenate([r.infer({"images": held[i : i + 1]})["logits"] for i in range(len(held))])
        for k, r in runners.items()
    }
    feed = {"images": np.ascontiguousarray(held[:1])}
    stats = measure_interleaved(
        {k: partial(r.infer, feed) for k, r in runners.items()}, warmup=3, iterations=args.iterations
    )
    base = stats["torch"].median
    rows = {
        k: {
            "median_ms": s.median,
            "p90_ms": s.p90,
            "ratio": s.median / base,
            "cosine": agreement(logits["torch"], logits[k]).mean_cosine,
        }
        for k, s in stats.items()
    }
    return {"model": name, "data": data_text, "rows": rows, "total_s": round(time.perf_counter() - t0, 1)}


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | runtime / file | median (p90) | x PyTorch eager | cosine to PyTorch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for k, label in CONFIGS.items():
            row = r["rows"][k]
            cos = "-" if k == "torch" else f"{row['cosine']:.4f}"
            lines.append(
                f"| {r['model']} | {label} | {row['median_ms']:.2f} ms ({row['p90_ms']:.2f}) | "
                f"{row['ratio']:.2f} | {cos} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["deit_small_patch16_224", "t2t_vit_14"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    header = int8_bench.machine_line(("onnxruntime", "torch"), args.threads)
    int8_bench.run_models(args.models, bench, table, args, header)


if __name__ == "__main__":
    main()
