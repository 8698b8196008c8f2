"""The ledger's row schema and the views the daemon reads from its rows.

`Experiment` is the one record an experiment builds up as it goes (it is also what the state
file holds between stages, so a killed daemon can finish the row); `Experiment.row()` is the
one place a ledger row of type "experiment" is made. The views below (sessions, incumbents,
duplicates, the next id) are pure functions of rows the caller already holds in memory: a
re-read of a long ledger per stage would dominate the loop's own time. DESIGN.md lists the
row's fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from loop.store.statuses import names_where
from loop.store.verdict import Verdict

# Rows that say nothing about the change itself, so the same diff may be tried again.
NOT_ABOUT_THE_CHANGE = names_where(says_about_change=False)


# What an experiment's time is spent on (row field `time_s`): the proposer (an agent's whole
# run), the checks, each rung's first (screening) run, the candidate's further runs (the
# sequential rule's seeds, re-runs, calibration), the incumbent's runs for the pairs, and the
# judge's own scoring of the artifacts.
TIME_KINDS = ("propose", "checks", "screen", "repeats", "incumbent", "judge")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Experiment:
    """Everything a ledger row needs; serialised into the state file before every stage."""

    id: str
    session: str | None
    head: str | None
    proposer: str
    description: str = ""
    baseline: bool = False
    manual: bool = False
    idea: str | None = None
    knobs: dict | None = None
    diff_hash: str | None = None
    patch: str | None = None
    dataset: str | None = None
    trainer_hash: str | None = None
    rungs: dict[str, dict] = field(default_factory=dict)
    incumbent_before: dict[str, float | None] = field(default_factory=dict)
    stage: str = "propose"
    verdict: Verdict | None = None  # the judge's, once decided
    base_code: str | None = None  # code hash of `head` (GitSession.code_hash)
    agent: dict | None = None  # how an agent proposer's attempt ended (its outcome, log...)
    trust: dict = field(default_factory=dict)  # the judge's evidence: noise, calibration...
    # Where its time went, seconds by TIME_KINDS (the end summary adds a session's up).
    time_s: dict[str, float] = field(default_factory=dict)

    def spent(self, kind: str, seconds: float) -> None:
        """Add `seconds` of `kind` (one of TIME_KINDS) to the experiment's time."""
        if kind not in TIME_KINDS:
            raise ValueError(f"unknown kind of time {kind!r}; one of {', '.join(TIME_KINDS)}")
        self.time_s[kind] = round(self.time_s.get(kind, 0.0) + max(0.0, seconds), 3)

    def row(self, commit: str | None = None, code: str | None = None) -> dict:
        """`code`: the code hash `commit` measured (a keep's or a baseline's), else None."""
        verdict = self.verdict
        extra = {"agent": self.agent} if self.agent else {}
        extra |= self.trust
        return {
            "type": "experiment", "id": self.id, "session": self.session,
            "timestamp": utc_now(), "proposer": self.proposer, "idea": self.idea,
            "description": self.description, "knobs": self.knobs, "rungs": self.rungs,
            "status": verdict.status if verdict else None,
            "reason": verdict.reason if verdict else None,
            "margin": verdict.margin if verdict else None,
            "incumbent_before": self.incumbent_before,
            "base_commit": self.head, "commit": commit, "patch": self.patch,
            "diff_hash": self.diff_hash, "dataset": self.dataset,
            "trainer_hash": self.trainer_hash, "manual": self.manual, "baseline": self.baseline,
            "base_code": self.base_code, "code": code, "time_s": self.time_s,
        } | extra

    def state(self) -> dict:
        """What the state file holds for this experiment (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, data: dict) -> Experiment:
        names = {f.name for f in dataclasses.fields(cls)}
        exp = cls(**{k: v for k, v in data.items() if k in names})
        if isinstance(exp.verdict, dict):
            exp.verdict = Verdict.from_dict(exp.verdict)
        return exp


# --------------------------------------------------------------------------- views


def sessions(rows: list[dict]) -> list[str]:
    """Session names in the order their headers were written."""
    return [r["session"] for r in rows if r.get("type") == "session" and r.get("session")]


def session_experiments(rows: list[dict], session: str | None) -> list[dict]:
    return [
        r
        for r in rows
        if r.get("type") == "experiment" and r.get("session") == session and not r.get("manual")
    ]


def incumbents(rows: list[dict], session: str | None, head: str | None = None,
               dataset: str | None = None, code: str | None = None) -> dict[str, dict]:
    """Per profile: the latest kept/baseline measurement of the session.

    With `code` (GitSession.code_hash: the tree without the bookkeeping files), only
    measurements of that code count (a keep at breadth makes an older confirm figure stale;
    a bookkeeping commit changes nothing); rows written before code hashes existed are
    matched by `head`, their commit. With `dataset`, only rows from that dataset (never
    compared across). Each value: {"val_bpb", "id", "commit"}.
    """
    found: dict[str, dict] = {}
    for row in session_experiments(rows, session):
        if row.get("status") != "keep":
            continue
        if not same_code(row, "code", code, "commit", head) or (
                dataset and row.get("dataset") != dataset):
            continue
        for profile, rung in (row.get("rungs") or {}).items():
            value = rung.get("val_bpb") if isinstance(rung, dict) else None
            if isinstance(value, (int, float)):
                found[profile] = {"val_bpb": value, "id": row.get("id"),
                                  "commit": row.get("commit")}
    return found


def incumbent_rung(rows: list[dict], session: str | None, profile: str, head: str | None,
                   dataset: str | None, code: str | None) -> dict:
    """The ledger rung of the incumbent's measurement at `profile` ({} when none)."""
    known = incumbents(rows, session, head, dataset, code).get(profile) or {}
    row = next((r for r in session_experiments(rows, session) if r.get("id") == known.get("id")),
               {})
    return (row.get("rungs") or {}).get(profile) or {}


