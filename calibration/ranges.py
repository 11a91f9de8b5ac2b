"""Activation ranges from streamed tensors, and the int8 scales they give.

Per-tensor symmetric int8 activations: a collector streams |x| of one tensor into a histogram;
a method turns the histogram into amax; scale = amax / 127. Per-channel symmetric int8 weights:
scale[c] = max |w[c]| / 127 per output channel.

Methods (amax in the tensor's units):
- ``minmax``: the largest |x| seen (exact, not from the histogram).
- ``percentile``: the p-th percentile of |x| (p = 99.99 by default), interpolated in its bin.
- ``entropy``: TensorRT's IInt8EntropyCalibrator2 recipe (Migacz, "8-bit Inference with TensorRT",
  GTC 2017): 2048-bin histogram of |x|; for each candidate of i = 128..2048 bins, P = the first i
  bins with the outliers added to bin i-1, Q = the first i bins merged into 128 levels and spread
  back over their non-empty bins; amax = the upper edge of the i with the least KL(P || Q).
- ``mse``: the threshold that minimises the expected squared quantization error over the histogram.

Why not onnxruntime.quantization.calibrate (the well-kept library that does this on ONNX):
its HistogramCollector grows the bin count without bound when the range grows (memory), uses a
signed histogram (half the resolution per sign for a symmetric scale), and its entropy method is
a no-op at its default 128 bins: with num_bins == num_quantized_bins there is one candidate, the
full range, i.e. exactly min-max (tested in tests/calibration/test_ranges.py). NVIDIA ModelOpt /
pytorch-quantization calibrate torch modules, not tensors streamed from an ONNX Runtime session.
This module is vectorised numpy (one pass of prefix sums per method), written for vitrt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from vitrt.errors import ConfigError

from .errors import CalibrationError

METHODS = ("minmax", "percentile", "entropy", "mse")
INT8_QMAX = 127
# The scale of an all-zero tensor or channel: any positive scale represents 0 exactly.
ZERO_AMAX_SCALE = 1.0
# Values histogrammed at a time (bounds the temporary memory of RangeCollector.update: ~48 MiB).
CHUNK = 1 << 22


@dataclass(frozen=True)
class RangeMethod:
    """How amax is chosen from a collected histogram (saved with the calibration artifacts).

    ``method``: one of METHODS. ``percentile``: in (0, 100], for "percentile". ``num_bins``: the
    histogram of |x| the methods read (2048, as TensorRT). ``num_quantized_bins``: the int8 levels
    of one sign (128) for "entropy". ``start_bin``: the smallest candidate in bins for "entropy"
    (128: amax >= max / 16 at 2048 bins). ``entropy_skip_zero_bin``: set the first bin's count to
    the second's before the KL search, as pytorch-quantization does, so a spike of exact zeros
    (ReLU outputs) does not pull the threshold down; off by default (TensorRT keeps the spike).
    ``entropy_max_clipped``: the largest fraction of values an "entropy" threshold may clip (0.01 =
    1 %); candidates clipping more are skipped. Without it the KL search has a degenerate minimum
    when |x| is bounded away from 0 (merged attention probabilities, say): for a small candidate
    every value lands in the last kept bin, P and Q are the same single spike and KL = 0, so the
    threshold clips nearly everything. Heavy tails are unaffected (Laplace: ~1e-4 clipped).
    """

    method: str = "entropy"
    percentile: float = 99.99
    num_bins: int = 2048
    num_quantized_bins: int = 128
    start_bin: int = 128
    entropy_skip_zero_bin: bool = False
    entropy_max_clipped: float = 0.01

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"calibration method {self.method!r} is unknown; use one of {list(METHODS)}")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile {self.percentile} must be in (0, 100], e.g. 99.99")
        if not 0.0 < self.entropy_max_clipped <= 1.0:
            raise ConfigError(f"entropy_max_clipped {self.entropy_max_clipped} must be in (0, 1]")
        if self.num_bins < 1 or self.num_quantized_bins < 1 or self.start_bin < 1:
            raise ConfigError("num_bins, num_quantized_bins and start_bin must be positive")
        if self.method == "entropy" and self.num_bins < self.num_quantized_bins:
            raise ConfigError(
                f"entropy needs num_bins ({self.num_bins}) >= num_quantized_bins "
                f"({self.num_quantized_bins}); TensorRT uses 2048 and 128"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Histogram(NamedTuple):
    """Counts of |x| per bin. counts: (n,) float64; edges: (n + 1,) float64 from 0 to amax."""

    counts: np.ndarray
    edges: np.ndarray

    @property
    def width(self) -> float:
        """Bin width, in the tensor's units."""
        return float(self.edges[1] - self.edges[0])


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.asarray(x)


