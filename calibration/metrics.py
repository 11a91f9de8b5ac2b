"""How close a quantized model's outputs are to the float model's: top-1 agreement, cosine, max error."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vitrt.errors import ConfigError

from .errors import CalibrationError

BUDGET_METRICS = ("cosine", "top1")


@dataclass(frozen=True)
class Agreement:
    """Agreement of one model's outputs with a reference's over ``samples`` inputs.

    top1_agreement: fraction (0..1) of samples whose argmax over the flattened output is the same;
    mean_cosine / min_cosine: cosine similarity of the flattened per-sample outputs (1 = same
    direction); max_abs_error: largest |a - b| over every output value, in the output's units.
    """

    samples: int
    top1_agreement: float
    mean_cosine: float
    min_cosine: float
    max_abs_error: float

    @property
    def cosine_distance(self) -> float:
        """1 - mean_cosine (0 = identical directions)."""
        return 1.0 - self.mean_cosine

    def error(self, metric: str) -> float:
        """The error a budget bounds: cosine distance, or the fraction of top-1 disagreements."""
        if metric == "cosine":
            return self.cosine_distance
        if metric == "top1":
            return 1.0 - self.top1_agreement
        raise ConfigError(f"budget metric {metric!r} is not one of {list(BUDGET_METRICS)}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def agreement(reference: np.ndarray, actual: np.ndarray) -> Agreement:
    """Compare (N, ...) outputs sample by sample; both arrays must have the same shape."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(actual, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim == 0 or ref.shape[0] == 0:
        raise CalibrationError(f"cannot compare outputs of shapes {ref.shape} and {out.shape}")
    ref, out = ref.reshape(ref.shape[0], -1), out.reshape(out.shape[0], -1)
    n_ref, n_out = np.linalg.norm(ref, axis=1), np.linalg.norm(out, axis=1)
    norms = n_ref * n_out
    dots = (ref * out).sum(axis=1)
    # two zero vectors agree perfectly; a zero vector against a non-zero one: cosine 0
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    cos = np.where((n_ref == 0) & (n_out == 0), 1.0, cos)
    top1 = ref.argmax(axis=1) == out.argmax(axis=1)
    return Agreement(
        samples=int(ref.shape[0]),
        top1_agreement=float(top1.mean()),
        mean_cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
        max_abs_error=float(np.abs(ref - out).max()),
    )


def check_budget(metric: str, max_error: float) -> None:
    """Raise ConfigError for an unknown metric or a budget outside [0, 1]."""
    if metric not in BUDGET_METRICS:
        raise ConfigError(f"budget metric {metric!r} is not one of {list(BUDGET_METRICS)}")
    if not 0.0 <= max_error <= 1.0:
        raise ConfigError(
            f"error budget {max_error} must be in [0, 1]: a cosine distance (e.g. 0.001) or a fraction "
            "of top-1 disagreements (e.g. 0.01 = 1 point)"
        )
