"""``vitrt run``: classify images with an artifact, an ONNX file, an engine or a PyTorch model, preprocessed
the model's own way.

>>> result = vitrt.run("deit_s.cpu/", "photos/", top=5)
>>> print(result.format())

Preprocessing comes from the model (the ExportConfig in the artifact's manifest or the ONNX file's
metadata; a model name's card): decode (jpg/png, grayscale replicated and alpha dropped to the model's
channels), resize the shorter side to H / crop_pct, center crop H x W, normalise with mean / std
(``vitrt.calibration.preprocess``, the same code calibration uses). Images go through the model in batches
the model takes: exactly its batch where the batch axis is fixed (the last batch padded by repeating its
last image, the padding's outputs dropped), ``batch`` images otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import VitrtError

from .sources import ModelSource, check_batch, open_runner, runner_fixed_batch, source_of

DEFAULT_BATCH = 8


@dataclass(frozen=True)
class Prediction:
    """One image's top classes: (class index, label or None, softmax probability on [0, 1])."""

    image: str
    top: list[tuple[int, str | None, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "top": [{"class": c, "label": lab, "probability": p} for c, lab, p in self.top],
        }


@dataclass(frozen=True)
class RunResult:
    """``vitrt run``'s answer: one Prediction per image, in the order given (a folder: sorted paths)."""

    runner: str
    predictions: list[Prediction]
    labels_note: str
    preprocess: dict[str, Any]
    batch: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "batch": self.batch,
            "preprocess": self.preprocess,
            "labels": self.labels_note,
            "predictions": [p.to_dict() for p in self.predictions],
            "notes": list(self.notes),
        }

    def format(self) -> str:
        """One block per image: ``rank. label (class i)  probability %``."""
        lines = [f"{self.runner}: {len(self.predictions)} images, batch {self.batch}; {self.labels_note}"]
        for p in self.predictions:
            lines.append(p.image)
            for rank, (c, label, prob) in enumerate(p.top, 1):
                name = f"{label} (class {c})" if label is not None else f"class {c}"
                lines.append(f"  {rank}. {name:<24} {100 * prob:6.2f} %")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def list_image_files(images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named by ``images``: one jpg/png file, a folder (searched recursively, sorted), or a
    list of either. VitrtError (DataSourceError) for a missing path or a folder without images."""
    from vitrt.calibration.data import IMAGE_EXTENSIONS, list_images
    from vitrt.calibration.errors import DataSourceError

    if isinstance(images, (str, os.PathLike)):
        specs = [images]
    elif isinstance(images, Sequence):
        specs = list(images)
    else:
        specs = [images]
    files: list[Path] = []
    for spec in specs:
        if not isinstance(spec, (str, os.PathLike)):
            raise VitrtError(
                f"images are jpg/png files or folders of them (paths), not a {type(spec).__name__}. Fix: "
                "give paths, or run arrays yourself: runner.infer({runner.input_specs[0].name: array})"
            )
        path = Path(spec).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise DataSourceError(f"no jpg/png images under {path} (searched recursively)")
            files += found
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)
        elif path.exists():
            raise DataSourceError(f"{path} is not a jpg/png image or a folder of them")
        else:
            raise DataSourceError(f"{path}: no such image or folder")
    return files


def load_image(path: str | os.PathLike[str], preprocess: Any) -> np.ndarray:
    """One image file -> the model's input (C, H, W) float32: decode, match channels, resize, center crop,
    normalise (``preprocess``: a ``PreprocessConfig``)."""
    from vitrt.calibration.data import decode_image, match_channels
    from vitrt.calibration.preprocess import preprocess_image

    image = decode_image(Path(path))
    image = match_channels(image, preprocess.input_size[0], convert=True, where=str(path))
    return preprocess_image(image, preprocess, where=str(path)).numpy()


def resolve_preprocess(
    source: ModelSource,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    size: int | Sequence[int] | None = None,
) -> Any:
    """The ``PreprocessConfig`` for ``source``, with the given values (mean, std, crop_pct, interpolation)
    overriding its own. A file that does not record its preprocessing (a foreign ONNX file, a bare engine)
    needs ``mean`` and ``std``; its input size (pixels) comes from its input shape, or ``size`` (a side, or
    (height, width)) where that has symbolic spatial axes. A ``size`` other than the input size the model
    records or its input shape fixes is a VitrtError (the model takes only its own size)."""
    from vitrt.calibration.preprocess import with_overrides
    from vitrt.models.config import PreprocessConfig

    base = source.preprocess()
    shape = list(source.inputs[0]["shape"]) if source.inputs else []
    sides: tuple[int, int] | None = None
    if size is not None:
        listed = [size] if isinstance(size, int) else list(size)
        if len(listed) not in (1, 2) or not all(isinstance(v, int) and v > 0 for v in listed):
            raise VitrtError(f"size must be one positive side or height width, got {size!r}")
        sides = (int(listed[0]), int(listed[-1]))
        fixed = tuple(base.input_size[1:]) if base is not None else tuple(shape[2:])
        if len(fixed) == 2 and all(isinstance(d, int) and d > 0 for d in fixed) and sides != fixed:
            other = f", or --img-size {sides[0]} for the model at that size" if source.kind == "model" else ""
            raise VitrtError(
                f"{source.spec} takes {fixed[0]} x {fixed[1]} pixel inputs (its input size is fixed), not "
                f"{sides[0]} x {sides[1]}: --size only names the size of a file that does not record it. "
                f"Fix: leave out --size (images are resized to {fixed[0]} x {fixed[1]}){other}"
            )
    if base is None:
        if mean is None or std is None:
            raise VitrtError(
                f"{source.spec} does not record its preprocessing (no vitrt export config): pass --mean and "
                "--std (ImageNet models: --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225)"
            )
        channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else 3
        if sides is not None:
            chw = (channels, *sides)
        elif len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:]):
            chw = (int(shape[1]), int(shape[2]), int(shape[3]))
        else:
            raise VitrtError(f"{source.spec}: its input size is unknown; pass --size")
        base = PreprocessConfig(input_size=chw)
    return with_overrides(base, mean=mean, std=std, crop_pct=crop_pct, interpolation=interpolation)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [B, classes] logits, in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classify(runner: Any, batches: np.ndarray, batch: int, fixed: bool) -> np.ndarray:
    """Logits [N, classes] of ``batches`` [N, C, H, W] run ``batch`` at a time through ``runner`` (its first
    input and first output); with ``fixed`` the last partial batch is padded with its last image."""
    name = runner.input_specs[0].name
    dtype = (
        np.dtype(runner.input_specs[0].dtype) if runner.input_specs[0].dtype != "undefined" else np.float32
    )
    out = []
    for start in range(0, len(batches), batch):
        chunk = batches[start : start + batch]
        n = len(chunk)
        if fixed and n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        outputs = runner.infer({name: chunk.astype(dtype)})
        logits = next(iter(outputs.values()))
        out.append(np.asarray(logits, dtype=np.float32).reshape(len(chunk), -1)[:n])
    return np.concatenate(out)


def runner_name(runner: Any) -> str:
    """``runner.name`` quoted, or its type's name."""
    name = getattr(runner, "name", None)
    return f"the runner {name!r}" if name else f"the {type(runner).__name__}"


def run(
    model: Any,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    top: int = 5,
    batch: int | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    inference_precision: str | None = None,
    device: str | None = None,
    half: bool = False,
    check: bool = True,
    checkpoint: str | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    fusion: Any = None,
    attention: Any = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    size: int | Sequence[int] | None = None,
) -> RunResult:
    """Classify ``images`` (a jpg/png file, a folder, or a list) with ``model`` (an artifact folder, an ONNX
    file, a .plan engine, a model name, or a runner from ``open_runner``): the ``top`` classes per image
    with softmax probabilities and label names where the model has them (``ModelSource.labels``).

    batch: images per query (default: the model's fixed batch, else 8); a size the model cannot take
    raises BatchError. runtime / threads / inference_precision / device / half / check / checkpoint /
    img_size / num_classes / fusion / attention: ``open_runner`` (the last five, with device and half, for a
    model name only; without a checkpoint its weights are random, which the result notes); VitrtError
    when ``model`` is an open runner (they would be ignored). A torch.nn.Module runs in PyTorch.
    mean / std / crop_pct / interpolation: override the model's preprocessing (mean / std required for a
    file that does not record it); size (pixels): the input size of such a file where its input shape does
    not fix it (another size than the model's is refused, ``resolve_preprocess``).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise VitrtError(f"top must be a positive integer, got {top!r}")
    files = list_image_files(images)
    if hasattr(model, "infer"):
        opening = {
            "runtime": runtime, "threads": threads, "inference_precision": inference_precision,
            "device": device, "checkpoint": checkpoint, "img_size": img_size, "num_classes": num_classes,
            "fusion": fusion, "attention": attention,
        }  # fmt: skip
        given = [f"{k}={v!r}" for k, v in opening.items() if v is not None]
        given += ["half=True"] * bool(half) + ["check=False"] * (not check)
        if given:
            raise VitrtError(
                f"{', '.join(given)}: options for opening a model, but {runner_name(model)} is already open "
                "and would ignore them. Fix: pass them to open_runner(...), or give run() the path or model "
                "name"
            )
        runner = model
        source = source_of(runner)
    else:
        runner = open_runner(
            model,
            runtime=runtime,
            threads=threads,
            inference_precision=inference_precision,
            device=device,
            half=half,
            check=check,
            checkpoint=checkpoint,
            img_size=img_size,
            num_classes=num_classes,
            fusion=fusion,
            attention=attention,
        )
        source = source_of(runner)
    specs = runner.input_specs
    if not source.inputs and specs:  # an engine: only the opened runner knows its input
        source = replace(source, inputs=[{"name": t.name, "shape": list(t.shape)} for t in specs])
    cfg = resolve_preprocess(
        source, mean=mean, std=std, crop_pct=crop_pct, interpolation=interpolation, size=size
    )
    fixed = runner_fixed_batch(source, specs)
    per_query = batch if batch is not None else (fixed or min(DEFAULT_BATCH, len(files)))
    check_batch(source, per_query, specs=specs)
    x = np.stack([load_image(f, cfg) for f in files])
    probs = softmax(classify(runner, x, per_query, fixed is not None))
    labels, note = source.labels()
    k = min(top, probs.shape[1])
    predictions = []
    for path, row in zip(files, probs, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        predictions.append(
            Prediction(
                str(path),
                [
                    (int(c), labels[c] if labels is not None and c < len(labels) else None, float(row[c]))
                    for c in order
                ],
            )
        )
    notes = []
    if source.kind == "model" and (source.export_config or {}).get("checkpoint") is None:
        notes.append(
            f"{source.spec} has random weights (no checkpoint given): the classes mean nothing. Fix: "
            "--checkpoint WEIGHTS (or give an artifact or .onnx made from trained weights)"
        )
    if fixed is not None and len(files) % per_query:
        notes.append(
            f"the last batch was padded to {per_query} (the model's fixed batch); padding outputs dropped"
        )
    return RunResult(runner.name, predictions, note, cfg.to_dict(), per_query, notes)
