"""Export cost and ONNX Runtime CPU latency of each lowering, as ratios to PyTorch eager (batch 1).

    .venv/bin/python benchmarks/export_latency.py [--models deit_small_patch16_224 t2t_vit_14]
        [--fusion mctf] [--attention scatterbrain] [--iterations 30]

Every figure is measured in this run on this machine; the baseline is PyTorch eager, float32,
batch 1, same thread count as ONNX Runtime.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from compiler.export import ExportConfig, export_onnx, model_from_config
from deploy.latency import measure_latency
from deploy.runners import OnnxRuntimeRunner


def bench(name: str, fusion: str | None, attention: str | None, iterations: int, threads: int) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = ExportConfig(name, fusion=fusion, attention=attention)
        model = model_from_config(base)
        x = torch.randn(1, *base.input_size)
        with torch.no_grad():
            eager = measure_latency(lambda: model(x), iterations=iterations)
        rows.append(f"| {name} | pytorch eager | - | - | {eager.median:.2f} | 1.00 |")
        for lowering in ("portable", "plugin"):
            config = ExportConfig(name, lowering=lowering, fusion=fusion, attention=attention)
            timings: dict[str, float] = {}
            path = export_onnx(model, Path(tmp) / f"{lowering}.onnx", config, timings=timings)
            try:
                runner = OnnxRuntimeRunner(path, threads=threads)
            except Exception as err:  # the plugin lowering needs vitrt's custom-op library
                rows.append(
                    f"| {name} | onnxrt {lowering} | {timings['trace']:.1f} | {timings['simplify']:.1f} "
                    f"| n/a ({type(err).__name__}) | - |"
                )
                continue
            feed = {"images": x.numpy().astype(np.float32)}
            ort = measure_latency(lambda r=runner, f=feed: r.infer(f), iterations=iterations)
            rows.append(
                f"| {name} | onnxrt {lowering} | {timings['trace']:.1f} | {timings['simplify']:.1f} "
                f"| {ort.median:.2f} | {ort.median / eager.median:.2f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deit_small_patch16_224", "t2t_vit_14"])
    parser.add_argument("--fusion", default=None)
    parser.add_argument("--attention", default=None)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"# {platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}")
    print(
        f"# fusion={args.fusion}, attention={args.attention}, batch 1, float32, median of {args.iterations}"
    )
    print("| model | runtime | export s | simplify s | latency ms | vs eager |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        for row in bench(name, args.fusion, args.attention, args.iterations, threads):
            print(row, flush=True)


if __name__ == "__main__":
    main()
