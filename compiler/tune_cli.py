"""The ``vitrt tune`` subcommand: options over ``vitrt.tune`` (``vitrt.compiler.tune``) and its printout."""

from __future__ import annotations

import argparse
from typing import Any


def add_tune_command(sub: Any) -> None:
    """Add ``tune`` to the ``vitrt`` subparsers ``sub``."""
    p = sub.add_parser(
        "tune",
        help="search token fusion, Scatterbrain budget and precision under a latency budget (trials on Ray)",
    )
    p.add_argument(
        "model",
        help="registered name, or a checkpoint with its metadata JSON beside it "
        "(benchmarks/digits/digits_t2t_vit.safetensors)",
    )
    p.add_argument("--target", required=True, help="build target (cpu is timed here)")
    p.add_argument(
        "--latency-budget", type=float, required=True, metavar="MS", help="ms per image at batch 1"
    )
    p.add_argument(
        "--eval-data",
        default="auto",
        metavar="SRC",
        help="auto (held-out digits for a digits checkpoint, else skimage), a labelled .npz "
        "(images, labels), "
        "or an image folder / .npy / skimage / synthetic (accuracy = agreement with FP32)",
    )
    p.add_argument("--trials", type=int, default=16, help="configurations tried, baselines included (16)")
    p.add_argument(
        "--ray", dest="ray_address", default=None, metavar="ADDRESS", help="Ray cluster (default: local Ray)"
    )
    p.add_argument(
        "-o", "--output", default="tune", metavar="OUTDIR", help="tune.json, pareto.md/.png (tune/)"
    )
    p.add_argument("--checkpoint", default=None, help="weights for a registered name")
    p.add_argument("--img-size", type=int, default=None, help="input side for a registered name (224)")
    p.add_argument("--num-classes", type=int, default=None, help="classes for a registered name (1000)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"], help="precisions searched")
    p.add_argument(
        "--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"], help="cpu runtime"
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of every timed runner (1)")
    p.add_argument("--jobs", type=int, default=None, help="local Ray CPUs for parallel builds (all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the trial sample (0)")
    p.add_argument("--eval-samples", type=int, default=500, help="images judged per trial (500)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    result = tune(
        args.model,
        target=args.target,
        latency_budget=args.latency_budget,
        eval_data=args.eval_data,
        trials=args.trials,
        ray_address=args.ray_address,
        output=args.output,
        checkpoint=args.checkpoint,
        img_size=args.img_size,
        num_classes=args.num_classes,
        precisions=args.precisions,
        runtime=args.runtime,
        threads=args.threads,
        jobs=args.jobs,
        seed=args.seed,
        eval_samples=args.eval_samples,
        progress=not args.no_progress,
    )
    print(result.files["markdown"].read_text().split("\n\n", 1)[1].rstrip())
    print(f"\nwrote {', '.join(str(p) for p in result.files.values())}")
    print(result.message)
    if result.command:
        print(result.command)
    return 0