class RangeCollector:
    """Streams the values of one tensor into a histogram of |x| with bounded memory.

    Internally ``num_bins * oversample`` int64 counts of equal width cover [0, top). The width is a
    power of two, the smallest with top > max |x| seen: when a batch exceeds top, the width doubles
    as often as needed and adjacent bins are summed, which is exact (no re-interpolation), so the
    counts do not depend on how the data was batched or ordered. ``histogram()`` resamples to
    ``num_bins`` bins over exactly [0, amax] (each output bin spans 2 to 4 internal bins at the
    default oversample of 4). Memory: 8 bytes per internal bin (64 KiB at the defaults) whatever
    the number of values.
    """

    def __init__(self, num_bins: int = 2048, oversample: int = 4) -> None:
        if num_bins < 1 or oversample < 1:
            raise ConfigError("num_bins and oversample must be positive")
        self.num_bins = num_bins
        self._counts = np.zeros(num_bins * oversample, dtype=np.int64)
        self._width = 0.0  # a power of two once a non-zero value arrived, 0 before
        self._amax = 0.0
        self.name = ""

    @property
    def amax(self) -> float:
        """Largest |x| seen so far (exact)."""
        return self._amax

    @property
    def count(self) -> int:
        """Number of values seen so far."""
        return int(self._counts.sum())

    @property
    def internal_width(self) -> float:
        """Width of the internal bins, in the tensor's units (0 before any non-zero value)."""
        return self._width

    def internal_counts(self) -> np.ndarray:
        """A copy of the internal counts: (num_bins * oversample,) int64 over [0, top)."""
        return self._counts.copy()

    def update(self, x: torch.Tensor | np.ndarray) -> None:
        """Add every value of ``x`` (any shape, floating) to the histogram of |x|.

        Works on chunks of CHUNK values, so the temporary memory is bounded whatever x's size.
        """
        flat = _as_numpy(x).ravel()
        if flat.dtype not in (np.float32, np.float64):
            flat = flat.astype(np.float32)
        if flat.size == 0:
            return
        batch_max = float(np.max(np.abs(flat)))
        if not math.isfinite(batch_max):
            where = f"tensor {self.name!r}" if self.name else "a tensor"
            raise CalibrationError(
                f"{where} holds NaN or infinite values during calibration. Fix: check the model "
                "and the calibration data (preprocessing, dtype) with a float32 run"
            )
        self._amax = max(self._amax, batch_max)
        n = self._counts.size
        if batch_max == 0.0:
            self._counts[0] += flat.size
            return
        self._fit(batch_max)
        for start in range(0, flat.size, CHUNK):
            a = np.abs(flat[start : start + CHUNK])
            # exact: dividing by a power of two only shifts the exponent
            index = np.floor(a / a.dtype.type(self._width)).astype(np.int64)
            np.minimum(index, n - 1, out=index)
            self._counts += np.bincount(index, minlength=n)

    def _fit(self, value: float) -> None:
        """Make top = width * n > value, keeping the width a power of two."""
        n = self._counts.size
        if self._width == 0.0:
            # value / n = m * 2**e with 0.5 <= m < 1, so 2**e is the least power of two above it
            self._width = math.ldexp(1.0, math.frexp(value / n)[1])
        elif value >= self._width * n:
            k = 2
            while self._width * k * n <= value:
                k *= 2
            self._grow(k)

    def _grow_to(self, width: float) -> None:
        if self._width == 0.0:  # only zeros so far: they stay in bin 0 at any width
            self._width = width
        elif width > self._width:
            self._grow(round(width / self._width))

    def merge(self, other: RangeCollector) -> None:
        """Add the values ``other`` collected (same bin count); exact, as both widths are powers of 2."""
        if other._counts.size != self._counts.size:
            raise ConfigError("merge needs collectors with the same num_bins and oversample")
        counts = other._counts
        if other._width != 0.0:
            self._grow_to(other._width)
            if other._width < self._width:  # bring other's counts to our (wider) grid
                counts = _sum_adjacent(counts, round(self._width / other._width))
        self._counts = self._counts + counts
        self._amax = max(self._amax, other._amax)

    def _grow(self, k: int) -> None:
        """Widen the bins k times (k a power of two): new bin j = sum of old bins jk .. jk+k-1."""
        self._counts = _sum_adjacent(self._counts, k)
        self._width *= k

    def histogram(self, num_bins: int | None = None) -> Histogram:
        """The histogram of |x| with ``num_bins`` (default: the collector's) bins over [0, amax].

        Counts are resampled from the internal bins by linear interpolation of the cumulative
        count (exact where the edges coincide); they sum to ``count``.
        """
        n_out = num_bins or self.num_bins
        total = float(self._counts.sum())
        if self._amax == 0.0:
            counts = np.zeros(n_out)
            counts[0] = total
            return Histogram(counts, np.zeros(n_out + 1))
        n = self._counts.size
        cum = np.concatenate([[0.0], np.cumsum(self._counts, dtype=np.float64)])
        inner_edges = np.arange(n + 1, dtype=np.float64) * self._width
        edges = np.linspace(0.0, self._amax, n_out + 1)
        cum_out = np.interp(edges, inner_edges, cum)
        cum_out[-1] = total  # every value is <= amax
        return Histogram(np.maximum(np.diff(cum_out), 0.0), edges)

    def compute_amax(self, method: RangeMethod | str = "entropy") -> float:
        """amax (in the tensor's units) by ``method``: a RangeMethod or a method name."""
        cfg = method if isinstance(method, RangeMethod) else RangeMethod(method)
        if self.count == 0:
            where = f"tensor {self.name!r}" if self.name else "the tensor"
            raise CalibrationError(f"no values were collected for {where}; run calibration data first")
        if cfg.method == "minmax" or self._amax == 0.0:
            return self._amax
        return compute_amax(self.histogram(cfg.num_bins), cfg)

    def scale(self, method: RangeMethod | str = "entropy") -> float:
        """Per-tensor symmetric int8 scale = amax / 127 (float32-representable)."""
        return scale_from_amax(self.compute_amax(method))


