"""The report's numbers: chart points per (dataset, profile), progress, counts and time by
status, where the time went, the agent's spending, sessions and the evidence lines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loop.ui import evidence
from loop.ui.report.fmt import fmt_duration, fmt_rate
from loop.ui.report.rows import (
    FAILED,
    NOT_BENCHMARKED,
    UNKNOWN,
    benchmark_seconds,
    category,
    experiments,
    is_kept_change,
    loop_experiments,
    number,
    parse_time,
    rung_metric,
    rungs,
    session_headers,
    trusted_val_bpb,
)


@dataclass
class Point:
    """One experiment's result at one profile."""

    x: int              # position among the loop's experiments, chronological, from 1
    id: str
    session: str
    kind: str           # "kept" | "baseline" | "discard" | "over_cap" | "unknown"
    val_bpb: float | None
    total_bytes: float | None


def _kind(row: dict, val_bpb: float | None) -> str:
    status = row.get("status")
    if status in FAILED or val_bpb is None:
        return "unknown"
    if status == "keep":
        return "baseline" if row.get("baseline") else "kept"
    return "over_cap" if status == "over_cap" else "discard"


def _row_profiles(row: dict, headers: dict[str, dict]) -> list[str]:
    """The profiles a row is charted at (a never-benchmarked failure: its first rung)."""
    measured = list(rungs(row))
    if measured or row.get("status") not in NOT_BENCHMARKED:
        return measured
    ladder = headers.get(str(row.get("session")), {}).get("ladder")
    return [ladder[0]] if isinstance(ladder, list) and ladder else []


def series(rows: list[dict]) -> dict[tuple[str, str], list[Point]]:
    """Chart points per (dataset, profile), in ledger order; duplicates were not run."""
    headers = session_headers(rows)
    found: dict[tuple[str, str], list[Point]] = {}
    for x, row in enumerate(loop_experiments(rows), start=1):
        if row.get("status") == "duplicate":
            continue
        dataset = str(row.get("dataset") or UNKNOWN)
        for profile in _row_profiles(row, headers):
            val = trusted_val_bpb(row, profile)
            total = None if row.get("status") in FAILED else rung_metric(row, profile,
                                                                         "total_bytes")
            point = Point(x, str(row.get("id", "?")), str(row.get("session") or UNKNOWN),
                          _kind(row, val), val, total)
            found.setdefault((dataset, profile), []).append(point)
    return found


def by_session(points: list[Point]) -> list[list[Point]]:
    """Consecutive runs of points from one session (each session has its own incumbent)."""
    groups: list[list[Point]] = []
    for point in points:
        if groups and groups[-1][0].session == point.session:
            groups[-1].append(point)
        else:
            groups.append([point])
    return groups


def running_best(points: list[Point]) -> list[tuple[int, float]]:
    """(x, best so far) at every kept or baseline point of one session, for a step line."""
    steps: list[tuple[int, float]] = []
    best: float | None = None
    for point in points:
        if point.kind in ("kept", "baseline") and point.val_bpb is not None:
            best = point.val_bpb if best is None else min(best, point.val_bpb)
            steps.append((point.x, best))
    return steps


@dataclass
class Progress:
    dataset: str
    profile: str
    start: float | None      # the first baseline (or first kept) measurement
    start_id: str | None
    best: float | None       # the lowest kept or baseline measurement
    best_id: str | None
    kept: int                # kept changes measured at this profile

    @property
    def delta(self) -> float | None:
        if self.start is None or self.best is None:
            return None
        return self.best - self.start


def progress(rows: list[dict]) -> list[Progress]:
    """Start and best val_bpb per (dataset, profile)."""
    result = []
    for (dataset, profile), points in series(rows).items():
        good = [(p.val_bpb, p) for p in points
                if p.kind in ("kept", "baseline") and p.val_bpb is not None]
        first = next((p for _, p in good if p.kind == "baseline"), good[0][1] if good else None)
        best = min(good, key=lambda pair: pair[0])[1] if good else None
        result.append(Progress(dataset, profile,
                               first.val_bpb if first else None, first.id if first else None,
                               best.val_bpb if best else None, best.id if best else None,
                               sum(1 for p in points if p.kind == "kept")))
    return result


