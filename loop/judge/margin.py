"""The margin rule (`keep_rule.enabled: false`): keep a candidate that beats the incumbent by
at least the noise-aware margin, re-running a close win and judging the mean.

Pure decisions, no I/O: the ladder (loop.judge.judge) measures and calls these; the
arithmetic of spread and margin is loop.judge.noise's. The default rule is the sequential one
(loop.judge.sequential); this one stays for `keep_rule.enabled: false` and for comparison
(bench/false_keeps.py, tests/test_noise.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from loop.judge import noise
from loop.judge.verdict import Verdict

# Scores are printed with 8 decimals, so differences below 1e-9 are float noise: a candidate
# exactly at the margin must not lose because 1.2365 - 1.2345 is 0.0019999999999997797.
FLOAT_SLACK = 1e-9


def compare(val_bpb: float, incumbent: float | None, margin: float) -> Verdict:
    """keep when val_bpb <= incumbent - margin, else discard; no incumbent = a baseline keep."""
    if not math.isfinite(val_bpb):
        raise ValueError(f"compare() needs a finite val_bpb (judge_run first), got {val_bpb}")
    if incumbent is None:
        return Verdict("keep", f"baseline: val_bpb {fmt(val_bpb)} measured with no incumbent "
                       "at this profile; it becomes the incumbent", margin, val_bpb)
    gain = incumbent - val_bpb
    head = "val_bpb {} vs incumbent {}: ".format(*fmt_pair(val_bpb, incumbent))
    shown_gain, shown_margin = fmt_pair(gain, margin)
    if gain >= margin - FLOAT_SLACK:
        return Verdict("keep", head + f"improved by {shown_gain} >= margin {shown_margin}",
                       margin, val_bpb)
    if gain > 0:
        why = f"improved by only {shown_gain} < margin {shown_margin}"
    elif gain == 0:
        why = f"no change; needs an improvement of at least margin {fmt(margin)}"
    else:
        why = f"worse by {fmt(-gain)} (margin {fmt(margin)})"
    return Verdict("discard", head + why, margin, val_bpb)


@dataclass(frozen=True)
class Rule:
    """The decision settings of one profile."""

    min_improvement: float
    k: float
    spread: float | None
    rerun_close: int = 0  # extra runs for a candidate that wins by less than the margin


@dataclass
class Judgement:
    verdict: Verdict
    values: list[float] = field(default_factory=list)  # every run of the candidate, in order
    margin: float = 0.0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)


def judge_with_reruns(first: float, incumbent: float | None, n_incumbent: int, rule: Rule,
                      rerun: Callable[[], float]) -> Judgement:
    """Keep or discard a candidate whose first run scored `first`.

    `incumbent` is a mean of `n_incumbent` runs. A close win is re-run `rule.rerun_close`
    times (`rerun()` returns one more score; it may raise to end the experiment) and judged
    on the mean of all its runs, against the margin for that many runs.
    """
    judged = judge_first(first, incumbent, n_incumbent, rule)
    if not wants_reruns(judged, incumbent, rule):
        return judged
    values = [first, *(rerun() for _ in range(rule.rerun_close))]
    return judge_mean(values, incumbent, n_incumbent, rule)


def judge_first(first: float, incumbent: float | None, n_incumbent: int,
                rule: Rule) -> Judgement:
    """The verdict on one run against the margin for one candidate run."""
    margin = noise.margin_for(rule.min_improvement, rule.k, rule.spread, 1, n_incumbent)
    return Judgement(compare(first, incumbent, margin), [first], margin)


def wants_reruns(judged: Judgement, incumbent: float | None, rule: Rule) -> bool:
    """A first run close to the incumbent (a close win) is re-run `rule.rerun_close` times."""
    return (incumbent is not None and rule.rerun_close > 0
            and noise.is_close(judged.values[0], incumbent, judged.margin))


def judge_mean(values: list[float], incumbent: float | None, n_incumbent: int,
               rule: Rule) -> Judgement:
    """The verdict on the mean of a close win's runs, against the margin for that many."""
    margin = noise.margin_for(rule.min_improvement, rule.k, rule.spread, len(values),
                              n_incumbent)
    verdict = compare(statistics.fmean(values), incumbent, margin)
    verdict.reason = f"mean of {len(values)} runs (a close win was re-run): {verdict.reason}"
    return Judgement(verdict, list(values), margin)


def noise_estimate(rows: list[dict], profile: str, dataset_id: str,
                   fixed: float | None) -> noise.NoiseEstimate:
    """The pooled calibrated spread at `profile` from the rows' repeated runs on the dataset,
    else the `fixed` one from autogolf.yaml (noise: {profile: spread})."""
    groups, last = [], None
    for row in rows:
        rung = (row.get("rungs") or {}).get(profile)
        runs = rung.get("runs") if isinstance(rung, dict) else None
        if row.get("dataset") != dataset_id or not isinstance(runs, list):
            continue
        groups.append([v for v in runs if isinstance(v, (int, float))])
        if (row.get("calibration") or {}).get("profile") == profile:
            last = row
    spread = noise.pooled_spread(groups)
    if last is None or spread is None:
        return noise.NoiseEstimate(fixed, "fixed")
    return noise.NoiseEstimate(spread, "calibrated", sum(map(len, groups)), last["id"])


def keeps_since_calibration(rows: list[dict]) -> int:
    """Keeps (not baselines) recorded after the last calibration row."""
    keeps = 0
    for row in reversed(rows):
        if row.get("calibration"):
            break
        keeps += row.get("status") == "keep" and not row.get("baseline")
    return keeps


def fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Both numbers with 4 decimals, or more when 4 would print two different numbers alike
    (a reason saying "improved by only 0.0020 < margin 0.0020" would read as a bug)."""
    for digits in range(4, 9):
        left, right = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if left != right:
            return left, right
    return f"{a:.4f}", f"{b:.4f}"  # equal to 8 decimals: the same score

