"""ONNX Runtime latency of fused models whose exported one-step-ahead attention is reassociated (vitrt's
default) against the same models exporting the merged [B, H, N', N'] matrix as the official MCTF code forms
it, and against the dense model, all in one run.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/one_step_ahead_export.py
        [--cases deit_small_patch16_224:mctf:portable ...] [--batch 1] [--threads 2] [--iterations 60]

MCTF's one-step-ahead attention (a fused block's attention, over the fused tokens, from the unfused
tokens' probabilities A [B, H, N, N]) is merge_attention(A) V' = (M_w A M^T / den) V', with M the one-hot
merge matrix. The merged form computes that product as written: H N' N (N + N') multiply-adds for the merged
matrix, H N'^2 E for its product with V'. The reassociated form computes merge(A V'[dest]): H N^2 E, then
one merge of N' N C (``FusionBlock._attend_merged``), which is what the CUDA kernel path has done since the
first GPU work. Same function, rounding apart.

Per case (model:fusion:lowering, random init with seed 0, 224 x 224): the dense model, the merged form
(``FusionBlock.export_merged_matrix = True``) and the reassociated form are exported, each file's logits
compared with PyTorch's on the same random images, and the three files timed on ONNX Runtime (vitrt's
``OnnxRuntimeRunner``, which also runs the plugin lowering's nodes; CPU, ``--threads`` intra-op threads,
default graph optimisations) in one interleaved group (``measure_interleaved``, blocks of 5 calls), so
load from other processes affects all three alike. Ratios: reassociated / merged, and each against dense.
Export seconds are one export each (after a warm-up export), for the record.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from vitrt.compiler.export import ExportConfig, export_model, model_from_config
from vitrt.deploy.latency import measure_interleaved
from vitrt.deploy.runners import OnnxRuntimeRunner
from vitrt.plugins.token_fusion.module import FusionBlock

DEFAULT_CASES = (
    "deit_tiny_patch16_224:mctf:portable",
    "deit_small_patch16_224:mctf:portable",
    "t2t_vit_14:mctf:portable",
)


def export(config: ExportConfig, path: Path, merged_matrix: bool) -> tuple[torch.nn.Module, float]:
    """Exports the model ``config`` describes with the one-step-ahead form chosen: (model, seconds)."""
    model = model_from_config(config)
    FusionBlock.export_merged_matrix = merged_matrix
    try:
        start = time.perf_counter()
        export_model(model, path, config)
        return model, time.perf_counter() - start
    finally:
        FusionBlock.export_merged_matrix = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="model:fusion:lowering")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=60)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {cpu}", end="")
    print(f", {args.threads} threads, batch {args.batch}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        warm = ExportConfig("deit_tiny_patch16_224", lowering="portable", batch=args.batch)
        export_model(model_from_config(warm), Path(tmp) / "warm.onnx", warm)
        for case in args.cases:
            name, fusion, low = case.split(":")
            dense_config = ExportConfig(name, lowering=low, batch=args.batch)
            fused_config = ExportConfig(name, fusion=fusion, lowering=low, batch=args.batch)
            dense_model, _ = export(dense_config, Path(tmp) / "dense.onnx", False)
            model, merged_s = export(fused_config, Path(tmp) / "merged.onnx", True)
            _, reassoc_s = export(fused_config, Path(tmp) / "reassociated.onnx", False)
            images = rng.standard_normal((args.batch, *fused_config.input_size), dtype=np.float32)
            with torch.no_grad():
                want = {"dense": dense_model(torch.from_numpy(images)).numpy()}
                want["merged"] = want["reassociated"] = model(torch.from_numpy(images)).numpy()
            runners = {
                form: OnnxRuntimeRunner(Path(tmp) / f"{form}.onnx", threads=args.threads) for form in want
            }
            feed = {"images": images}
            print(f"\n{case}: export s merged {merged_s:.1f}, reassociated {reassoc_s:.1f}")
            for form, runner in runners.items():
                got = runner.infer(feed)["logits"]
                error = float(np.abs(got - want[form]).max() / np.abs(want[form]).max())
                nodes = len(onnx.load(Path(tmp) / f"{form}.onnx", load_external_data=False).graph.node)
                print(f"  {form:13} {nodes:5d} nodes, logits vs PyTorch: relative max error {error:.1e}")
            stats = measure_interleaved(
                {form: partial(runner.infer, feed) for form, runner in runners.items()},
                iterations=args.iterations,
            )
            median = {form: st.median for form, st in stats.items()}
            for form in runners:
                print(
                    f"  {form:13} median {median[form]:8.2f} ms  p90 {stats[form].p90:8.2f} ms"
                    f"  x dense {median[form] / median['dense']:.3f}"
                )
            print(f"  reassociated / merged: {median['reassociated'] / median['merged']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