def count_by_category(rows: list[dict]) -> Counter[str]:
    """Experiments per category (status; good baselines and manual runs apart)."""
    return Counter(category(r) for r in experiments(rows))


@dataclass
class TimeSpent:
    seconds: float = 0.0     # benchmark seconds known (rows.benchmark_seconds)
    unknown: int = 0         # rungs whose wall_s is unknown
    rungs: int = 0           # rungs run at all (0: no benchmark ever ran)

    def text(self) -> str:
        if not self.rungs:
            return "no benchmark run"
        if self.unknown == self.rungs:
            return UNKNOWN
        extra = f" (+{self.unknown} run(s) of unknown duration)" if self.unknown else ""
        return fmt_duration(self.seconds) + extra


def time_by_category(rows: list[dict]) -> dict[str, TimeSpent]:
    """Benchmark time per category: every run each decision made (rows.benchmark_seconds)."""
    totals: dict[str, TimeSpent] = {}
    for row in experiments(rows):
        seconds, unknown = benchmark_seconds(row)
        spent = totals.setdefault(category(row), TimeSpent())
        spent.seconds += seconds
        spent.unknown += unknown
        spent.rungs += len(rungs(row))
    return totals


# How the split of a session's time reads (row field `time_s`, loop.store.rows.TIME_KINDS).
TIME_LABELS = {"propose": "proposing", "checks": "checks", "screen": "first runs",
               "repeats": "more seeds / re-runs", "incumbent": "incumbent runs",
               "judge": "the judge's scoring"}


def time_split(rows: list[dict]) -> tuple[dict[str, float], int]:
    """Seconds per kind of time over the experiments' `time_s` (baselines' own runs as
    "baselines"), and how many experiments did not record it (rows written before it)."""
    split: dict[str, float] = {}
    missing = 0
    for row in experiments(rows):
        spent = row.get("time_s")
        if not isinstance(spent, dict):
            missing += 1
            continue
        for kind, seconds in spent.items():
            value = number(seconds)
            if value is None:
                continue
            key = "baselines" if row.get("baseline") and kind in ("screen", "repeats") \
                else kind
            split[key] = split.get(key, 0.0) + value
    return split, missing


def experiments_per_hour(header: dict | None, rows: list[dict],
                         stop: dict | None = None) -> float | None:
    """Candidate experiments (baselines not counted) per hour of the session: from its
    header to its stop row (else its last experiment row); None when the times are unknown."""
    start = parse_time((header or {}).get("timestamp"))
    exps = experiments(rows)
    last = stop or (exps[-1] if exps else None)
    end = parse_time((last or {}).get("timestamp"))
    if start is None or end is None or end <= start:
        return None
    changes = sum(1 for r in exps if not r.get("baseline"))
    return changes / ((end - start).total_seconds() / 3600)


def time_split_text(rows: list[dict]) -> str | None:
    """e.g. "first runs 20m 10s, incumbent runs 9m 02s, ..." largest first; None when no
    experiment recorded its time."""
    split, missing = time_split(rows)
    if not split:
        return None
    labels = {**TIME_LABELS, "baselines": "baselines"}
    parts = [f"{labels.get(k, k)} {fmt_duration(v)}"
             for k, v in sorted(split.items(), key=lambda kv: -kv[1])]
    extra = f" (+{missing} experiment(s) that did not record it)" if missing else ""
    return ", ".join(parts) + extra
