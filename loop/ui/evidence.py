"""What a session's evidence says about its own keeps (issue 16), for `status` and the report.

Three views, pure functions of ledger rows:

- `resolution`: per profile, the smallest gain the sequential rule's run cap can confirm with
  the spread measured so far, and the pairs `min_improvement` would need (a profile whose
  seed spread is ten times the gain cannot confirm it in ten pairs: say so, do not hope);
- `proxy_fidelity`: how well the gains at breadth rank the gains at confirm (Spearman's rank
  correlation over the candidates measured at both), with a warning below 0.5;
- `refreshed`: a kept candidate's score as its selected runs say (optimistic: they won) and as
  the later decisions measured it at seeds its keep never saw (loop.judge.sequential's
  module docstring: its own runs are reused, and decisions that need more pairs run it at
  further seeds).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from loop.judge import sequential

POOR_FIDELITY = 0.5  # below this rank correlation, breadth wins often do not hold at confirm
MIN_FIDELITY_PAIRS = 5  # fewer candidates than this: the correlation is shown, not warned on


@dataclass(frozen=True)
class Resolution:
    profile: str
    max_runs: int
    decisions: int
    gain: float | None  # the smallest gain confirmable within max_runs pairs (None: unknown)
    pairs_needed: int | None  # pairs min_improvement needs (None: more than any cap here)

    def text(self, min_improvement: float) -> str:
        gain = "unknown" if self.gain is None else f"{self.gain:.4f}"
        need = (f"{self.pairs_needed} pairs" if self.pairs_needed is not None
                else "more than any cap here")
        return (f"{self.profile:<8} smallest gain confirmable in {self.max_runs} pairs: {gain}; "
                f"a gain of {min_improvement:g} needs {need} (the spread of "
                f"{self.decisions} decision{'s' if self.decisions != 1 else ''})")


def decisions_at(rows: list[dict], profile: str) -> list[list[float]]:
    """The paired differences of each sequential decision at `profile`, in ledger order."""
    found = []
    for row in rows:
        seq = ((row.get("rungs") or {}).get(profile) or {}).get("sequential")
        if isinstance(seq, dict) and seq.get("diffs"):
            found.append([float(d) for d in seq["diffs"]])
    return found


def resolution(rows: list[dict], rules: Mapping[str, sequential.SequentialRule],
               max_pooled_dof: float) -> list[Resolution]:
    """Per profile of `rules` with a sequential decision in `rows` (one session's): what the
    cap can resolve, from the latest decision's spread with the earlier ones as its prior."""
    out = []
    for profile, rule in rules.items():
        decisions = decisions_at(rows, profile)
        if not decisions:
            continue
        pool = sequential.SpreadPool.from_decisions(decisions[:-1],
                                                    max_pooled_dof=max_pooled_dof)
        spread = pool.estimate(decisions[-1])
        out.append(Resolution(profile, rule.max_runs, len(decisions),
                              sequential.resolvable_gain(rule, spread),
                              sequential.pairs_to_resolve(rule, spread, rule.min_improvement)))
    return out


# --------------------------------------------------------------------------- proxy fidelity


def rung_gains(rows: list[dict], cheap: str, strong: str) -> list[tuple[float, float]]:
    """(gain at `cheap`, gain at `strong`) of each candidate measured at both rungs."""
    pairs = []
    for row in rows:
        if row.get("baseline"):
            continue
        before, rungs = row.get("incumbent_before") or {}, row.get("rungs") or {}
        values = [(before.get(p), (rungs.get(p) or {}).get("val_bpb")) for p in (cheap, strong)]
        if all(isinstance(a, (int, float)) and isinstance(b, (int, float)) for a, b in values):
            pairs.append((values[0][0] - values[0][1], values[1][0] - values[1][1]))
    return pairs


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 0, ties given their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def rank_correlation(pairs: list[tuple[float, float]]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None below 3 pairs or no spread."""
    if len(pairs) < 3:
        return None
    try:
        return statistics.correlation(_ranks([p[0] for p in pairs]),
                                      _ranks([p[1] for p in pairs]))
    except statistics.StatisticsError:  # every gain the same at one rung
        return None


@dataclass(frozen=True)
class Fidelity:
    cheap: str
    strong: str
    rho: float
    candidates: int

    @property
    def poor(self) -> bool:
        return self.rho < POOR_FIDELITY and self.candidates >= MIN_FIDELITY_PAIRS

    def text(self) -> str:
        warn = (f"  <- poor: {self.cheap} wins often do not hold at {self.strong}; consider a "
                f"stronger {self.cheap} profile") if self.poor else ""
        return (f"proxy fidelity: {self.cheap} -> {self.strong} gain rank correlation "
                f"{self.rho:.2f} over {self.candidates} candidates{warn}")


def proxy_fidelity(rows: list[dict], cheap: str = "breadth",
                   strong: str = "confirm") -> Fidelity | None:
    """How well `cheap` predicts `strong` over the candidates measured at both (None: too few)."""
    pairs = rung_gains(rows, cheap, strong)
    rho = rank_correlation(pairs)
    return None if rho is None else Fidelity(cheap, strong, rho, len(pairs))


# --------------------------------------------------------------------------- incumbents


@dataclass(frozen=True)
class Refreshed:
    id: str
    profile: str
    selected: float  # the mean of the runs its keep was decided on (optimistic)
    selected_runs: int
    fresh: float | None  # the mean of its runs at seeds its keep never saw (None: none yet)
    fresh_runs: int

    def text(self) -> str:
        fresh = ("not re-measured yet" if self.fresh is None else
                 f"{self.fresh:.4f} at {self.fresh_runs} fresh seed(s) "
                 f"({self.fresh - self.selected:+.4f})")
        return (f"{self.profile:<8} {self.id}: {self.selected:.4f} from its {self.selected_runs} "
                f"selected runs; {fresh}")


def refreshed(rows: list[dict]) -> list[Refreshed]:
    """Each sequential keep's score: selected, and re-measured by the decisions after it."""
    out = []
    for row in rows:
        if row.get("status") != "keep" or row.get("baseline"):
            continue
        for profile, rung in (row.get("rungs") or {}).items():
            seq = (rung or {}).get("sequential") if isinstance(rung, dict) else None
            estimate = (seq or {}).get("estimate")
            if not isinstance(estimate, dict) or estimate.get("val_bpb") is None:
                continue
            fresh = _fresh_runs(rows, row.get("id"), profile, set(seq.get("seeds") or []))
            value = sequential.refreshed_incumbent(list(fresh.values()))
            out.append(Refreshed(str(row.get("id")), profile, float(estimate["val_bpb"]),
                                 int(estimate.get("runs") or 0),
                                 None if value is None else float(value["val_bpb"]),
                                 len(fresh)))
    return out


def _fresh_runs(rows: list[dict], kept_id: object, profile: str,
                selected: set[int]) -> dict[int, float]:
    """The kept candidate's runs, by seed, as the incumbent of later decisions."""
    fresh: dict[int, float] = {}
    for row in rows:
        seq = ((row.get("rungs") or {}).get(profile) or {}).get("sequential")
        if not isinstance(seq, dict) or seq.get("incumbent_id") != kept_id:
            continue
        for seed, value in zip(seq.get("seeds") or [], seq.get("incumbent") or [], strict=False):
            if seed not in selected and isinstance(value, (int, float)):
                fresh[seed] = float(value)
    return fresh
