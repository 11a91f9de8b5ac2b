"""``vitrt tune``: search token fusion, Scatterbrain budget and precision for the best model under a latency
budget on a target, with trials on Ray.

How the trials run (``tune``):

1. Builds in parallel, as Ray tasks of one CPU each. Each distinct fusion and attention is exported once
   (``tune_trial.export_trial``: portable lowering, batch 1), so trials that differ only in precision share
   an export. Each trial (``tune_trial.build_trial``) then calibrates INT8 if asked, ``vitrt.build``s a
   ``target`` artifact from its export, ``vitrt.load_artifact``s it and judges it on the eval images. Ray runs
   as many tasks at once as the cluster has CPUs; a failed trial (in its export or its own stages) comes
   back as a record with its error and stage.
2. Latency, serialised per device. After every build has finished (so no build competes with a timing on
   a local machine), each successful artifact is timed by a ``LatencyProfiler`` actor. Profilers are placed
   by the custom resource ``vitrt_profiler``: the local Ray started here has exactly 1 of it, and a cluster's
   profiling hosts each declare 1 (``ray start --address ... --resources '{"vitrt_profiler": 1}'``), so there
   is at most one profiler per device, and an actor runs its calls one after another: two timings never share
   a device. Trials are dealt round-robin over the profilers (give several only when they are the same
   device: latencies from different hardware are not comparable). Each timing is interleaved with the unfused
   INT8 baseline (FP32 when int8 is not among the precisions), and latencies are reported relative to it
   (``LatencyProfiler``), which keeps them comparable on a machine other work shares.
3. The Pareto front of (latency, accuracy), the most accurate trial under the budget, ``tune.json`` (every
   trial), ``pareto.md`` and ``pareto.png`` in the output folder, and that trial as a ``vitrt compile``
   command line.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import ConfigError, VitrtError
from vitrt.progress import progress_bar

from .pareto import choose, markdown_table, pareto_front, plot_front
from .tune_model import ModelSource, load_eval_data, resolve_model
from .tune_space import PRECISIONS, SpaceFacts, TrialConfig, baselines, check_trials, sample_trials

log = logging.getLogger(__name__)

PROFILER_RESOURCE = "vitrt_profiler"
"""Ray custom resource marking a profiling device: 1 per host (or per device) that times trials."""
CPU_RUNTIMES = ("onnxruntime", "openvino")
TABLE_COLUMNS = (
    ("trial", "name"),
    ("role", "role"),
    ("tokens", "tokens_text"),
    ("latency ms", "latency_ms"),
    ("vs INT8", "ratio"),
    ("accuracy %", "accuracy"),
    ("front", "front_mark"),
)


@dataclass
class TuneResult:
    """What ``tune`` found.

    trials: one dict per trial (config, status, accuracy %, latency_ms, ...; the contents of tune.json's
    "trials"); front: indices into ``trials`` on the Pareto front, fastest first; chosen: index of the most
    accurate trial under the budget, or None; command: the ``vitrt compile`` line for it (None without one);
    message: one line saying what was chosen or that nothing fits; files: {"json", "markdown", "png"}.
    """

    trials: list[dict[str, Any]]
    front: list[int]
    chosen: int | None
    command: str | None
    message: str
    files: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def space_facts(model: Any) -> SpaceFacts:
    """SpaceFacts of a built (unfused, dense) model: depth, tokens entering the blocks, and the T2T
    attentions' token counts for a "transformer" T2T module."""
    from vitrt.models.t2t_vit import TokenTransformer

    blocks = getattr(model, "blocks", None)
    depth = len(blocks) if blocks is not None else 0
    num_tokens = int(getattr(model, "num_tokens", 0))
    t2t = getattr(model, "tokens_to_token", None)
    t2t_tokens = None
    if t2t is not None and isinstance(getattr(t2t, "attention1", None), TokenTransformer):
        grid = list(t2t.grid)
        t2t_tokens = (int(grid[0]) ** 2, int(grid[1]) ** 2)
    return SpaceFacts(depth=depth, num_tokens=num_tokens, t2t_tokens=t2t_tokens)


