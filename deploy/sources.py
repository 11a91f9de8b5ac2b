"""What a user points vitrt's runtime at, and the runner for it: ``open_runner(path_or_name, **options)``.

Accepted (``resolve_source``), in this order:

- an artifact folder written by ``vitrt build`` (holds ``manifest.json``), or its model file: the manifest
  is checked against this machine (``load_artifact``) and says the runtime, threads, inference precision,
  the inputs' shapes and the ExportConfig (preprocessing);
- a bare ``.onnx`` file: ONNX Runtime by default, ``runtime="openvino"`` for OpenVINO; its ExportConfig
  (when vitrt exported it) is read from the file's metadata;
- a bare ``.plan`` / ``.engine`` file: a TensorRT engine (no manifest: nothing is checked first);
- a model name (``vitrt list-models``): the PyTorch model, random init or ``checkpoint=``, on
  ``device="cpu"`` or ``"cuda"``.

Anything else raises ``SourceError`` naming what is accepted. ``ModelSource`` carries what ``vitrt run``
and ``vitrt profile`` need besides the runner: the preprocessing, the class labels, the batch sizes the
model takes (``check_batch`` raises ``BatchError``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitrt.compiler.build_plan import fixed_batch
from vitrt.errors import VitrtError

if TYPE_CHECKING:
    from torch import nn

ONNX_SUFFIXES = (".onnx",)
PLAN_SUFFIXES = (".plan", ".engine", ".trt")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar", ".safetensors", ".bin")
RUNTIMES = ("onnxruntime", "openvino", "tensorrt", "torch")
DIGIT_LABELS = tuple(str(d) for d in range(10))
ACCEPTED = (
    "an artifact folder from `vitrt build` (with manifest.json), an ONNX file (.onnx), a TensorRT engine "
    "(.plan), or a model name (`vitrt list-models`)"
)


class SourceError(VitrtError):
    """A path or name that is not an artifact, an ONNX file, an engine or a model vitrt knows."""


class BatchError(VitrtError):
    """A batch size the artifact, file or engine does not take (fixed batch axis, profile bounds)."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``open_runner`` argument.

    kind: "artifact", "onnx", "plan", "model" or "module" (a built torch.nn.Module); spec: what the user
    gave; path: the folder or file (None for a model name); manifest: the artifact's ``Manifest``;
    export_config: the ExportConfig as a dict (None where unknown: a foreign ONNX file, an engine);
    inputs: [{"name", "shape", "dtype"}] as recorded (empty where only the opened runner knows them);
    batch_range: (min, max) batch from the build's optimisation profile (TensorRT), else None.
    """

    kind: str
    spec: str
    path: Path | None = None
    manifest: Any = None
    export_config: dict[str, Any] | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    batch_range: tuple[int, int] | None = None

    @property
    def runtime(self) -> str | None:
        """The artifact's runtime ("onnxruntime", "openvino", "tensorrt"); None for other kinds."""
        return str(self.manifest.runtime["name"]) if self.manifest is not None else None

    def preprocess(self) -> Any:
        """The model's ``PreprocessConfig`` (resize, crop_pct, mean / std) from its ExportConfig, or None
        when the file does not record one (a foreign ONNX file, a bare engine)."""
        from vitrt.models.config import PreprocessConfig

        cfg = self.export_config
        if cfg is None:
            return None
        extra = cfg.get("extra") or {}
        pre = dict(extra.get("preprocess", {})) if isinstance(extra, dict) else {}
        defaults = PreprocessConfig()
        return PreprocessConfig(
            input_size=tuple(int(v) for v in cfg["input_size"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            crop_pct=float(pre.get("crop_pct", defaults.crop_pct)),
            interpolation=str(pre.get("interpolation", defaults.interpolation)),
        )

    def labels(self) -> tuple[tuple[str, ...] | None, str]:
        """(class names or None, a note saying where they came from or why there are none).

        ``extra["labels"]`` of the ExportConfig first; vitrt's digits models (name ``digits_*``, 10
        classes) are the digits 0-9; no ImageNet label list ships offline, so ImageNet models get None.
        """
        cfg = self.export_config or {}
        extra = cfg.get("extra") or {}
        if isinstance(extra, dict) and isinstance(extra.get("labels"), list):
            return tuple(str(v) for v in extra["labels"]), "labels from the export config"
        if str(cfg.get("model", "")).startswith("digits") and cfg.get("num_classes") == 10:
            return DIGIT_LABELS, "digits 0-9"
        classes = cfg.get("num_classes")
        what = f"{classes} classes" if classes else "classes"
        return None, f"no label list ships offline for this model ({what}): class indices shown"

    def fixed_batch(self) -> int | None:
        """The first input's batch axis when it is a fixed number, else None (dynamic)."""
        return fixed_batch(self.inputs[0].get("shape")) if self.inputs else None


def runner_fixed_batch(source: ModelSource, specs: list[Any] | None = None) -> int | None:
    """The fixed batch of ``source``'s first input, else of the opened runner's first input spec (an engine:
    only the runner knows its input), else None (a dynamic batch axis)."""
    fixed = source.fixed_batch()
    return fixed if fixed is not None or not specs else fixed_batch(specs[0].shape)


def check_batch(source: ModelSource, batch: int, *, specs: list[Any] | None = None) -> None:
    """BatchError when ``source`` (or the opened runner's ``specs``) cannot take ``batch`` images per query:
    a fixed batch axis of another size, or a size outside the optimisation profile it was built with."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BatchError(f"batch must be a positive integer, got {batch!r}")
    fixed = runner_fixed_batch(source, specs)
    if fixed is not None and batch != fixed:
        raise BatchError(
            f"{source.spec} takes batches of exactly {fixed} (its input has a fixed batch axis), not "
            f"{batch}. Fix: --batch {fixed}, or export with --dynamic-batch and rebuild"
        )
    profile = getattr(specs[0], "profile", None) if specs else None
    batch_range = source.batch_range or ((profile[0][0], profile[2][0]) if profile else None)
    if batch_range is not None:
        lo, hi = batch_range
        if not lo <= batch <= hi:
            raise BatchError(
                f"{source.spec} was built for batches {lo} to {hi} (its optimisation profile), not {batch}. "
                f"Fix: --batch within {lo}..{hi}, or rebuild with --max-batch {batch}"
            )


def _onnx_facts(path: Path, spec: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(ExportConfig as a dict or None, inputs) of an ONNX file; SourceError when it is not ONNX."""
    from dataclasses import asdict

    import onnx

    from vitrt.compiler.export import read_export_config
    from vitrt.compiler.model_facts import read_model_facts

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError / ValueError / OSError for a file that is not ONNX
        raise SourceError(
            f"{spec} is not a readable ONNX file ({type(err).__name__}). Give {ACCEPTED}"
        ) from err
    if not proto.graph.node:
        raise SourceError(f"{spec} holds no ONNX graph (an empty or foreign file). Give {ACCEPTED}")
    config = read_export_config(proto)
    facts = read_model_facts(proto)
    return (asdict(config) if config is not None else None), [t.to_dict() for t in facts.inputs]


def resolve_source(spec: str | os.PathLike[str]) -> ModelSource:
    """What ``spec`` is (module docstring); SourceError for anything vitrt cannot run."""
    from vitrt.compiler.manifest import MANIFEST_NAME, read_manifest

    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir() or (path.is_file() and (path.parent / MANIFEST_NAME).is_file()):
        folder = path if path.is_dir() else path.parent
        if not (folder / MANIFEST_NAME).is_file():
            if (folder / "bundle.json").is_file():
                raise SourceError(f"{text} is a bundle: build it first with `vitrt build --bundle {text}`")
            raise SourceError(f"{text} is a folder without {MANIFEST_NAME}, not an artifact. Give {ACCEPTED}")
        manifest = read_manifest(folder)
        if manifest.kind == "bundle":
            raise SourceError(f"{text} is a bundle: build it first with `vitrt build --bundle {text}`")
        inputs = [dict(t) for t in manifest.io if t.get("mode") == "input"]
        options = manifest.build_options or {}
        batch_range = None
        if options.get("max_batch") is not None:
            batch_range = (int(options.get("min_batch") or 1), int(options["max_batch"]))
        return ModelSource(
            "artifact",
            text,
            folder,
            manifest,
            manifest.model.get("export_config"),
            inputs,
            batch_range,
        )
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in ONNX_SUFFIXES:
            config, inputs = _onnx_facts(path, text)
            return ModelSource("onnx", text, path, None, config, inputs)
        if suffix in PLAN_SUFFIXES:
            return ModelSource("plan", text, path)
        if suffix in CHECKPOINT_SUFFIXES or path.name.endswith(".pth.tar"):
            raise SourceError(
                f"{text} is a checkpoint, which does not say its model: give the model name and the "
                f"checkpoint (`MODEL --checkpoint {text}`, or open_runner(MODEL, checkpoint=...))"
            )
        raise SourceError(f"{text} is not something vitrt runs. Give {ACCEPTED}")
    from vitrt.models import list_models

    if text in list_models():
        return ModelSource("model", text)
    raise SourceError(f"{text!r}: no such file or folder, and not a model name. Give {ACCEPTED}")


def natural_device(src: ModelSource) -> str:
    """Where a source that is not a model name runs: "cuda" for a TensorRT engine or artifact, else "cpu"
    (ONNX Runtime and OpenVINO run on the host)."""
    return "cuda" if source_runtime(src) == "tensorrt" else "cpu"


def check_model_options(
    src: ModelSource,
    *,
    device: str | None = None,
    half: bool = False,
    checkpoint: str | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    fusion: Any = None,
    attention: Any = None,
) -> None:
    """Raise SourceError when ``src`` is not a model name but options only a model name takes are given.

    A file or artifact fixes its weights, token fusion, attention, input size, classes, device and
    precision, so these options would be ignored, and a user who asked for ``--device cuda`` or
    ``--fusion mctf`` would read timings of something else. device is accepted where it names what the
    source runs on anyway ("cpu" for ONNX Runtime / OpenVINO, "cuda" or "cuda:0" for TensorRT).
    """
    if src.kind == "model":
        return
    given = [
        f"--{key.replace('_', '-')}"
        for key, value in (
            ("checkpoint", checkpoint),
            ("fusion", fusion),
            ("attention", attention),
            ("img_size", img_size),
            ("num_classes", num_classes),
        )
        if value is not None
    ]
    if half:
        given.append("--half")
    natural = natural_device(src)
    if device is not None and device not in (natural, f"{natural}:0"):
        given.append(f"--device {device}")
    if not given:
        return
    where = "on the GPU it was built for" if natural == "cuda" else "on the CPU"
    flags = ", ".join(given)
    raise SourceError(
        f"{src.spec} runs {where} with the weights, fusion and precision it was made with: {flags} only "
        f"apply to a model name (run in PyTorch) and would be ignored. Leave them out, give a model name, "
        f"or make the file with them (`vitrt compile MODEL --checkpoint W --fusion mctf --target T`)"
    )


def source_runtime(src: ModelSource, runtime: str | None = None) -> str:
    """The runtime ``src`` runs on when ``runtime`` is asked: an artifact's manifest's, "tensorrt" for an
    engine, "torch" for a model name; an ONNX file's is ``runtime`` (default "onnxruntime")."""
    if src.kind == "artifact":
        return str(src.runtime)
    if src.kind == "onnx":
        return runtime or "onnxruntime"
    return "tensorrt" if src.kind == "plan" else "torch"


def check_runtime_options(
    src: ModelSource,
    *,
    runtime: str | None = None,
    inference_precision: str | None = None,
    threads: int | None = None,
) -> None:
    """Raise SourceError when ``runtime``, ``inference_precision`` or ``threads`` cannot apply to ``src`` and
    would be ignored: a runtime other than the one an artifact was built for (its manifest's), an engine's
    (TensorRT) or a model name's (PyTorch); an inference precision (OpenVINO's) for a source that does not
    run on OpenVINO; threads (ONNX Runtime's / OpenVINO's) for an engine or a model name. A bare ONNX file
    takes runtime "onnxruntime" or "openvino"."""
    if runtime is not None and runtime not in RUNTIMES:
        raise SourceError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    natural = source_runtime(src)
    if runtime is not None and src.kind == "onnx" and runtime not in ("onnxruntime", "openvino"):
        raise SourceError(
            f"{src.spec} is an ONNX file: it runs on onnxruntime or openvino, not {runtime}. Fix: "
            f"--runtime onnxruntime or openvino, or build it for {runtime} first (`vitrt build`)"
        )
    if runtime is not None and src.kind != "onnx" and runtime != natural:
        what = {"artifact": f"an artifact built for {natural}", "plan": "a TensorRT engine"}.get(
            src.kind, "a torch module" if src.kind == "module" else "a model name (run in PyTorch)"
        )
        fix = (
            f"build one for {runtime} (`vitrt build MODEL.onnx --target cpu --runtime {runtime}`), or give "
            "the .onnx file with --runtime"
            if src.kind == "artifact"
            else "give an .onnx file with --runtime"
        )
        raise SourceError(
            f"{src.spec} is {what}: --runtime {runtime} would be ignored. Fix: leave out --runtime, or {fix}"
        )
    if threads is not None and natural in ("tensorrt", "torch"):
        raise SourceError(
            f"{src.spec} runs on {natural}: --threads sets ONNX Runtime's and OpenVINO's intra-op threads "
            "and would be ignored. Fix: leave it out (or give an .onnx file or a cpu artifact)"
        )
    if inference_precision is not None and source_runtime(src, runtime) != "openvino":
        fix = (
            "run it on OpenVINO: --runtime openvino"
            if src.kind == "onnx"
            else "build it for OpenVINO (`vitrt build MODEL.onnx --target cpu --runtime openvino "
            f"--inference-precision {inference_precision}`)"
            if src.kind == "artifact"
            else "give an .onnx file with --runtime openvino, or an OpenVINO artifact"
        )
        raise SourceError(
            f"{src.spec} runs on {source_runtime(src, runtime)}: --inference-precision {inference_precision} "
            f"is OpenVINO's compute precision and would be ignored. Fix: leave it out, or {fix}"
        )


def _is_module(obj: Any) -> bool:
    """True for a ``torch.nn.Module`` (torch is not imported for the check: a module means it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def check_graph_options(src: ModelSource, *, cuda_graph: bool = False, spin_wait: bool = False) -> None:
    """SourceError for ``cuda_graph`` / ``spin_wait`` where the runner would ignore them: both are a TensorRT
    engine's (artifact or .plan); a model name (or module) in PyTorch takes ``cuda_graph`` (on CUDA) but
    not ``spin_wait`` (``profile_runner(spin_wait=True)`` polls its CUDA events instead)."""
    tensorrt = source_runtime(src) == "tensorrt"
    torch = src.kind in ("model", "module")
    given = [k for k, v in (("cuda_graph", cuda_graph), ("spin_wait", spin_wait)) if v]
    if torch:
        given = [k for k in given if k == "spin_wait"]
    if tensorrt or not given:
        return
    if torch:
        raise SourceError(
            f"{src.spec} runs in PyTorch: spin_wait is a TensorRT runner's and would be ignored. Fix: leave "
            "it out (profile_runner(runner, spin_wait=True) polls a PyTorch runner's CUDA events)"
        )
    flags = " and ".join(given)
    raise SourceError(
        f"{src.spec} runs on the CPU ({source_runtime(src)}): {flags} would be ignored (a TensorRT engine "
        "takes both, a model name on CUDA takes cuda_graph). Fix: leave "
        + ("them" if len(given) > 1 else "it")
        + " out, or give the engine"
    )


def _torch_source(kind: str, spec: str, runner: Any, config: dict[str, Any]) -> ModelSource:
    """The ModelSource of a PyTorch runner: its preprocessing (``model.preprocess``) added to ``config``."""
    pre = getattr(runner.model, "preprocess", None)
    if pre is not None:
        config |= {"input_size": list(pre.input_size), "mean": list(pre.mean), "std": list(pre.std)}
        config["extra"] = {"preprocess": {"crop_pct": pre.crop_pct, "interpolation": pre.interpolation}}
    inputs = [{"name": "images", "shape": ["batch", *runner.input_size], "dtype": "float32"}]
    return ModelSource(kind, spec, export_config=config if pre is not None else None, inputs=inputs)


def _module_runner(module: Any, *, name: str | None, **options: Any) -> Any:
    """``open_runner`` of a built ``torch.nn.Module``: a ``TorchModelRunner`` (device / half / cuda_graph /
    name), SourceError for the options the module already fixes or that do not apply to PyTorch."""
    fixed = ("checkpoint", "fusion", "attention", "img_size", "num_classes")
    given = [f"{k}={options[k]!r}" for k in fixed if options[k] is not None]
    spec = f"the {type(module).__name__} module"
    if given:
        raise SourceError(
            f"{spec} is already built with its weights, fusion, attention, input size and classes: "
            f"{', '.join(given)} would be ignored. Fix: leave them out, or give a model name"
        )
    src = ModelSource("module", spec)
    check_runtime_options(
        src,
        runtime=options["runtime"],
        inference_precision=options["inference_precision"],
        threads=options["threads"],
    )
    check_graph_options(src, cuda_graph=options["cuda_graph"], spin_wait=options["spin_wait"])
    from .torch_runner import TorchModelRunner

    runner = TorchModelRunner(
        module, device=options["device"] or "cpu", half=options["half"], cuda_graph=options["cuda_graph"],
        name=name,
    )  # fmt: skip
    config = {"model": type(module).__name__, "num_classes": getattr(module, "num_classes", None)}
    runner.source = _torch_source("module", spec, runner, config)  # type: ignore[attr-defined]
    return runner


def open_runner(
    source: str | os.PathLike[str] | ModelSource | nn.Module,
    *,
    runtime: str | None = None,
    threads: int | None = None,
    inference_precision: str | None = None,
    check: bool = True,
    device: str | None = None,
    half: bool = False,
    cuda_graph: bool = False,
    spin_wait: bool = False,
    checkpoint: str | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    fusion: Any = None,
    attention: Any = None,
    name: str | None = None,
) -> Any:
    """The runner (``vitrt.deploy.runners.Runner``) for an artifact folder, an ONNX file, a TensorRT
    engine, a model name (module docstring) or a built ``torch.nn.Module`` (a ``TorchModelRunner`` on
    ``device``, ``half``, ``cuda_graph``; its input size from ``module.preprocess``).

    runtime: for a bare ONNX file, "onnxruntime" (default) or "openvino"; for another source only the one it
    runs on (an artifact's manifest's), else SourceError (``check_runtime_options``). threads: intra-op
    threads of ONNX Runtime / OpenVINO (default: an artifact's recorded threads, else the runtime's default,
    every core). inference_precision: OpenVINO's "f32" (default) or "bf16"; SourceError for a source that
    does not run on OpenVINO. check: compare an artifact's manifest with this machine first.
    cuda_graph / spin_wait: a TensorRT engine's (captured on its first enqueue; wait by polling) and a
    model name's CUDA graph; SourceError where they would be ignored (``check_graph_options``). device /
    half / checkpoint / img_size (pixels) / num_classes / fusion / attention: a model name's PyTorch
    runner (``TorchModelRunner.from_name``; None: "cpu", 224, 1000); given for another source they raise
    SourceError (``check_model_options``). name: the runner's name in reports (default: the file or folder
    name, and the runtime).
    """
    if _is_module(source):
        return _module_runner(
            source,
            name=name,
            runtime=runtime,
            threads=threads,
            inference_precision=inference_precision,
            device=device,
            half=half,
            cuda_graph=cuda_graph,
            spin_wait=spin_wait,
            checkpoint=checkpoint,
            img_size=img_size,
            num_classes=num_classes,
            fusion=fusion,
            attention=attention,
        )
    if not isinstance(source, (str, os.PathLike, ModelSource)):
        raise SourceError(f"cannot open a {type(source).__name__}: give {ACCEPTED}, or a torch.nn.Module")
    src = source if isinstance(source, ModelSource) else resolve_source(source)
    check_model_options(
        src,
        device=device,
        half=half,
        checkpoint=checkpoint,
        img_size=img_size,
        num_classes=num_classes,
        fusion=fusion,
        attention=attention,
    )
    check_runtime_options(src, runtime=runtime, inference_precision=inference_precision, threads=threads)
    check_graph_options(src, cuda_graph=cuda_graph, spin_wait=spin_wait)
    label = name or (src.path.name if src.path is not None else src.spec)
    runner: Any
    if src.kind == "artifact":
        from .artifact import load_artifact

        runner = load_artifact(src.path, check=check, threads=threads)  # type: ignore[arg-type]
        if inference_precision is not None and src.runtime == "openvino":
            from .openvino_runner import OpenVinoRunner

            runner = OpenVinoRunner(runner.path, threads=threads, inference_precision=inference_precision)
        runner.name = name or f"{label} ({src.runtime})"
        if src.runtime == "tensorrt":  # load_artifact builds it plain; the graph is captured lazily
            runner.cuda_graph, runner.spin_wait = cuda_graph, spin_wait
    elif src.kind == "onnx":
        if runtime == "openvino":
            from .openvino_runner import OpenVinoRunner

            runner = OpenVinoRunner(
                src.path,  # type: ignore[arg-type]
                threads=threads,
                inference_precision=inference_precision or "f32",
                name=name or f"{label} (openvino)",
            )
        else:
            from .runners import OnnxRuntimeRunner

            runner = OnnxRuntimeRunner(src.path, threads=threads, name=name or f"{label} (onnxruntime)")  # type: ignore[arg-type]
    elif src.kind == "plan":
        from .tensorrt_runner import TensorRTRunner

        runner = TensorRTRunner(
            src.path,  # type: ignore[arg-type]
            cuda_graph=cuda_graph,
            spin_wait=spin_wait,
            name=name or f"{label} (tensorrt)",
        )
    else:
        from .torch_runner import TorchModelRunner

        runner = TorchModelRunner.from_name(
            src.spec,
            checkpoint=checkpoint,
            fusion=fusion,
            attention=attention,
            img_size=224 if img_size is None else img_size,
            num_classes=1000 if num_classes is None else num_classes,
            device=device or "cpu",
            half=half,
            cuda_graph=cuda_graph,
            name=name,
        )
        config: dict[str, Any] = {
            "model": src.spec,
            "num_classes": 1000 if num_classes is None else num_classes,
            "fusion": fusion,
            "attention": attention,
            "checkpoint": checkpoint,  # None: random weights
        }
        src = _torch_source("model", src.spec, runner, config)
    runner.source = src
    return runner


def source_of(runner: Any, spec: str | os.PathLike[str] | None = None) -> ModelSource:
    """The ``ModelSource`` an ``open_runner`` runner came from (``runner.source``), or ``spec`` resolved."""
    src = getattr(runner, "source", None)
    if isinstance(src, ModelSource):
        return src
    if spec is None:
        raise VitrtError("this runner was not opened by open_runner: give the path it came from")
    return resolve_source(spec)
