"""The ``vitrt`` command line. Each subcommand is a thin layer over a Python function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from vitrt import logs
from vitrt.errors import VitrtError


def _cmd_list_models(args: argparse.Namespace) -> int:
    from vitrt.models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import model_card

    print(
        model_card(
            args.model,
            img_size=args.img_size,
            fusion=args.fusion,
            attention=args.attention,
            checkpoint=args.checkpoint,
        )
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    fusion = None if args.fusion in (None, "none") else args.fusion
    return run_demo(model_name=args.model, img_size=args.img_size, fusion=fusion, workdir=args.workdir)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    path = export_onnx(
        args.model,
        args.output,
        lowering=args.lowering,
        opset=args.opset,
        batch=None if args.dynamic_batch else args.batch,
        img_size=args.img_size,
        num_classes=args.num_classes,
        fusion=args.fusion,
        attention=args.attention,
        checkpoint=args.checkpoint,
        seed=args.seed,
        simplify=not args.no_simplify,
    )
    size_mib = path.stat().st_size / 2**20
    print(f"wrote {path} ({size_mib:.1f} MiB, lowering={args.lowering}, opset={args.opset})")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify_onnx

    report, _, _ = verify_onnx(
        args.onnx,
        against=args.against,
        atol=args.atol,
        rtol=args.rtol,
        inputs=args.load_inputs,
        iterations=args.iterations,
        batch=args.batch,
        save_inputs=args.save_inputs,
        save_outputs=args.save_outputs,
    )
    print(report.format())
    return 0 if report.passed else 1


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from vitrt.calibration.calibrate import calibrate_onnx

    result = calibrate_onnx(
        args.model,
        args.data,
        args.output,
        method=args.method,
        percentile=args.percentile,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        convert_channels=args.convert_channels,
        npz_key=args.npz_key,
        exclude=args.exclude,
        eval_data=args.eval_data,
        eval_samples=args.eval_samples,
        error_budget=args.error_budget,
        budget_metric=args.budget_metric,
        sensitivity=not args.no_sensitivity,
        sensitivity_samples=args.sensitivity_samples,
        cache=args.cache,
        trt_version=args.trt_version,
        report=args.report,
        threads=args.threads,
        custom_ops_library=args.custom_ops_library,
        progress=not args.no_progress,
        mean=args.mean,
        std=args.std,
        size=args.size,
        crop_pct=args.crop_pct,
        interpolation=args.interpolation,
        prepare=not args.no_prepare,
        runtime=args.runtime,
    )
    a = result.agreement
    print(
        f"wrote {args.output}: {len(result.quantized)} of {len(result.layers)} MatMul/Gemm/Conv layers INT8"
    )
    from vitrt.calibration.recipe import read_recipe

    recipe = read_recipe(result.model)
    if recipe is not None and recipe.prepared:
        opset, nodes = recipe.prepared["opset"], recipe.prepared["nodes"]
        fused = ", ".join(f"{n} {op}" for op, n in recipe.prepared["fused"].items()) or "nothing"
        print(f"  prepared: opset {opset[0]} -> {opset[1]}, {nodes[0]} -> {nodes[1]} nodes, fused {fused}")
    if args.runtime == "onnxruntime":
        from vitrt.calibration.cost import REASON

        small = sum((layer.reason or "").startswith(REASON) for layer in result.layers)
        print(f"  ONNX Runtime form: int32 biases, {small} layers kept float by its cost model")
    if result.fallen_back:
        labels = {layer.name: layer.label or layer.name for layer in result.layers}
        print(f"  fell back to float: {', '.join(labels[n] for n in result.fallen_back)}")
    if a is not None:
        print(
            f"  vs FP32 on {a.samples} held-out samples: top-1 agreement {100 * a.top1_agreement:.1f}%, "
            f"mean cosine {a.mean_cosine:.5f}, max abs error {a.max_abs_error:.4g}"
        )
    for key in ("cache", "report"):
        if key in result.written:
            print(f"wrote {result.written[key]}")
    return 0


def _cmd_fp16(args: argparse.Namespace) -> int:
    from vitrt.calibration.fp16 import fp16_onnx

    result = fp16_onnx(
        args.model,
        args.output,
        keep_fp32=args.keep_fp32,
        io_fp16=args.io_fp16,
        prepare=not args.no_prepare,
        check=not args.no_check,
    )
    r = result.recipe
    print(
        f"wrote {result.written}: {r.precision}, {len(r.keep_fp32)} nodes kept in float32, "
        f"{len(r.int8_layers)} INT8 layers, {len(r.plugins)} plugin nodes (float16 I/O), I/O {r.io_type}"
    )
    for name, a in result.agreement.items():
        print(
            f"  vs the float32 file on ONNX Runtime: {name} max abs {a['max_abs']:.3g}, "
            f"cosine {a['cosine']:.6f}"
        )
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare_onnx

    path, report = prepare_onnx(
        args.model, args.output, opset=args.opset, simplify=not args.no_simplify, check=not args.no_check
    )
    print(f"wrote {path}")
    print(report.format())
    return 0


def _cmd_plugins_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vitrt.plugins.cuda_build import DEFAULT_ARCHS, build_fatbins, fatbin_archs, kernel_resources

    results = build_fatbins(
        Path(args.out) if args.out else None,
        args.arch or DEFAULT_ARCHS,
        ptx=None if args.ptx == "none" else args.ptx,
        force=args.force,
        jobs=args.jobs,
    )
    for r in results:
        cubins, ptx = fatbin_archs(r.path)
        how = "cached" if r.cached else f"built in {r.seconds:.1f} s"
        print(f"{r.path} ({how}): cubin {' '.join(cubins)}; ptx {' '.join(ptx) or '-'}")
        for arch, kernels in kernel_resources(r.source.name, Path(args.out) if args.out else None).items():
            top = max(kernels, key=lambda k: kernels[k].get("registers", 0))
            spills = [k for k, u in kernels.items() if u.get("spill_stores", 0) or u.get("spill_loads", 0)]
            print(
                f"  {arch}: at most {kernels[top].get('registers')} registers/thread ({top}); "
                + (f"SPILLS in {', '.join(spills)}" if spills else "no spills")
            )
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose, report, to_json

    findings = diagnose()
    print(to_json(findings) if args.json else report(findings))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    import json

    from vitrt.deploy.profile import profile_torch
    from vitrt.deploy.torch_runner import TorchModelRunner
    from vitrt.fileio import atomic_write_bytes, check_writable

    if args.json:
        check_writable(args.json)
    runner = TorchModelRunner.from_name(
        args.model,
        checkpoint=args.checkpoint,
        fusion=args.fusion,
        attention=args.attention,
        img_size=args.img_size,
        num_classes=args.num_classes,
        device=args.device,
        half=args.half,
        cuda_graph=args.cuda_graph,
    )
    result = profile_torch(
        runner,
        batch=args.batch,
        img_size=args.img_size,
        warmup_s=args.warmup_s,
        duration_s=args.duration_s,
        iterations=args.iterations,
    )
    extras = ", ".join(f"{k}={v}" for k, v in (("fusion", args.fusion), ("attention", args.attention)) if v)
    print(f"{args.model}{f' ({extras})' if extras else ''} on {result.device}, batch {args.batch}")
    print(result.format())
    if args.json:
        atomic_write_bytes(args.json, json.dumps(result.to_dict(), indent=2).encode())
        print(f"wrote {args.json}")
    return 0


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model name (see `vitrt list-models`)")
    p.add_argument("--img-size", type=int, default=224, help="square input side in pixels (default 224)")
    p.add_argument("--fusion", default=None, help="token fusion preset: mctf, mctf-fast, tome")
    p.add_argument("--attention", default=None, help="attention: dense, scatterbrain, lsh, performer")


def _add_preprocess_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "preprocessing",
        "required (--mean, --std) for an ONNX file without vitrt's export config; overrides otherwise",
    )
    g.add_argument("--mean", type=float, nargs="+", default=None, help="per-channel mean of [0, 1] pixels")
    g.add_argument("--std", type=float, nargs="+", default=None, help="per-channel std of [0, 1] pixels")
    g.add_argument(
        "--size", type=int, nargs="+", default=None, help="input side, or height width (default: the input's)"
    )
    g.add_argument(
        "--crop-pct",
        type=float,
        default=None,
        help="resize to size / crop-pct, then center crop (default 0.9)",
    )
    g.add_argument("--interpolation", default=None, help="bicubic (default), bilinear or nearest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitrt", description="Compile vision transformers into verified, profiled engines."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list-models", help="list the models vitrt can build")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 't2t*'")
    p.set_defaults(func=_cmd_list_models)

    p = sub.add_parser("inspect", help="model card: parameters, MACs, tokens per stage, preprocessing")
    _add_model_options(p)
    p.add_argument("--checkpoint", default=None, help="load these weights first (.pth/.pth.tar/.safetensors)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser(
        "export", help="PyTorch model -> ONNX (plugin or portable lowering), simplified, checked"
    )
    _add_model_options(p)
    p.add_argument("--checkpoint", default=None, help="weights to export (default: random init from --seed)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the random init when no checkpoint is given")
    p.add_argument(
        "--lowering", default="plugin", help="plugin (TensorRT plugin nodes) or portable (standard ops)"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    group.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch axis named 'batch'")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("verify", help="run an ONNX model on ONNX Runtime and compare with a reference")
    p.add_argument("onnx", help="the .onnx file")
    p.add_argument(
        "--against", default="torch", help="'torch' (rebuild from the export config) or a RunResults JSON"
    )
    p.add_argument(
        "--atol",
        type=float,
        default=None,
        help="absolute tolerance (default by the file's precision: 1e-4 FP32, 2e-2 FP16, 0.25 INT8)",
    )
    p.add_argument(
        "--rtol", type=float, default=None, help="relative tolerance (default 1e-3 FP32, 2e-2 FP16, 0.1 INT8)"
    )
    p.add_argument("--iterations", type=int, default=1, help="random input sets (default 1)")
    p.add_argument("--batch", type=int, default=1, help="batch for a dynamic batch axis (default 1)")
    p.add_argument("--load-inputs", default=None, help="Polygraphy inputs JSON to run on")
    p.add_argument("--save-inputs", default=None, help="write the inputs used (Polygraphy JSON)")
    p.add_argument(
        "--save-outputs", default=None, help="write ONNX Runtime's outputs (Polygraphy RunResults)"
    )
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "calibrate", help="FP32 ONNX + representative data -> INT8 Q/DQ ONNX (+ TensorRT cache, report)"
    )
    p.add_argument("model", help="the FP32 .onnx file (from vitrt export)")
    p.add_argument(
        "--data",
        required=True,
        help="image folder, .npy/.npz, or skimage, sklearn-digits, sklearn-images, synthetic",
    )
    p.add_argument("-o", "--output", required=True, help="the Q/DQ INT8 .onnx to write")
    p.add_argument("--method", default="entropy", help="minmax, percentile, entropy (default), mse")
    p.add_argument("--percentile", type=float, default=99.99, help="for --method percentile (default 99.99)")
    p.add_argument("--num-samples", type=int, default=256, help="calibration samples (default 256)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per data batch (default 32)")
    p.add_argument("--seed", type=int, default=0, help="sample order and synthetic pixels (default 0)")
    p.add_argument("--convert-channels", action="store_true", help="replicate grayscale, drop alpha")
    p.add_argument("--npz-key", default=None, help="the array to use in an .npz with several")
    p.add_argument(
        "--exclude",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATTERN",
        help="keep layers whose node name matches in float (fnmatch, e.g. 'blocks.0.*' 'head/*')",
    )
    p.add_argument("--eval-data", default=None, help="held-out data (default: samples after --num-samples)")
    p.add_argument("--eval-samples", type=int, default=64, help="held-out samples (default 64)")
    p.add_argument(
        "--error-budget",
        type=float,
        default=None,
        help="fall back the most sensitive layers to float until the error vs FP32 is at most this",
    )
    p.add_argument(
        "--budget-metric",
        default="cosine",
        choices=["cosine", "top1"],
        help="cosine: 1 - mean cosine (default); top1: fraction of changed top-1 (0.01 = 1 point)",
    )
    p.add_argument("--sensitivity-samples", type=int, default=16, help="held-out samples (default 16)")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity ranking")
    p.add_argument("--cache", default=None, help="also write a TensorRT 10.x calibration cache here")
    p.add_argument("--trt-version", default="10.3.0", help="TensorRT that reads the cache (default 10.3.0)")
    p.add_argument("--report", default=None, help="also write the JSON report here")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--custom-ops-library", default=None, help="custom-op library for plugin nodes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_preprocess_options(p)
    p.add_argument("--no-prepare", action="store_true", help="skip the graph preparation (vitrt prepare)")
    p.add_argument(
        "--for",
        dest="runtime",
        default="tensorrt",
        choices=["tensorrt", "onnxruntime"],
        help="the runtime the INT8 graph is for: tensorrt (default; float biases) or onnxruntime (int32 "
        "biases it fuses, layers too small to gain kept float)",
    )
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser(
        "fp16",
        help="FP32 or INT8 (Q/DQ) ONNX -> float16 with float32 islands (LayerNorm, Softmax, exp spans)",
    )
    p.add_argument(
        "model", help="the FP32 .onnx (-> FP16) or the INT8 Q/DQ .onnx of vitrt calibrate (-> INT8+FP16)"
    )
    p.add_argument("-o", "--output", required=True, help="the .onnx to write")
    p.add_argument(
        "--keep-fp32",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATTERN",
        help="also keep these nodes in float32: fnmatch patterns of node names or op types ('head/*', 'Erf')",
    )
    p.add_argument(
        "--io-fp16", action="store_true", help="float16 graph inputs and outputs (default float32)"
    )
    p.add_argument("--no-prepare", action="store_true", help="skip the graph preparation of a float32 input")
    p.add_argument("--no-check", action="store_true", help="do not compare with the input on ONNX Runtime")
    p.set_defaults(func=_cmd_fp16)

    p = sub.add_parser(
        "prepare",
        help="any ViT ONNX -> simplified, LayerNorm/GELU fused, readable node names; same function (checked)",
    )
    p.add_argument("model", help="the .onnx file (vitrt's export or another exporter's)")
    p.add_argument("-o", "--output", required=True, help="the prepared .onnx to write")
    p.add_argument(
        "--opset", type=int, default=None, help="opset to reach (default: the model's, >= 17; 20 fuses GELU)"
    )
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim / onnxslim")
    p.add_argument("--no-check", action="store_true", help="do not compare with the input on ONNX Runtime")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("plugins", help="CUDA kernels of the plugin ops: `vitrt plugins build`")
    plugin_sub = p.add_subparsers(dest="plugins_command", required=True, metavar="ACTION")
    q = plugin_sub.add_parser(
        "build", help="nvcc -> one fatbin per op (cubins for each --arch + PTX), cached by source hash"
    )
    q.add_argument(
        "--out",
        default=None,
        help="output folder (default: $VITRT_CACHE_DIR/plugins if set, else build/plugins in a source "
        "checkout, else ~/.cache/vitrt/plugins)",
    )
    q.add_argument(
        "--arch",
        action="append",
        default=[],
        metavar="SM",
        help="cubin architecture, repeatable (default sm_87 sm_90 sm_100 sm_110 sm_120)",
    )
    q.add_argument(
        "--ptx", default="compute_80", help="PTX architecture for JIT, or 'none' (default compute_80)"
    )
    q.add_argument("--jobs", type=int, default=2, help="nvcc processes at once (default 2)")
    q.add_argument("--force", action="store_true", help="rebuild even when the cached build key matches")
    q.set_defaults(func=_cmd_plugins_build)

    p = sub.add_parser("doctor", help="what this machine has for each stage, and how to add what is missing")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser(
        "profile",
        help="latency of a PyTorch model on the CPU or a CUDA GPU (vitrt's kernels), trtexec's statistics",
    )
    _add_model_options(p)
    p.add_argument("--checkpoint", default=None, help="weights to load (default: random init)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--half", action="store_true", help="float16 weights and inputs")
    p.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="capture the model as a CUDA graph and replay it (CUDA only; default off)",
    )
    p.add_argument("--batch", type=int, default=1, help="images per query (default 1)")
    p.add_argument("--warmup-s", type=float, default=0.2, help="warm-up time in s (default 0.2, as trtexec)")
    p.add_argument(
        "--duration-s", type=float, default=3.0, help="timed duration in s (default 3, as trtexec)"
    )
    p.add_argument("--iterations", type=int, default=10, help="at least this many queries (default 10)")
    p.add_argument("--json", default=None, help="write the statistics as JSON")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("demo", help="the CPU pipeline on one model: export, verify, INT8, latency")
    p.add_argument("--model", default="t2t_vit_7", help="model name (default t2t_vit_7)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--fusion", default="mctf", help="token fusion preset (default mctf; 'none' for none)")
    p.add_argument("--workdir", default="artifacts/demo", help="where the artifacts go")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vitrt`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logs.configure(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except VitrtError as err:
        print(f"vitrt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
