"""The "What has been tried" section of the session document (autoresearch.md), rewritten
from the ledger between its two markers: kept changes with their deltas, then dead ends with
their reasons. The rest of the document is never touched; the ideas backlog is ideas.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from loop.backlog.ideas import IdeasError, read_or_none
from loop.store.files import atomic_write
from loop.store.statuses import names_where

TRIED_START = "<!-- autogolf:tried:start -->"
TRIED_END = "<!-- autogolf:tried:end -->"
# The tried section is read by a fresh agent on every experiment: keep it short.
MAX_DEAD_ENDS = 30
MAX_REASON = 200
# Rows that are no evidence about their change (the daemon stopped, or it was not run).
NOT_EVIDENCE = names_where(says_about_change=False)


def update_tried_section(md_path: Path | str, rows: Iterable[dict]) -> bool:
    """Rewrite the text between the tried markers of autoresearch.md from ledger rows; the
    rest of the file stays byte-identical. True when the file changed; IdeasError when the
    markers are missing or out of order (the file is then left alone)."""
    path = Path(md_path)
    text = read_or_none(path)
    if text is None:
        raise IdeasError(f"no session document at {path}")
    start = text.find(TRIED_START)
    end = text.find(TRIED_END, start + len(TRIED_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise IdeasError(f"{path} has no `{TRIED_START}` ... `{TRIED_END}` markers; add "
                         "them where the tried section should go")
    nl = "\r\n" if "\r\n" in text[:start + len(TRIED_START) + 2] else "\n"
    body = render_tried(rows).replace("\n", nl)
    new = text[:start + len(TRIED_START)] + nl + body + nl + text[end:]
    if new == text:
        return False
    atomic_write(path, new)
    return True


def render_tried(rows: Iterable[dict]) -> str:
    """Markdown for the tried section: kept changes with their deltas, then dead ends with
    their reasons (the latest MAX_DEAD_ENDS). Deterministic: same rows, same text."""
    measured = [r for r in rows if _counts_as_tried(r)]
    if not measured:
        return "Nothing yet: no experiment has finished in this workspace."
    kept = [r for r in measured if r.get("status") == "keep"]
    dead = [r for r in measured if r.get("status") != "keep"]
    out = [f"{len(measured)} experiments: {len(kept)} kept, {len(dead)} dead ends.", ""]
    out += ["Kept (in order; each is part of the incumbent):"]
    out += [f"- {_kept_line(r)}" for r in kept] or ["- none yet"]
    out += ["", "Dead ends (not kept; do not retry them unchanged):"]
    if len(dead) > MAX_DEAD_ENDS:
        out.append(f"- ... {len(dead) - MAX_DEAD_ENDS} older ones: see `autogolf status` "
                   "and .autogolf/ledger.jsonl")
    out += [f"- {_dead_line(r)}" for r in dead[-MAX_DEAD_ENDS:]] or ["- none yet"]
    return "\n".join(out)


def _counts_as_tried(row: dict) -> bool:
    return (isinstance(row, dict) and row.get("type", "experiment") == "experiment"
            and not row.get("baseline") and not row.get("manual")
            and row.get("status") is not None and row["status"] not in NOT_EVIDENCE)


def _kept_line(row: dict) -> str:
    deltas = []
    for profile, rung in (row.get("rungs") or {}).items():
        value = (rung or {}).get("val_bpb")
        before = (row.get("incumbent_before") or {}).get(profile)
        if isinstance(value, (int, float)) and isinstance(before, (int, float)):
            deltas.append(f"{profile} {before:.4f} -> {value:.4f} ({value - before:+.4f})")
        elif isinstance(value, (int, float)):
            deltas.append(f"{profile} {value:.4f}")
    return f"{_head(row)}: {'; '.join(deltas) or 'no val_bpb recorded'}"


def _dead_line(row: dict) -> str:
    reason = _clean(row.get("reason") or "no reason recorded")
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 3] + "..."
    return f"{_head(row)} - {row.get('status')}: {reason}"


def _head(row: dict) -> str:
    idea = f" [{row['idea']}]" if row.get("idea") else ""
    return f"{row.get('id', '?')}{idea} {_clean(row.get('description') or '(no description)')}"


def _clean(text: str) -> str:
    """One line, and no HTML comment delimiters (a description must not fake a marker)."""
    return " ".join(str(text).split()).replace("<!--", "<!-").replace("-->", "->")
