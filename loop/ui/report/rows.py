"""Reading ledger rows for the report: which rows are experiments, a rung's numbers, times,
and a row's patch. A value that is missing or not a finite number is None (unknown)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loop.store.statuses import NAMES as STATUSES
from loop.store.statuses import names_where

# Statuses whose rung values are not a trustworthy measurement: shown as "unknown".
FAILED = names_where(failed_run=True)
# Failed before any benchmark ran: no rung, charted on the session's first rung.
NOT_BENCHMARKED = names_where(benchmarked=False)
MAX_PATCH_CHARS = 200_000
UNKNOWN = "unknown"


def number(value: Any) -> float | None:
    """A finite number, or None (unknown): booleans, strings, NaN and inf are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def experiments(rows: Iterable[dict]) -> list[dict]:
    return [r for r in rows if isinstance(r, dict) and r.get("type") == "experiment"]


def loop_experiments(rows: Iterable[dict]) -> list[dict]:
    """The loop's experiments (baselines included), without manual `bench` rows."""
    return [r for r in experiments(rows) if not r.get("manual")]


def manual_runs(rows: Iterable[dict]) -> list[dict]:
    return [r for r in experiments(rows) if r.get("manual")]


def is_kept_change(row: dict) -> bool:
    return row.get("status") == "keep" and not row.get("baseline") and not row.get("manual")


def category(row: dict) -> str:
    """What a row counts as: its status, except a good baseline and any manual run."""
    if row.get("manual"):
        return "manual"
    status = row.get("status") or UNKNOWN
    if row.get("baseline") and status == "keep":
        return "baseline"
    return status


def categories() -> list[str]:
    """Every category in display order (SPEC section 6 statuses, then ours)."""
    return [*STATUSES, "baseline", "manual"]


def rungs(row: dict) -> dict[str, dict]:
    value = row.get("rungs")
    if not isinstance(value, dict):
        return {}
    return {p: r for p, r in value.items() if isinstance(r, dict)}


def rung_metric(row: dict, profile: str, name: str) -> float | None:
    return number(rungs(row).get(profile, {}).get(name))


def trusted_val_bpb(row: dict, profile: str) -> float | None:
    """val_bpb at `profile`, or None when the row failed (its number is not a result)."""
    if row.get("status") in FAILED:
        return None
    return rung_metric(row, profile, "val_bpb")


def wall_seconds(row: dict) -> tuple[float, int]:
    """(sum of the known rung wall_s, number of rungs whose wall_s is unknown). A rung's
    wall_s is its first run's: benchmark_seconds counts the others too."""
    total, unknown = 0.0, 0
    for rung in rungs(row).values():
        seconds = number(rung.get("wall_s"))
        if seconds is None:
            unknown += 1
        else:
            total += seconds
    return total, unknown


# The kinds of a row's `time_s` (loop.store.rows.TIME_KINDS) that are benchmark runs.
BENCHMARK_TIME_KINDS = ("screen", "repeats", "incumbent")


def benchmark_seconds(row: dict) -> tuple[float, int]:
    """(seconds of every benchmark run the row's decision made, runs of unknown duration):
    from its `time_s` (first runs, further seeds and re-runs, the incumbent's runs for the
    pairs) when it recorded them, else its rungs' wall_s (rows written before `time_s`)."""
    spent = row.get("time_s")
    if isinstance(spent, dict):
        known = [number(spent.get(kind)) for kind in BENCHMARK_TIME_KINDS]
        if any(v is not None for v in known):
            return sum(v for v in known if v is not None), 0
    return wall_seconds(row)


def session_headers(rows: Iterable[dict]) -> dict[str, dict]:
    return {str(r.get("session")): r for r in rows
            if isinstance(r, dict) and r.get("type") == "session" and r.get("session")}


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def patch_text(row: dict, repo: Path | None) -> tuple[str | None, str]:
    """(the patch text or None, a note: where it came from or why it is missing)."""
    raw = row.get("patch")
    if not isinstance(raw, str) or not raw:
        return None, "no patch recorded"
    path = Path(raw)
    if not path.is_absolute():
        path = (repo or Path.cwd()) / path
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, f"patch file not found: {raw}"
    if len(text) > MAX_PATCH_CHARS:
        return text[:MAX_PATCH_CHARS], f"{raw} (first {MAX_PATCH_CHARS:,} characters)"
    return text, raw