@dataclass
class AgentSpent:
    """What the agent proposer used over some rows (their `agent` attempts); cost and tokens
    are sums over the attempts that reported them, unknown when none did."""

    attempts: int = 0
    tries: int = 0
    retries: int = 0
    wall_s: float = 0.0
    waited_s: float = 0.0
    cost_usd: float | None = None
    tokens: int | None = None
    unreported: int = 0  # attempts whose CLI reported no usage

    def add(self, attempt: dict) -> None:
        self.attempts += 1
        self.retries += int(number(attempt.get("retries")) or 0)
        self.tries += int(number(attempt.get("tries")) or 1)
        self.wall_s += number(attempt.get("wall_s")) or 0.0
        self.waited_s += number(attempt.get("waited_s")) or 0.0
        usage = attempt.get("usage") if isinstance(attempt.get("usage"), dict) else {}
        cost = number(usage.get("cost_usd"))
        tokens = [number(usage.get(k)) for k in ("input_tokens", "output_tokens")]
        known = [t for t in tokens if t is not None]
        self.unreported += cost is None and not known
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost
        if known:
            self.tokens = (self.tokens or 0) + int(sum(known))

    def cost_text(self) -> str:
        if self.cost_usd is None and self.tokens is None:
            return f"cost and tokens {UNKNOWN} (the agent CLI reported none)"
        cost = f"${self.cost_usd:.2f}" if self.cost_usd is not None else UNKNOWN
        tokens = f"{self.tokens:,}" if self.tokens is not None else UNKNOWN
        gap = (f"; {self.unreported} attempt(s) reported nothing, {UNKNOWN} for them"
               if self.unreported else "")
        return f"cost {cost}, tokens {tokens}{gap}"

    def text(self) -> str:
        return (f"{self.attempts} attempt(s), {fmt_duration(self.wall_s)} of agent time, "
                f"{self.retries} retries after rate limits ({fmt_duration(self.waited_s)} "
                f"waited); {self.cost_text()}")


def agent_spent(rows: Iterable[dict]) -> AgentSpent | None:
    """The agent's spending over these rows' attempts; None when no row has one."""
    spent = AgentSpent()
    for row in experiments(rows):
        if isinstance(row.get("agent"), dict):
            spent.add(row["agent"])
    return spent if spent.attempts else None


def deltas(row: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    """(profile, val_bpb, incumbent before, delta) for each rung of a row."""
    before = row.get("incumbent_before")
    before = before if isinstance(before, dict) else {}
    out = []
    for profile in rungs(row):
        val = trusted_val_bpb(row, profile)
        base = number(before.get(profile))
        out.append((profile, val, base, None if val is None or base is None else val - base))
    return out


def first_total_bytes(row: dict) -> float | None:
    """The artifact size of the first rung that has one; unknown for a failed run."""
    if row.get("status") in FAILED:
        return None
    for profile in rungs(row):
        value = rung_metric(row, profile, "total_bytes")
        if value is not None:
            return value
    return None


def sessions(rows: list[dict]) -> list[dict]:
    """Each session covered: its header facts, experiment counts and stop reasons."""
    headers = session_headers(rows)
    names = list(headers)
    for row in loop_experiments(rows):
        name = row.get("session")
        if name and str(name) not in names:
            names.append(str(name))  # rows whose header is missing still belong somewhere
    out = []
    for name in names:
        mine = [r for r in loop_experiments(rows) if str(r.get("session")) == name]
        stops = [r for r in rows if r.get("type") == "stop" and str(r.get("session")) == name]
        out.append({"name": name, "header": headers.get(name, {}), "experiments": mine,
                    "kept": sum(1 for r in mine if is_kept_change(r)), "stops": stops})
    return out


def evidence_lines(rows: list[dict], rules: Mapping[str, Any] | None,
                   max_pooled_dof: float = 10.0) -> list[str]:
    """Per session: what each profile can resolve, each keep's score re-measured at fresh
    seeds, proxy fidelity and where the time went (loop.ui.evidence); [] when nothing."""
    lines = []
    for s in sessions(rows):
        exps = s["experiments"]
        found = [] if rules is None else evidence.resolution(exps, rules, max_pooled_dof)
        minimum = next(iter(rules.values())).min_improvement if rules else None
        part = [f"resolvable: {r.text(minimum)}" for r in found]
        part += [f"kept score: {k.text()}" for k in evidence.refreshed(exps)]
        fidelity = evidence.proxy_fidelity(exps)
        part += [fidelity.text()] if fidelity is not None else []
        split = time_split_text(exps)
        rate = experiments_per_hour(s["header"], exps, s["stops"][-1] if s["stops"] else None)
        part += [f"where the time went: {split}; {fmt_rate(rate)}"] if split else []
        lines += [f"session {s['name']}: {line}" for line in part]
    return lines
