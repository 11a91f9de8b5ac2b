"""The ``vitrt`` command line. Each subcommand is a thin layer over a Python function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from vitrt import logs
from vitrt.errors import ConfigError, VitrtError


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
            fusion=_json_option(args.fusion),
            attention=_json_option(args.attention),
            checkpoint=args.checkpoint,
            num_classes=args.num_classes,
        )
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    fusion = None if args.fusion in (None, "none") else _json_option(args.fusion)
    return run_demo(
        model_name=args.model,
        fusion=fusion,
        precision=args.precision,
        workdir=args.workdir,
        verbose=bool(args.verbose or args.demo_verbose),
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx
    from .quiet import quiet_third_party

    # other packages' chatter (onnx_ir's and onnxscript's pass logs, warnings) unless -v, as compile does
    with quiet_third_party(not args.verbose):
        path = export_onnx(
            args.model,
            args.output,
            lowering=args.lowering,
            opset=args.opset,
            batch=None if args.dynamic_batch else args.batch,
            img_size=args.img_size,
            num_classes=args.num_classes,
            fusion=_json_option(args.fusion),
            attention=_json_option(args.attention),
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
            f"  vs FP32 on {a.samples} {'held-out' if result.held_out else 'calibration (none held out)'} "
            f"samples: top-1 agreement {100 * a.top1_agreement:.1f}%, "
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

    from vitrt.plugins.cuda_build import build_fatbins, fatbin_archs, kernel_resources

    results = build_fatbins(
        Path(args.out) if args.out else None,
        args.arch or None,
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
    from vitrt.deploy.profiling import profile, times_paths

    report = profile(
        args.artifacts,
        batch=args.batch,
        warmup_s=args.warmup_s,
        duration_s=args.duration_s,
        iterations=args.iterations,
        include_data_transfers=args.include_data_transfers,
        cuda_graph=args.cuda_graph,
        spin_wait=args.spin_wait,
        trtexec_defaults=args.trtexec_defaults,
        e2e_s=args.e2e_s,
        telemetry=not args.no_telemetry,
        quiet=args.quiet,
        json=args.json,
        report=args.report,
        export_times=args.export_times,
        export_profile=args.export_profile,
        layers=not args.no_layers,
        plots=args.plots,
        compare=args.compare,
        runtime=args.runtime,
        threads=args.threads,
        inference_precision=args.inference_precision,
        check=not args.no_check,
        device=args.device,
        half=args.half,
        checkpoint=args.checkpoint,
        img_size=args.img_size,
        num_classes=args.num_classes,
        fusion=_json_option(args.fusion),
        attention=_json_option(args.attention),
    )
    for result in report.artifacts:
        print(f"{result.runner} on {result.device}, batch {result.batch}")
        print(result.format())
        print()
    if report.compare:
        base = report.compare["baseline"]
        print(f"median latency vs {base}:")
        for name, ratio in report.compare["median_ratio"].items():
            print(f"  {name}: {ratio:.3f}x (p99 {report.compare['p99_ratio'][name]:.3f}x)")
    written = [args.json, args.report]
    if args.export_times:
        written += [str(p) for p in times_paths(args.export_times, len(report.artifacts))]
    skipped = []
    if args.export_profile:  # only the sources that had a per-layer run (not OpenVINO's, for one)
        paths = times_paths(args.export_profile, len(report.artifacts))
        for path, result in zip(paths, report.artifacts, strict=True):
            if result.layer_profile is not None:
                written.append(str(path))
            else:
                skipped.append(f"note: {path} not written: {result.runner} has no per-layer profile (above)")
    if args.plots:
        written.append(f"{args.plots}/ (PNG plots)")
    for path in written:
        if path:
            print(f"wrote {path}")
    print("\n".join(skipped), end="\n" if skipped else "")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import json

    from vitrt.deploy.predict import run

    result = run(
        args.model,
        args.images,
        top=args.top,
        batch=args.batch,
        runtime=args.runtime,
        threads=args.threads,
        inference_precision=args.inference_precision,
        device=args.device,
        half=args.half,
        check=not args.no_check,
        checkpoint=args.checkpoint,
        img_size=args.img_size,
        num_classes=args.num_classes,
        fusion=_json_option(args.fusion),
        attention=_json_option(args.attention),
        mean=args.mean,
        std=args.std,
        crop_pct=args.crop_pct,
        interpolation=args.interpolation,
        size=args.size,
    )
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.format())
    return 0


def _add_model_name_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model names", "options for a model name (a PyTorch runner)")
    g.add_argument("--img-size", type=int, default=None, help="square input side in pixels (default 224)")
    g.add_argument("--fusion", default=None, help="token fusion preset: mctf, mctf-fast, tome")
    g.add_argument("--attention", default=None, help="attention: dense, scatterbrain, lsh, performer")
    g.add_argument("--checkpoint", default=None, help="weights to load (default: random init)")
    g.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default 1000)")


def _add_runner_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime", "how the artifact, file or model runs")
    g.add_argument(
        "--runtime",
        default=None,
        choices=["onnxruntime", "openvino"],
        help="a bare .onnx file's runtime (default onnxruntime); an artifact runs on its manifest's",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime / OpenVINO intra-op threads (default: the artifact's, else every core)",
    )
    g.add_argument(
        "--inference-precision",
        default=None,
        choices=["f32", "bf16"],
        help="OpenVINO's compute precision (default f32; OpenVINO runs only)",
    )
    g.add_argument("--no-check", action="store_true", help="skip the manifest check against this machine")
    g.add_argument("--device", default=None, help="a model name's device: cpu (default), cuda or cuda:N")
    g.add_argument("--half", action="store_true", help="a model name's weights and inputs in float16")


def _cmd_targets(args: argparse.Namespace) -> int:
    import json

    from .targets import format_targets, targets

    rows = targets(args.names)
    print(json.dumps([t.to_dict() for t in rows], indent=1) if args.json else format_targets(rows))
    return 0


def _tensorrt_kwargs(args: argparse.Namespace) -> dict[str, object]:
    return {
        "precision": args.precision,
        "calib_cache": args.calib_cache,
        "min_batch": args.min_batch,
        "opt_batch": args.opt_batch,
        "max_batch": args.max_batch,
        "workspace_mib": args.workspace_mib,
        "optimization_level": args.optimization_level,
        "hardware_compatibility": args.hardware_compatibility,
        "version_compatible": args.version_compatible,
        "dla_core": args.dla_core,
        "strongly_typed": args.strongly_typed,
    }


def _cmd_build(args: argparse.Namespace) -> int:
    from .build import build

    if args.bundle is not None:
        result = build(
            args.model,
            args.output,
            bundle=args.bundle,
            timing_cache=args.timing_cache,
            verbose=args.verbose >= 2,
        )
    else:
        if args.model is None or args.target is None or args.output is None:
            raise ConfigError("give MODEL.onnx, --target and -o OUT (or --bundle BUNDLE/)")
        result = build(
            args.model,
            args.output,
            target=args.target,
            runtime=args.runtime,
            inference_precision=args.inference_precision,
            threads=args.threads,
            timing_cache=args.timing_cache,
            verbose=args.verbose >= 2,
            **_tensorrt_kwargs(args),  # type: ignore[arg-type]
        )
    m = result.manifest
    size = sum(f["bytes"] for f in m.files.values()) / 2**20
    runtime = f"{m.runtime['name']} {m.runtime.get('version')}"
    if m.runtime.get("inference_precision"):
        runtime += f", inference {m.runtime['inference_precision']}"
    print(f"wrote {result.path} for {m.target_name}: {m.precision} on {runtime} ({size:.1f} MiB, "
          f"{m.build_seconds:.1f} s)")  # fmt: skip
    if m.kind == "engine":
        from .build_plan import BuildPlan

        print("\n".join(BuildPlan.from_dict(m.plan or {}).describe()))
    timings = m.extra.get("timings") or {}
    for name, stats in (timings.get("ms") or {}).items():
        print(f"  {name}: median {stats['median']:.2f} ms at batch {timings['batch']}")
    for name, a in (m.extra.get("agreement") or {}).get("outputs", {}).items():
        print(
            f"  {name} vs the ONNX file on ONNX Runtime: cosine {a['cosine']:.6f}, max abs {a['max_abs']:.3g}"
        )
    for note in m.notes if m.kind == "cpu" else []:
        print(f"  note: {note}")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from .bundle import bundle

    if args.target is None or args.output is None:
        raise ConfigError("give --target and -o BUNDLE/ (`vitrt targets` lists the targets)")
    result = bundle(args.model, args.output, target=args.target, **_tensorrt_kwargs(args))  # type: ignore[arg-type]
    m = result.manifest
    print(f"wrote {result.path} for {m.target_name} ({m.sm}): {m.precision}, {len(m.files)} files")
    for version, plan in result.plans.items():
        flags = " ".join(plan.builder_flags) or "none"
        print(
            f"  TensorRT {version}: precision from the {plan.precision_source}; flags {flags}; "
            f"{len(plan.layer_constraints)} layer constraints"
        )
    for version, why in (m.plan or {}).get("not_buildable", {}).items():
        print(f"  TensorRT {version}: not buildable: {why}")
    for note in m.notes:
        print(f"  note: {note}")
    print(f"on the device: vitrt build --bundle {result.path}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import json

    from .manifest import check_artifact

    manifest, differences = check_artifact(args.path)
    if args.json:
        payload = {
            "kind": manifest.kind,
            "target": manifest.target_name,
            "differences": [d.__dict__ for d in differences],
        }
        print(json.dumps(payload, indent=1))
    else:
        what = {"engine": "engine", "cpu": "CPU artifact", "bundle": "bundle"}[manifest.kind]
        print(f"{args.path}: {what} for {manifest.target_name} ({manifest.precision}), files intact")
        for d in differences:
            print(f"  {'DIFFERS' if d.fatal else 'note'}: {d.format()}")
        if not differences:
            print("  this machine matches its manifest")
    return 1 if any(d.fatal for d in differences) else 0


def _add_tensorrt_options(
    p: argparse.ArgumentParser,
    *,
    timing_cache: bool = True,
    target_help: str = "a target from `vitrt targets` (jetson-orin-nano, h100, cpu...)",
) -> None:
    from .build_plan import BUILD_PRECISIONS, HARDWARE_COMPATIBILITY

    p.add_argument("--target", default=None, help=target_help)
    p.add_argument(
        "--precision",
        default=None,
        choices=BUILD_PRECISIONS,
        help="default: what the file holds (FP32, Q/DQ...)",
    )
    p.add_argument("-o", "--output", default=None, help="the folder to write")
    g = p.add_argument_group("TensorRT")
    g.add_argument(
        "--min", dest="min_batch", type=int, default=None, help="smallest batch of a dynamic batch"
    )
    g.add_argument(
        "--opt", dest="opt_batch", type=int, default=None, help="batch to optimise for (cpu: to time)"
    )
    g.add_argument("--max", dest="max_batch", type=int, default=None, help="largest batch of a dynamic batch")
    g.add_argument(
        "--workspace", dest="workspace_mib", type=int, default=None, help="MiB (default: the target's)"
    )
    g.add_argument(
        "--opt-level",
        dest="optimization_level",
        type=int,
        default=None,
        help="builder optimisation level 0-5",
    )
    if timing_cache:
        g.add_argument(
            "--timing-cache", default=None, help="timing cache file: read if present, written back"
        )
    g.add_argument(
        "--calib-cache", default=None, help="TensorRT 10.x calibration cache: implicit INT8 of an FP32 file"
    )
    g.add_argument(
        "--hardware-compat",
        dest="hardware_compatibility",
        default="none",
        choices=list(HARDWARE_COMPATIBILITY),
        help="run on other GPUs too (default none)",
    )
    g.add_argument(
        "--version-compatible", action="store_true", help="runs on newer TensorRT of the same major version"
    )
    g.add_argument("--dla-core", type=int, default=None, help="run on this DLA core, GPU fallback on")
    g.add_argument(
        "--strongly-typed",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TensorRT 10.x: precision from the graph as on 11.x (default: builder flags + keep-list)",
    )


def _json_option(value: str | None) -> str | dict[str, Any] | None:
    """A ``--fusion`` / ``--attention`` value: a preset name as given, or a JSON object (what `vitrt tune`
    prints, e.g. '{"preset":"tome","r":[28,0,0,0]}') as a dict."""
    if value is None or not value.lstrip().startswith("{"):
        return value
    try:
        parsed: dict[str, Any] = json.loads(value)  # starts with "{": an object or an error
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"cannot read {value!r} as JSON ({err}); give a preset name or a JSON object"
        ) from err
    return parsed


def _cmd_compile(args: argparse.Namespace) -> int:
    from .compile import compile_model

    result = compile_model(
        args.model,
        args.output,
        target=args.target,
        precision=args.precision,
        checkpoint=args.checkpoint,
        fusion=_json_option(args.fusion),
        attention=_json_option(args.attention),
        img_size=args.img_size,
        num_classes=args.num_classes,
        lowering=args.lowering,
        runtime=args.runtime,
        calib_data=args.calib_data,
        calib_samples=args.calib_samples,
        eval_data=args.eval_data,
        eval_samples=args.eval_samples,
        convert_channels=args.convert_channels,
        mean=args.mean,
        std=args.std,
        size=args.size,
        crop_pct=args.crop_pct,
        interpolation=args.interpolation,
        iterations=args.iterations,
        threads=args.threads,
        verbose=bool(args.verbose or args.compile_verbose),
        progress=lambda line: print(line, flush=True),
    )
    print()
    print("\n".join(result.summary()))
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

    p = sub.add_parser(
        "inspect", help="model card (a name or a description .json): parameters, MACs, tokens, preprocessing"
    )
    _add_model_options(p)
    p.add_argument("--checkpoint", default=None, help="load these weights first (.pth/.pth.tar/.safetensors)")
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier outputs (default 1000; a description's own)"
    )
    p.set_defaults(func=_cmd_inspect, img_size=None)  # None: 224, or a description's own

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
    p.add_argument(
        "--iterations", type=int, default=None, help="random input sets (default 1; not with --load-inputs)"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="batch of random inputs for a dynamic batch axis (default 1; a fixed axis takes only its own)",
    )
    p.add_argument("--load-inputs", default=None, help="Polygraphy inputs JSON to run on (--save-inputs')")
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
    p.add_argument("--percentile", type=float, help="for --method percentile (default 99.99)")
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
        help="cubin architecture, repeatable (default: $VITRT_CUDA_ARCHS if set, e.g. sm_87,sm_90, else "
        "sm_87 sm_90 sm_100 sm_110 sm_120)",
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
        help="latency of artifacts, ONNX files, engines or PyTorch models with trtexec's definitions",
    )
    p.add_argument(
        "artifacts",
        nargs="+",
        metavar="ARTIFACT",
        help="artifact folder, .onnx, .plan, or a model name (`vitrt list-models`); several: one report",
    )
    p.add_argument("--batch", type=int, default=1, help="images per query (default 1)")
    p.add_argument("--warmup-s", type=float, default=0.2, help="warm-up time in s (default 0.2, as trtexec)")
    p.add_argument(
        "--duration-s", type=float, default=3.0, help="timed duration in s (default 3, as trtexec)"
    )
    p.add_argument("--iterations", type=int, default=10, help="at least this many queries (default 10)")
    p.add_argument(
        "--trtexec-defaults",
        default="11",
        choices=["11", "10"],
        help="whose defaults fill unset options: 11 (no transfers, CUDA graph, spin-wait; default) or 10",
    )
    p.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="capture and replay a model name as a CUDA graph (CUDA only; default: the trtexec line's)",
    )
    p.add_argument(
        "--include-data-transfers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="count host<->device copies in the latency (GPU runners; default: the trtexec line's)",
    )
    p.add_argument(
        "--spin-wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="poll for completion instead of a blocking sync (GPU runners; default: the trtexec line's)",
    )
    p.add_argument(
        "--e2e-s",
        type=float,
        default=1.0,
        help="seconds of the end-to-end figure (image file -> logits; default 1, 0 to skip)",
    )
    p.add_argument("--no-telemetry", action="store_true", help="do not sample device telemetry")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", default=None, help="write the report as JSON (schema: vitrt.deploy.report)")
    p.add_argument("--report", default=None, help="write the report as Markdown")
    p.add_argument("--export-times", default=None, help="per-query times as trtexec's --exportTimes JSON")
    p.add_argument("--export-profile", default=None, help="per-layer times as trtexec's --exportProfile JSON")
    p.add_argument(
        "--no-layers",
        action="store_true",
        help="skip the per-layer run (per-block times) after the timed one",
    )
    p.add_argument("--plots", default=None, help="write PNG plots into this folder")
    p.add_argument(
        "--compare", action="store_true", help="ratios to the first artifact, and a comparison chart"
    )
    _add_model_name_options(p)
    _add_runner_options(p)
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser(
        "run", help="classify images with an artifact, ONNX file, engine or model: top classes per image"
    )
    p.add_argument("model", metavar="ARTIFACT", help="artifact folder, .onnx, .plan, or a model name")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="jpg/png files or folders of them")
    p.add_argument("--top", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--batch", type=int, default=None, help="images per query (default: the model's, else 8)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_name_options(p)
    _add_runner_options(p)
    _add_preprocess_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "targets",
        help="the devices vitrt builds for: SM, memory, DLA, precisions, TensorRT / CUDA per release",
    )
    p.add_argument("names", nargs="*", help="only these targets (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_targets)

    p = sub.add_parser(
        "build",
        help="ONNX -> artifact folder: a TensorRT engine, or the faster CPU runtime's model; + manifest.json",
    )
    p.add_argument("model", nargs="?", default=None, help="the .onnx file (FP32, INT8 Q/DQ, FP16, INT8+FP16)")
    p.add_argument("--bundle", default=None, help="build a bundle made by `vitrt bundle` (on the device)")
    _add_tensorrt_options(p)
    g = p.add_argument_group("cpu target")
    g.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "onnxruntime", "openvino"],
        help="auto (default): time both at build, keep the faster",
    )
    g.add_argument(
        "--inference-precision",
        default=None,
        choices=["f32", "bf16"],
        help="OpenVINO's compute precision (default f32; bf16 is faster on AVX512_BF16 / AMX CPUs)",
    )
    g.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every core)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser(
        "bundle", help="pack ONNX + kernels + expected manifest for a device to build its own engine"
    )
    p.add_argument("model", help="the .onnx file")
    _add_tensorrt_options(  # a bundle is for a TensorRT target: a "cpu" example would be refused here
        p,
        timing_cache=False,
        target_help="a TensorRT target from `vitrt targets` (jetson-orin-nano, jetson-thor, h100, ...)",
    )
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser(
        "check",
        help="an artifact's or bundle's manifest against this machine: what differs (exit 1 if fatal)",
    )
    p.add_argument("path", help="artifact or bundle folder (or a file inside one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "demo",
        help="vitrt compile on the trained digits T2T-ViT + MCTF: INT8 for the CPU, held-out top-1, latency",
    )
    p.add_argument(
        "--model",
        default="digits_t2t_vit_128",
        choices=["digits_t2t_vit_128", "digits_t2t_vit", "digits_deit"],
        help="the trained digits model (default digits_t2t_vit_128)",
    )
    p.add_argument(
        "--fusion",
        default="auto",
        help="token fusion preset or JSON (default: the model's tuned MCTF schedule; 'none' for none)",
    )
    p.add_argument("--precision", default="int8", choices=["fp32", "fp16", "int8", "int8+fp16"])
    p.add_argument("--workdir", default="artifacts/demo", help="where the data and the compile output go")
    p.add_argument(
        "-v", "--verbose", dest="demo_verbose", action="count", default=0, help="other packages' logs too"
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "compile",
        help="model or ONNX -> export, prepare, precision, build, verify, profile, report; stages cached",
    )
    p.add_argument(
        "model",
        help="a model name (vitrt list-models), a model description .json (benchmarks/digits/*.json) or "
        "an .onnx",
    )
    p.add_argument(
        "-o", "--output", required=True, help="output folder: stages/, report.{json,md,html}, plots/"
    )
    p.add_argument("--checkpoint", default=None, help="weights to load (.pth/.pth.tar/.safetensors)")
    p.add_argument("--fusion", default=None, help="token fusion preset: mctf, mctf-fast, tome")
    p.add_argument("--attention", default=None, help="attention: dense, scatterbrain, lsh, performer")
    p.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="square input side (default 224; a description fixes its own)",
    )
    p.add_argument(
        "--num-classes", type=int, default=None, help="classes (default 1000; a description fixes its own)"
    )
    p.add_argument("--target", default="cpu", help="a name from `vitrt targets` (default cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8", "int8+fp16"])
    p.add_argument(
        "--lowering",
        default=None,
        choices=["plugin", "portable"],
        help="default: plugin (TensorRT), portable (cpu)",
    )
    p.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "onnxruntime", "openvino"],
        help="cpu target: auto (default; time both, keep the faster), onnxruntime, openvino",
    )
    p.add_argument(
        "--calib-data", default=None, help="INT8 calibration source (folder, .npy/.npz, skimage, ...)"
    )
    p.add_argument("--calib-samples", type=int, default=None, help="INT8 calibration samples (default 256)")
    p.add_argument(
        "--eval-data",
        default=None,
        help="evaluation source; an .npz with images + labels (or sklearn-digits) gives top-1 accuracy "
        "(default: 16 synthetic samples, agreement only)",
    )
    p.add_argument("--eval-samples", type=int, default=500, help="at most this many evaluation samples (500)")
    p.add_argument(
        "--convert-channels", action="store_true", help="replicate grayscale data to the model's channels"
    )
    p.add_argument("--iterations", type=int, default=50, help="timed queries per runtime (default 50)")
    p.add_argument(
        "--threads", type=int, default=None, help="profile: threads of the artifact's runtime and of PyTorch"
    )
    p.add_argument(
        "-v", "--verbose", dest="compile_verbose", action="count", default=0, help="other packages' logs too"
    )
    _add_preprocess_options(p)
    p.set_defaults(func=_cmd_compile)

    from .tune_cli import add_tune_command  # `vitrt tune`: its options and handler live in tune_cli.py

    add_tune_command(sub)
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
    except BrokenPipeError:
        # the reader left (`vitrt inspect ... | head`): stop without a traceback, and point stdout at
        # devnull so that the interpreter's flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
