"""Export cost and ONNX Runtime CPU latency of each lowering, as ratios to PyTorch eager (batch 1).

    .venv/bin/python benchmarks/export_latency.py [--models deit_small_patch16_224 t2t_vit_14]
        [--fusion mctf] [--attention scatterbrain] [--iterations 30]

Every figure is measured in this run on this machine; the baseline is PyTorch eager, float32,
batch 1, same thread count as ONNX Runtime, timed round-robin with the ONNX Runtime sessions so that
other load affects all alike. The plugin lowering runs its plugin nodes on ONNX Runtime through
Python callbacks into the PyTorch reference (for verification, not speed): its latency there says
nothing about TensorRT, where the nodes become CUDA plugins.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vitrt.compiler.export import ExportConfig, export_model, model_from_config
from vitrt.deploy.latency import measure_interleaved
from vitrt.deploy.runners import OnnxRuntimeRunner


def bench(name: str, fusion: str | None, attention: str | None, iterations: int, threads: int) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = ExportConfig(name, fusion=fusion, attention=attention)
        model = model_from_config(base)
        x = torch.randn(1, *base.input_size)
        feed = {"images": x.numpy().astype(np.float32)}

        def eager() -> object:
            with torch.no_grad():
                return model(x)

        calls: dict[str, Callable[[], object]] = {"pytorch eager": eager}
        cost: dict[str, str] = {"pytorch eager": "| - | -"}
        for lowering in ("portable", "plugin"):
            config = ExportConfig(name, lowering=lowering, fusion=fusion, attention=attention)
            timings: dict[str, float] = {}
            path = export_model(model, Path(tmp) / f"{lowering}.onnx", config, timings=timings)
            runner = OnnxRuntimeRunner(path, threads=threads)
            calls[f"onnxrt {lowering}"] = lambda r=runner: r.infer(feed)
            cost[f"onnxrt {lowering}"] = f"| {timings['trace']:.1f} | {timings['simplify']:.1f}"
        stats = measure_interleaved(calls, iterations=iterations)
        base_ms = stats["pytorch eager"].median
        for runtime, st in stats.items():
            rows.append(
                f"| {name} | {runtime} {cost[runtime]} | {st.median:.2f} | {st.median / base_ms:.2f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
