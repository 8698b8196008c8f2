"""Noise-aware keep decisions (SPEC section 6, issue 7): pure logic, no I/O.

The same code run twice gives different val_bpb on an Apple GPU. The daemon measures the
incumbent R times at a profile (a *calibration*), estimates the per-run spread robustly
(median absolute deviation scaled to a standard deviation), and keeps a candidate only when
it wins by `margin = max(min_improvement, k x noise)`, where `noise` is the standard error of
the difference being judged: `spread x sqrt(1/n_candidate + 1/n_incumbent)` (a value that is
the mean of several runs is less noisy than one run). A candidate that wins by less than the
margin may be re-run and judged on its mean, against the margin for that many runs.

The judge (loop.judge.margin.judge_with_reruns) and the simulation in tests/test_noise.py
use these same functions, so the false-keep rate the test measures is the daemon's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAD_TO_SD = 1.4826  # MAD x this = the standard deviation, for normally distributed noise


def robust_spread(values: Sequence[float]) -> float | None:
    """The per-run standard deviation estimated as 1.4826 x MAD; None for fewer than 2 values."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return None
    center = statistics.median(finite)
    return MAD_TO_SD * statistics.median(abs(v - center) for v in finite)


def pooled_spread(groups: Sequence[Sequence[float]]) -> float | None:
    """robust_spread over several groups of repeated runs (each group = one code, many runs).

    Calibrations and re-run candidates at a profile all measure the same noise; pooling them
    makes the estimate better as a session goes on. Each run's absolute deviation from its
    own group's median, then 1.4826 x their median: for one group, exactly robust_spread.
    None while no group has 2 runs.
    """
    deviations = []
    for group in groups:
        finite = [v for v in group if math.isfinite(v)]
        if len(finite) >= 2:
            center = statistics.median(finite)
            deviations += [abs(v - center) for v in finite]
    return MAD_TO_SD * statistics.median(deviations) if deviations else None


@dataclass(frozen=True)
class NoiseEstimate:
    """The per-run spread of val_bpb at one profile and where it came from."""

    spread: float | None
    source: str  # "fixed" (autogolf.yaml noise.fixed) or "calibrated"
    runs: int = 0  # calibration runs behind a calibrated spread
    row_id: str | None = None  # the calibration's ledger row

    def describe(self) -> str:
        if self.source == "calibrated":
            where = f" ({self.row_id})" if self.row_id else ""
            return f"calibrated from {self.runs} runs{where}"
        return "fixed (autogolf.yaml noise.fixed)"


def comparison_noise(spread: float | None, n_candidate: int, n_incumbent: int) -> float | None:
    """Standard error of (incumbent - candidate) when each is a mean of that many runs."""
    if spread is None or not math.isfinite(spread):
        return None
    n_candidate, n_incumbent = max(n_candidate, 1), max(n_incumbent, 1)
    return abs(spread) * math.sqrt(1 / n_candidate + 1 / n_incumbent)


def margin(min_improvement: float, k: float, noise: float | None) -> float:
    """max(min_improvement, k x noise); an unknown noise (None, NaN) leaves min_improvement."""
    if not (min_improvement >= 0 and k >= 0):
        raise ValueError(f"min_improvement and k must be >= 0, got {min_improvement}, {k}")
    if noise is None or not math.isfinite(noise):
        return min_improvement
    return max(min_improvement, k * abs(noise))


def margin_for(min_improvement: float, k: float, spread: float | None, n_candidate: int = 1,
               n_incumbent: int = 1) -> float:
    """max(min_improvement, k x noise of the comparison)."""
    return margin(min_improvement, k, comparison_noise(spread, n_candidate, n_incumbent))


def is_close(val_bpb: float, incumbent: float, margin: float) -> bool:
    """A win, but by less than the margin: worth re-running."""
    gain = incumbent - val_bpb
    return 0 < gain < margin


def calibration_due(keeps_since_calibration: int, every: int) -> bool:
    """After every `every` keeps (0 = only at session start) the incumbent is re-measured."""
    return every > 0 and keeps_since_calibration >= every


def naive_keep(value: float, incumbent: float, min_improvement: float) -> bool:
    """The rule without noise: one run, keep if better by min_improvement (for comparison)."""
    return incumbent - value >= min_improvement
