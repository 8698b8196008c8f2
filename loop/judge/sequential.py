"""A sequential keep rule with a per-decision false-keep guarantee (issue 16): pure, no I/O.

The evidence is paired. The judge runs the candidate and the incumbent at the same seeds
(`seed_schedule`) and this module looks only at the paired differences
`d = incumbent - candidate` (positive = the candidate is better). A seed's own effect on the
score cancels in `d`; what is left (run-to-run noise on a GPU, the change's interaction with
the seed on a deterministic CPU) is the spread `s` of `d`.

Hypotheses (from the config): H0 "no better than the incumbent" (mean `mu <= 0`) against
H1 "better by at least `min_improvement`".

The test: repeated one-sided Student-t bounds, looked at after every pair from `min_runs` to
`max_runs`, with alpha split evenly over the looks (Bonferroni) and beta front-loaded.

- keep when the lower bound `mean - t(1 - alpha/L) x sd / sqrt(n) > 0` and the mean gain is
  at least `min_improvement`;
- discard when the upper bound `mean + t(1 - beta_n) x sd / sqrt(n)` is below the gain this
  profile can resolve within the cap (`resolvable_gain`, at least `min_improvement`); the
  look after the k-th pair from `min_runs` gets beta_n = beta x (1/k) / sum(1/j), so a clear
  loser is discarded at the first looks, where that saves the most runs;
- a futility look after the first pair (issue 26): discard when that one difference plus
  `t(1 - futility)` times the earlier decisions' spread is below the resolvable gain. It
  never keeps (one run never decides a keep) and needs a spread from earlier decisions;
- curtailment (issue 26): from `min_runs` on, stop a candidate whose chance of a keep by
  `max_runs` is under `curtail`, that chance computed as if its mean gain so far were its
  true gain (conditional power under the current trend; `keep_chance`). It targets the
  candidates whose gain is real but below what the cap resolves: at smoke they ran to the
  cap (about 6 candidate runs and as many of the incumbent's) and ended `inconclusive`
  anyway. It never keeps, so it adds no false keep; it costs power only where the early
  pairs understate a gain (bench/false_keeps.py measures it). Its outcome is a discard,
  flagged `below_resolution` when the mean gain reaches min_improvement (the judge records
  that as `inconclusive`, and a stronger rung may take it up), as the discard bound's is;
- continue otherwise; undecided at the cap is `inconclusive` (its evidence is kept, and a
  stronger profile can take it up).

Why this and not Wald's SPRT: with an unknown spread the SPRT's error rates are only
approximate, and worst when the spread is estimated from a few runs, which is exactly the
first decision of a session. Here each look is an exact t-test (normal scores; the
candidate's own pairs, plus a prior that is exact when the candidates' spreads vary as it
says), so by the union bound P(false keep) <= alpha at *every* decision, whatever the true
spread and however few runs came before. The price is conservatism: the true rate is
below alpha (bench/false_keeps.py measures it). The discard bounds never add false keeps;
they can only cost power: at most beta + futility at the resolvable gain (union bound).
Measured (bench/false_keeps.py, 1,000 sessions x 20 decisions, sigma 0.004-0.03,
docs/BENCHMARKS.md): equal candidates cost 3.8-4.1 runs per decision in the gpu and cpu
scenarios and 4.2-5.1 in `mixed`, against 4.9-5.8 with no futility look and even shares
(the first decisions of a session, with no spread to lean on, cost 11-12 runs; from the
fourth on about 3-4.5); a 3-sigma gain is kept 95.6-98.8% of the time.

The spread (SpreadPool): each decision contributes its within-decision sum of squared
deviations from its own mean (n - 1 degrees of freedom; each decision has its own true
gain, so it is centred on its own mean, and a decision's mean is never counted as a zero
deviation as the pooled MAD did). The current candidate's variance is estimated as
`(SS + d0 x s0^2) / (n - 1 + d0)`, with Student-t bounds on `n - 1 + d0` degrees of freedom:
its own pairs plus the earlier decisions as a scaled-inverse-chi-square(d0, s0^2) prior.
That is the small-sample-correct treatment (the posterior of the candidate's variance under
that prior; Smyth's "moderated t" of limma, 2004): the bound widens by itself while few
runs exist (t(0.998) is 15.8 at 2 dof, 3.7 at 10, 2.9 at 1000), and the estimate is
unbiased for s^2 (1.4826 x MAD of 5 runs has its median near 0.745 s).

How much the earlier decisions weigh (d0) is measured, not assumed, because candidates do
not share one spread. On a deterministic CPU the paired spread is the change's interaction
with the seed: measured at smoke over seeds 1337-1342, 0.0147 for MATRIX_LR 0.04 -> 0.08 and
0.0029 for 0.04 -> 0.044. A fixed pool would pin a big change to the small changes' spread
(bench/false_keeps.py, scenario `mixed`: 2.7% false keeps with the pool at 10 dof, 4.6% at
the worst decision). So d0 comes from the spread of the earlier decisions' log variances
beyond what sampling explains (Var[log chi2_k] = trigamma(k/2); limma's method of
moments): near-equal spreads give the pool its full weight, spreads that differ 5x give
it about 2 dof. d0 is at most `max_pooled_dof` (default 10) and the number of decisions,
and 0 before MIN_DECISIONS (3) decisions, when nothing says how alike candidates are.
Measured (sigma 0.01, 1500 sessions of 20 equal candidates): mean false-keep rate 0.43%
(gpu), 0.63% (cpu), 1.41% (mixed, worst decision 2.0%), against 1.16% / 0.98% with no pool
at all, which costs about 20% more runs where the spread is common. An optional
prior from a configured spread (`prior_sd` with `prior_dof` pseudo-dof) makes the first
decisions less cautious; it is off by default because it trades the exact guarantee for a
bet that the configured spread is right.

A candidate whose every difference is exactly 0 from `min_runs` pairs on is discarded at
once: on a deterministic backend it measures as the incumbent itself at every seed (a knob
that this profile overrides, a change to code the profile never runs), and more pairs would
say the same.

One run never decides: `min_runs >= 2` (a ValueError below that). A single pair has no
within-decision spread, so nothing would check that the pooled spread applies to this
candidate (a large change interacts with the seed more than a small one); and on a
deterministic backend the first pair says nothing about the seed spread at all. When every
difference so far is identical (sd 0) nothing measured the spread yet: the rule continues.

After a keep, the incumbent's value is optimistic (the runs were selected because they won).
Decisions never use a stored incumbent score, only pairs measured at the same seeds, so the
optimism can only enter through reused runs, and the judge does reuse them: the next
decisions pair their candidates with the kept candidate's own runs at the seeds of its
decision (one seed schedule per session, `seed_schedule`) and run it at further seeds only
when a decision needs more pairs. That is exact on a deterministic CPU (a re-run gives the
same number) and on a GPU it can only make the next candidate's task harder (its
incumbent's runs were lucky), never add a false keep. bench/false_keeps.py measures it
against re-measuring the new incumbent at a fresh block of seeds (`seq-fresh`, the earlier
design): false keeps and power alike, 1.5-2.8 fewer runs per decision after a keep. What
the judge stores for the new incumbent's score is `Outcome.incumbent_estimate()` (the mean of
its selected runs, flagged as such, with the gain as measured and its lower bound), and
`refreshed_incumbent(runs)` once later decisions have run it at seeds its keep never saw.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from loop.judge.distributions import (
    chi2_quantile,
    digamma,
    t_bound,
    trigamma,
    trigamma_inverse,
)

DECISIONS = ("keep", "discard", "continue", "inconclusive")
SEED_BLOCK = 1000  # seeds per incumbent epoch: epoch e uses base + e*SEED_BLOCK + 0..n-1
_ZERO_SD = 1e-12  # below this a spread is "not measured" (identical differences)


# --------------------------------------------------------------------------- the seeds


def seed_schedule(base_seed: int, n: int, epoch: int = 0) -> list[int]:
    """The seeds of the first `n` pairs of a decision, the same for candidate and incumbent.

    Epoch 0, the judge's, starts at `base_seed` itself (the frozen SEED, so the incumbent's
    baseline run is the first pair's incumbent run). Later epochs are blocks of SEED_BLOCK
    seeds that no epoch before used (bench/false_keeps.py's `seq-fresh` measures a new
    incumbent there).
    """
    if not isinstance(n, int) or n < 0 or n > SEED_BLOCK:
        raise ValueError(f"seed_schedule: n must be an int in 0..{SEED_BLOCK}, got {n!r}")
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"seed_schedule: epoch must be an int >= 0, got {epoch!r}")
    start = base_seed + epoch * SEED_BLOCK
    return list(range(start, start + n))


# --------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class SequentialRule:
    """The settings of the sequential keep rule at one profile.

    `min_improvement`: the "better by" of H1 (autogolf.yaml min_improvement).
    `alpha`: the false-keep rate allowed per decision (a candidate no better than the
    incumbent kept). `beta`: the miss rate allowed at the resolvable gain.
    `max_runs`: the cap on pairs (candidate run + incumbent run at one seed) per decision.
    `min_runs`: pairs before the first look (>= 2: one run never decides a keep).
    `futility`: the miss level of the futility look after the first pair (a clear loser
    discarded after one run; 0: no such look), on top of beta (the later looks share beta).
    `curtail`: discard a candidate whose chance of a keep by `max_runs`, at its mean gain
    so far, is under this (`keep_chance`; 0: never).
    """

    min_improvement: float
    alpha: float = 0.02
    beta: float = 0.30
    max_runs: int = 10
    min_runs: int = 2
    futility: float = 0.30
    curtail: float = 0.03

    def __post_init__(self) -> None:
        _check_number("min_improvement", self.min_improvement, 0.0, math.inf, "a number >= 0")
        _check_number("alpha", self.alpha, 0.0, 0.5, "a rate in (0, 0.5), e.g. 0.02",
                      open_low=True, open_high=True)
        _check_number("beta", self.beta, 0.0, 0.5, "a rate in (0, 0.5), e.g. 0.30",
                      open_low=True, open_high=True)
        for name in ("min_runs", "max_runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name}: got {value!r}; allowed: a whole number >= 2 "
                                 "(one run never decides)")
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs: got {self.max_runs} < min_runs {self.min_runs}; "
                             "allowed: max_runs >= min_runs")
        _check_number("futility", self.futility, 0.0, 0.5, "a rate in [0, 0.5), e.g. 0.30 "
                      "(0: no futility look)", open_high=True)
        _check_number("curtail", self.curtail, 0.0, 0.5, "a chance in [0, 0.5), e.g. 0.03 "
                      "(0: never curtail)", open_high=True)
        if self.max_runs > SEED_BLOCK:
            raise ValueError(f"max_runs: got {self.max_runs}; allowed: at most {SEED_BLOCK} "
                             "(one block of the seed schedule)")

    @property
    def looks(self) -> int:
        """How many times the evidence is tested: after each pair from min_runs to max_runs."""
        return self.max_runs - self.min_runs + 1

    def alpha_at(self, n: int) -> float:
        """The false-keep level of the look after `n` pairs (they sum to alpha)."""
        return self.alpha * _share(self, n)

    def beta_at(self, n: int) -> float:
        """The miss level of the discard bound after `n` pairs: `futility` after pair 1,
        beta shared by the looks from min_runs on, front-loaded (_front_share)."""
        if n == 1 and self.futility > 0:
            return self.futility
        return self.beta * _front_share(self, n)


def _share(rule: SequentialRule, n: int) -> float:
    """The share of the error rates spent at the look after `n` pairs: even (Bonferroni)."""
    if not rule.min_runs <= n <= rule.max_runs:
        raise ValueError(f"no look after {n} pairs (looks: {rule.min_runs}..{rule.max_runs})")
    return 1.0 / rule.looks


def _front_share(rule: SequentialRule, n: int) -> float:
    """The share of the discard looks' beta spent after `n` pairs: front-loaded, weight
    1/k at the k-th look (a clear loser is discarded at the first looks, where a discard
    saves the most runs; the union bound holds for any shares that sum to 1)."""
    _share(rule, n)  # refuses a look that does not exist
    weights = [1.0 / k for k in range(1, rule.looks + 1)]
    return weights[n - rule.min_runs] / math.fsum(weights)


def _check_number(name: str, value: object, low: float, high: float, allowed: str, *,
                  open_low: bool = False, open_high: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (value > low if open_low else value >= low)
          and (value < high if open_high else value <= high))
    if not ok:
        raise ValueError(f"{name}: got {value!r}; allowed: {allowed}")


# --------------------------------------------------------------------------- the spread


@dataclass(frozen=True)
class Spread:
    """An estimate of the sd of paired differences and how much evidence is behind it."""

    sd: float | None  # None: nothing measured yet
    dof: float  # degrees of freedom (pooled pairs minus one per decision, plus prior's)

    def interval(self, level: float = 0.90) -> tuple[float, float] | None:
        """A `level` confidence interval for the true sd (chi-square); None when unknown."""
        if self.sd is None or self.dof <= 0:
            return None
        tail = (1.0 - level) / 2.0
        ss = self.sd ** 2 * self.dof
        return (math.sqrt(ss / chi2_quantile(1.0 - tail, self.dof)),
                math.sqrt(ss / chi2_quantile(tail, self.dof)))

    def describe(self) -> str:
        if self.sd is None:
            return "spread unknown (no repeated pairs yet)"
        return f"sd {self.sd:.4f} of paired differences ({self.dof:g} dof)"


MIN_DECISIONS = 3  # earlier decisions before they inform a candidate's spread at all


@dataclass
class SpreadPool:
    """The pooled spread of paired differences at one profile, over a session's decisions.

    The judge keeps one per profile (and backend), feeds it every finished decision's
    differences (`add`; run_decision does it), and rebuilds it from the ledger on resume
    (`from_decisions`). The earlier decisions become a prior for the current candidate's
    spread (`prior`, the module docstring says how). `prior_sd`/`prior_dof`: an optional
    configured spread counted as that many pseudo-degrees of freedom.
    """

    prior_sd: float | None = None
    prior_dof: float = 0.0
    max_pooled_dof: float = 10.0  # earlier decisions count as at most this many dof
    groups: list[tuple[float, int]] = field(default_factory=list)  # (SS, dof) per decision
    _cache: tuple[int, tuple[float, float]] | None = field(default=None, repr=False,
                                                            compare=False)

    def __post_init__(self) -> None:
        if not self.max_pooled_dof > 0:  # also refuses NaN; math.inf = no cap
            raise ValueError(f"max_pooled_dof: got {self.max_pooled_dof!r}; allowed: a "
                             "number > 0 (math.inf: no cap)")
        if self.prior_dof < 0 or not math.isfinite(self.prior_dof):
            raise ValueError(f"prior_dof: got {self.prior_dof!r}; allowed: a number >= 0")
        if self.prior_dof > 0:
            if self.prior_sd is None:
                raise ValueError("prior_sd: needed when prior_dof > 0; allowed: a number > 0")
            _check_number("prior_sd", self.prior_sd, 0.0, math.inf, "a number > 0",
                          open_low=True)

    @classmethod
    def from_decisions(cls, decisions: Iterable[Sequence[float]], prior_sd: float | None = None,
                       prior_dof: float = 0.0, max_pooled_dof: float = 10.0) -> SpreadPool:
        pool = cls(prior_sd, prior_dof, max_pooled_dof)
        for diffs in decisions:
            pool.add(diffs)
        return pool

    @property
    def sum_sq(self) -> float:
        return math.fsum(ss for ss, _ in self.groups)

    @property
    def dof(self) -> int:
        return sum(k for _, k in self.groups)

    @property
    def decisions(self) -> int:
        return len(self.groups)

    def add(self, diffs: Sequence[float]) -> None:
        """One finished decision's paired differences (fewer than 2 add nothing)."""
        ss, dof = _within(diffs)
        if dof > 0:
            self.groups.append((ss, dof))

    def prior(self) -> tuple[float, float]:
        """(s0^2, d0): the earlier decisions as a scaled-inverse-chi-square prior for the
        current candidate's variance; d0 = 0 while they say nothing (module docstring)."""
        if self._cache is None or self._cache[0] != len(self.groups):
            self._cache = (len(self.groups), self._fit_prior())
        return self._cache[1]

    def _fit_prior(self) -> tuple[float, float]:
        spread = [(ss, k) for ss, k in self.groups if ss > 0]
        if len(spread) < MIN_DECISIONS:
            return 0.0, 0.0
        pooled = self.sum_sq / self.dof
        limit = min(self.max_pooled_dof, float(len(spread)), float(self.dof))
        excess = _excess_log_variance(spread)
        if excess <= 0:  # no more variation between decisions than sampling explains
            return pooled, limit
        d0 = 2.0 * trigamma_inverse(excess)
        if d0 >= limit:
            return pooled, limit
        centre = statistics.fmean(_log_var_unbiased(ss, k) for ss, k in spread)
        return math.exp(centre + digamma(d0 / 2) - math.log(d0 / 2)), d0

    def estimate(self, current: Sequence[float] = ()) -> Spread:
        """The current candidate's spread: its own differences, the earlier decisions'
        prior and the configured prior, each with its degrees of freedom."""
        ss, dof = _within(current)
        s0_sq, d0 = self.prior()
        ss += d0 * s0_sq
        dof += d0
        if self.prior_dof > 0 and self.prior_sd is not None:
            ss += self.prior_dof * self.prior_sd ** 2
            dof += self.prior_dof
        if dof <= 0:
            return Spread(None, 0.0)
        return Spread(math.sqrt(ss / dof), float(dof))


