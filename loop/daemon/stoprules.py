"""When `autogolf run` stops (SPEC section 5): the rules, and the reason the stop row gives.

Checked between experiments: a stop signal, a fatal problem, --max-experiments, the --until
deadline, --hours of awake time, the stop file, N consecutive failures, a proposer that only
repeats itself, and the pre-flight checks. (A signal and the deadline also end the run in
flight; the stop file ends an experiment between its runs: loop.daemon.scheduler.) The
statuses that count as failures are the status table's (loop.store.statuses).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from loop.errors import UserError
from loop.store.statuses import names_where

FAILURES = names_where(failure=True)
# A proposer that only repeats measured changes would otherwise spin forever writing rows.
MAX_CONSECUTIVE_DUPLICATES = 25


@dataclass
class StopRules:
    max_experiments: int | None = None
    deadline: float | None = None  # time.time() after which no experiment starts
    max_consecutive_failures: int = 5  # 0 = never stop on failures
    stop_file: Path | None = None
    hours: float | None = None  # --hours: awake time (loop.daemon.awake), counted from run()


@dataclass
class Tally:
    """What the stop rules count, experiment by experiment."""

    done: int = 0
    failures: int = 0  # consecutive
    duplicates: int = 0  # consecutive
    failure_statuses: list[str] = field(default_factory=list)  # of the current streak

    def add(self, status: str) -> None:
        self.done += 1
        if status in FAILURES:
            self.failures += 1
            self.failure_statuses.append(status)
        else:
            self.failures, self.failure_statuses = 0, []
        self.duplicates = self.duplicates + 1 if status == "duplicate" else 0


def budget_reason(rules: StopRules, tally: Tally, now: float | None = None) -> str | None:
    """--max-experiments or the --until deadline, as the stop row's reason; None if neither."""
    now = time.time() if now is None else now
    if rules.max_experiments is not None and tally.done >= rules.max_experiments:
        return f"reached --max-experiments {rules.max_experiments}"
    if rules.deadline is not None and now >= rules.deadline:
        return "reached the time limit (--until/--hours)"
    return None


def streak_reason(rules: StopRules, tally: Tally) -> str | None:
    """A failure streak or a proposer that only repeats itself; None while neither."""
    if 0 < rules.max_consecutive_failures <= tally.failures:
        kinds = ", ".join(dict.fromkeys(tally.failure_statuses)) or "crash/timeout/checks/metric"
        return f"{tally.failures} consecutive failures ({kinds}); see the last rows"
    if tally.duplicates >= MAX_CONSECUTIVE_DUPLICATES:
        return (f"{tally.duplicates} duplicates in a row: the proposer only repeats measured "
                "changes")
    return None


def expected_cost_s(rows: list[dict], ladder: tuple[str, ...], last: int = 5) -> float | None:
    """What the next experiment is expected to take: per rung of the ladder, the median wall
    time of that profile's last `last` benchmark runs this session (extra runs included);
    None while some rung has never run (then nothing is known, and nothing is refused)."""
    total = 0.0
    for profile in ladder:
        walls = [r["rungs"][profile]["wall_s"] for r in rows
                 if isinstance((r.get("rungs") or {}).get(profile), dict)
                 and isinstance(r["rungs"][profile].get("wall_s"), (int, float))][-last:]
        if not walls:
            return None
        walls.sort()
        extra = max((len(r["rungs"][profile].get("run_logs") or [])
                     for r in rows[-last:] if profile in (r.get("rungs") or {})), default=0)
        total += walls[len(walls) // 2] * (1 + extra)
    return total


def deadline_from(until: str | None, hours: float | None,
                  now: datetime | None = None) -> float | None:
    """The earlier of `--until HH:MM` (next such local time) and `--hours H` from now."""
    now = now or datetime.now().astimezone()
    limits = []
    if hours is not None:
        if hours <= 0:
            raise UserError(f"--hours must be a positive number of hours, got {hours}")
        limits.append(now + timedelta(hours=hours))
    if until is not None:
        limits.append(_next_clock_time(until, now))
    return min(limits).timestamp() if limits else None


def _next_clock_time(until: str, now: datetime) -> datetime:
    try:
        hh, mm = (int(p) for p in until.split(":"))
        target = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    except ValueError:
        raise UserError(
            f"--until must be a local time HH:MM (24-hour), e.g. --until 07:30; got {until!r}"
        ) from None
    return target if target > now else target + timedelta(days=1)
