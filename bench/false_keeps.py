"""False keeps, power and runs per decision of three keep rules under a noisy stand-in.

    python bench/false_keeps.py [--sessions N] [--power-sessions N] [--decisions N]
                                [--scenario gpu|cpu|mixed|all] [--max-pooled-dof X]
                                [--rules sequential,seq-fresh,today,naive] [--futility F]
                                [--curtail C] [--max-runs N]
                                [--beta B] [--alpha A] [--history N]

The rules, each driven with the daemon's own code:
- `sequential`: loop.judge.sequential.run_decision, paired runs at the judge's seeds
  (loop.judge.sequential.seed_schedule), the incumbent's run at a seed cached while it stays
  the incumbent, a kept candidate's own runs reused as the new incumbent's at the same seeds
  (as the judge does), the spread pooled over the session's decisions;
- `seq-fresh`: the same, but after a keep the new incumbent is measured again: at the frozen
  seed and then at a fresh block of seeds its keep never saw (the judge's earlier design);
- `today`: the margin rule (`keep_rule.enabled: false`) as loop/judge/margin.py applies it:
  the frozen seed (1337) for every run, a 5-run calibration of the incumbent at session
  start and after every 3 keeps, spread = 1.4826 x MAD pooled over every group of repeated
  runs, margin
  max(min_improvement, 2 x spread x sqrt(1/n + 1/m)), a close win re-run twice and judged
  on its mean, a keep making the candidate's mean the incumbent;
- `naive`: one run per candidate, keep when better by min_improvement.

The stand-in measurement of code c at seed s: truth(c) + a(s) + b(c, s) + e, all normal with
mean 0: a(s) the seed's effect (shared by every code at that seed, so by the pair), b(c, s)
the code's interaction with the seed (the same every time c runs at s; a child inherits its
parent's and adds its own, sd sqrt(2) x sd(b) x f(c)), e fresh per run.
  gpu: sd(a) = sigma, sd(b) = 0,     sd(e) = sigma  (run-to-run noise, as tests/test_noise.py)
  cpu: sd(a) = sigma, sd(b) = sigma, sd(e) = 0      (deterministic; seed luck is per change)
  mixed: cpu, but each change has its own spread: f(c) = exp(N(0, 1) - 1) (mean square 1),
     as measured at smoke, where one change's paired spread was 5x another's
In all the paired difference of a child and its parent at one seed has an rms sd of
sqrt(2) x sigma.

Sessions of D decisions in a row at one profile (a keep makes the candidate the incumbent):
every candidate of equal quality (false keeps, by decision index across sessions: the
first, the worst index, the mean) or every candidate better by max(min_improvement,
3 sigma) (share kept). Runs per decision count every benchmark run: candidate runs, new
incumbent runs, calibrations (a calibration is charged to the decision it precedes).
Deterministic: every session has its own seeded random.Random.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loop.judge import noise, sequential  # noqa: E402
from loop.judge.margin import Rule, judge_with_reruns  # noqa: E402

SIGMAS = (0.004, 0.01, 0.02, 0.03)
MIN_IMPROVEMENT = 0.002  # autogolf.yaml default
BASE_SEED = 1337
RULES = ("sequential", "seq-fresh", "today", "naive")
DEFAULT = sequential.SequentialRule(MIN_IMPROVEMENT)  # the daemon's defaults
SETTINGS = {"max_pooled_dof": 10.0, "rules": RULES, "futility": DEFAULT.futility,
            "curtail": DEFAULT.curtail, "max_runs": DEFAULT.max_runs,
            "beta": DEFAULT.beta, "alpha": DEFAULT.alpha, "history": 0}  # from the command line
# sd(a), sd(b), sd(e) in units of sigma, and the sd of log f: a code's b and e are scaled by
# its own f = exp(N(0, v) - v^2) (mean square 1; the baseline has f = 1)
SCENARIOS = {"gpu": (1.0, 0.0, 1.0, 0.0), "cpu": (1.0, 1.0, 0.0, 0.0),
             "mixed": (1.0, 1.0, 0.0, 1.0)}


@dataclass
class World:
    """The stand-in benchmark of one session: scores of codes at seeds."""

    rng: random.Random
    sigma: float
    scenario: str
    truth: dict[int, float] = field(default_factory=lambda: {0: 1.0})
    scale: dict[int, float] = field(default_factory=lambda: {0: 1.0})
    parent: dict[int, int] = field(default_factory=dict)
    _seed_effect: dict[int, float] = field(default_factory=dict)
    _interaction: dict[tuple[int, int], float] = field(default_factory=dict)
    runs: int = 0

    def new_code(self, parent: int, gain: float) -> int:
        code = len(self.truth)
        self.truth[code] = self.truth[parent] - gain
        self.parent[code] = parent
        v = SCENARIOS[self.scenario][3]
        self.scale[code] = math.exp(self.rng.gauss(0.0, v) - v * v) if v else 1.0
        return code

    def score(self, code: int, seed: int) -> float:
        sa, _, se = (f * self.sigma for f in SCENARIOS[self.scenario][:3])
        if seed not in self._seed_effect:
            self._seed_effect[seed] = self.rng.gauss(0.0, sa)
        self.runs += 1
        noise_ = self.rng.gauss(0.0, se) if se else 0.0
        return self.truth[code] + self._seed_effect[seed] + self.interaction(code, seed) + noise_

    def interaction(self, code: int, seed: int) -> float:
        """b(c, s) = b(parent, s) + the change's own term, sd sqrt(2) x sd(b) x f(c): a
        small change keeps most of its parent's seed luck (measured at smoke: paired sd
        0.003 for MATRIX_LR 0.04 -> 0.044, 0.015 for 0.04 -> 0.08)."""
        if code == 0:
            return 0.0  # the baseline's own seed luck is a(s)
        if (code, seed) not in self._interaction:
            sd = math.sqrt(2) * SCENARIOS[self.scenario][1] * self.sigma * self.scale[code]
            own = self.rng.gauss(0.0, sd) if sd else 0.0
            self._interaction[code, seed] = self.interaction(self.parent[code], seed) + own
        return self._interaction[code, seed]


@dataclass
class Result:
    """One rule's decisions over many sessions."""

    kept: list[list[bool]] = field(default_factory=list)  # [session][decision]
    runs: list[int] = field(default_factory=list)  # per decision
    inconclusive: int = 0
    claimed: list[float] = field(default_factory=list)  # mean gain of kept candidates


