"""How a verdict travels: `Decided` (the outcome is known before the ladder finished),
`Abandon` (a stop mid-experiment) and `BaselineFailed`. The Verdict itself is a ledger value
(loop/store/verdict.py), re-exported here for the judge's callers.
"""

from __future__ import annotations

from loop.store.verdict import Verdict as Verdict


class Decided(Exception):
    """The experiment's outcome is known before its ladder finished (forbidden, failed...)."""

    def __init__(self, status: str, reason: str, margin: float | None = None):
        super().__init__(reason)
        self.verdict = Verdict(status, reason, margin)


class Abandon(Exception):
    """A stop was requested mid-experiment: undo the change, record `interrupted`."""


class BaselineFailed(Exception):
    """The incumbent itself failed at a rung: no candidate can be judged there."""
