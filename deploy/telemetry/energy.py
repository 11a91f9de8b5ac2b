"""Energy of a timed window from power samples, and idle power.

Samples are ``(timestamp in s, power in mW)`` from one monotonic clock. Energy is the trapezoid
integral of power over the window ``[t0, t1]``; at the edges the power is interpolated linearly
between the neighbouring samples, so a window that starts or ends between two samples counts only
its own share. Where the samples do not cover the whole window, only the covered part is integrated
and ``covered_s`` says how much that was: the caller decides whether that is good enough, rather
than this function inventing power outside what was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class PowerSample:
    """One reading: ``t_s`` seconds on a monotonic clock, ``power_mw`` milliwatts."""

    t_s: float
    power_mw: float


@dataclass(frozen=True)
class WindowEnergy:
    """Energy in J over the part of the window the samples cover (``covered_s`` of ``window_s`` s)."""

    energy_j: float
    window_s: float
    covered_s: float
    samples_in_window: int

    @property
    def mean_power_w(self) -> float | None:
        """Mean power over the covered part, in W (None when nothing was covered)."""
        return self.energy_j / self.covered_s if self.covered_s > 0 else None


def _interpolate_mw(a: PowerSample, b: PowerSample, t: float) -> float:
    if b.t_s == a.t_s:
        return a.power_mw
    return a.power_mw + (b.power_mw - a.power_mw) * (t - a.t_s) / (b.t_s - a.t_s)


def integrate_energy(samples: Sequence[PowerSample], t0: float, t1: float) -> WindowEnergy:
    """Trapezoid energy in J of ``samples`` over ``[t0, t1]`` (s), interpolating at the edges.

    ``samples`` need not be sorted. With fewer than two samples, or none overlapping the window,
    the energy is 0 J over 0 s covered.
    """
    if t1 < t0:
        raise ValueError(f"window ends before it starts: t0={t0} s, t1={t1} s")
    ordered = sorted(samples, key=lambda s: s.t_s)
    energy_mj = 0.0  # mW x s = mJ
    covered = 0.0
    for a, b in pairwise(ordered):
        lo, hi = max(a.t_s, t0), min(b.t_s, t1)
        if hi <= lo:
            continue
        p_lo, p_hi = _interpolate_mw(a, b, lo), _interpolate_mw(a, b, hi)
        energy_mj += 0.5 * (p_lo + p_hi) * (hi - lo)
        covered += hi - lo
    inside = sum(1 for s in ordered if t0 <= s.t_s <= t1)
    return WindowEnergy(
        energy_j=energy_mj / 1e3, window_s=t1 - t0, covered_s=covered, samples_in_window=inside
    )


def energy_per_inference_mj(energy_j: float, inferences: int) -> float:
    """Energy per inference in mJ: ``energy_j`` (J) / ``inferences``."""
    if inferences <= 0:
        raise ValueError(f"inferences must be positive, got {inferences}")
    return energy_j * 1e3 / inferences


def idle_power_w(samples: Sequence[PowerSample], before_s: float) -> float | None:
    """Mean power in W of the samples taken before ``before_s`` (the start of the timed run).

    A plain mean of the readings, not a time-weighted one: idle samples come at a fixed interval and
    the mean of readings is what a user comparing with tegrastats' own average expects. None when no
    sample precedes the run.
    """
    idle = [s.power_mw for s in samples if s.t_s < before_s]
    if not idle:
        return None
    return sum(idle) / len(idle) / 1e3