def compile_command(
    source: ModelSource,
    config: TrialConfig,
    target: str,
    runtime: str | None = None,
    calib: tuple[str, int] | None = None,
) -> str:
    """The ``vitrt compile`` line that builds the model a configuration was tuned on: the model, its weights,
    input side and classes (a registered name's, where not compile's defaults 224 / 1000), fusion and
    attention as the JSON dicts that ``create_model`` / ``export_onnx`` accept ("none" / "dense" when
    absent), the runtime the search timed, for INT8 ``calib`` = (source, samples) the search calibrated on
    (None: a CALIB_DATA placeholder), and an OUT placeholder for the output folder."""
    fusion = json.dumps(config.fusion, separators=(",", ":")) if config.fusion else "none"
    attention = json.dumps(config.attention, separators=(",", ":")) if config.attention else "dense"
    if source.arch is not None and source.checkpoint:
        # a checkpoint with its description beside it: compile reads the description (which fixes the input
        # side and classes), then the weights
        model = [str(Path(source.checkpoint).with_suffix(".json")), "--checkpoint", source.checkpoint]
    else:
        model = [source.spec] + (["--checkpoint", source.checkpoint] if source.checkpoint else [])
        if source.img_size != 224:
            model += ["--img-size", str(source.img_size)]
        if source.num_classes != 1000:
            model += ["--num-classes", str(source.num_classes)]
    words = ["vitrt", "compile", *model, "--fusion", fusion, "--attention", attention]
    words += ["--precision", config.precision, "--target", target]
    if runtime is not None and target == "cpu":
        words += ["--runtime", runtime]
    if "int8" in config.precision:
        if calib is None:
            words += ["--calib-data", "CALIB_DATA"]
        else:  # tune calibrates with grayscale images replicated to the model's channels
            words += ["--calib-data", calib[0], "--calib-samples", str(calib[1]), "--convert-channels"]
    words += ["-o", "OUT"]
    return " ".join(shlex.quote(w) for w in words)


def _init_ray(address: str | None, num_cpus: int | None) -> tuple[Any, bool]:
    """Import Ray and connect (``address``) or start a quiet local instance; (ray, started here)."""
    try:
        import ray
    except ImportError as err:
        raise VitrtError("vitrt tune runs its trials on Ray: pip install 'vitrt[tune]'") from err
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            resources={PROFILER_RESOURCE: 1},
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    return ray, True


def _profilers(ray: Any, threads: int, input_size: tuple[int, int, int], iterations: int) -> list[Any]:
    """One LatencyProfiler actor per unit of the profiling resource (ConfigError naming the fix if none)."""
    from .tune_trial import LatencyProfiler

    count = int(ray.cluster_resources().get(PROFILER_RESOURCE, 0))
    if count < 1:
        raise ConfigError(
            f"the Ray cluster has no {PROFILER_RESOURCE!r} resource, so no host times trials: start each "
            f"profiling host with `ray start --address ADDRESS --resources '{{\"{PROFILER_RESOURCE}\": 1}}'`"
        )
    # num_cpus=0: the profiling resource, not CPUs, places the actor (it runs after every build has ended)
    actor = ray.remote(LatencyProfiler).options(num_cpus=0, resources={PROFILER_RESOURCE: 1})
    return [actor.remote(input_size, threads, iterations) for _ in range(count)]


