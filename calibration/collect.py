"""Range collection on the ONNX graph with ONNX Runtime (CPU): the tensors Q/DQ will quantize.

A temporary copy of the model lists those tensors as extra graph outputs; the representative data
streams through it chunk by chunk and each chunk's values go into ``vitrt.calibration.ranges``
collectors (2048-bin histograms of |x|, 64 KiB each), then are dropped. Memory stays at one chunk's
activations: a fixed-batch model runs its own batch size, a dynamic-batch model as many samples as
fit in ``max_bytes`` of captured activations.

Sessions come from a ``RunnerFactory`` (path -> ``vitrt.deploy.runners.Runner``), by default ONNX
Runtime's CPU provider through ``OnnxRuntimeRunner``, which runs vitrt's plugin nodes with their CPU
kernels; pass a factory that registers another custom-op library (or uses other session options)
for graphs whose custom nodes need it. Plugin nodes' own tensors are never collected (they stay
float, see ``vitrt.calibration.graph``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vitrt.fileio import save_onnx

from .errors import CalibrationError, DataSourceError
from .ranges import ActivationRanges

if TYPE_CHECKING:
    from onnx import ModelProto

    from vitrt.deploy.runners import Runner

log = logging.getLogger(__name__)

RunnerFactory = Callable[[Path], "Runner"]
DEFAULT_MAX_BYTES = 256 * 2**20  # captured activations held at once for a dynamic-batch model


def default_runner_factory(
    threads: int | None = None, custom_ops_library: str | None = None
) -> RunnerFactory:
    """A factory of ``OnnxRuntimeRunner`` (CPU) sessions with ``threads`` intra-op threads (None:
    ONNX Runtime's default) and, if given, a custom-op shared library registered with each session."""
    from vitrt.deploy.runners import OnnxRuntimeRunner

    def make(path: Path) -> Runner:
        return OnnxRuntimeRunner(path, threads=threads, custom_ops_library=custom_ops_library)

    return make


@dataclass(frozen=True)
class ModelIO:
    """The image input and first output of a single-input model.

    input_shape: [B, C, H, W] as declared (ints, or strings for symbolic axes); batch: the fixed
    batch size, or None for a dynamic batch axis.
    """

    input_name: str
    input_shape: tuple[Any, ...]
    batch: int | None
    output_name: str

    @property
    def sample_shape(self) -> tuple[Any, ...]:
        """(C, H, W) of one sample, as declared."""
        return self.input_shape[1:]


def model_io(model: ModelProto) -> ModelIO:
    """The single float32 [B, C, H, W] input and the first output; CalibrationError otherwise."""
    constants = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise CalibrationError(
            f"the model has {len(inputs)} inputs {[i.name for i in inputs]}; vitrt calibrates models "
            "with one image input [batch, channels, height, width]"
        )
    tensor_type = inputs[0].type.tensor_type
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim
    )
    if tensor_type.elem_type != 1 or len(dims) != 4:
        raise CalibrationError(
            f"input {inputs[0].name!r} is not a float32 [batch, channels, height, width] tensor "
            f"(elem type {tensor_type.elem_type}, shape {list(dims)})"
        )
    if not model.graph.output:
        raise CalibrationError("the model has no outputs")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    return ModelIO(inputs[0].name, dims, batch, model.graph.output[0].name)


def with_outputs(model: ModelProto, tensors: Sequence[str]) -> ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (declared float32, shape left open)."""
    import onnx
    from onnx import TensorProto, helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in tensors:
        if name not in present:
            copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    return copy


def as_numpy(batch: torch.Tensor | np.ndarray) -> np.ndarray:
    """A contiguous float32 numpy array of a (B, C, H, W) batch."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    return np.ascontiguousarray(batch, dtype=np.float32)


def rebatch(batches: Iterable[torch.Tensor | np.ndarray], size: Callable[[], int]) -> Iterator[np.ndarray]:
    """Re-cut a stream of (B, C, H, W) batches into chunks of ``size()`` samples (read before each
    chunk, so it may change); the last chunk holds what is left and may be smaller."""
    buffer: list[np.ndarray] = []
    held = 0
    for batch in batches:
        array = as_numpy(batch)
        buffer.append(array)
        held += len(array)
        while held and held >= size():
            k = size()
            joined = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
            yield joined[:k]
            rest = joined[k:]
            buffer, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield np.concatenate(buffer) if len(buffer) > 1 else buffer[0]


