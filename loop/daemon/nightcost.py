"""What a night costs on this machine: run times measured here, projected over a night.

Shown by `autogolf status` and at the start of `autogolf run`. Every figure comes from the
ledger's own measurements (each rung's `wall_s`: the time of one benchmark run of that
profile on this machine and dataset, `autogolf bench` runs included); a profile never run
here is `unknown`, with the command that measures it, never a guess.

Per profile of the ladder:
- **one run**: the median time of its last runs here, the judge's scoring of the artifact
  included;
- **one decision, at most**: the keep rule's cap - under the sequential rule `max_runs`
  pairs of a candidate run and an incumbent run (2 x max_runs runs), under the calibrated
  margin one run plus `rerun_close` re-runs.

Per night (`hours`): the number of experiments between the worst case (every candidate goes
to the cap at every rung) and the best (every candidate a clear loser at the first look:
`min_runs` candidate runs at the first rung, the incumbent's runs at those seeds already
known), and, once the session has finished experiments, at its measured pace.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from loop.config import Config

RECENT_RUNS = 10  # the median is taken over this profile's last runs (the model may change)
DEFAULT_NIGHT_H = 8.0


@dataclass(frozen=True)
class ProfileCost:
    profile: str
    run_s: float | None  # median wall time of one run here (None: never run here)
    runs_measured: int
    decision_runs: int  # runs in one decision at most (the keep rule's cap)

    @property
    def decision_s(self) -> float | None:
        return None if self.run_s is None else self.run_s * self.decision_runs

    def text(self, rule: str) -> str:
        if self.run_s is None:
            return (f"{self.profile:<8} one run unknown (never run here: measure it with "
                    f"`autogolf bench --profile {self.profile}`)")
        return (f"{self.profile:<8} one run {_duration(self.run_s)} (median of "
                f"{self.runs_measured}, the judge's scoring included); one decision at most "
                f"{rule} = "
                f"{_duration(self.decision_s)}")


MEASURING = ("screen", "repeats", "incumbent", "judge")  # the time_s kinds of a run


def run_times(rows: list[dict], profile: str, dataset: str | None) -> list[float]:
    """Seconds one run of `profile` took in each row of `rows` (of `dataset` when given),
    oldest first, the judge's scoring included: a row measured at this profile only gives
    its measuring time (time_s: runs and judge) per run; another row its first run's wall_s."""
    times = []
    for row in rows:
        if row.get("type") != "experiment" or (dataset and row.get("dataset") != dataset):
            continue
        rungs = row.get("rungs") or {}
        rung = rungs.get(profile)
        wall = rung.get("wall_s") if isinstance(rung, dict) else None
        if not isinstance(wall, (int, float)) or wall <= 0:
            continue
        spent = row.get("time_s") or {}
        measuring = sum(v for k, v in spent.items() if k in MEASURING
                        and isinstance(v, (int, float)))
        runs = 1 + len(rung.get("run_logs") or [])
        alone = list(rungs) == [profile] and measuring >= wall
        times.append(measuring / runs if alone else float(wall))
    return times


def decision_runs(cfg: Config, profile: str) -> int:
    """The most benchmark runs one decision at `profile` can take under cfg's keep rule."""
    if cfg.keep_rule_enabled:
        return 2 * cfg.keep_max_runs.get(profile, 10)
    return 1 + cfg.noise_rerun_close


def rule_text(cfg: Config, profile: str) -> str:
    if cfg.keep_rule_enabled:
        return f"{cfg.keep_max_runs.get(profile, 10)} pairs x 2 runs"
    return f"1 run + {cfg.noise_rerun_close} re-runs"


def profile_costs(rows: list[dict], cfg: Config, ladder: tuple[str, ...],
                  dataset: str | None) -> list[ProfileCost]:
    out = []
    for profile in ladder:
        times = run_times(rows, profile, dataset)[-RECENT_RUNS:]
        out.append(ProfileCost(profile, statistics.median(times) if times else None,
                               len(times), decision_runs(cfg, profile)))
    return out


def session_pace(rows: list[dict], session: str | None) -> tuple[int, float] | None:
    """(experiments, mean seconds each) of the session's finished candidates, from each row's
    `time_s` (proposing, checks, every run and the judge); None before the first."""
    spent = [sum(v for v in (r.get("time_s") or {}).values() if isinstance(v, (int, float)))
             for r in rows if r.get("type") == "experiment" and r.get("session") == session
             and session is not None and not r.get("baseline") and not r.get("manual")]
    spent = [s for s in spent if s > 0]
    return (len(spent), statistics.fmean(spent)) if spent else None


def night_lines(rows: list[dict], cfg: Config, ladder: tuple[str, ...], dataset: str | None,
                session: str | None = None, hours: float | None = None) -> list[str]:
    """The lines `status` and `run` print: per profile, then the night's projection."""
    hours = hours or DEFAULT_NIGHT_H
    costs = profile_costs(rows, cfg, ladder, dataset)
    lines = [f"what a night costs here (run times measured on this machine, dataset "
             f"{dataset or 'unknown'}):"]
    lines += [f"  {c.text(rule_text(cfg, c.profile))}" for c in costs]
    night_s = hours * 3600
    if all(c.run_s is not None for c in costs):
        worst = sum(c.decision_s or 0.0 for c in costs)
        first = costs[0].run_s or 0.0
        clear = (cfg.keep_min_runs if cfg.keep_rule_enabled else 1) * first
        lines.append(f"  one experiment: {_duration(clear)} (a clear loser at the first look) "
                     f"to {_duration(worst)} (to the cap at every rung); in {hours:.3g} h: "
                     f"{int(night_s // worst)}-{int(night_s // clear)} experiments")
        lines.append(f"  `touch .autogolf/STOP` ends the night after the run in flight (at "
                     f"most {_duration(max(c.run_s or 0.0 for c in costs))} here)")
    pace = session_pace(rows, session)
    if pace is not None:
        count, mean = pace
        lines.append(f"  at this session's pace ({count} experiment(s), {_duration(mean)} each "
                     f"on average): {int(night_s // mean)} experiments in {hours:.3g} h")
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
