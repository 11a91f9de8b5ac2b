"""ONNX export time with the token-fusion op's grad-mode switches skipped under torch.export (vitrt's
``grad_mode``) against the same switches recorded (as ``torch.no_grad()`` / ``torch.set_grad_enabled`` are),
both in this run, and a check that both ways write the same graph.

    .venv/bin/python benchmarks/export_grad_mode.py [--cases deit_small_patch16_224:mctf:portable ...]
        [--repeats 2]

torch.export records each grad-mode switch in the traced model as a node; its set-grad pass then splits the
graph at each one and regenerates the Python code of every piece. The token-fusion reference matches and
weighs tokens without gradients, and a fused block computes its one-step-ahead attention with gradients
switched, so a fused model has several switches per block. Each case (model:fusion:lowering, batch 1) is
exported ``--repeats`` times each way, alternating (skipped, recorded, ...), after one untimed export that
warms the exporter; seconds are ``vitrt.export_model``'s whole call (trace, simplify, save), one thread,
median per way. The ratio is skipped / recorded.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import torch

import vitrt.plugins.lowering as lowering
from vitrt.compiler.export import ExportConfig, export_model, model_from_config

DEFAULT_CASES = (
    "deit_tiny_patch16_224:mctf:portable",
    "deit_small_patch16_224:tome:portable",
    "deit_small_patch16_224:mctf:portable",
    "deit_small_patch16_224:mctf:plugin",
)


def export_seconds(model: torch.nn.Module, config: ExportConfig, path: Path, skip: bool) -> float:
    lowering.SKIP_GRAD_MODE_IN_EXPORT = skip
    try:
        start = time.perf_counter()
        export_model(model, path, config)
        return time.perf_counter() - start
    finally:
        lowering.SKIP_GRAD_MODE_IN_EXPORT = True


def graph_bytes(path: Path) -> bytes:
    """The file's graph (nodes, initializers, inputs and outputs): everything but its metadata."""
    return onnx.load(path).graph.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="model:fusion:lowering")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.machine()}, 1 thread, batch 1")
    print(f"{'case':38} {'recorded s':>10} {'skipped s':>10} {'ratio':>6}  same graph")
    with tempfile.TemporaryDirectory() as tmp:
        warm = ExportConfig("deit_tiny_patch16_224", lowering="portable", batch=1)
        export_model(model_from_config(warm), Path(tmp) / "warm.onnx", warm)
        for case in args.cases:
            name, fusion, low = case.split(":")
            config = ExportConfig(name, fusion=fusion, lowering=low, batch=1)
            model = model_from_config(config)
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for skip in (True, False):
                    path = Path(tmp) / f"{'skipped' if skip else 'recorded'}.onnx"
                    times[skip].append(export_seconds(model, config, path, skip))
            same = graph_bytes(Path(tmp) / "skipped.onnx") == graph_bytes(Path(tmp) / "recorded.onnx")
            recorded, skipped = statistics.median(times[False]), statistics.median(times[True])
            print(f"{case:38} {recorded:10.1f} {skipped:10.1f} {skipped / recorded:6.2f}  {same}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
