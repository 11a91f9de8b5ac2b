"""PyTorch -> ONNX. Every export choice lives in one ExportConfig, saved inside the ONNX file.

Two lowerings of vitrt's plugin ops:
- ``plugin``: one custom node per op (op_type = plugin name, domain ``vitrt``), the form TensorRT's
  ONNX parser turns into vitrt's plugins;
- ``portable``: the op's PyTorch reference traced into standard ONNX ops (ONNX Runtime on CPU, and a
  TensorRT baseline without plugins).
A model without plugin ops exports to the same graph in both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitrt.errors import ConfigError, VitrtError
from vitrt.fileio import TWO_GB, atomic_output, check_writable, save_onnx

log = logging.getLogger(__name__)

LOWERINGS = ("plugin", "portable")
MIN_OPSET = 18  # torch's dynamo exporter emits opset >= 18 (LayerNormalization needs >= 17)
METADATA_KEY = "vitrt.export_config"


@dataclass(frozen=True)
class ExportConfig:
    """What an exported ONNX file is: saved as JSON in its metadata under ``vitrt.export_config``.

    batch: a fixed batch size, or None for a dynamic batch dimension named ``batch``.
    input_size: (channels, height, width) in pixels; mean/std: the normalisation the caller applies
    to [0, 1] pixels before feeding ``images``.
    checkpoint / checkpoint_sha256: the weights exported (None: a random init drawn with ``seed``),
    so that ``model_from_config`` rebuilds the same PyTorch model to verify against.
    module_sha256: ``module_sha256`` of the exported module (None in files written before it was
    recorded): ``model_from_config`` refuses a rebuilt model with other weights or modules, such as a
    module exported without the checkpoint its weights came from.
    """

    model: str
    lowering: str = "plugin"
    opset: int = MIN_OPSET
    batch: int | None = 1
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    precision: str = "fp32"
    img_size: int = 224
    num_classes: int = 1000
    fusion: Any = None
    attention: Any = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    seed: int = 0
    module_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError for a lowering, opset, batch, seed or input size vitrt cannot export."""
        for key, value, lowest in (
            ("opset", self.opset, MIN_OPSET),
            ("batch", self.batch, 1),
            ("seed", self.seed, 0),
            ("img_size", self.img_size, 1),
            ("num_classes", self.num_classes, 0),
        ):
            if value is None and key == "batch":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                extra = " or None (a dynamic batch axis)" if key == "batch" else ""
                raise ConfigError(f"{key} must be a whole number >= {lowest}{extra}, got {value!r}")
        if self.lowering not in LOWERINGS:
            raise ConfigError(f"unknown lowering {self.lowering!r}; use one of {', '.join(LOWERINGS)}")
        if self.opset < MIN_OPSET:
            raise ConfigError(
                f"opset {self.opset} is too old: vitrt exports opset >= {MIN_OPSET} "
                "(LayerNormalization and the dynamo exporter need it); TensorRT 10+ reads opset 18-20"
            )
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"batch must be >= 1 or None (dynamic), got {self.batch}")
        if tuple(self.input_size[1:]) != (self.img_size, self.img_size):
            # the models' position embeddings (and T2T's token grid) are built for img_size x img_size
            raise ConfigError(
                f"input_size {tuple(self.input_size)} does not match img_size {self.img_size}: the model "
                f"takes {self.img_size} x {self.img_size} images; give "
                f"input_size=({self.input_size[0]}, {self.img_size}, {self.img_size}) or the img_size of "
                f"{self.input_size[1]} x {self.input_size[2]} images"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def model_from_config(config: ExportConfig) -> nn.Module:
    """The PyTorch model an ExportConfig describes, in eval mode, with the same weights.

    Raises CheckpointError when the recorded checkpoint is missing or has changed since export, VitrtError
    when the rebuilt model's ``module_sha256`` differs from the recorded one (not checked for a model built
    on the meta device, which has no weights).
    """
    from vitrt.errors import CheckpointError
    from vitrt.models import list_models

    from .compile_source import ModelSource, check_arch

    arch = config.extra.get("arch")  # a model description's (vitrt compile of a description .json)
    if arch is None and config.model not in list_models():
        raise VitrtError(
            f"the PyTorch model cannot be rebuilt: {config.model!r} is not a registered model (the file was "
            f"exported from a module). {REBUILD_FIX}"
        )
    if config.checkpoint is not None:
        digest = file_sha256(config.checkpoint)
        if config.checkpoint_sha256 and digest != config.checkpoint_sha256:
            raise CheckpointError(
                f"{config.checkpoint} changed since export (sha256 {digest[:12]}..., export recorded "
                f"{config.checkpoint_sha256[:12]}...); re-export, or verify against saved outputs"
            )
    # as vitrt export / compile built it; a description: its class and kwargs, the checkpoint, then options
    source = ModelSource(
        "registered" if arch is None else "description",
        config.model,
        fusion=config.fusion,
        attention=config.attention,
        checkpoint=None if config.checkpoint is None else Path(config.checkpoint),
        img_size=config.img_size,
        num_classes=config.num_classes,
        arch=None if arch is None else check_arch(arch, "the export config's description"),
    )
    model = source.build(seed=config.seed)
    on_meta = any(t.is_meta for t in model.state_dict().values())  # built for shapes only: no weights
    if config.module_sha256 is not None and not on_meta and module_sha256(model) != config.module_sha256:
        # a module exported as given: its weights came from wherever the caller drew or loaded them
        weights = f"checkpoint {config.checkpoint}" if config.checkpoint else f"seed {config.seed}"
        raise VitrtError(
            f"the PyTorch model cannot be rebuilt: {config.model} built from the export config ({weights}) "
            f"has other weights or modules than the module that was exported, so a comparison would fail "
            f"for no fault of the file. {REBUILD_FIX}"
        )
    return model.eval()


REBUILD_FIX = (
    "Fix: export with checkpoint= (torch.save(module.state_dict(), 'w.pth'), then "
    "export_onnx(module, ..., checkpoint='w.pth')), or compare with the module's own outputs "
    "(vitrt.compiler.verify.save_outputs([{'logits': module(x).numpy()}], 'ref.json', 'torch'), then "
    "verify_onnx(path, against='ref.json', inputs=[{'images': x.numpy()}]))"
)


def module_sha256(model: nn.Module) -> str:
    """Hex SHA-256 of a module's weights (``compile_source.weights_sha256``: names, dtypes, shapes, bytes) and
    of its module tree (each submodule's name and class): what tells a rebuilt model from the exported one."""
    import hashlib

    from .compile_source import weights_sha256

    digest = hashlib.sha256(weights_sha256(model).encode())
    for name, sub in model.named_modules():
        digest.update(f"{name}:{type(sub).__module__}.{type(sub).__qualname__};".encode())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a checkpoint file's bytes; CheckpointError when it cannot be read."""
    from vitrt import fileio
    from vitrt.errors import CheckpointError

    try:
        return fileio.file_sha256(path)
    except VitrtError as err:
        raise CheckpointError(str(err).replace("cannot read", "cannot read checkpoint", 1)) from err


def read_export_config(model_proto: Any) -> ExportConfig | None:
    """The ExportConfig stored in an ``onnx.ModelProto``, or None for a foreign ONNX file."""
    for prop in model_proto.metadata_props:
        if prop.key == METADATA_KEY:
            data = json.loads(prop.value)
            data["input_size"] = tuple(data["input_size"])
            data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
            return ExportConfig(**data)
    return None


def export_onnx(
    model: str | nn.Module,
    output: str | os.PathLike[str],
    *,
    lowering: str = "plugin",
    opset: int = MIN_OPSET,
    batch: int | None = 1,
    img_size: int | None = None,
    num_classes: int | None = None,
    fusion: Any = None,
    attention: Any = None,
    checkpoint: str | os.PathLike[str] | None = None,
    seed: int = 0,
    simplify: bool = True,
    timings: dict[str, float] | None = None,
) -> Path:
    """Export a model to ONNX at ``output``: ``vitrt export`` as a function (``vitrt.export_onnx``).

    Args:
        model: a registered model name (built with ``vitrt.create_model`` from ``img_size``,
            ``num_classes``, ``fusion``, ``attention``, its weights drawn with ``seed`` or loaded from
            ``checkpoint``), or an ``nn.Module`` taking images [B, 3, img_size, img_size]. A module is
            exported as given, its ``checkpoint`` weights loaded into a copy first if one is named. Its
            img_size and num_classes are its own (ConfigError for other values); fusion, attention and
            seed describe it: they are recorded so that ``vitrt verify`` can rebuild it, so pass the ones
            it was created with. The file also records a hash of the module's weights and modules:
            ``verify_onnx`` refuses a rebuilt model that differs (a module whose weights are not the
            seed's nor a checkpoint's), naming the fix.
        output: the .onnx file to write (atomically; weights over 2 GB go to ``<output>.data``).
        lowering: "plugin" (one TensorRT plugin node per plugin op) or "portable" (standard ops).
        opset: ONNX opset, >= 18.
        batch: a fixed batch size, or None for a dynamic batch axis named ``batch``.
        img_size: square input side in pixels (default 224 for a name, a module's own for a module).
        num_classes: classifier outputs (default 1000 for a name, a module's own for a module).
        fusion / attention / seed: as ``vitrt.create_model`` and the random init.
        checkpoint: weights (.pth / .pth.tar / .safetensors; a str or a Path), recorded with their SHA-256.
        simplify: run onnxsim (onnxslim as fallback).
        timings: if given, receives the seconds spent in ``trace``, ``simplify`` and ``save``.

    Returns the written path; the file's metadata holds the ``ExportConfig``. Raises ConfigError for
    a bad option, CheckpointError for unreadable or mismatched weights, VitrtError for an unwritable
    ``output`` (before any work) or a failed trace (torch's trace logs of it are dropped unless the
    ``vitrt`` logger is at DEBUG, ``vitrt -vv``: the error names the cause).
    """
    from vitrt.models.registry import check_img_size, check_num_classes

    from .compile_source import module_sizes

    if isinstance(model, str):
        name: str | None = model
        img_size = check_img_size(model, 224 if img_size is None else img_size)  # ConfigError: unknown name
        num_classes = check_num_classes(1000 if num_classes is None else num_classes)
    elif isinstance(model, nn.Module):
        name = getattr(getattr(model, "spec", None), "name", None)
        img_size, num_classes = module_sizes(model, img_size, num_classes)
    else:
        raise ConfigError(
            f"export_onnx takes a model name (vitrt list-models) or an nn.Module, got {type(model).__name__}"
        )
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise ConfigError(f"checkpoint must be a file path (str or Path), got {type(checkpoint).__name__}")
    config = ExportConfig(
        model=name or type(model).__name__,
        lowering=lowering,
        opset=opset,
        batch=batch,
        input_size=(3, img_size, img_size),
        img_size=img_size,
        num_classes=num_classes,
        fusion=fusion,
        attention=attention,
        checkpoint=os.fspath(checkpoint) if checkpoint is not None else None,
        seed=seed,
    )
    config.validate()  # before building the model: a bad option or path should fail fast
    if checkpoint is not None:
        config = replace(config, checkpoint_sha256=file_sha256(checkpoint))
    check_writable(output)
    if isinstance(model, str):
        module = model_from_config(config)
    elif checkpoint is not None:
        import copy

        from vitrt.models import load_checkpoint

        module = load_checkpoint(copy.deepcopy(model), checkpoint)
    else:
        module = model
    pre = getattr(module, "preprocess", None)
    if pre is not None:
        config = replace(config, mean=tuple(pre.mean), std=tuple(pre.std))
    with quiet_export_tracing(not logging.getLogger("vitrt").isEnabledFor(logging.DEBUG)):
        return export_model(module, output, config, simplify=simplify, timings=timings)


def export_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    config: ExportConfig,
    *,
    simplify: bool = True,
    timings: dict[str, float] | None = None,
) -> Path:
    """Export ``model`` (images [B, C, H, W] -> logits [B, classes]) to ONNX at ``path`` as ``config``
    says, and record ``config`` in the file (``export_onnx`` builds both from the command's options).

    The graph's input is ``images`` (float32 [batch, C, H, W]), its output ``logits``. ``config``'s
    ``module_sha256`` is filled in from ``model`` where it is None. The file is
    checked with ``onnx.checker`` (full check), simplified with onnxsim unless ``simplify`` is False,
    shape-inferred, and written atomically; weights go to ``<path>.data`` only when the model is
    over 2 GB. Returns the path. ``timings``, if given, receives the seconds spent in ``trace``,
    ``simplify`` and ``save``.
    """
    import copy

    from vitrt.plugins.lowering import set_lowering, translation_table

    from .passes import check_model, name_nodes, name_tensors, simplify_model

    config.validate()
    check_writable(path)  # fail now, not after tracing
    if config.module_sha256 is None:  # the module as given, before the lowering changes it
        config = replace(config, module_sha256=module_sha256(model))
    model = set_lowering(copy.deepcopy(model).eval(), config.lowering)
    table = translation_table() if config.lowering == "plugin" else None
    batch = config.batch or 2  # a dynamic batch is traced at 2 so that no size-1 axis gets folded
    example = torch.randn(batch, *config.input_size)
    # A tuple matches the forward's positional arguments, whatever the model names them.
    dynamic = ({0: torch.export.Dim("batch", min=1, max=1024)},) if config.batch is None else None
    external = sum(p.numel() * p.element_size() for p in model.parameters()) >= TWO_GB
    t0 = time.perf_counter()
    with warnings.catch_warnings(), without_slice_pair_rewrite(), without_torchvision_notes():
        warnings.simplefilter("ignore")  # the exporter's own chatter; errors still raise
        try:
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["images"],
                output_names=["logits"],
                opset_version=config.opset,
                dynamic_shapes=dynamic,
                custom_translation_table=table,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        except Exception as err:  # the exporter raises many types; name the model and stage
            raise VitrtError(f"ONNX export of {config.model} failed: {_exporter_summary(err)}") from err
    assert program is not None
    proto = program.model_proto
    spent = {"trace": time.perf_counter() - t0}
    log.info("traced %s in %.1f s", config.model, spent["trace"])
    proto = name_nodes(proto)
    t0 = time.perf_counter()
    if simplify:
        proto = simplify_model(proto)
    proto = name_tensors(proto)
    spent["simplify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    meta = proto.metadata_props.add()
    meta.key, meta.value = METADATA_KEY, config.to_json()
    proto.producer_name, proto.producer_version = "vitrt", _version()
    check_model(proto)
    dest = Path(path)
    with atomic_output(dest, suffix=".onnx") as tmp:
        save_onnx(proto, tmp, external=external, data_name=dest.name + ".data")
    spent["save"] = time.perf_counter() - t0
    if timings is not None:
        timings.update(spent)
    return dest


@contextlib.contextmanager
def without_slice_pair_rewrite() -> Iterator[None]:
    """torch.onnx.export's graph optimizer (onnxscript's default rewrite rules) without the rule that turns
    two Slices of one tensor's halves into a Split (``slice_split_rule``), for the duration of the block.

    Why: that rule's pattern has two outputs, and its matcher tries it against every pair of Slice nodes.
    The portable lowerings of Scatterbrain and MCTF have hundreds of Slices, and most of their export time
    went there (benchmarks/export_rewrites.py times both ways in one run; README, "Export and verify"),
    while the rule changed none of the graphs checked: the files are byte for byte the same (there and in
    tests/compiler/test_export.py). The other rules, constant folding and the clean-up passes run as torch
    runs them. The rule list is onnxscript's private module attribute, read when the optimizer runs; where
    a version lacks it, the block runs with the optimizer untouched.
    """
    rewriter: Any = None
    slice_split_rule: Any = None
    # The block runs outside the ImportError handler, so that its own errors are not chained to that one.
    with contextlib.suppress(ImportError):
        from onnxscript import rewriter
        from onnxscript.rewriter.rules.common import slice_split_rule
    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if not isinstance(rules, tuple) or slice_split_rule is None or slice_split_rule not in rules:
        yield
        return
    try:
        rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in rules if r is not slice_split_rule)
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