def same_code(row: dict, code_key: str, code: str | None, commit_key: str,
              commit: str | None) -> bool:
    """Whether `row` measured that code: by code hash, else (older rows) by commit."""
    if code and row.get(code_key):
        return row[code_key] == code
    return not commit or row.get(commit_key) == commit


def find_duplicate(rows: list[dict], digest: str, base_commit: str,
                   dataset: str | None, base_code: str | None = None) -> dict | None:
    """An earlier measurement of the same diff on the same incumbent code and dataset."""
    for row in rows:
        if (
            row.get("type") == "experiment"
            and row.get("diff_hash") == digest
            and same_code(row, "base_code", base_code, "base_commit", base_commit)
            and row.get("dataset") == dataset
            and row.get("status") not in NOT_ABOUT_THE_CHANGE
            and not row.get("baseline")
        ):
            return row
    return None


def next_id(rows: list[dict], reserved: set[str] | frozenset[str] = frozenset()) -> str:
    """The id after the highest E<n> among rows and in-flight ids: "E0001" for no rows."""
    highest = 0
    for exp_id in [r.get("id") for r in rows] + list(reserved):
        text = str(exp_id or "")
        if text[:1] == "E" and text[1:].isdigit():
            highest = max(highest, int(text[1:]))
    return f"E{highest + 1:04d}"


def normalise_id(text: str) -> str:
    """"7", "e7", "E0007" -> "E0007"; anything else unchanged."""
    digits = text[1:] if text[:1] in "eE" else text
    return f"E{int(digits):04d}" if digits.isdigit() else text


def commit_message(exp: Experiment) -> str:
    """Description, then one trailer line per rung with the figures that won."""
    lines = [exp.description or exp.id, "", f"Autogolf-Experiment: {exp.id}"]
    for profile, rung in exp.rungs.items():
        figures = " ".join(
            f"{k}={rung[k]}" for k in ("val_bpb", "total_bytes", "step_ms", "wall_s") if k in rung
        )
        incumbent = fmt(exp.incumbent_before.get(profile))
        lines.append(f"Autogolf-{profile.capitalize()}: {figures} incumbent={incumbent}")
    lines.append(f"Autogolf-Margin: {fmt(exp.verdict.margin if exp.verdict else None)}")
    return "\n".join(lines) + "\n"


def summary_line(row: dict) -> str:
    """One line per finished experiment, as `autogolf run` prints it."""
    scores = " ".join(f"{p}={fmt(r.get('val_bpb'))}" for p, r in (row.get("rungs") or {}).items())
    why = "" if row.get("reason") == "baseline" else f"  ({row.get('reason')})"
    return f"{row['id']} {row['status']:<15} {scores or '-'}  {row.get('description')}{why}"


def fmt(value: Any) -> str:
    return "unknown" if value is None else f"{value:.4f}"
