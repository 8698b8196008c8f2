"""Values as the report writes them: unknown stays "unknown", never 0; ideas and their
evidence as text."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timezone
from typing import Any

from loop.ui.report.rows import UNKNOWN, number, parse_time, rungs, trusted_val_bpb


def fmt_bpb(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:.4f}"


def fmt_delta(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:+.4f}"


def fmt_bytes(value: float | None) -> str:
    return UNKNOWN if value is None else f"{int(value):,}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return UNKNOWN
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def fmt_time(value: Any) -> str:
    stamp = parse_time(value)
    if stamp is None:
        return UNKNOWN
    return stamp.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def short_commit(value: Any) -> str:
    return value[:10] if isinstance(value, str) and value else "-"


def fmt_rate(per_hour: float | None) -> str:
    return UNKNOWN if per_hour is None else f"{per_hour:.1f} experiments per hour"



def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def evidence_text(item: Any) -> str:
    """One piece of evidence: a string as written, or a record (loop.backlog.ideas.Evidence or a
    dict with experiment/profile/delta/status) as "E0012 breadth delta=-0.0031 keep"."""
    if isinstance(item, str):
        return item
    experiment = _field(item, "experiment")
    if experiment is None:
        return str(item)
    delta = fmt_delta(number(_field(item, "delta")))
    return (f"{experiment} {_field(item, 'profile') or UNKNOWN} delta={delta} "
            f"{_field(item, 'status') or UNKNOWN}")


def idea_view(item: Any) -> dict[str, Any]:
    """An idea as id/status/text/evidence, from a dict or any object with those attributes."""
    evidence = _field(item, "evidence")
    if evidence is None:
        evidence = []
    elif isinstance(evidence, (str, dict)) or not isinstance(evidence, Iterable):
        evidence = [evidence]
    return {"id": str(_field(item, "id") or "?"), "status": str(_field(item, "status") or "?"),
            "text": str(_field(item, "text") or ""),
            "evidence": [evidence_text(e) for e in evidence]}


def rung_summary(row: dict) -> str:
    parts = [f"{p}: {fmt_bpb(trusted_val_bpb(row, p))}" for p in rungs(row)]
    return "; ".join(parts) or "-"


def session_count(session: dict) -> str:
    baselines = sum(1 for r in session["experiments"] if r.get("baseline"))
    changes = len(session["experiments"]) - baselines
    return f"{changes} ({session['kept']} kept) + {baselines} baseline(s)"
