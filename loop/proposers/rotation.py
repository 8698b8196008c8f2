"""Several proposers taking turns, one experiment each (`proposer: rotation:` in autogolf.yaml).

Each experiment asks the next proposer in the rotation; one that has nothing to propose
(returns None) is skipped for that experiment, and the rotation is over only when none of
them has anything left. `name` is the proposer that made the latest proposal, so the ledger
row names who actually proposed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from loop.proposers.base import Proposal, Proposer


class Rotation(Proposer):
    def __init__(self, proposers: Sequence[Proposer]):
        if not proposers:
            raise ValueError("a rotation needs at least one proposer")
        self.proposers = list(proposers)
        self.name: str = self.proposers[0].name
        self._next = 0
        self._last: Proposer | None = None

    def propose(self, worktree: Path, history: list[dict]) -> Proposal | None:
        """The next proposer's proposal; the ones after it in turn while they return None."""
        for _ in range(len(self.proposers)):
            proposer = self.proposers[self._next]
            self._next = (self._next + 1) % len(self.proposers)
            proposal = proposer.propose(worktree, history)
            if proposal is not None:
                self.name = proposer.name
                self._last = proposer
                return proposal
        return None

    def after_verdict(self, row: dict) -> None:
        if self._last is not None:
            self._last.after_verdict(row)

    def why_done(self) -> str | None:
        reasons = [f"{p.name}: {r}" for p in self.proposers if (r := p.why_done())]
        return "; ".join(reasons) or None

    def skipped_ideas(self) -> dict[str, str]:
        return {k: v for p in self.proposers for k, v in p.skipped_ideas().items()}

    def containment(self) -> str | None:
        lines = [c for c in (p.containment() for p in self.proposers) if c]
        return "; ".join(dict.fromkeys(lines)) or None
