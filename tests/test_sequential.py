"""The sequential keep rule (loop/judge/sequential.py, issue 16) on scripted score sequences.

Differences are `incumbent - candidate` at one seed (positive = the candidate is better).
The simulations are seeded and use the rule's own run_decision, so the rates they check are
the rule's; bench/false_keeps.py prints the same figures against today's rule.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics

import pytest

from loop.judge import distributions
from loop.judge import sequential as sq

# No curtailment here: the tests of the other looks script sequences that it would stop
# early; `CURTAILED` below is the rule with it.
RULE = sq.SequentialRule(min_improvement=0.002, alpha=0.02, beta=0.10, max_runs=10,
                         futility=0.10, curtail=0.0)
SD = 0.014  # sd of paired differences: a per-run spread of 0.01, sqrt(2) x for a pair


def pool_with(sd: float, dof: int = 200, max_pooled_dof: float = math.inf) -> sq.SpreadPool:
    """A pool of `dof` earlier 2-pair decisions that each measured exactly `sd`."""
    return sq.SpreadPool(max_pooled_dof=max_pooled_dof, groups=[(sd * sd, 1)] * dof)


def scripted(pairs: list[tuple[float, float]]):
    """next_pair for run_decision from a fixed list; records which indices were asked."""
    asked: list[int] = []

    def next_pair(i: int) -> tuple[float, float]:
        asked.append(i)
        return pairs[i]

    return next_pair, asked


def jitter(n: int, size: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(-size, size) for _ in range(n)]


# --------------------------------------------------------------------------- decisions


def test_a_clear_win_is_kept_after_two_pairs_with_a_pooled_spread():
    # the candidate is better by 0.05 (3.5 spreads) at both seeds
    next_pair, asked = scripted([(1.95, 2.0), (1.949, 2.0), (1.951, 2.0)])
    outcome = sq.run_decision(next_pair, RULE, pool_with(SD))
    assert outcome.decision == "keep" and asked == [0, 1]


def test_a_clear_win_is_kept_early_even_at_the_first_decision_of_a_session():
    diffs = [0.05 + j for j in jitter(10, 0.01)]
    next_pair, asked = scripted([(2.0 - d, 2.0) for d in diffs])
    outcome = sq.run_decision(next_pair, RULE, sq.SpreadPool())
    assert outcome.decision == "keep" and len(asked) <= 5


# val_bpb of the real trainer at smoke on the CPU (sample data), seeds 1337..1342:
# (MATRIX_LR 0.08, 0.044, the baseline 0.04), measured for issue 16.
SMOKE = [(3.8688555, 3.88863676, 3.90293316), (3.86367146, 3.88416438, 3.89220136),
         (3.79716215, 3.81889736, 3.82802232), (3.88453158, 3.90913117, 3.91679565),
         (3.8467599, 3.84843327, 3.85434424), (3.83717134, 3.88315837, 3.89099126)]


def test_real_smoke_gains_are_kept_from_paired_seeds_that_vary_the_baseline_by_0_09():
    big = sq.run_decision(lambda i: (SMOKE[i][0], SMOKE[i][2]), RULE, sq.SpreadPool())
    small = sq.run_decision(lambda i: (SMOKE[i][1], SMOKE[i][2]), RULE, sq.SpreadPool())
    assert (big.decision, len(big.pairs)) == ("keep", 3)  # gains 0.034, 0.029, 0.031
    assert (small.decision, len(small.pairs)) == ("keep", 5)  # gains 0.006 to 0.014


def test_a_clear_loss_is_discarded_after_two_pairs_without_the_futility_look():
    next_pair, asked = scripted([(2.03, 2.0), (2.028, 2.0), (2.031, 2.0)])
    rule = dataclasses.replace(RULE, futility=0.0)
    outcome = sq.run_decision(next_pair, rule, pool_with(SD))
    assert outcome.decision == "discard" and asked == [0, 1]


# --------------------------------------------------------------------------- futility


def test_a_clear_loser_is_discarded_after_its_first_pair_by_the_futility_look():
    next_pair, asked = scripted([(2.03, 2.0), (2.028, 2.0)])
    outcome = sq.run_decision(next_pair, RULE, pool_with(SD))
    assert outcome.decision == "discard" and asked == [0]
    assert outcome.reason.startswith("discard after 1 pair (futility look)")
    assert outcome.stats["futility"] == 1


def test_a_close_first_pair_is_continued_by_the_futility_look():
    # ahead by 0.002 (a seventh of a spread): a candidate with the resolvable gain (0.018)
    # shows that often; the look stops only a first pair under about 0.0004
    assert sq.step([0.002], RULE, pool_with(SD)).decision == "continue"
    assert sq.step([-0.001], RULE, pool_with(SD)).decision == "discard"


def test_the_futility_look_never_keeps_however_large_the_first_gain():
    assert sq.step([0.5], RULE, pool_with(SD, dof=10_000)).decision == "continue"


def test_before_any_spread_a_candidate_worse_at_the_first_seed_is_screened_out():
    result = sq.step([-0.001], RULE, sq.SpreadPool())
    assert result.decision == "discard" and result.stats["screen"] == 1
    assert result.reason.startswith("discard after 1 pair (sign screen)")


def test_before_any_spread_a_candidate_equal_at_the_first_seed_is_screened_out():
    assert sq.step([0.0], RULE, sq.SpreadPool()).decision == "discard"


def test_before_any_spread_a_candidate_better_at_the_first_seed_goes_on():
    assert sq.step([0.0005], RULE, sq.SpreadPool()).decision == "continue"


def test_the_sign_screen_misses_a_gain_of_its_spread_as_often_as_the_normal_tail():
    rng = random.Random(9)
    stopped = statistics.fmean(
        sq.step([1.4 * SD + rng.gauss(0, SD)], RULE, sq.SpreadPool()).decision == "discard"
        for _ in range(4000))
    assert 0.06 <= stopped <= 0.10  # Phi(-1.4) = 0.081


def test_the_futility_look_costs_at_most_its_level_of_the_resolvable_gain():
    rng = random.Random(8)
    gain = sq.resolvable_gain(RULE, sq.Spread(SD, 200))
    stopped = statistics.fmean(
        sq.step([gain + rng.gauss(0, SD)], RULE, pool_with(SD)).decision == "discard"
        for _ in range(4000))
    assert stopped <= RULE.futility  # measured 0.09 (t with 200 dof: a little under 0.10)


# A candidate better by about half of what 10 pairs can resolve (0.0185 here), with the
# pool's spread, first pair ahead: every look is undecided, and at the cap it is inconclusive.
CLOSE = [0.0105 + (-0.014 if i % 2 else 0.014) for i in range(10)]


def test_a_close_candidate_keeps_going():
    for n in range(1, 10):
        assert sq.step(CLOSE[:n], RULE, pool_with(SD)).decision == "continue", n


def test_undecided_at_the_cap_is_inconclusive_and_no_pair_is_run_past_it():
    next_pair, asked = scripted([(2.0 - d, 2.0) for d in CLOSE + [0.05] * 5])
    outcome = sq.run_decision(next_pair, RULE, pool_with(SD))
    assert outcome.decision == "inconclusive" and asked == list(range(10))
    assert outcome.reason.startswith("inconclusive at the cap of 10 pairs")


CURTAILED = dataclasses.replace(RULE, curtail=0.05)


def test_a_candidate_unlikely_to_be_kept_by_the_cap_is_curtailed():
    # a mean gain of 0.0005 after 2 pairs: not ruled out (the upper bound reaches the
    # resolvable gain), but at that gain a keep by 10 pairs has a chance under 1%
    diffs = [0.002, -0.001]
    assert sq.step(diffs, RULE, pool_with(SD)).decision == "continue"
    got = sq.step(diffs, CURTAILED, pool_with(SD))
    assert got.decision == "discard" and got.reason.startswith("curtailed after 2 pairs")
    assert got.stats["keep_chance"] < 0.01 and "< curtail 0.05" in got.reason
    assert got.stats["below_resolution"] == 0


def test_a_curtailed_real_gain_is_flagged_for_a_stronger_profile():
    # 0.003 > min_improvement, far below the 0.013 that 10 pairs at this spread confirm
    got = sq.step([0.0045, 0.0015], CURTAILED, pool_with(SD))
    assert got.decision == "discard" and got.stats["below_resolution"] == 1
    assert "a stronger profile may resolve it" in got.reason


def test_a_close_candidate_with_a_fair_chance_of_a_keep_is_not_curtailed():
    for n in range(2, 10):
        got = sq.step(CLOSE[:n], CURTAILED, pool_with(SD))
        assert got.decision == "continue" and got.stats["keep_chance"] > 0.05, n


def test_curtailment_never_looks_before_the_first_look_or_at_the_cap():
    assert "keep_chance" not in sq.step([0.001], CURTAILED, pool_with(SD)).stats
    assert "keep_chance" not in sq.step(CLOSE, CURTAILED, pool_with(SD)).stats


def test_the_keep_chance_is_the_chance_that_the_final_mean_clears_the_keep_bound():
    rng = random.Random(7)
    spread, n, mean = sq.Spread(SD, 200), 4, 0.009
    cap = RULE.max_runs
    needed = max(RULE.min_improvement, distributions.t_bound(
        1 - RULE.alpha_at(cap), spread.dof + cap - n) * SD / math.sqrt(cap))
    finals = [(n * mean + sum(rng.gauss(mean, SD) for _ in range(cap - n))) / cap
              for _ in range(20_000)]
    simulated = statistics.fmean(f > needed for f in finals)
    assert sq.keep_chance(mean, spread, n, RULE) == pytest.approx(simulated, abs=0.01)


def test_a_true_gain_of_three_run_spreads_is_still_kept_90_percent_with_curtailment():
    rng = random.Random(8)
    kept = statistics.fmean(
        sq.run_decision(lambda i: (2.0 - 0.03 + rng.gauss(0, SD), 2.0), CURTAILED,
                        sq.SpreadPool()).decision == "keep" for _ in range(1000))
    assert kept >= 0.90


def test_step_refuses_more_pairs_than_the_cap():
    with pytest.raises(ValueError, match="max_runs=10"):
        sq.step([0.0] * 11, RULE, sq.SpreadPool())


def test_one_run_never_decides_however_large_the_gain_and_the_pool():
    rule = dataclasses.replace(RULE, futility=0.0)  # the futility look can only discard
    for diff in (0.5, -0.5):
        assert sq.step([diff], rule, pool_with(SD, dof=10_000)).decision == "continue"


def test_identical_differences_measure_no_spread_and_decide_nothing():
    # a deterministic backend whose change does not interact with the seed at all
    assert sq.step([0.01, 0.01, 0.01], RULE, sq.SpreadPool()).decision == "continue"
    rule = sq.SequentialRule(0.002, max_runs=3)
    outcome = sq.step([0.01, 0.01, 0.01], rule, sq.SpreadPool())
    assert outcome.decision == "inconclusive" and "spread is not measured" in outcome.reason


def test_a_candidate_that_scores_exactly_as_the_incumbent_at_every_seed_is_discarded():
    outcome = sq.step([0.0, 0.0], RULE, sq.SpreadPool())
    assert outcome.decision == "discard" and outcome.reason.startswith("no effect")
    assert sq.step([0.0], RULE, sq.SpreadPool()).reason.startswith("discard after 1 pair")
    assert sq.step([0.0, 0.001], RULE, sq.SpreadPool()).decision == "continue"


def test_a_keep_needs_the_mean_gain_to_reach_min_improvement():
    # certainly better than the incumbent, but by less than min_improvement 0.002
    diffs = [0.0015, 0.0016, 0.0014, 0.0015]
    assert sq.step(diffs, RULE, pool_with(0.0001)).decision != "keep"


def test_a_real_gain_below_what_the_profile_resolves_is_discarded_with_a_hint():
    # gains of 0.004-0.006 (> min_improvement) against a spread 0.014 that 10 pairs
    # resolve only from 0.0185 on
    diffs = [0.005 + (0.001 if i % 2 else -0.001) for i in range(10)]
    outcome = sq.run_decision(scripted([(2.0 - d, 2.0) for d in diffs])[0], RULE, pool_with(SD))
    assert outcome.decision == "discard" and outcome.stats["below_resolution"] == 1
    assert "a stronger profile may resolve it" in outcome.reason


def test_the_reason_says_the_numbers():
    step = sq.step([0.05, 0.051], RULE, pool_with(SD))
    assert step.decision == "keep"
    assert "mean gain 0.0505" in step.reason and "2 pairs" in step.reason
    assert f"lower bound {step.stats['lower']:.4f} > 0" in step.reason
    assert step.stats["pairs"] == 2 and step.stats["dof"] == pytest.approx(201)


def test_a_non_finite_score_is_refused_naming_the_pair():
    next_pair, _ = scripted([(1.99, 2.0), (math.nan, 2.0)])
    with pytest.raises(ValueError, match="pair 1"):
        sq.run_decision(next_pair, RULE, sq.SpreadPool())


def test_an_aborted_decision_still_adds_its_pairs_to_the_pool():
    def next_pair(i: int) -> tuple[float, float]:
        if i == 3:
            raise RuntimeError("the benchmark crashed")
        return 2.0 - [0.01, -0.01, 0.0][i], 2.0

    pool = sq.SpreadPool()
    with pytest.raises(RuntimeError):
        sq.run_decision(next_pair, RULE, pool)
    assert pool.dof == 2 and pool.sum_sq == pytest.approx(0.0002)


# --------------------------------------------------------------------------- error rates


def first_decisions(gain: float, trials: int, seed: int) -> list[sq.Outcome]:
    """Decisions of a fresh session each (an empty pool): the hardest case for alpha."""
    rng = random.Random(seed)
    return [sq.run_decision(lambda i: (2.0 - gain + rng.gauss(0, SD), 2.0), RULE,
                            sq.SpreadPool()) for _ in range(trials)]


def test_an_equal_candidate_is_kept_less_often_than_alpha_at_a_first_decision():
    outcomes = first_decisions(0.0, 3000, seed=1)
    rate = statistics.fmean(o.decision == "keep" for o in outcomes)
    assert rate < RULE.alpha  # measured 1.4%; the union bound promises <= 2%


def test_a_true_gain_of_three_run_spreads_is_kept_at_least_90_percent_at_a_first_decision():
    outcomes = first_decisions(0.03, 1000, seed=2)
    assert statistics.fmean(o.decision == "keep" for o in outcomes) >= 0.90


# --------------------------------------------------------------------------- the spread


def test_the_pool_centres_each_decision_on_its_own_mean():
    pool = sq.SpreadPool.from_decisions([[1.0, 3.0], [10.0, 12.0, 14.0], [5.0, 5.0], [7.0]])
    assert pool.groups == [(2.0, 1), (8.0, 2), (0.0, 1)]  # one pair adds nothing
    assert pool.dof == 4 and pool.sum_sq == pytest.approx(10.0)


def test_fewer_than_three_earlier_decisions_inform_no_spread():
    pool = sq.SpreadPool.from_decisions([[0.01, -0.01], [0.02, 0.0]])
    assert pool.prior() == (0.0, 0.0) and pool.estimate().sd is None
    assert pool.estimate([0.01, 0.03]).dof == 1  # the candidate's own pairs only


def test_the_pools_uncertainty_shrinks_as_decisions_accumulate():
    # decisions that agree exactly on the spread: the prior grows by one dof per decision
    pool, widths = sq.SpreadPool(max_pooled_dof=math.inf), []
    for _ in range(8):
        pool.add([SD / math.sqrt(2), -SD / math.sqrt(2)])  # SS = SD^2, 1 dof
        spread = pool.estimate([0.01, -0.01])
        low, high = spread.interval(0.90)
        widths.append((high - low) / spread.sd)
    assert widths[0] == widths[1]  # 1 and 2 earlier decisions: the candidate's own pairs
    assert all(a > b for a, b in zip(widths[1:], widths[2:], strict=False))


def test_the_pool_counts_earlier_decisions_as_at_most_max_pooled_dof():
    pool = pool_with(SD, dof=500, max_pooled_dof=10)
    spread = pool.estimate([0.01, -0.01])
    assert spread.dof == pytest.approx(11)
    assert spread.sd == pytest.approx(math.sqrt((10 * SD**2 + 0.0002) / 11))


def test_decisions_that_disagree_on_the_spread_count_for_less():
    # spreads 5x apart, as two changes measured at smoke: one candidate's spread says
    # little about the next one's, so the prior has few degrees of freedom
    rng = random.Random(7)
    mixed = sq.SpreadPool(max_pooled_dof=math.inf)
    common = sq.SpreadPool(max_pooled_dof=math.inf)
    for i in range(40):
        sd = 0.003 if i % 2 else 0.015
        mixed.add([rng.gauss(0, sd) for _ in range(4)])
        common.add([rng.gauss(0, 0.009) for _ in range(4)])
    assert mixed.prior()[1] < 3 < 10 < common.prior()[1]


def test_special_functions_match_known_values():
    assert distributions.digamma(1.0) == pytest.approx(-0.5772156649, abs=1e-8)
    assert distributions.trigamma(0.5) == pytest.approx(math.pi**2 / 2, abs=1e-8)
    assert distributions.trigamma_inverse(distributions.trigamma(2.5)) == pytest.approx(2.5)


def test_an_empty_pool_knows_no_spread():
    assert sq.SpreadPool().estimate() == sq.Spread(None, 0.0)
    assert sq.Spread(None, 0.0).interval() is None


def test_a_configured_prior_spread_counts_as_its_pseudo_degrees_of_freedom():
    spread = sq.SpreadPool(prior_sd=0.02, prior_dof=3).estimate()
    assert spread.sd == pytest.approx(0.02) and spread.dof == 3


# --------------------------------------------------------------------------- seeds


def test_the_seed_schedule_is_deterministic_and_starts_at_the_frozen_seed():
    assert sq.seed_schedule(1337, 4) == [1337, 1338, 1339, 1340]
    assert sq.seed_schedule(1337, 4) == sq.seed_schedule(1337, 4)
    assert sq.seed_schedule(1337, 6)[:4] == sq.seed_schedule(1337, 4)  # a prefix


def test_a_new_epoch_uses_seeds_no_earlier_epoch_used():
    used = {s for e in range(3) for s in sq.seed_schedule(1337, RULE.max_runs, e)}
    assert not used & set(sq.seed_schedule(1337, sq.SEED_BLOCK, epoch=3))


def test_both_arms_of_a_pair_come_from_one_call_at_one_index():
    # the judge maps index i to seed_schedule(...)[i] for the candidate and the incumbent
    seeds = sq.seed_schedule(1337, RULE.max_runs)
    measured: list[tuple[str, int]] = []

    def next_pair(i: int) -> tuple[float, float]:
        measured.extend([("candidate", seeds[i]), ("incumbent", seeds[i])])
        return 2.0 - 0.05 - 0.001 * i, 2.0

    sq.run_decision(next_pair, RULE, pool_with(SD))
    assert measured[0::2] == [("candidate", s) for s in seeds[:len(measured) // 2]]
    assert [s for _, s in measured[0::2]] == [s for _, s in measured[1::2]]


def test_bad_seed_schedule_arguments_are_refused():
    with pytest.raises(ValueError, match="n must be"):
        sq.seed_schedule(1337, sq.SEED_BLOCK + 1)
    with pytest.raises(ValueError, match="epoch"):
        sq.seed_schedule(1337, 3, epoch=-1)


# --------------------------------------------------------------------------- resolvable gain


def test_resolvable_gain_with_a_known_spread_is_the_fixed_sample_formula():
    z = statistics.NormalDist().inv_cdf
    expected = (z(1 - 0.02 / 9) + z(0.90)) * SD / math.sqrt(10)
    assert sq.resolvable_gain(RULE, sq.Spread(SD, 1e9)) == pytest.approx(expected, rel=1e-6)


def test_resolvable_gain_is_never_below_min_improvement_and_unknown_without_a_spread():
    assert sq.resolvable_gain(RULE, sq.Spread(1e-6, 100)) == RULE.min_improvement
    assert sq.resolvable_gain(RULE, sq.SpreadPool()) is None


def test_resolvable_gain_grows_with_the_spread_and_shrinks_with_the_cap():
    small, large = (sq.resolvable_gain(RULE, sq.Spread(sd, 50)) for sd in (0.01, 0.02))
    assert large == pytest.approx(2 * small)
    longer = sq.SequentialRule(0.002, max_runs=40)
    assert sq.resolvable_gain(longer, sq.Spread(0.02, 50)) < large


def test_pairs_to_resolve_is_the_smallest_cap_whose_resolvable_gain_is_small_enough():
    spread = sq.Spread(0.028, 50)  # a seed spread of 0.02 per run, as at smoke on the CPU
    n = sq.pairs_to_resolve(RULE, spread, 0.01)

    def resolvable(cap: int) -> float:
        return sq.resolvable_gain(dataclasses.replace(RULE, max_runs=cap), spread)

    assert resolvable(n) <= 0.01 < resolvable(n - 1)
    assert sq.pairs_to_resolve(RULE, spread, 0.002) is None  # not within 1000 pairs
    assert sq.pairs_to_resolve(RULE, sq.SpreadPool(), 0.01) is None


@pytest.mark.parametrize(("futility", "low", "high"), [(0.0, 0.86, 0.95), (0.10, 0.80, 0.90)])
def test_a_gain_of_the_resolvable_size_is_kept_about_1_minus_beta_and_futility_of_the_time(
        futility, low, high):
    rng = random.Random(6)
    rule = dataclasses.replace(RULE, futility=futility)
    gain = sq.resolvable_gain(rule, sq.Spread(SD, 200))
    kept = statistics.fmean(
        sq.run_decision(lambda i: (2.0 - gain + rng.gauss(0, SD), 2.0), rule,
                        pool_with(SD, max_pooled_dof=math.inf)).decision == "keep"
        for _ in range(1500))
    assert low <= kept <= high  # measured 0.89 (no futility look), 0.83 (futility 0.10)


# --------------------------------------------------------------------------- after a keep


def test_after_a_keep_the_incumbent_estimate_is_flagged_selected():
    next_pair, _ = scripted([(1.95, 2.0), (1.949, 2.0)])
    outcome = sq.run_decision(next_pair, RULE, pool_with(SD))
    estimate = outcome.incumbent_estimate()
    assert estimate["val_bpb"] == pytest.approx(1.9495) and estimate["selected"] is True
    assert estimate["gain_lower"] < estimate["mean_gain"] == pytest.approx(0.0505)


def test_the_fresh_runs_of_the_new_incumbent_replace_its_selected_score():
    assert sq.refreshed_incumbent([1.96, 1.98]) == {"val_bpb": pytest.approx(1.97), "runs": 2,
                                                     "selected": False}
    assert sq.refreshed_incumbent([]) is None


def test_only_a_keep_has_an_incumbent_estimate():
    next_pair, _ = scripted([(2.03, 2.0), (2.028, 2.0)])
    outcome = sq.run_decision(next_pair, RULE, pool_with(SD))
    with pytest.raises(ValueError, match="only after a keep"):
        outcome.incumbent_estimate()


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("setting", "value"), [
    ("alpha", 0.0), ("alpha", 0.5), ("alpha", 1.2), ("alpha", math.nan), ("beta", 0.0),
    ("beta", 0.6), ("max_runs", 1), ("min_runs", 1), ("max_runs", 2.5), ("max_runs", True),
    ("min_improvement", -0.001), ("min_improvement", math.inf)])
def test_a_bad_setting_is_refused_naming_it(setting: str, value: object):
    kwargs = {"min_improvement": 0.002, setting: value}
    with pytest.raises(ValueError, match=f"^{setting}: got"):
        sq.SequentialRule(**kwargs)


def test_a_cap_below_the_first_look_is_refused():
    with pytest.raises(ValueError, match="max_runs: got 3 < min_runs 4"):
        sq.SequentialRule(0.002, max_runs=3, min_runs=4)


@pytest.mark.parametrize(("kwargs", "setting"), [
    ({"max_pooled_dof": 0}, "max_pooled_dof"), ({"prior_dof": -1}, "prior_dof"),
    ({"prior_dof": 2}, "prior_sd"), ({"prior_dof": 2, "prior_sd": -0.01}, "prior_sd")])
def test_a_bad_pool_setting_is_refused_naming_it(kwargs: dict, setting: str):
    with pytest.raises(ValueError, match=f"^{setting}"):
        sq.SpreadPool(**kwargs)


# --------------------------------------------------------------------------- distributions


@pytest.mark.parametrize(("p", "dof", "expected"), [
    (0.975, 1, 12.7062), (0.975, 5, 2.5706), (0.99, 10, 2.7638), (0.95, 30, 1.6973)])
def test_t_quantiles_match_the_tables(p: float, dof: int, expected: float):
    assert distributions.t_quantile(p, dof) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("p", "dof", "expected"), [
    (0.95, 5, 11.0705), (0.05, 5, 1.1455), (0.975, 1, 5.0239), (0.5, 2, 1.3863)])
def test_chi_square_quantiles_match_the_tables(p: float, dof: int, expected: float):
    assert distributions.chi2_quantile(p, dof) == pytest.approx(expected, abs=1e-4)


def test_the_false_keeps_bench_runs_every_rule_with_the_daemons_code():
    """bench/false_keeps.py drives the judge's own functions: a rename there must fail here,
    not on the next person who runs the bench."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "false_keeps.py"
    done = subprocess.run([sys.executable, str(bench), "--sessions", "4", "--power-sessions",
                           "2", "--decisions", "3", "--scenario", "gpu"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for rule in ("sequential", "seq-fresh", "today", "naive"):
        assert f" {rule} " in done.stdout
