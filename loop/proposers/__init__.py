"""Proposers: who edits the worktree (search, agent, ideas).

A proposer makes one change in the worktree (which is at the incumbent) and says what it did.
The scheduler then validates the diff like any other (editable set, duplicate check), so a
proposer is never trusted to stay inside its boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass
class Proposal:
    description: str                       # one line for the ledger, e.g. "MATRIX_LR 0.04 -> 0.05"
    knobs: dict[str, float | int] | None   # full knob configuration after the change, or None
    idea: str | None = None                # id of the backlog idea it tests, e.g. "I003"


@runtime_checkable
class Proposer(Protocol):
    name: str

    def propose(self, worktree: Path, history: list[dict]) -> Proposal | None:
        """Edit `worktree` and describe the change; None when there is nothing left to try."""
        ...
