"""The proposer's contract: who edits the worktree, and what the loop learns back.

A proposer makes one change in the session worktree (which is at the incumbent) and says what
it did (`propose`); the loop then validates the diff like any other (editable set, duplicate
check), so a proposer is never trusted to stay inside its boundary. After the experiment's
row is written, the loop calls `after_verdict(row)` so a proposer can learn from the outcome
(most learn from `history`, every measured row, passed to `propose`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from loop.store.verdict import Verdict


@dataclass
class Proposal:
    description: str                       # one line for the ledger, e.g. "MATRIX_LR 0.04 -> 0.05"
    knobs: dict[str, float | int] | None   # full knob configuration after the change, or None
    idea: str | None = None                # id of the backlog idea it tests, e.g. "I003"
    # How the proposer's own attempt went (an agent's exit, log, prompt): the row's `agent`.
    attempt: dict | None = None
    # The attempt's outcome when it left nothing to validate (an agent that failed, timed out
    # or changed nothing): the loop records this verdict instead of measuring.
    verdict: Verdict | None = None
    # Added to the final reason, whatever the verdict (e.g. "the agent's own commit was undone").
    note: str | None = None
    touched_git: bool = False  # the attempt changed git metadata: no git beyond the restore


class Proposer(ABC):
    """Base class of every proposer (search, agent, ideas, a rotation of them)."""

    name: str = "proposer"

    @abstractmethod
    def propose(self, worktree: Path, history: list[dict]) -> Proposal | None:
        """Edit `worktree` and describe the change; None when there is nothing left to try."""

    def after_verdict(self, row: dict) -> None:  # noqa: B027 - a hook, empty by default
        """The row of the experiment this proposer's last proposal became."""

    def skipped_ideas(self) -> dict[str, str]:
        """Ideas it could not apply: idea id -> why (the backlog marks them invalid)."""
        return {}

    def containment(self) -> str | None:
        """How the outside program it runs is confined (one line for the session start);
        None when it runs none (the daemon's own code proposes)."""
        return None

    def why_done(self) -> str | None:
        """Why `propose` returned None, when there is more to say than "nothing left" (e.g.
        the agent's budget is spent); the stop row gives it."""
        return None