def _reference_logits(model: Any, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate(
            [model(torch.from_numpy(images[i : i + 64])).numpy() for i in range(0, len(images), 64)]
        )


def tune(
    model: str,
    *,
    target: str = "cpu",
    latency_budget: float,
    eval_data: str | None = "auto",
    trials: int = 16,
    ray_address: str | None = None,
    output: str | os.PathLike[str] = "tune",
    checkpoint: str | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    precisions: Sequence[str] = PRECISIONS,
    runtime: str = "onnxruntime",
    threads: int = 1,
    jobs: int | None = None,
    seed: int = 0,
    eval_samples: int = 500,
    calib_samples: int = 256,
    iterations: int = 200,
    configs: Sequence[TrialConfig] | None = None,
    progress: bool = False,
) -> TuneResult:
    """Search fusion schedule, Scatterbrain budget (t2t_vit_t_* models) and precision of ``model`` for the
    most accurate configuration whose batch-1 latency on ``target`` is at most ``latency_budget`` ms:
    ``vitrt tune`` as a function (``vitrt.tune``). See the module docstring for how trials run.

    Args:
        model: a registered name, or a checkpoint with its metadata JSON beside it
            (``benchmarks/digits/digits_t2t_vit.safetensors``); ``checkpoint`` / ``img_size`` /
            ``num_classes`` for a registered name.
        target: the build target; ``cpu`` (ONNX Runtime or OpenVINO, ``runtime``) is the one timed here.
        latency_budget: milliseconds per image at batch 1.
        eval_data: "auto", a labelled .npz (images, labels) or an ``open_source`` spec
            (``vitrt.compiler.tune_model``); eval_samples / calib_samples: images judged / calibrated on.
        trials: configurations tried, the unfused baselines of ``precisions`` included (seeded by ``seed``).
        ray_address: a Ray cluster (``ray://host:10001`` or ``host:6379``); None: a local Ray with ``jobs``
            CPUs (default: all) and one profiling device.
        output: folder for tune.json, pareto.md and pareto.png (created).
        precisions: the precisions searched ("fp32", "int8"; one string is one precision). They bound
            every trial, the baselines included: with "fp32" alone nothing is calibrated and the unfused FP32
            baseline is the timing reference (else the unfused INT8 one). threads: intra-op threads of every
            timed runner (fixed for comparable timings); iterations: timed calls per trial.
        configs: explicit configurations instead of the seeded sample, each in one of ``precisions``
            (ConfigError otherwise; the baselines of ``precisions`` are added if missing).
        progress: progress bars on stderr for the builds (one step per trial) and the timings.

    Returns a TuneResult. A trial that fails is recorded with its error and stage, never fatal. Raises
    ConfigError for bad options, a target other than cpu, or no profiling host on the cluster.
    """
    from .targets import get_target

    t_start = time.perf_counter()
    get_target(target)  # an unknown name: ConfigError listing the targets
    if target != "cpu":
        raise ConfigError(
            f"vitrt tune times trials with the target's runner; only the 'cpu' target has one on this "
            f"machine (TensorRT targets need a device with TensorRT), got {target!r}"
        )
    # every option before the model and data load, so a mistake is said first and alone
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(
            f"tune builds the model itself for every trial (fused, quantized): give a registered name or a "
            f"checkpoint path, not a {type(model).__name__}"
        )
    precisions = [precisions] if isinstance(precisions, str) else list(precisions)  # "int8": one precision
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ConfigError(f"precisions {list(precisions)}: choose from {', '.join(PRECISIONS)}")
    if configs is None:
        check_trials(trials, precisions)
    else:
        outside = sorted({c.name for c in configs if c.precision not in precisions})
        if outside:
            raise ConfigError(
                f"configs {outside} are not in precisions {precisions}: add their precision or drop them"
            )
    for label, count in (
        ("eval_samples", eval_samples),
        ("calib_samples", calib_samples),
        ("iterations", iterations),
        ("jobs", 1 if jobs is None else jobs),
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"{label} must be a positive integer, got {count!r}")
    if runtime not in CPU_RUNTIMES:
        raise ConfigError(
            f"runtime {runtime!r}: tune fixes one CPU runtime so trials compare; "
            f"use {' or '.join(CPU_RUNTIMES)}"
        )
    budget_ok = isinstance(latency_budget, (int, float)) and not isinstance(latency_budget, bool)
    if not budget_ok or not latency_budget > 0:
        raise ConfigError(f"latency_budget must be a number of ms > 0, got {latency_budget!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    source = resolve_model(model, checkpoint=checkpoint, img_size=img_size, num_classes=num_classes)
    weights = source.read_weights()
    base = source.build(state_dict=weights)
    facts = space_facts(base)
    data = load_eval_data(  # no calibration images where no trial is INT8
        source,
        base.preprocess,
        eval_data,
        eval_samples=eval_samples,
        calib_samples=calib_samples if "int8" in precisions else 0,
        seed=seed,
    )
    reference = _reference_logits(base, data.images)
    input_size = tuple(int(v) for v in base.preprocess.input_size)
    del base
    chosen_configs = list(configs) if configs is not None else sample_trials(facts, trials, seed, precisions)
    roles = {c.role for c in chosen_configs}
    chosen_configs = [b for b in baselines(precisions) if b.role not in roles] + chosen_configs
    # after the checks that bad input fails (no empty folder left behind), before the search (an output
    # path that cannot be created fails now, not after it)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)

    ray, started = _init_ray(ray_address, jobs)
    try:
        from .tune_trial import build_trial, export_key, export_trial

        export_task = ray.remote(export_trial).options(num_cpus=1, max_retries=0)
        build_task = ray.remote(build_trial).options(num_cpus=1, max_retries=0)
        shared = {
            "calibration": ray.put(data.calibration),
            "images": ray.put(data.images),
            "labels": ray.put(data.labels),
            "reference": ray.put(reference),
        }
        weights_ref = ray.put(weights)
        # One export per fusion and attention: trials that differ only in precision (the two baselines, or a
        # configuration searched in FP32 and INT8) build from the same ONNX file. Ray starts each build when
        # its export is done, and frees an export once no build waiting or running needs it (hence the del).
        keys = [export_key(cfg) for cfg in chosen_configs]
        exports: dict[str, Any] = {}
        for cfg, key in zip(chosen_configs, keys, strict=True):
            if key not in exports:
                exports[key] = export_task.remote(source, cfg, weights=weights_ref)
        where = ray_address or "local"
        log.info("tune: %d trials from %d exports on Ray (%s)", len(chosen_configs), len(exports), where)
        pending = [
            build_task.remote(
                source,
                cfg,
                weights=None,
                exported=exports[key],
                target=target,
                runtime=runtime,
                threads=threads,
                **shared,
            )
            for cfg, key in zip(chosen_configs, keys, strict=True)
        ]
        del exports
        records = _gather(ray, chosen_configs, pending, progress)
        profilers = _profilers(ray, threads, input_size, iterations)  # type: ignore[arg-type]
        _time_trials(ray, profilers, records, progress)
        hosts = ray.get([p.host.remote() for p in profilers])
    finally:
        if started:
            ray.shutdown()
    calib = None  # the compile line's calibration source, where trials calibrated on one it reads
    if data.calib_source is not None and len(data.calibration):
        calib = (data.calib_source, len(data.calibration))
    return _report(
        source,
        target,
        latency_budget,
        records,
        data.description,
        hosts,
        out,
        t_start,
        runtime,
        threads,
        calib=calib,
    )


def _gather(ray: Any, configs: list[TrialConfig], pending: list[Any], progress: bool) -> list[dict[str, Any]]:
    """The build tasks' records in ``configs``' order, taken as they finish (a progress step each). A task
    whose worker died, or whose export's did, becomes a failed record of stage "ray"."""
    records: list[dict[str, Any] | None] = [None] * len(pending)
    position = {ref: i for i, ref in enumerate(pending)}
    bar = progress_bar(len(pending), "tune: trials built", progress, unit="trial")
    waiting = list(pending)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            for ref in done:
                i = position[ref]
                try:
                    records[i] = ray.get(ref)
                except Exception as err:  # a worker that died: still a record
                    records[i] = {
                        "config": configs[i].to_dict(),
                        "status": "failed",
                        "stage": "ray",
                        "error": str(err),
                    }
                bar.update(1)
    finally:
        bar.close()
    return [r for r in records if r is not None]


def _time_trials(
    ray: Any, profilers: list[Any], records: list[dict[str, Any]], progress: bool = False
) -> None:
    """Time every built trial (fills latency fields in place), the INT8 baseline as every profiler's
    reference (the FP32 baseline where INT8 failed)."""
    built = [r for r in records if r["status"] == "built"]
    ref_record = next((r for r in built if r["config"]["role"] == "baseline-int8"), None)
    ref_record = ref_record or next((r for r in built if r["config"]["role"] == "baseline-fp32"), None)
    ref_bytes = ref_record["artifact"] if ref_record else None
    ray.get([p.set_reference.remote(ref_bytes) for p in profilers])
    jobs = [
        (r, profilers[i % len(profilers)], profilers[i % len(profilers)].measure.remote(r["artifact"]))
        for i, r in enumerate(built)
    ]
    bar = progress_bar(len(jobs), "tune: trials timed", progress, unit="trial")
    try:
        for record, profiler, job in jobs:
            timing = ray.get(job)
            bar.update(1)
            record["profiler"] = profilers.index(profiler)
            if timing["status"] != "ok":
                record.update(status="failed", stage=timing["stage"], error=timing["error"])
                continue
            record["status"] = "ok"
            record["timing"] = timing
    finally:
        bar.close()  # as _gather's: no half-drawn bar left on stderr when a profiler raises
    typical = {i: ray.get(p.reference_median.remote()) for i, p in enumerate(profilers)}
    for record in records:
        timing = record.get("timing")
        if not timing:
            continue
        ref_ms = typical.get(record["profiler"])
        if record is ref_record and ref_ms is not None:
            record["latency_ms"], record["ratio"] = ref_ms, 1.0
        elif "ratio" in timing and ref_ms is not None:
            record["latency_ms"], record["ratio"] = timing["ratio"] * ref_ms, timing["ratio"]
        else:
            record["latency_ms"] = timing["median_ms"]
    for record in records:
        record.pop("artifact", None)


def _report(
    source: ModelSource,
    target: str,
    budget: float,
    records: list[dict[str, Any]],
    data_text: str,
    hosts: list[dict[str, str]],
    out: Path,
    t_start: float,
    runtime: str,
    threads: int,
    calib: tuple[str, int] | None = None,
) -> TuneResult:
    from vitrt.fileio import atomic_write_bytes

    points = [
        (r["latency_ms"], r["accuracy"])
        if r.get("status") == "ok" and r.get("accuracy") is not None
        else None
        for r in records
    ]
    front = pareto_front(points)
    chosen = choose(points, budget)
    for i, r in enumerate(records):
        cfg = r["config"]
        r["name"], r["role"] = cfg["name"], cfg["role"]
        r["tokens_text"] = "/".join(str(n) for n in r.get("tokens", [])) or None
        r["on_front"] = i in front
        r["front_mark"] = ("chosen" if i == chosen else "yes") if i in front else ""
    command = None
    if chosen is not None:
        r = records[chosen]
        command = compile_command(source, TrialConfig.from_dict(r["config"]), target, runtime, calib)
        message = (
            f"chosen: {r['name']} at {r['latency_ms']:.3f} ms (budget {budget:g} ms), accuracy "
            f"{r['accuracy']:.1f} %"
        )
    else:
        fastest = min((p[0] for p in points if p is not None), default=None)
        message = (
            f"none under budget: no trial runs in {budget:g} ms"
            + (f" (the fastest takes {fastest:.3f} ms)" if fastest is not None else " (no trial succeeded)")
            + "; raise --latency-budget or try more --trials"
        )
    int8_ok = any(r["role"] == "baseline-int8" and r.get("status") == "ok" for r in records)
    reference = "INT8" if int8_ok else "FP32"  # as _time_trials: INT8, or FP32 without it
    rows = [records[i] for i in front] + [r for i, r in enumerate(records) if i not in front]
    columns = tuple((f"vs {reference}", key) if key == "ratio" else (h, key) for h, key in TABLE_COLUMNS)
    table = markdown_table(rows, columns)
    failed = [r for r in records if r.get("status") != "ok"]
    fail_text = "".join(f"- {r['name']}: {r.get('stage')}: {r.get('error')}\n" for r in failed)
    labels = {
        i: {"baseline-fp32": "unfused FP32", "baseline-int8": "unfused INT8"}[r["role"]]
        for i, r in enumerate(records)
        if r["role"] in ("baseline-fp32", "baseline-int8")
    }
    title = f"vitrt tune {source.name} on {target} ({runtime}, {threads} thread(s), batch 1)"
    png = plot_front(
        out / "pareto.png", points, front=front, budget_ms=budget, chosen=chosen, labels=labels, title=title
    )
    md = (
        f"# {title}\n\nBudget {budget:g} ms. {message}.\n\nAccuracy: {data_text}. "
        "Latency: median at batch 1, "
        f"timed interleaved with the unfused {reference} baseline and scaled by its typical median "
        f"(`vs {reference}`).\n\n"
        f"{table}\n"
        + (f"Failed trials:\n\n{fail_text}\n" if failed else "")
        + (f"```\n{command}\n```\n" if command else "")
    )
    atomic_write_bytes(out / "pareto.md", md.encode())
    report = {
        "model": source.spec,
        "name": source.name,
        "checkpoint": source.checkpoint,
        "img_size": source.img_size,
        "num_classes": source.num_classes,
        "target": target,
        "runtime": runtime,
        "threads": threads,
        "latency_budget_ms": budget,
        "eval_data": data_text,
        "profilers": hosts,
        "seconds": time.perf_counter() - t_start,
        "trials": [{k: v for k, v in r.items() if k not in ("tokens_text", "front_mark")} for r in records],
        "front": front,
        "chosen": chosen,
        "command": command,
        "message": message,
    }
    atomic_write_bytes(
        out / "tune.json", (json.dumps(report, indent=1, default=_json_default) + "\n").encode()
    )
    files = {"json": out / "tune.json", "markdown": out / "pareto.md", "png": png}
    return TuneResult(records, front, chosen, command, message, files, report)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