def _sum_adjacent(counts: np.ndarray, k: int) -> np.ndarray:
    """(n,) counts -> (n,) counts of k-times wider bins: out[j] = sum(counts[jk : jk + k])."""
    n = counts.size
    out = np.zeros(n, dtype=counts.dtype)
    if k >= n:
        out[0] = counts.sum()
        return out
    padded = np.concatenate([counts, np.zeros((-n) % k, dtype=counts.dtype)])
    summed = padded.reshape(-1, k).sum(axis=1)
    out[: summed.size] = summed
    return out


class ActivationRanges:
    """One RangeCollector per tensor name, filled batch by batch."""

    def __init__(self, num_bins: int = 2048, oversample: int = 4) -> None:
        self.num_bins, self.oversample = num_bins, oversample
        self._collectors: dict[str, RangeCollector] = {}

    def update(self, name: str, x: torch.Tensor | np.ndarray) -> None:
        """Add the values of tensor ``name`` from one batch."""
        collector = self._collectors.get(name)
        if collector is None:
            collector = self._collectors[name] = RangeCollector(self.num_bins, self.oversample)
            collector.name = name
        collector.update(x)

    def __getitem__(self, name: str) -> RangeCollector:
        return self._collectors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._collectors)

    def __len__(self) -> int:
        return len(self._collectors)

    def amaxes(self, method: RangeMethod | str = "entropy") -> dict[str, float]:
        """{tensor name: amax} in collection order."""
        return {name: c.compute_amax(method) for name, c in self._collectors.items()}

    def scales(self, method: RangeMethod | str = "entropy") -> dict[str, float]:
        """{tensor name: int8 scale = amax / 127}."""
        return {name: scale_from_amax(a) for name, a in self.amaxes(method).items()}


# ---------------------------------------------------------------------------------------------
# Methods on a histogram


def compute_amax(hist: Histogram, method: RangeMethod | str) -> float:
    """amax from a histogram of |x| (``Histogram``: counts, edges from 0 to the max)."""
    cfg = method if isinstance(method, RangeMethod) else RangeMethod(method)
    if float(hist.edges[-1]) == 0.0 or float(hist.counts.sum()) == 0.0:
        return 0.0
    if cfg.method == "minmax":
        return float(hist.edges[-1])
    if cfg.method == "percentile":
        return amax_percentile(hist, cfg.percentile)
    if cfg.method == "entropy":
        if cfg.entropy_skip_zero_bin and hist.counts.size > 1:
            counts = hist.counts.copy()
            counts[0] = counts[1]
            hist = Histogram(counts, hist.edges)
        return amax_entropy(hist, cfg.num_quantized_bins, cfg.start_bin, cfg.entropy_max_clipped)
    return amax_mse(hist)


