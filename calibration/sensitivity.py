"""Per-layer sensitivity and fallback to float until an error budget holds.

Each candidate layer is quantized alone ("one at a time") on held-out samples and ranked by the
error that adds to the model's output against FP32: the cosine distance (1 - mean cosine of the
flattened outputs), or for the ``top1`` metric the fraction of samples whose top-1 changes (ties
broken by cosine distance). Then, with every candidate quantized, the worst-ranked layer falls
back to float, one at a time, until the budget holds (a greedy walk down the ranking,
re-measured after each step, since errors of several layers do not simply add).

Everything runs in one ONNX Runtime session of ``vitrt.calibration.qdq.gated_model``: a layer's
quantization is switched by a 0/1 gate input, so no model is rebuilt per layer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrt.fileio import save_onnx
from vitrt.progress import progress_bar

from .collect import ModelIO, RunnerFactory, default_runner_factory, model_io, run_model
from .graph import Layer
from .metrics import Agreement, agreement
from .qdq import gate_name, gated_model

if TYPE_CHECKING:
    from collections.abc import Mapping

    from onnx import ModelProto


@dataclass(frozen=True)
class LayerSensitivity:
    """Output error vs FP32 when only ``layer`` is quantized (see ``Agreement``)."""

    layer: str
    cosine_distance: float
    top1_agreement: float
    max_abs_error: float

    def error(self, metric: str) -> float:
        return self.cosine_distance if metric == "cosine" else 1.0 - self.top1_agreement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Fallback:
    """The outcome of ``fallback_until_budget``.

    metric / max_error: the budget; met: whether it holds at the end; fallen_back: layers set to
    float, in order; steps: the error after each fallback ({"layer", "error"}); before / after: the
    agreement with every candidate quantized, and with the fallbacks applied.
    """

    metric: str
    max_error: float
    met: bool
    before: Agreement
    after: Agreement
    fallen_back: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "max_error": self.max_error,
            "met": self.met,
            "fallen_back": list(self.fallen_back),
            "steps": list(self.steps),
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
        }


class GatedEvaluator:
    """Runs the gated twin of a model on fixed samples and compares with FP32 outputs.

    ``samples``: (S, C, H, W) float32 inputs; ``reference``: the FP32 model's first output on them,
    (S, ...). ``layers``: the layers that get a gate (the candidates); ``amax``: calibrated ranges.
    Use as a context manager (the temporary model is removed on exit).
    """

    def __init__(
        self,
        model: ModelProto,
        layers: Sequence[Layer],
        amax: Mapping[str, float],
        samples: np.ndarray,
        reference: np.ndarray,
        *,
        runner_factory: RunnerFactory | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.layers = [layer.name for layer in layers]
        self.io: ModelIO = model_io(model)
        self.samples = np.ascontiguousarray(samples, dtype=np.float32)
        self.reference = reference
        self._tmp = tempfile.TemporaryDirectory(prefix="vitrt-sensitivity-", dir=workdir)
        path = save_onnx(gated_model(model, layers, amax), Path(self._tmp.name) / "gated.onnx")
        self.runner = (runner_factory or default_runner_factory())(path)
        self.runs = 0

    def __enter__(self) -> GatedEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runner = None  # type: ignore[assignment]  # release the session before removing its file
        self._tmp.cleanup()

    def outputs(self, enabled: Collection[str]) -> np.ndarray:
        """The first output with the layers in ``enabled`` quantized and the others float."""
        on = set(enabled)
        gates = {gate_name(n): np.array(n in on) for n in self.layers}
        self.runs += 1
        return run_model(self.runner, self.io, [self.samples], extra=gates)

    def evaluate(self, enabled: Collection[str]) -> Agreement:
        """Agreement with FP32 when the layers in ``enabled`` are quantized."""
        return agreement(self.reference, self.outputs(enabled))


def rank_layers(
    evaluator: GatedEvaluator, layers: Sequence[str], metric: str = "cosine", progress: bool = True
) -> list[LayerSensitivity]:
    """Quantize each layer alone; return their sensitivities, worst (largest error) first."""
    results: list[LayerSensitivity] = []
    bar = progress_bar(len(layers), "sensitivity (one layer at a time)", progress, unit="layer")
    try:
        for name in layers:
            a = evaluator.evaluate([name])
            results.append(LayerSensitivity(name, a.cosine_distance, a.top1_agreement, a.max_abs_error))
            bar.update(1)
    finally:
        bar.close()
    return sorted(results, key=lambda s: (s.error(metric), s.cosine_distance), reverse=True)


def fallback_until_budget(
    evaluator: GatedEvaluator,
    ranking: Sequence[LayerSensitivity],
    enabled: Collection[str],
    metric: str,
    max_error: float,
    progress: bool = True,
) -> Fallback:
    """Fall back the worst-ranked layers of ``enabled`` to float until ``metric`` <= ``max_error``.

    ``ranking``: from ``rank_layers``, worst first. Returns a Fallback; ``met`` is False only when
    the budget fails with every ranked layer in float (then nothing of ``ranking`` is left quantized).
    """
    current = [n for n in enabled]
    before = after = evaluator.evaluate(current)
    result = Fallback(metric, max_error, before.error(metric) <= max_error, before, after)
    order = [s.layer for s in ranking if s.layer in set(current)]
    bar = progress_bar(len(order), "fallback to float", progress and not result.met, unit="layer")
    try:
        for name in order:
            if after.error(metric) <= max_error:
                break
            current.remove(name)
            after = evaluator.evaluate(current)
            result.fallen_back.append(name)
            result.steps.append({"layer": name, "error": after.error(metric)})
            bar.update(1)
    finally:
        bar.close()
    result.after = after
    result.met = after.error(metric) <= max_error
    return result