def _log_var_unbiased(ss: float, k: int) -> float:
    """log(SS/k) less its sampling bias: E[log(chi2_k / k)] = digamma(k/2) - log(k/2)."""
    return math.log(ss / k) - digamma(k / 2) + math.log(k / 2)


def _excess_log_variance(groups: Sequence[tuple[float, int]]) -> float:
    """The variance of log sigma_j^2 between decisions beyond what sampling explains
    (Var[log chi2_k] = trigamma(k/2)); the method of moments of Smyth's limma (2004)."""
    logs = [_log_var_unbiased(ss, k) for ss, k in groups]
    return statistics.variance(logs) - statistics.fmean(trigamma(k / 2) for _, k in groups)


def _within(diffs: Sequence[float]) -> tuple[float, int]:
    """(sum of squared deviations from the mean, n - 1) of one decision's differences."""
    values = [float(v) for v in diffs]
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"paired differences must be finite, got {values}")
    if len(values) < 2:
        return 0.0, 0
    mean = math.fsum(values) / len(values)
    return math.fsum((v - mean) ** 2 for v in values), len(values) - 1


# --------------------------------------------------------------------------- what it resolves


def resolvable_gain(rule: SequentialRule, spread: Spread | SpreadPool) -> float | None:
    """The smallest true gain the run cap confirms with power about 1 - beta; None = unknown.

    At the cap the keep bound sits `t(1 - alpha/L) x sd / sqrt(N)` above zero, so a gain
    `(t(1 - alpha/L) + t(1 - beta)) x sd / sqrt(N)` crosses it with probability 1 - beta
    (the fixed-sample approximation at the last look, with the dof the cap would bring; the
    earlier looks add a little power, the discard bound takes at most beta/L per look).
    Never below `min_improvement`, which a keep needs anyway.
    """
    if isinstance(spread, SpreadPool):
        spread = spread.estimate()
    if spread.sd is None or spread.sd <= _ZERO_SD:
        return None
    dof = spread.dof + rule.max_runs - 1  # the current decision's pairs, at the cap
    width = (t_bound(1.0 - rule.alpha_at(rule.max_runs), dof)
             + t_bound(1.0 - rule.beta, dof)) * spread.sd / math.sqrt(rule.max_runs)
    return max(rule.min_improvement, width)