EXPORT_TRACE_LOGGERS = ("torch._subclasses.fake_tensor", "torch.export._trace")
"""torch's loggers that log a failing export's trace as errors (a traceback per failed op: dozens of lines)
before the exception that ``export_model``'s error reports with its cause."""


@contextlib.contextmanager
def quiet_export_tracing(enabled: bool = True) -> Iterator[None]:
    """Within the block, only critical records from ``EXPORT_TRACE_LOGGERS``; their levels restored after.
    A no-op when ``enabled`` is False."""
    loggers = [logging.getLogger(name) for name in EXPORT_TRACE_LOGGERS]
    levels = [lg.level for lg in loggers]
    if enabled:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# The exporter's registry logs one warning per torchvision op it cannot register ("torchvision is not
# installed. Skipping torchvision::nms", and so on) on every export.
TORCHVISION_NOTE_LOGGER = "torch.onnx._internal.exporter._registration"


class _DropTorchvisionNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed")


@contextlib.contextmanager
def without_torchvision_notes() -> Iterator[None]:
    """Within the block, drop the exporter's "torchvision is not installed" warnings, and nothing else.

    Why: a vision-transformer export uses no torchvision op, so the lines say nothing about the model,
    and library users (vitrt does not configure logging for them) would see four (torch 2.13) on every
    export. Only this logger and message: everything else the exporter logs still reaches the user's
    handlers. The CLI hides more (``quiet.quiet_third_party``)."""
    logger, note = logging.getLogger(TORCHVISION_NOTE_LOGGER), _DropTorchvisionNotes()
    logger.addFilter(note)
    try:
        yield
    finally:
        logger.removeFilter(note)


def _exporter_summary(err: Exception) -> str:
    """The line of torch's export error that names the cause, without its colour codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    cause = next((line for line in text.splitlines() if line.startswith("<class")), None)
    return cause or f"{type(err).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitrt")
    except PackageNotFoundError:
        return "0+unknown"