# --------------------------------------------------------------------------- the rules


def sequential_session(world: World, decisions: int, gain: float, result: Result,
                       rule: sequential.SequentialRule, fresh: bool = False,
                       pool: sequential.SpreadPool | None = None) -> sequential.SpreadPool:
    """`fresh`: after a keep, measure the new incumbent again at the frozen seed and then at
    the next epoch's block of seeds (`seq-fresh`) instead of reusing the kept candidate's
    runs (the runs were selected: on a GPU reusing them biases later decisions against
    their candidates). `pool`: the spread of an earlier session's decisions (`--history`),
    as the daemon carries it."""
    pool = pool or sequential.SpreadPool(max_pooled_dof=SETTINGS["max_pooled_dof"])
    epoch, incumbent = 0, 0
    cache: dict[int, float] = {}  # the incumbent's run at each seed of this epoch
    kept = []
    for _ in range(decisions):
        candidate = world.new_code(incumbent, gain)
        seeds = fresh_seeds(rule.max_runs, epoch)
        before = world.runs

        def next_pair(i: int, candidate: int = candidate, seeds: list[int] = seeds,
                      incumbent: int = incumbent, cache: dict[int, float] = cache
                      ) -> tuple[float, float]:
            if seeds[i] not in cache:
                cache[seeds[i]] = world.score(incumbent, seeds[i])
            return world.score(candidate, seeds[i]), cache[seeds[i]]

        outcome = sequential.run_decision(next_pair, rule, pool)
        result.runs.append(world.runs - before)
        result.inconclusive += outcome.decision == "inconclusive"
        kept.append(outcome.decision == "keep")
        if kept[-1]:
            result.claimed.append(statistics.fmean(outcome.diffs))
            if fresh:
                incumbent, epoch, cache = candidate, epoch + 1, {}
            else:  # as the judge: its runs are the new incumbent's at the same seeds
                cache = {seed: cand for seed, (cand, _) in zip(seeds, outcome.pairs,
                                                               strict=False)}
                incumbent = candidate
    result.kept.append(kept)
    return pool


def fresh_seeds(n: int, epoch: int) -> list[int]:
    """The seeds of a decision against the incumbent of `epoch` (keeps so far) in
    `seq-fresh`: the frozen seed first (the candidate's screening run), then the epoch's
    block, so a new incumbent is measured at seeds its keep never saw; epoch 0 is the
    judge's own schedule."""
    return [BASE_SEED] + sequential.seed_schedule(BASE_SEED, n, epoch)[1:]


