"""Noise calibration (loop/noise.py): the keep rule under a benchmark whose noise we control.

The simulation plays the daemon's session with loop.noise.judge, the function the scheduler
calls: calibrate the incumbent (R runs; incumbent = their mean, spread = 1.4826 x MAD), judge
each candidate (close wins re-run and judged on their mean), a keep makes the candidate the
incumbent, and every `recalibrate_every_keeps` keeps the incumbent is measured again. The
settings are the daemon's defaults (loop.config.Config).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import pytest

from loop import noise
from loop.config import Config

SIGMA = 0.01  # run-to-run spread on an Apple GPU at a small proxy (LESSONS.md: up to 0.03)
DEFAULTS = Config()


@dataclass
class Session:
    """One simulated session at one profile; candidate quality `true_gain` below the start."""

    rng: random.Random
    runs: int = DEFAULTS.noise_runs["breadth"]
    k: float = DEFAULTS.noise_k
    rerun_close: int = DEFAULTS.noise_rerun_close
    every: int = DEFAULTS.noise_recalibrate_every_keeps
    min_improvement: float = DEFAULTS.min_improvement
    truth: float = 1.0  # true val_bpb of the incumbent

    def run(self, quality: float) -> float:
        return quality + self.rng.gauss(0.0, SIGMA)

    def calibrate(self) -> None:
        values = [self.run(self.truth) for _ in range(self.runs)]
        self.incumbent, self.n_incumbent = statistics.fmean(values), self.runs
        self.spread = noise.robust_spread(values)
        self.keeps_since = 0

    def experiment(self, true_gain: float) -> bool:
        quality = self.truth - true_gain
        rule = noise.Rule(self.min_improvement, self.k, self.spread, self.rerun_close)
        judged = noise.judge(self.run(quality), self.incumbent, self.n_incumbent, rule,
                             lambda: self.run(quality))
        if judged.verdict.status != "keep":
            return False
        self.truth, self.incumbent, self.n_incumbent = quality, judged.mean, len(judged.values)
        self.keeps_since += 1
        if noise.calibration_due(self.keeps_since, self.every):
            self.calibrate()
        return True


def false_keep_rate(sessions: int, experiments: int, seed: int) -> float:
    keeps = 0
    for i in range(sessions):
        session = Session(random.Random(seed * 1000 + i))
        session.calibrate()
        keeps += sum(session.experiment(0.0) for _ in range(experiments))
    return keeps / (sessions * experiments)


def naive_false_keep_rate(sessions: int, experiments: int, seed: int) -> float:
    """One baseline run, one run per candidate, keep when better by min_improvement."""
    keeps = 0
    for i in range(sessions):
        rng = random.Random(seed * 1000 + i)
        incumbent = 1.0 + rng.gauss(0.0, SIGMA)
        for _ in range(experiments):
            value = 1.0 + rng.gauss(0.0, SIGMA)
            if noise.naive_keep(value, incumbent, DEFAULTS.min_improvement):
                keeps, incumbent = keeps + 1, value
    return keeps / (sessions * experiments)


# --------------------------------------------------------------------------- simulation


def test_false_keep_rate_of_equal_candidates_is_under_2_percent_and_far_below_naive():
    # 200 experiments of equal true quality per session; 20 sessions so that the rate does
    # not hinge on one lucky calibration (the per-session rates are printed too).
    per_session = [false_keep_rate(1, 200, seed) for seed in range(20)]
    calibrated = statistics.fmean(per_session)
    naive = naive_false_keep_rate(20, 200, 0)
    print(f"\nfalse keeps over 200 equal experiments: calibrated {calibrated:.2%} "
          f"(sessions {min(per_session):.1%}..{max(per_session):.1%}), naive {naive:.2%}")
    assert calibrated < 0.02
    assert naive > 5 * calibrated and naive > 0.10


def test_true_improvement_of_three_spreads_is_kept_at_least_90_percent_of_the_time():
    kept = 0
    trials = 1000
    for i in range(trials):
        session = Session(random.Random(10_000 + i))
        session.calibrate()
        kept += session.experiment(3 * SIGMA)
    print(f"\ntrue improvement of 3 x spread kept {kept / trials:.1%}")
    assert kept / trials >= 0.90


def test_reruns_are_what_keep_a_true_improvement_that_wins_by_less_than_the_margin():
    def rate(rerun_close: int) -> float:
        kept = 0
        for i in range(400):
            session = Session(random.Random(20_000 + i), rerun_close=rerun_close)
            session.calibrate()
            kept += session.experiment(3 * SIGMA)
        return kept / 400

    assert rate(2) > rate(0) + 0.1


# --------------------------------------------------------------------------- the pieces


def test_robust_spread_is_mad_scaled_to_a_standard_deviation_and_ignores_an_outlier():
    assert noise.robust_spread([1.0, 1.0, 1.0]) == 0.0
    assert noise.robust_spread([1.0, 2.0, 3.0]) == pytest.approx(1.4826)
    assert noise.robust_spread([1.0, 2.0, 3.0, 100.0]) == pytest.approx(1.4826)
    assert noise.robust_spread([1.0]) is None
    rng = random.Random(0)
    sample = [rng.gauss(0, 0.01) for _ in range(20_000)]
    assert noise.robust_spread(sample) == pytest.approx(0.01, rel=0.03)


def test_margin_is_k_times_the_noise_of_the_comparison_never_below_min_improvement():
    assert noise.margin_for(0.002, 2.0, 0.01, 1, 1) == pytest.approx(2 * 0.01 * 2 ** 0.5)
    assert noise.margin_for(0.002, 2.0, 0.01, 3, 5) == pytest.approx(
        2 * 0.01 * (1 / 3 + 1 / 5) ** 0.5)
    assert noise.margin_for(0.002, 2.0, 0.0001) == 0.002
    assert noise.margin_for(0.002, 2.0, None) == 0.002


def test_a_close_win_is_rerun_and_judged_on_its_mean():
    rule = noise.Rule(0.002, 2.0, 0.01, rerun_close=2)
    reruns = iter([0.97, 0.97])
    judged = noise.judge(0.99, 1.0, 5, rule, lambda: next(reruns))
    assert judged.values == [0.99, 0.97, 0.97]
    assert judged.verdict.status == "keep"
    assert judged.margin == pytest.approx(2 * 0.01 * (1 / 3 + 1 / 5) ** 0.5)
    assert judged.verdict.reason.startswith("mean of 3 runs")


def test_a_clear_win_or_a_loss_is_not_rerun():
    rule = noise.Rule(0.002, 2.0, 0.01, rerun_close=2)

    def never() -> float:
        raise AssertionError("re-run")

    assert noise.judge(0.95, 1.0, 5, rule, never).verdict.status == "keep"
    assert noise.judge(1.01, 1.0, 5, rule, never).verdict.status == "discard"
    assert noise.judge(0.99, None, 5, rule, never).verdict.status == "keep"  # baseline


def test_calibration_is_due_after_every_n_keeps_and_never_when_zero():
    assert noise.calibration_due(3, 3) and not noise.calibration_due(2, 3)
    assert not noise.calibration_due(10, 0)


def test_estimate_says_where_the_spread_came_from():
    assert noise.NoiseEstimate(0.01, "calibrated", 5, "E0003").describe() == (
        "calibrated from 5 runs (E0003)")
    assert noise.NoiseEstimate(0.004, "fixed").describe().startswith("fixed")
