"""The agent's prompt, part by part: the rules, the idea to try, the incumbents, recent
results and imported pi runs; the text limits that keep it bounded.

It does not run the agent or read its summary (loop/proposers/agent.py, claim.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from loop.backlog.ideas import Idea, IdeasFile, families, row_delta, tested_ideas

MAX_REASON = 200
MAX_FILE_CHARS = 16_000  # of autoresearch.md and of the backlog in the prompt: it stays bounded


def pick_idea(backlog: IdeasFile | None, history: list[dict],
              avoid: set[str] | frozenset[str] = frozenset()) -> Idea | None:
    """The untried idea to suggest: ones that need code (no knobs, no patch: the `ideas`
    proposer applies the others without an agent) first, in file order; untested only, and
    none of a family in `avoid` (rotated away from after losses)."""
    if backlog is None:
        return None
    tested, kinds = tested_ideas(history), families(backlog)
    fresh = [i for i in backlog.untried() if i.id not in tested and kinds.get(i.id) not in avoid]
    return next((i for i in fresh if not i.applicable), fresh[0] if fresh else None)


def rules_section(editable: Sequence[str], protected: Sequence[str], summary: Path,
           timeout_s: float) -> str:
    allowed = ", ".join(f"`{g}`" for g in editable) or "(see the Files table below)"
    never = ", ".join(f"`{g}`" for g in protected) or "(see the Files table below)"
    return (
        f"- Edit only files matching: {allowed}. Never edit: {never}. Any other edit makes "
        "the whole experiment `forbidden_edit` and it is thrown away.\n"
        "- Do not run git commands that change anything (no commit, branch, checkout, stash, "
        "reset, config or hooks). The daemon commits a kept change itself; a change to git "
        "metadata discards the experiment.\n"
        "- One change per experiment. Never change the seed, the validation data or window, "
        "or how the metric is computed.\n"
        "- Do not run long benchmarks: the daemon measures your change. A quick "
        "`bash autoresearch.checks.sh` is fine.\n"
        f"- You have {timeout_s:g} seconds; after that you are stopped and the change is lost.\n"
        f"- When done, write two lines to `{summary}`: first, what you changed and why it "
        "should lower val_bpb (it becomes the experiment's description); then `idea: <id>` "
        "with the backlog id of the idea you implemented (e.g. `idea: I002`), or `idea: own` "
        "for an idea of your own. The experiment is credited to the idea you name. Then "
        "exit.\n"
    )


def idea_section(idea: Idea | None, avoid: set[str]) -> str:
    away = (f" Stay away from these families, which lost several times in a row: "
            f"{', '.join(sorted(avoid))}." if avoid else "")
    if idea is None:
        return ("No untried idea is queued. Choose one yourself from the session document "
                f"and what has been tried; do not repeat a dead end.{away}\n")
    lines = [f"Try backlog idea [{idea.id}]: {idea.text}"]
    if idea.knobs:
        lines.append("Knob settings: " + " ".join(f"{k}={v}" for k, v in idea.knobs.items()))
    if idea.patch:
        lines.append(f"Patch it names: {idea.patch}")
    if idea.source:
        lines.append(f"Source: {idea.source}")
    lines += [f"Evidence: {e.experiment} {e.profile} delta="
              f"{'n/a' if e.delta is None else f'{e.delta:+.4f}'} {e.status}"
              for e in idea.evidence]
    lines += [f"Note: {n}" for n in idea.notes]
    return "\n".join(lines) + "\n"


def incumbents_section(rows: list[dict]) -> str:
    """The latest keep per profile of the current session (the session of the last row:
    the history may hold earlier sessions' rows too, whose keeps are not this branch's)."""
    session = next((r.get("session") for r in reversed(rows) if r.get("session")), None)
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        if row.get("status") != "keep" or row.get("session") != session:
            continue
        for profile, rung in (row.get("rungs") or {}).items():
            value = (rung or {}).get("val_bpb")
            if isinstance(value, (int, float)):
                best[profile] = (float(value), str(row.get("id")))  # the latest keep wins
    if not best:
        return "None measured yet in this session.\n"
    return "\n".join(f"- {p}: val_bpb {v:.4f} ({e})" for p, (v, e) in best.items()) + "\n"


def rows_section(rows: list[dict]) -> str:
    if not rows:
        return "None yet.\n"
    lines = []
    for row in rows:
        profile, delta = row_delta(row)
        shown = f" {profile} delta={delta:+.4f}" if delta is not None else ""
        idea = f" [{row['idea']}]" if row.get("idea") else ""
        reason = cut(" ".join(str(row.get("reason") or "").split()))
        lines.append(f"- {row.get('id')} {row.get('status')}{shown}{idea}: "
                     f"{' '.join(str(row.get('description') or '').split())} - {reason}")
    return "\n".join(lines) + "\n"


def imported_lines(rows: list[dict]) -> str:
    """One line per imported pi run: its status, pi's metric, what it tried and why not."""
    lines = []
    for row in rows:
        metric = row.get("metric")
        shown = (f" {row.get('metric_name') or 'metric'}={metric:.4f}"
                 if isinstance(metric, (int, float)) else "")
        why = " / ".join(str(row[k]) for k in ("hypothesis", "rollback_reason",
                                               "next_action_hint") if row.get(k))
        lines.append(f"- {row.get('id')} pi {row.get('pi_status')}{shown}: "
                     f"{' '.join(str(row.get('description') or '').split())}"
                     + (f" - {cut(' '.join(why.split()))}" if why else ""))
    return "\n".join(lines) + "\n"


def bounded(text: str | None, name: str) -> str | None:
    if text is None or len(text) <= MAX_FILE_CHARS:
        return text
    return (text[:MAX_FILE_CHARS] + f"\n\n(... {len(text) - MAX_FILE_CHARS:,} more characters "
            f"of {name} cut here; read the file in the worktree)\n")


def cut(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