def today_session(world: World, decisions: int, gain: float, result: Result,
                  calibration_runs: int = 5, k: float = 2.0, rerun_close: int = 2,
                  every: int = 3) -> None:
    groups: list[list[float]] = []
    incumbent_code = 0

    def calibrate() -> tuple[float, int]:
        values = [world.score(incumbent_code, BASE_SEED) for _ in range(calibration_runs)]
        groups.append(values)
        return statistics.fmean(values), len(values)

    incumbent, n_incumbent = calibrate()
    keeps_since, kept = 0, []
    charged = world.runs  # the first calibration is charged to the first decision
    for _ in range(decisions):
        candidate = world.new_code(incumbent_code, gain)
        rule = Rule(MIN_IMPROVEMENT, k, noise.pooled_spread(groups), rerun_close)
        judged = judge_with_reruns(world.score(candidate, BASE_SEED), incumbent, n_incumbent,
                                   rule, lambda c=candidate: world.score(c, BASE_SEED))
        if len(judged.values) > 1:
            groups.append(judged.values)
        kept.append(judged.verdict.status == "keep")
        if kept[-1]:
            result.claimed.append(incumbent - judged.mean)
            incumbent_code, incumbent, n_incumbent = candidate, judged.mean, len(judged.values)
            keeps_since += 1
            if noise.calibration_due(keeps_since, every):
                result.runs.append(world.runs - charged)
                charged = world.runs
                incumbent, n_incumbent = calibrate()
                keeps_since = 0
                continue
        result.runs.append(world.runs - charged)
        charged = world.runs
    # a calibration after the last decision precedes no decision: charged to the last one
    result.runs[-1] += world.runs - charged
    result.kept.append(kept)


def naive_session(world: World, decisions: int, gain: float, result: Result) -> None:
    incumbent_code = 0
    incumbent = world.score(0, BASE_SEED)
    charged, kept = 0, []
    for _ in range(decisions):
        candidate = world.new_code(incumbent_code, gain)
        value = world.score(candidate, BASE_SEED)
        kept.append(noise.naive_keep(value, incumbent, MIN_IMPROVEMENT))
        if kept[-1]:
            result.claimed.append(incumbent - value)
            incumbent_code, incumbent = candidate, value
        result.runs.append(world.runs - charged)
        charged = world.runs
    result.kept.append(kept)


# --------------------------------------------------------------------------- the table


def play(rule_name: str, sigma: float, scenario: str, gain: float, sessions: int,
         decisions: int, salt: int) -> Result:
    result = Result()
    seq_rule = sequential.SequentialRule(MIN_IMPROVEMENT, alpha=SETTINGS["alpha"],
                                         beta=SETTINGS["beta"],
                                         max_runs=SETTINGS["max_runs"],
                                         futility=SETTINGS["futility"],
                                         curtail=SETTINGS["curtail"])
    for s in range(sessions):
        world = World(random.Random(f"{salt}-{scenario}-{sigma}-{gain}-{s}"), sigma, scenario)
        if rule_name in ("sequential", "seq-fresh"):
            sequential_session(world, decisions, gain, result, seq_rule,
                               fresh=rule_name == "seq-fresh", pool=earlier_night(
                                   seq_rule, sigma, scenario, f"{salt}-{gain}-{s}"))
        elif rule_name == "today":
            today_session(world, decisions, gain, result)
        else:
            naive_session(world, decisions, gain, result)
    return result


def earlier_night(rule: sequential.SequentialRule, sigma: float, scenario: str,
                  salt: str) -> sequential.SpreadPool | None:
    """The spread pool an earlier session left (`--history N`: N decisions, half of equal
    candidates and half better by 3 sigma, on their own world of the same scenario), which
    the daemon carries into a new session at the same profile, dataset and kind of compute;
    None with no history (a first session)."""
    if not SETTINGS["history"]:
        return None
    world = World(random.Random(f"history-{salt}-{scenario}-{sigma}"), sigma, scenario)
    half = SETTINGS["history"] // 2
    pool = sequential_session(world, half, 0.0, Result(), rule)
    return sequential_session(world, SETTINGS["history"] - half,
                              max(MIN_IMPROVEMENT, 3 * sigma), Result(), rule, pool=pool)


def by_index(result: Result) -> list[float]:
    columns = zip(*result.kept, strict=True)
    return [statistics.fmean(col) for col in columns]


LEGEND = """\
FK 1st / worst / mean: false keeps, the share of sessions keeping an equal candidate at
  decision i of the session: the first decision, the worst i, the mean over i
gain: the true gain of the better candidates; kept / kept 1st: the share of them kept
  (every decision; the first of a session)
runs null / gain: benchmark runs per decision (mean) in the sessions of equal / better
  candidates; max: the most one decision took (a calibration it waited for included)
inconcl.: decisions undecided at the cap (sequential only)
claimed: over kept better candidates, the mean gain the rule measured (mean paired
  difference; today: incumbent - the candidate's mean) divided by the true gain
seq-fresh: the sequential rule measuring a new incumbent again at a fresh seed epoch instead
  of reusing the kept candidate's runs at the same seeds (what the judge does)"""