def pairs_to_resolve(rule: SequentialRule, spread: Spread | SpreadPool, gain: float
                     ) -> int | None:
    """The smallest cap on pairs whose resolvable gain is <= `gain` (for status: "a gain of
    0.002 at smoke needs N pairs"); None when the spread is unknown or no cap up to
    SEED_BLOCK is enough. Binary search: the resolvable gain falls as the cap grows."""
    if isinstance(spread, SpreadPool):
        spread = spread.estimate()

    def enough(cap: int) -> bool:
        probe = dataclasses.replace(rule, max_runs=cap)
        resolved = resolvable_gain(probe, spread)
        return resolved is not None and resolved <= gain

    if gain < rule.min_improvement or not enough(SEED_BLOCK):
        return None
    low, high = rule.min_runs, SEED_BLOCK  # enough(high) holds
    while low < high:
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid + 1
    return low


# --------------------------------------------------------------------------- one step


@dataclass(frozen=True)
class Step:
    """What the evidence so far says: decision, a reason with numbers, the statistics."""

    decision: str  # one of DECISIONS
    reason: str
    stats: dict[str, float | int | None] = field(default_factory=dict)


def _f(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def step(diffs: Sequence[float], rule: SequentialRule, pool: SpreadPool) -> Step:
    """keep | discard | continue | inconclusive for the paired differences so far.

    `diffs[i]` = incumbent - candidate at the i-th seed of the schedule (positive = the
    candidate is better). `pool` holds the earlier decisions at this profile only.
    """
    n = len(diffs)
    if n > rule.max_runs:
        raise ValueError(f"step: {n} pairs is past the cap max_runs={rule.max_runs}")
    spread = pool.estimate(diffs)  # also refuses non-finite differences
    mean = statistics.fmean(diffs) if n else None
    stats: dict[str, float | int | None] = {
        "pairs": n, "mean_diff": mean, "sd": spread.sd, "dof": spread.dof,
        "lower": None, "upper": None, "target": None, "min_improvement": rule.min_improvement,
        "alpha_look": None, "beta_look": None, "max_runs": rule.max_runs,
        "below_resolution": None}
    at_cap = n == rule.max_runs
    if n == 1 and rule.futility > 0:
        futile = _futility_look(diffs[0], rule, pool, spread, stats)
        if futile is not None:
            return futile
    if n < rule.min_runs:
        return Step("continue", f"{n} pair(s) so far; the rule looks from {rule.min_runs} "
                    "pairs on (one run never decides a keep)", stats)
    if all(abs(d) <= _ZERO_SD for d in diffs):
        return Step("discard", f"no effect: the candidate scores exactly as the incumbent at "
                    f"all {n} seeds (the change does not reach what this profile measures)",
                    stats)
    if spread.sd is None or spread.sd <= _ZERO_SD:
        why = (f"all {n} paired differences equal {_f(mean)}: the spread is not measured "
               "yet, so nothing can be concluded")
        return Step("inconclusive" if at_cap else "continue",
                    (f"inconclusive at the cap of {n} pairs: " if at_cap else "") + why, stats)
    assert mean is not None
    half = spread.sd / math.sqrt(n)
    alpha_look, beta_look = rule.alpha_at(n), rule.beta_at(n)
    lower = mean - t_bound(1.0 - alpha_look, spread.dof) * half
    upper = mean + t_bound(1.0 - beta_look, spread.dof) * half
    # H1 for the discard bound: what the cap can resolve with the spread as measured now
    target = resolvable_gain(rule, Spread(spread.sd, pool.estimate().dof))
    assert target is not None
    stats.update(lower=lower, upper=upper, target=target, alpha_look=alpha_look,
                 beta_look=beta_look)
    head = (f"{n} pairs: mean gain {_f(mean)} (candidate better when > 0), "
            f"{spread.describe()}")
    if lower > 0 and mean >= rule.min_improvement:
        return Step("keep", f"keep after {head}; lower bound {_f(lower)} > 0 at false-keep "
                    f"level {alpha_look:.4g} at this look (alpha {rule.alpha:g}) and "
                    f"mean >= min_improvement {_f(rule.min_improvement)}", stats)
    if upper < target:
        hint = _below_resolution(mean, rule, stats)
        return Step("discard", f"discard after {head}; upper bound {_f(upper)} < "
                    f"{_f(target)}, the smallest gain {rule.max_runs} pairs can resolve "
                    f"(miss level {beta_look:.4g} at this look){hint}", stats)
    bounds = f"lower bound {_f(lower)}, upper bound {_f(upper)} vs target {_f(target)}"
    if not at_cap and rule.curtail > 0:
        chance = keep_chance(mean, spread, n, rule)
        stats["keep_chance"] = chance
        if chance < rule.curtail:
            hint = _below_resolution(mean, rule, stats)
            return Step("discard", f"curtailed after {head}: at this mean gain a keep by "
                        f"the cap of {rule.max_runs} pairs has a chance of {chance:.3f} < "
                        f"curtail {rule.curtail:g} ({bounds}){hint}", stats)
    if at_cap:
        return Step("inconclusive", f"inconclusive at the cap of {rule.max_runs} pairs: "
                    f"{head}; {bounds} (neither kept nor ruled out; a stronger profile "
                    "can tell)", stats)
    return Step("continue", f"{head}; {bounds}: undecided", stats)


def _below_resolution(mean: float, rule: SequentialRule,
                      stats: dict[str, float | int | None]) -> str:
    """Flag a discard whose mean gain reaches min_improvement (`below_resolution`: the judge
    records it `inconclusive`); the hint its reason ends with ("" when not flagged)."""
    stats["below_resolution"] = int(mean >= rule.min_improvement)
    return ("; the mean gain reaches min_improvement: a stronger profile may resolve it"
            if stats["below_resolution"] else "")


def keep_chance(mean: float, spread: Spread, n: int, rule: SequentialRule) -> float:
    """The chance that the candidate is kept at the cap if its true gain is `mean` (its mean
    over the `n` pairs so far) and the spread stays `spread` (conditional power under the
    current trend, the curtailment of Lan, Simon and Halperin 1982).

    The look at `max_runs` keeps when the final mean exceeds
    `c = max(min_improvement, t(1 - alpha_at(N), dof + N - n) x sd / sqrt(N))`; the final
    mean is `(n x mean + the N - n pairs still to come) / N`, normal about `mean` with sd
    `sd x sqrt(N - n) / N`. The earlier looks are left out (they add a little chance),
    so the figure is a slight underestimate.
    """
    cap = rule.max_runs
    if spread.sd is None or spread.sd <= _ZERO_SD or n >= cap:
        raise ValueError(f"keep_chance: needs a measured spread and n < max_runs, got "
                         f"sd {spread.sd!r}, n {n}")
    sd = spread.sd
    needed = max(rule.min_improvement,
                 t_bound(1.0 - rule.alpha_at(cap), spread.dof + cap - n) * sd / math.sqrt(cap))
    z = (mean - needed) * cap / (sd * math.sqrt(cap - n))
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _futility_look(first: float, rule: SequentialRule, pool: SpreadPool, spread: Spread,
                   stats: dict[str, float | int | None]) -> Step | None:
    """After the first pair: discard a clear loser. It never keeps, so it adds no false keep.

    With a spread from earlier decisions: discard when the one difference lies so far below
    the gain the cap can resolve that a candidate with that gain would show it with
    probability under beta_at(1) (the `futility` level); it costs at most that much power
    at the resolvable gain.

    Before any spread is known (a session's first decisions, MIN_DECISIONS): the sign
    screen, discard a candidate no better than the incumbent at the first seed (d <= 0).
    It needs no spread: a candidate with true gain g and paired spread s is screened out
    with probability Phi(-g/s), under 8% for any gain above 1.4 s (about what 10 pairs
    resolve), and an equal candidate half of the time. Without it every candidate of a
    session's first decisions ran to at least five pairs: no earlier spread to lean on.
    """
    if spread.sd is None or spread.sd <= _ZERO_SD or spread.dof <= 0:
        if first > 0:
            return None
        stats.update(futility=1, screen=1)
        return Step("discard", f"discard after 1 pair (sign screen): gain {_f(first)} "
                    "(candidate better when > 0), no better than the incumbent at the first "
                    "seed, and no spread measured yet to ask for more", stats)
    beta_look = rule.beta_at(1)
    upper = first + t_bound(1.0 - beta_look, spread.dof) * spread.sd
    target = resolvable_gain(rule, spread)
    if target is None or upper >= target:
        return None
    stats.update(upper=upper, target=target, beta_look=beta_look, futility=1)
    return Step("discard", f"discard after 1 pair (futility look): gain {_f(first)} "
                f"(candidate better when > 0), {spread.describe()} from earlier decisions; "
                f"upper bound {_f(upper)} < {_f(target)}, the smallest gain "
                f"{rule.max_runs} pairs can resolve (miss level {beta_look:.4g})", stats)


# --------------------------------------------------------------------------- one decision


@dataclass
class Outcome:
    """A finished decision: the last step, every pair (candidate, incumbent) in seed order."""

    decision: str  # keep | discard | inconclusive
    reason: str
    stats: dict[str, float | int | None]
    pairs: list[tuple[float, float]]

    @property
    def diffs(self) -> list[float]:
        return [inc - cand for cand, inc in self.pairs]

    @property
    def candidate_mean(self) -> float:
        return statistics.fmean(c for c, _ in self.pairs)

    @property
    def incumbent_mean(self) -> float:
        return statistics.fmean(i for _, i in self.pairs)

    @property
    def gain_lower(self) -> float | None:
        """The gain the evidence guarantees (the keep's lower bound), or None."""
        lower = self.stats.get("lower")
        return None if lower is None else float(lower)

    def incumbent_estimate(self) -> dict[str, float | int | bool | None]:
        """What the judge stores for the new incumbent right after a keep (module docstring):
        the candidate's mean at the decision's seeds, flagged `selected` (optimistic)."""
        if self.decision != "keep":
            raise ValueError(f"incumbent_estimate: only after a keep, not {self.decision}")
        return {"val_bpb": self.candidate_mean, "runs": len(self.pairs),
                "mean_gain": statistics.fmean(self.diffs), "gain_lower": self.gain_lower,
                "selected": True}


def refreshed_incumbent(fresh_runs: Sequence[float]) -> dict[str, float | int | bool] | None:
    """The incumbent's score from its runs at seeds no keep selected (None while none)."""
    values = [float(v) for v in fresh_runs]
    if not values:
        return None
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"refreshed_incumbent: runs must be finite, got {values}")
    return {"val_bpb": statistics.fmean(values), "runs": len(values), "selected": False}


def run_decision(next_pair: Callable[[int], tuple[float, float]], rule: SequentialRule,
                 spread_pool: SpreadPool) -> Outcome:
    """Drive one sequential decision to keep, discard or inconclusive.

    `next_pair(i)` runs the i-th pair (i = 0, 1, ...; the judge maps i to
    seed_schedule(...)[i] and may reuse a cached incumbent run at that seed) and returns
    (candidate val_bpb, incumbent val_bpb); it may raise to abort the decision. The finished
    decision's differences are added to `spread_pool`, and so are those of an aborted
    one (they are valid measurements of the spread), before the exception propagates.
    """
    pairs: list[tuple[float, float]] = []
    try:
        while True:
            candidate, incumbent = next_pair(len(pairs))
            if not (math.isfinite(candidate) and math.isfinite(incumbent)):
                raise ValueError(f"pair {len(pairs)}: scores must be finite, got "
                                 f"({candidate}, {incumbent})")
            pairs.append((float(candidate), float(incumbent)))
            result = step([i - c for c, i in pairs], rule, spread_pool)
            if result.decision != "continue":
                return Outcome(result.decision, result.reason, result.stats, pairs)
    finally:
        spread_pool.add([i - c for c, i in pairs])
