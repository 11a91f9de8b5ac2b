"""Export time with torch's full ONNX optimizer against vitrt's (onnxscript's rules without the Slice pair ->
Split rule), both in this run, and whether the files are the same bytes.

    .venv/bin/python benchmarks/export_rewrites.py [--cases t2t_vit_t_14:scatterbrain::portable ...]

A case is ``model:attention:fusion:lowering`` (empty fields: none). After one untimed export (imports and
the exporter's registries load once per process), each case is exported four times: full, vitrt, vitrt,
full, so neither way always goes first; each way's time is the smaller of its two. The ratio is vitrt's
time over the full one's (``export_model``'s ``trace`` stage, which includes the optimizer; simplification
and saving are the same work in both).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
from pathlib import Path

import torch

import vitrt.compiler.export as export_module
from vitrt.compiler.export import ExportConfig, export_model, model_from_config

DEFAULT_CASES = (
    "t2t_vit_t_14:scatterbrain::portable",
    "t2t_vit_t_14:scatterbrain::plugin",
    "deit_small_patch16_224::mctf:portable",
)


def export_seconds(config: ExportConfig, path: Path, full: bool) -> float:
    """Seconds of ``export_model``'s trace stage, with torch's full optimizer or vitrt's."""
    saved = export_module.without_slice_pair_rewrite
    if full:
        export_module.without_slice_pair_rewrite = contextlib.nullcontext  # type: ignore[assignment]
    try:
        timings: dict[str, float] = {}
        export_model(model_from_config(config), path, config, timings=timings)
    finally:
        export_module.without_slice_pair_rewrite = saved  # type: ignore[assignment]
    return timings["trace"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES))
    parser.add_argument("--img-size", type=int, default=224)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads")
    print(f"{'case':44} {'full s':>8} {'vitrt s':>8} {'ratio':>6} same bytes")
    with tempfile.TemporaryDirectory() as tmp:
        warm = ExportConfig("t2t_vit_7", input_size=(3, 32, 32), img_size=32)
        export_seconds(warm, Path(tmp) / "warm.onnx", full=False)
        for case in args.cases:
            model, attention, fusion, lowering = [*case.split(":"), "", "", ""][:4]
            size = args.img_size
            config = ExportConfig(
                model,
                lowering=lowering or "plugin",
                input_size=(3, size, size),
                img_size=size,
                fusion=fusion or None,
                attention=attention or None,
            )
            paths = [Path(tmp) / f"{i}.onnx" for i in range(4)]
            order = (True, False, False, True)  # full, vitrt, vitrt, full
            seconds = [export_seconds(config, path, full) for path, full in zip(paths, order, strict=True)]
            full, ours = min(seconds[0], seconds[3]), min(seconds[1], seconds[2])
            same = len({path.read_bytes() for path in paths}) == 1
            print(f"{case:44} {full:8.1f} {ours:8.1f} {ours / full:6.2f} {same}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