def fmt_pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def ratio(values: list[float], gain: float) -> str:
    return f"{statistics.fmean(values) / gain:.2f}" if values else "-"


COLUMNS = ("sigma", "rule", "FK 1st", "FK worst", "FK mean", "gain", "kept", "kept 1st",
           "runs null", "runs gain", "max", "inconcl.", "claimed")


def row(rule: str, sigma: float, scenario: str, sessions: int, power_sessions: int,
        decisions: int) -> tuple[str, ...]:
    gain = max(MIN_IMPROVEMENT, 3 * sigma)
    null = play(rule, sigma, scenario, 0.0, sessions, decisions, 1)
    power = play(rule, sigma, scenario, gain, power_sessions, decisions, 2)
    rates, kept = by_index(null), by_index(power)
    inconclusive = (null.inconclusive + power.inconclusive) / (len(null.runs) + len(power.runs))
    return (f"{sigma:.3f}", rule, fmt_pct(rates[0]), fmt_pct(max(rates)),
            fmt_pct(statistics.fmean(rates)), f"{gain:.3f}", fmt_pct(statistics.fmean(kept)),
            fmt_pct(kept[0]), f"{statistics.fmean(null.runs):.2f}",
            f"{statistics.fmean(power.runs):.2f}", str(max(null.runs + power.runs)),
            fmt_pct(inconclusive), ratio(power.claimed, gain))


def report(scenario: str, sessions: int, decisions: int, power_sessions: int,
           out: Callable[[str], None]) -> None:
    out(f"\nscenario {scenario}: sd(seed effect), sd(interaction), sd(run noise) = "
        f"{', '.join(f'{f:g}' for f in SCENARIOS[scenario][:3])} x sigma, sd(log f) = "
        f"{SCENARIOS[scenario][3]:g}")
    rows = [COLUMNS] + [row(rule, sigma, scenario, sessions, power_sessions, decisions)
                        for sigma in SIGMAS for rule in SETTINGS["rules"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        out("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000,
                        help="sessions of equal candidates per rule and sigma")
    parser.add_argument("--power-sessions", type=int, default=300,
                        help="sessions of truly better candidates per rule and sigma")
    parser.add_argument("--decisions", type=int, default=20, help="decisions per session")
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--max-pooled-dof", type=float, default=10.0,
                        help="the sequential rule's cap on the pool's weight (inf: none)")
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated subset")
    parser.add_argument("--futility", type=float, default=DEFAULT.futility,
                        help="the sequential rule's miss level at the futility look after "
                             "the first pair (0: no futility look)")
    parser.add_argument("--curtail", type=float, default=DEFAULT.curtail,
                        help="the sequential rule's curtailment: stop below this chance of a "
                             "keep by the cap (0: never)")
    parser.add_argument("--max-runs", type=int, default=DEFAULT.max_runs,
                        help="the sequential rule's cap on pairs per decision")
    parser.add_argument("--history", type=int, default=0,
                        help="decisions of an earlier session whose spread the measured "
                             "sessions start with (0: first sessions)")
    parser.add_argument("--beta", type=float, default=DEFAULT.beta,
                        help="the sequential rule's miss level at the resolvable gain")
    parser.add_argument("--alpha", type=float, default=DEFAULT.alpha,
                        help="the sequential rule's false-keep rate per decision")
    args = parser.parse_args()
    SETTINGS.update(max_pooled_dof=args.max_pooled_dof, futility=args.futility,
                    curtail=args.curtail, max_runs=args.max_runs,
                    beta=args.beta, alpha=args.alpha, history=args.history,
                    rules=tuple(r for r in args.rules.split(",") if r in RULES))
    start = time.perf_counter()
    print(f"min_improvement {MIN_IMPROVEMENT}; sequential: alpha {args.alpha:g}, beta "
          f"{args.beta:g}, "
          f"max_runs {args.max_runs} pairs, min_runs 2, max_pooled_dof "
          f"{args.max_pooled_dof:g}, futility {args.futility:g}, curtail {args.curtail:g}, "
          f"history {args.history} decisions; today: "
          "5-run calibration, k 2, 2 re-runs of close wins, recalibration every 3 keeps; "
          f"{args.sessions} sessions x {args.decisions} decisions of equal candidates, "
          f"{args.power_sessions} x {args.decisions} of candidates better by "
          "max(min_improvement, 3 sigma)")
    print(LEGEND)
    for scenario in (tuple(SCENARIOS) if args.scenario == "all" else (args.scenario,)):
        report(scenario, args.sessions, args.decisions, args.power_sessions, print)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