def amax_percentile(hist: Histogram, percentile: float = 99.99) -> float:
    """The ``percentile`` (in (0, 100]) of |x|, linear inside the bin where it falls."""
    counts, edges = hist
    cum = np.cumsum(counts, dtype=np.float64)
    target = cum[-1] * percentile / 100.0
    j = int(np.searchsorted(cum, target, side="left"))
    j = min(j, counts.size - 1)
    before = cum[j - 1] if j > 0 else 0.0
    frac = (target - before) / counts[j] if counts[j] > 0 else 1.0
    return float(min(edges[j] + min(max(frac, 0.0), 1.0) * (edges[j + 1] - edges[j]), edges[-1]))


def entropy_divergences(
    counts: np.ndarray, num_quantized_bins: int = 128, start_bin: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """KL(P || Q) for every candidate of TensorRT's entropy calibration.

    ``counts``: (n,) histogram of |x|. Returns (candidates, kl): candidates (m,) int64 are the
    numbers of kept bins i = max(start_bin, num_quantized_bins) .. n; kl (m,) float64 (inf where Q
    is 0 on the outlier bin). For candidate i: P = counts[:i] with sum(counts[i:]) added to P[i-1];
    Q = counts[:i] merged into num_quantized_bins groups (bin j in group floor(j * q / i)), each
    group's sum spread evenly over its non-empty bins; both normalised.

    Computed from prefix sums, O(n * q) for all candidates at once:
    KL = (sum P log P - sum P log Q') / T - log T + log S, T = sum(counts), S = sum(counts[:i]),
    Q' the unnormalised Q, and sum over a group of P log Q' = G log(G / nonzero(G)).
    """
    h = np.asarray(counts, dtype=np.float64)
    n, q = h.size, num_quantized_bins
    first = max(start_bin, q)
    if n < q:
        raise ConfigError(f"entropy needs at least {q} bins, the histogram has {n}")
    cand = np.arange(min(first, n), n + 1, dtype=np.int64)
    total = h.sum()

    def xlogx(v: np.ndarray) -> np.ndarray:
        return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)

    cum = np.concatenate([[0.0], np.cumsum(h)])
    cum_nz = np.concatenate([[0], np.cumsum(h > 0)])
    cum_xlogx = np.concatenate([[0.0], np.cumsum(xlogx(h))])

    # group boundaries b[c, g] = ceil(g * i / q), g = 0..q: first bin of group g for candidate i
    g = np.arange(q + 1, dtype=np.int64)
    bounds = -((-g[None, :] * cand[:, None]) // q)
    group = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]  # (m, q) counts per group
    nonzero = cum_nz[bounds[:, 1:]] - cum_nz[bounds[:, :-1]]  # (m, q) non-empty bins per group
    safe_nz = np.maximum(nonzero, 1)
    p_log_q = np.where(group > 0, group * np.log(np.where(group > 0, group, 1.0) / safe_nz), 0.0).sum(1)

    kept = cum[cand]  # S
    outliers = total - kept
    last = h[cand - 1]
    q_last = group[:, -1] / safe_nz[:, -1]  # Q' on bin i-1 where it is non-empty
    with np.errstate(divide="ignore"):
        p_log_q = p_log_q + np.where(outliers > 0, outliers * np.log(np.where(last > 0, q_last, 1.0)), 0.0)
    p_log_p = cum_xlogx[cand] - xlogx(last) + xlogx(last + outliers)
    kl = (p_log_p - p_log_q) / total - math.log(total) + np.log(np.where(kept > 0, kept, 1.0))
    kl = np.where((last == 0) & (outliers > 0), np.inf, kl)
    kl = np.where(kept > 0, kl, np.inf)
    return cand, np.maximum(kl, 0.0)