def check_sample_shape(io: ModelIO, chunk: np.ndarray) -> None:
    """Raise DataSourceError when the data's (C, H, W) differs from the model's declared input."""
    for want, got in zip(io.sample_shape, chunk.shape[1:], strict=True):
        if isinstance(want, int) and want > 0 and want != got:
            raise DataSourceError(
                f"calibration samples are {tuple(chunk.shape[1:])} (C, H, W) but the model's input "
                f"{io.input_name!r} is {list(io.input_shape)}. Fix: preprocess to the model's input size "
                "and channel count (convert_channels / --convert-channels for grayscale images)"
            )


def collect_ranges(
    model: ModelProto,
    tensors: Sequence[str],
    batches: Iterable[torch.Tensor | np.ndarray],
    *,
    runner_factory: RunnerFactory | None = None,
    num_bins: int = 2048,
    max_bytes: int = DEFAULT_MAX_BYTES,
    workdir: str | os.PathLike[str] | None = None,
) -> ActivationRanges:
    """Histogram |x| of every tensor in ``tensors`` over the data, running ``model`` on ONNX Runtime.

    ``batches``: (B, C, H, W) float32 samples preprocessed for the model. A tensor that is the
    graph input is read from the feed. ``workdir``: where the temporary model goes (default: a
    fresh temporary folder, removed afterwards). Returns an ActivationRanges with one collector per
    tensor. A fixed-batch model drops a last partial batch (a warning says how many samples).
    """
    io = model_io(model)
    wanted = list(dict.fromkeys(tensors))
    captured = [t for t in wanted if t != io.input_name]
    ranges = ActivationRanges(num_bins=num_bins)
    factory = runner_factory or default_runner_factory()
    with tempfile.TemporaryDirectory(prefix="vitrt-calib-", dir=workdir) as tmp:
        path = save_onnx(with_outputs(model, captured), Path(tmp) / "collect.onnx")
        runner = factory(path)
        chunk = [io.batch or 1]
        seen = 0
        for samples in rebatch(batches, lambda: chunk[0]):
            check_sample_shape(io, samples)
            if io.batch is not None and len(samples) != io.batch:
                log.warning(
                    "the model's batch size is fixed at %d: the last %d calibration sample(s) are not used",
                    io.batch,
                    len(samples),
                )
                break
            outputs = runner.infer({io.input_name: samples})
            missing = [t for t in captured if t not in outputs]
            if missing:
                raise CalibrationError(f"ONNX Runtime did not return tensor(s) {missing[:3]}")
            if io.input_name in wanted:
                ranges.update(io.input_name, samples)
            for name in captured:
                ranges.update(name, outputs[name])
            if io.batch is None and seen == 0:  # size the next chunks from the first one
                per_sample = sum(outputs[t].nbytes for t in captured) / max(len(samples), 1)
                chunk[0] = max(1, int(max_bytes // max(per_sample, 1.0)))
            seen += len(samples)
            del outputs
    if seen == 0:
        raise DataSourceError("no calibration sample reached the model (empty data, or fewer than one batch)")
    return ranges


def run_model(
    runner: Runner,
    io: ModelIO,
    batches: Iterable[torch.Tensor | np.ndarray],
    extra: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The first output of ``runner`` for every sample, stacked: (N, ...) float32.

    A fixed-batch model gets its batch size; a partial last batch is padded by repeating its last
    sample and the padded outputs are dropped. ``extra``: further feeds (e.g. gates), the same for
    every run.
    """
    outs: list[np.ndarray] = []
    size = io.batch or 64
    for samples in rebatch(batches, lambda: size):
        check_sample_shape(io, samples)
        n = len(samples)
        if io.batch is not None and n < io.batch:
            samples = np.concatenate([samples, np.repeat(samples[-1:], io.batch - n, axis=0)])
        feed = {io.input_name: samples, **(extra or {})}
        out = np.asarray(runner.infer(feed)[io.output_name])
        outs.append(out[:n])
    if not outs:
        raise DataSourceError("no sample to run the model on")
    return np.concatenate(outs)
