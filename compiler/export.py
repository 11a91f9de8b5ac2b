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
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError for a lowering, opset, batch or input size vitrt cannot export."""
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

    Raises CheckpointError when the recorded checkpoint is missing or has changed since export.
    """
    from vitrt.errors import CheckpointError
    from vitrt.models import load_checkpoint
    from vitrt.plugins import create_model

    torch.manual_seed(config.seed)
    model = create_model(
        config.model,
        img_size=config.img_size,
        num_classes=config.num_classes,
        fusion=config.fusion,
        attention=config.attention,
    )
    if config.checkpoint is not None:
        digest = file_sha256(config.checkpoint)
        if config.checkpoint_sha256 and digest != config.checkpoint_sha256:
            raise CheckpointError(
                f"{config.checkpoint} changed since export (sha256 {digest[:12]}..., export recorded "
                f"{config.checkpoint_sha256[:12]}...); re-export, or verify against saved outputs"
            )
        load_checkpoint(model, config.checkpoint)
    return model.eval()


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
    img_size: int = 224,
    num_classes: int = 1000,
    fusion: Any = None,
    attention: Any = None,
    checkpoint: str | None = None,
    seed: int = 0,
    simplify: bool = True,
    timings: dict[str, float] | None = None,
) -> Path:
    """Export a model to ONNX at ``output``: ``vitrt export`` as a function (``vitrt.export_onnx``).

    Args:
        model: a registered model name (built with ``vitrt.create_model`` from ``img_size``,
            ``num_classes``, ``fusion``, ``attention``, its weights drawn with ``seed`` or loaded from
            ``checkpoint``), or an ``nn.Module`` taking images [B, 3, img_size, img_size]. A module is
            exported as given, its ``checkpoint`` weights loaded into a copy first if one is named;
            the other options then describe it: they are recorded so that ``vitrt verify`` can
            rebuild it, so pass the ones it was created with.
        output: the .onnx file to write (atomically; weights over 2 GB go to ``<output>.data``).
        lowering: "plugin" (one TensorRT plugin node per plugin op) or "portable" (standard ops).
        opset: ONNX opset, >= 18.
        batch: a fixed batch size, or None for a dynamic batch axis named ``batch``.
        img_size: square input side in pixels.
        num_classes / fusion / attention / seed: as ``vitrt.create_model`` and the random init.
        checkpoint: weights (.pth / .pth.tar / .safetensors), recorded with their SHA-256.
        simplify: run onnxsim (onnxslim as fallback).
        timings: if given, receives the seconds spent in ``trace``, ``simplify`` and ``save``.

    Returns the written path; the file's metadata holds the ``ExportConfig``. Raises ConfigError for
    a bad option, CheckpointError for unreadable or mismatched weights, VitrtError for an unwritable
    ``output`` (before any work) or a failed trace.
    """
    name = model if isinstance(model, str) else getattr(getattr(model, "spec", None), "name", None)
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
        checkpoint=checkpoint,
        checkpoint_sha256=file_sha256(checkpoint) if checkpoint else None,
        seed=seed,
    )
    config.validate()  # before building the model: a bad option or path should fail fast
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

    The graph's input is ``images`` (float32 [batch, C, H, W]), its output ``logits``. The file is
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