def amax_entropy(
    hist: Histogram, num_quantized_bins: int = 128, start_bin: int = 128, max_clipped: float = 1.0
) -> float:
    """TensorRT's entropy (KL) threshold: the upper edge of the candidate with the least KL.

    With a histogram of only ``num_quantized_bins`` bins there is one candidate, the full range,
    so the result equals min-max: use 2048 bins (the trap of onnxruntime's default of 128).
    Candidates that clip more than ``max_clipped`` of the values (a fraction) are skipped; the
    full range is always a candidate (it clips nothing).
    """
    cand, kl = entropy_divergences(hist.counts, num_quantized_bins, start_bin)
    counts = np.asarray(hist.counts, dtype=np.float64)
    total = counts.sum()
    if max_clipped < 1.0 and total > 0:
        clipped = (total - np.concatenate([[0.0], np.cumsum(counts)])[cand]) / total
        kl = np.where(clipped > max_clipped, np.inf, kl)  # the last candidate clips 0: always kept
    best = int(cand[int(np.argmin(kl))])
    return float(hist.edges[best])


def mse_errors(hist: Histogram, qmax: int = INT8_QMAX) -> tuple[np.ndarray, np.ndarray]:
    """Expected squared quantization error per value for every threshold at a bin edge.

    Returns (thresholds (n,), mse (n,)) for thresholds t = edges[1..n]. A value below t is rounded
    to the grid of step s = t / qmax: error s^2 / 12 (uniform rounding noise); a value above t
    (taken at its bin centre c) is clipped: error (c - t)^2 + width^2 / 12.
    """
    counts, edges = hist
    h = np.asarray(counts, dtype=np.float64)
    width = float(edges[1] - edges[0])
    centres = (edges[:-1] + edges[1:]) / 2.0
    t = edges[1:]
    below = np.cumsum(h)  # values in bins < i for threshold edges[i], i = 1..n
    suffix = lambda v: np.concatenate([np.cumsum(v[::-1])[::-1][1:], [0.0]])  # noqa: E731
    above_n, above_c, above_c2 = suffix(h), suffix(h * centres), suffix(h * centres**2)
    step = t / qmax
    clip = above_c2 - 2.0 * t * above_c + t**2 * above_n + above_n * width**2 / 12.0
    mse = (below * step**2 / 12.0 + clip) / h.sum()
    return t, mse


def amax_mse(hist: Histogram, qmax: int = INT8_QMAX) -> float:
    """The threshold at a bin edge with the least expected squared quantization error."""
    t, mse = mse_errors(hist, qmax)
    return float(t[int(np.argmin(mse))])


# ---------------------------------------------------------------------------------------------
# Scales


def scale_from_amax(amax: float, qmax: int = INT8_QMAX) -> float:
    """Symmetric int8 scale = amax / qmax, rounded to float32; ZERO_AMAX_SCALE for amax = 0."""
    if not math.isfinite(amax) or amax < 0:
        raise CalibrationError(f"amax {amax} must be finite and >= 0")
    if amax == 0.0:
        return ZERO_AMAX_SCALE
    return float(np.float32(amax / qmax))


def weight_scales(weight: torch.Tensor | np.ndarray, axis: int = 0, qmax: int = INT8_QMAX) -> np.ndarray:
    """Per-channel symmetric int8 weight scales: (weight.shape[axis],) float32.

    scale[c] = max |weight[..., c, ...]| / qmax over every axis but ``axis``, the output channel:
    axis 0 for Conv (O, I, kh, kw) and Gemm with transB (N, K); axis 1 for MatMul's B (K, N).
    An all-zero channel gets ZERO_AMAX_SCALE.
    """
    w = np.abs(_as_numpy(weight).astype(np.float64, copy=False))
    if w.ndim == 0:
        raise ConfigError("weight_scales needs a tensor with at least one axis")
    axis = axis % w.ndim
    amax = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).max(axis=1)
    if not np.all(np.isfinite(amax)):
        raise CalibrationError("weights hold NaN or infinite values. Fix: check the checkpoint")
    scales = np.where(amax > 0, amax / qmax, ZERO_AMAX_SCALE)
    return scales.astype(np.float32)


def fake_quantize(x: torch.Tensor, scale: float | torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Quantize to int8 and back: clamp(round_half_even(x / scale), -128, 127) * scale (ONNX Q/DQ).

    ``scale``: a number, or per-channel (x.shape[axis],) values with ``axis``. Same shape as ``x``.
    """
    s = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    if axis is not None and s.dim() == 1:
        shape = [1] * x.dim()
        shape[axis] = -1
        s = s.view(shape)
    return torch.clamp(torch.round(x / s), -128, 127) * s
