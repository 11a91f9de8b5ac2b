"""``vitrt profile`` as functions: ``profile_artifact`` (one artifact, ONNX file, engine or model name) and
``profile`` (several, with the report files: JSON, Markdown, per-query times, PNG plots).

>>> report = vitrt.profile(["fp32.cpu/", "int8.cpu/"], duration_s=3, compare=True, plots="plots/")
>>> print(report.to_markdown())
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .profiler import (
    DEFAULT_DURATION_S,
    DEFAULT_E2E_S,
    DEFAULT_MIN_ITERATIONS,
    DEFAULT_WARMUP_S,
    TRTEXEC_DEFAULTS,
    check_number,
    profile_runner,
    trtexec_line,
)
from .report import ProfileReport, comparison, machine_facts, write_json, write_markdown
from .results import ProfileResult
from .sources import (
    ModelSource,
    SourceError,
    check_batch,
    check_model_options,
    check_runtime_options,
    open_runner,
    resolve_source,
)

PathLike = str | os.PathLike[str]


def profile_artifact(
    source: PathLike | ModelSource,
    *,
    batch: int = 1,
    warmup_s: float = DEFAULT_WARMUP_S,
    duration_s: float = DEFAULT_DURATION_S,
    iterations: int = DEFAULT_MIN_ITERATIONS,
    include_data_transfers: bool | None = None,
    cuda_graph: bool | None = None,
    spin_wait: bool | None = None,
    trtexec_defaults: str = "11",
    e2e_s: float = DEFAULT_E2E_S,
    telemetry: bool = True,
    layers: bool = True,
    progress: bool = True,
    runtime: str | None = None,
    threads: int | None = None,
    inference_precision: str | None = None,
    check: bool = True,
    device: str | None = None,
    half: bool = False,
    checkpoint: str | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    fusion: Any = None,
    attention: Any = None,
) -> ProfileResult:
    """Open ``source`` (``vitrt.deploy.open_runner``: an artifact folder, a .onnx, a .plan, a model name, or
    their ``ModelSource``) and profile it (``vitrt.deploy.profiler.profile_runner``: trtexec's definitions,
    times in ms).

    batch: images per query; BatchError when the artifact / file / engine cannot take it (fixed batch
    axis, optimisation profile). cuda_graph / spin_wait: a TensorRT engine's and a model name's on CUDA
    (None: the ``trtexec_defaults`` line's default); others as ``profile_runner`` and ``open_runner``.
    telemetry: record device state where ``vitrt.deploy.telemetry`` exists (else noted "not recorded").
    """
    trtexec_defaults = check_profile_options(
        trtexec_defaults, warmup_s=warmup_s, duration_s=duration_s, iterations=iterations, e2e_s=e2e_s
    )
    src = source if isinstance(source, ModelSource) else resolve_source(source)
    defaults = TRTEXEC_DEFAULTS[trtexec_defaults]
    # A TensorRT engine captures its CUDA graph and waits by polling as opened; a model name on CUDA takes a
    # graph (the profiler polls its events itself). A host runner takes neither: profile_runner records
    # them as "n/a (host runner)" and notes an explicit one, so only open_runner's refusal is avoided here.
    tensorrt = src.kind == "plan" or src.runtime == "tensorrt"
    graph = cuda_graph if cuda_graph is not None else defaults["cuda_graph"]
    if not (tensorrt or (src.kind == "model" and (device or "cpu").startswith("cuda"))):
        graph = False
    spin = (spin_wait if spin_wait is not None else defaults["spin_wait"]) and tensorrt
    runner = open_runner(
        src,
        runtime=runtime,
        threads=threads,
        inference_precision=inference_precision,
        check=check,
        device=device,
        half=half,
        cuda_graph=bool(graph),
        spin_wait=bool(spin),
        checkpoint=checkpoint,
        img_size=img_size,
        num_classes=num_classes,
        fusion=fusion,
        attention=attention,
    )
    src = runner.source
    check_batch(src, batch, specs=runner.input_specs)
    return profile_runner(
        runner,
        batch=batch,
        warmup_s=warmup_s,
        duration_s=duration_s,
        iterations=iterations,
        include_data_transfers=include_data_transfers,
        cuda_graph=cuda_graph,
        spin_wait=spin_wait,
        trtexec_defaults=trtexec_defaults,
        e2e_s=e2e_s,
        preprocess=src.preprocess(),
        telemetry=telemetry,
        layers=layers,
        progress=progress,
        source=src.spec,
    )


def check_profile_options(trtexec_defaults: Any, **numbers: Any) -> str:
    """The ``trtexec_defaults`` line ("11" or "10"; an int accepted) after checking it and the numeric
    options (``warmup_s`` / ``duration_s`` / ``e2e_s`` >= 0, ``iterations`` >= 1): VitrtError before
    anything is opened."""
    line = trtexec_line(trtexec_defaults)
    for key, value in numbers.items():
        if key == "iterations":
            check_number(key, value, minimum=1, integer=True)
        else:
            check_number(key, value)
    return line


def unique_names(results: list[ProfileResult], sources: Sequence[ModelSource]) -> list[ProfileResult]:
    """``results`` with runner names unique within the report (the comparison, the tables and the plot
    files are keyed by them): a name several share gets its source's parent folder where that tells
    them apart (``A/model.onnx (onnxruntime)``), else " #2", " #3"... after the first."""
    from collections import Counter
    from dataclasses import replace

    names = [r.runner for r in results]
    counts = Counter(names)
    for name in [n for n, c in counts.items() if c > 1]:
        where = [i for i, n in enumerate(names) if n == name]
        paths = [sources[i].path for i in where]
        if all(p is not None and p.name in name for p in paths):
            qualified = [
                name.replace(p.name, f"{p.absolute().parent.name}/{p.name}", 1)  # type: ignore[union-attr]
                for p in paths
            ]
            if len(set(qualified)) == len(qualified):
                for i, q in zip(where, qualified, strict=True):
                    names[i] = q
                continue
        for k, i in enumerate(where[1:], 2):
            names[i] = f"{name} #{k}"
    return [r if r.runner == n else replace(r, runner=n) for r, n in zip(results, names, strict=True)]


def runtime_options(sources: Sequence[ModelSource], **given: Any) -> list[dict[str, Any]]:
    """The runtime options (``runtime``, ``threads``, ``inference_precision``) each of ``sources`` takes:
    each goes to the sources it applies to (--runtime openvino to the .onnx files among artifacts built for
    a runtime, --inference-precision to the OpenVINO ones); one that applies to none raises the SourceError
    of ``check_runtime_options`` (it would be ignored)."""
    per_source: list[dict[str, Any]] = []
    for src in sources:
        taken: dict[str, Any] = {}
        for key in ("runtime", "threads", "inference_precision"):  # the runtime first: it decides the others
            if given.get(key) is None:
                continue
            try:
                check_runtime_options(src, **taken, **{key: given[key]})
            except SourceError:
                continue
            taken[key] = given[key]
        per_source.append(taken)
    for key in ("runtime", "threads", "inference_precision"):
        if given.get(key) is not None and not any(key in taken for taken in per_source):
            check_runtime_options(sources[0], **per_source[0], **{key: given[key]})  # raises: applies to none
    return per_source


def times_paths(path: PathLike, count: int) -> list[Path]:
    """Where ``--export-times PATH`` writes for ``count`` artifacts: PATH itself for one, else
    ``<stem>.<i><suffix>`` per artifact (i from 0, in the order given)."""
    p = Path(path)
    if count == 1:
        return [p]
    return [p.with_name(f"{p.stem}.{i}{p.suffix or '.json'}") for i in range(count)]


def profile(
    artifacts: PathLike | Sequence[PathLike],
    *,
    batch: int = 1,
    warmup_s: float = DEFAULT_WARMUP_S,
    duration_s: float = DEFAULT_DURATION_S,
    iterations: int = DEFAULT_MIN_ITERATIONS,
    include_data_transfers: bool | None = None,
    cuda_graph: bool | None = None,
    spin_wait: bool | None = None,
    trtexec_defaults: str = "11",
    e2e_s: float = DEFAULT_E2E_S,
    telemetry: bool = True,
    quiet: bool = False,
    json: PathLike | None = None,
    report: PathLike | None = None,
    export_times: PathLike | None = None,
    export_profile: PathLike | None = None,
    layers: bool = True,
    plots: PathLike | None = None,
    compare: bool = False,
    runtime: str | None = None,
    threads: int | None = None,
    inference_precision: str | None = None,
    check: bool = True,
    device: str | None = None,
    half: bool = False,
    checkpoint: str | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    fusion: Any = None,
    attention: Any = None,
) -> ProfileReport:
    """Profile each of ``artifacts`` in turn (``profile_artifact``, which takes the other options) and
    write what is asked for: ``json`` (the report, schema in ``vitrt.deploy.report``), ``report``
    (Markdown), ``export_times`` (per-query records in trtexec's ``--exportTimes`` layout; one file per
    artifact, ``times_paths``), ``export_profile`` (per-layer records in trtexec's ``--exportProfile``
    layout, same naming; implies ``layers``: the per-layer run after each timed one), ``plots`` (a folder
    of PNGs, ``vitrt.deploy.plots.plot_report``); ``layers``: take the per-layer run (per-block times);
    ``compare``: ratios to the first artifact in the report and a comparison chart. quiet: no progress bar.
    device / half / checkpoint / img_size / num_classes / fusion / attention go to the model names among
    ``artifacts`` (to compare a file with a model); with no model name among them, SourceError
    (``check_model_options``). Returns the ProfileReport.
    """
    from vitrt.fileio import check_writable

    specs = [artifacts] if isinstance(artifacts, (str, os.PathLike)) else list(artifacts)
    if not specs:
        raise SourceError(
            "no sources given: profile takes one or more artifact folders, ONNX files, engines or model names"
        )
    trtexec_defaults = check_profile_options(
        trtexec_defaults, warmup_s=warmup_s, duration_s=duration_s, iterations=iterations, e2e_s=e2e_s
    )
    for target in (json, report):
        if target is not None:
            check_writable(target)
    # Every source resolved before the first is timed, so a typo in the last fails at once. The model-name
    # options go to the model names; with none among the sources they would be ignored: SourceError.
    sources = [resolve_source(spec) for spec in specs]
    model_options: dict[str, Any] = {
        "device": device,
        "half": half,
        "checkpoint": checkpoint,
        "img_size": img_size,
        "num_classes": num_classes,
        "fusion": fusion,
        "attention": attention,
    }
    if not any(src.kind == "model" for src in sources):
        for src in sources:
            check_model_options(src, **model_options)
    options = runtime_options(
        sources, runtime=runtime, threads=threads, inference_precision=inference_precision
    )
    for per_source in (export_times, export_profile):
        if per_source is not None:
            for path in times_paths(per_source, len(sources)):
                check_writable(path)
    results = [
        profile_artifact(
            src,
            batch=batch,
            warmup_s=warmup_s,
            duration_s=duration_s,
            iterations=iterations,
            include_data_transfers=include_data_transfers,
            cuda_graph=cuda_graph,
            spin_wait=spin_wait,
            trtexec_defaults=trtexec_defaults,
            e2e_s=e2e_s,
            telemetry=telemetry,
            layers=layers or export_profile is not None,
            progress=not quiet,
            check=check,
            **taken,
            **(model_options if src.kind == "model" else {}),
        )
        for src, taken in zip(sources, options, strict=True)
    ]
    results = unique_names(results, sources)
    out = ProfileReport(
        artifacts=results,
        machine=machine_facts(),
        compare=comparison(results) if compare else None,
        notes=["times in ms per query (one query = one batch); trtexec's nearest-rank percentiles"],
    )
    if json is not None:
        write_json(json, out)
    if report is not None:
        write_markdown(report, out)
    if export_times is not None:
        from .trtexec_format import write_times

        for path, result in zip(times_paths(export_times, len(results)), results, strict=True):
            write_times(path, result.times)
    if export_profile is not None:
        from .trtexec_format import write_profile

        for path, result in zip(times_paths(export_profile, len(results)), results, strict=True):
            if result.layer_profile is not None:
                write_profile(path, result.layer_profile.timings, result.layer_profile.iterations)
    if plots is not None:
        from .plots import plot_report

        plot_report(results, plots, compare=compare)
    return out
