"""What one finished experiment publishes: its results JSON records (SPEC section 10).

One record per rung the experiment reached, with the status and the reason; a score that was
not measured (a crash, a failed check) is null, never 0. Each record carries the agent's own
baseline at that rung and the gain over it: the only comparison that holds across machines
(issue 20), since absolute scores differ with the hardware.
"""

from __future__ import annotations

from typing import Any

from loop.workspace import board as wb

REASON_CHARS = 400  # a post's front-matter line stays short; the full reason is in the JSON


def test_samples(rung: dict) -> int | None:
    """How many validation tokens the score was computed on: the `val_tokens` the trainer
    reports it scored (the rung's protocol, loop/judge/protocol.py), None when unknown."""
    value = (rung.get("protocol") or {}).get("val_tokens")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def score_of(rung: dict) -> float | None:
    value = rung.get("val_bpb")
    return float(value) if wb._number(value) is not None else None


def own_baseline(rows: list[dict], exp: Any, profile: str, rung: dict) -> float | None:
    """This agent's first baseline of the session at `profile` on the same dataset and the same
    protocol as `rung`, or None (no baseline there, or it was measured differently)."""
    for row in rows:
        if (row.get("type") != "experiment" or not row.get("baseline")
                or row.get("session") != exp.session or row.get("dataset") != exp.dataset
                or row.get("status") != "keep"):
            continue
        base = (row.get("rungs") or {}).get(profile) or {}
        if score_of(base) is not None and base.get("protocol") == rung.get("protocol"):
            return score_of(base)
    return None


def rungs_to_publish(row: dict) -> list[tuple[str | None, dict]]:
    """(profile, rung) for every rung the experiment reached; (None, {}) when none."""
    rungs = [(p, r) for p, r in (row.get("rungs") or {}).items() if isinstance(r, dict)]
    return rungs or [(None, {})]


def result_record(exp: Any, row: dict, profile: str | None, rung: dict, *, agent: str,
                  metric: str, direction: str, patch: str | None, incumbent: str | None,
                  baseline: float | None) -> dict:
    score = score_of(rung)
    before = (row.get("incumbent_before") or {}).get(profile) if profile else None
    return {
        "agent_id": agent, "experiment": exp.id, "score": score,
        "timestamp": row.get("timestamp"),
        "model": f"benchmark/train_gpt_mlx.py@{str(row.get('trainer_hash'))[:12]}",
        "test_samples": test_samples(rung),
        "notes": f"{exp.description}; {row.get('status')}: {row.get('reason')}",
        "metric": metric, "direction": direction, "profile": profile,
        "total_bytes": rung.get("total_bytes"), "dataset": exp.dataset,
        "commit": row.get("commit"), "patch": patch, "status": row.get("status"),
        "reason": row.get("reason"), "diff_hash": exp.diff_hash, "incumbent": incumbent,
        "incumbent_score": before, "baseline_score": baseline,
        "gain": wb.gain_over(baseline, score, direction), "session": exp.session,
    }


def short(text: object) -> str:
    words = " ".join(str(text).split())
    return words if len(words) <= REASON_CHARS else words[:REASON_CHARS - 3] + "..."
