"""`Bench`: all the judge asks of whoever runs it - benchmark runs, incumbents, a stop.

The judge (loop.judge.judge) measures only through this interface; the daemon implements it
(loop.daemon.loopbench) because it owns the worktree, the ledger and the state file. The
judge never touches git or the ledger itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from loop.measure.pipeline import Run
from loop.measure.pruning import CurvePruner
from loop.store.rows import Experiment


class Bench(ABC):
    """What the judge needs from the loop: runs of the benchmark, and incumbents."""

    @abstractmethod
    def run(self, exp: Experiment, profile: str, tag: str = "",
            env_extra: dict[str, str] | None = None, pruner: CurvePruner | None = None) -> Run:
        """One benchmark of the worktree as it is (the candidate, or a baseline's head);
        `pruner` stops a candidate clearly behind the incumbent's curve (`pruned`)."""

    @abstractmethod
    def set_aside(self, exp: Experiment) -> None:
        """Take the candidate out of the worktree (its patch is saved): the incumbent's code."""

    @abstractmethod
    def put_back(self, exp: Experiment) -> None:
        """Re-apply the candidate set aside."""

    @abstractmethod
    def baseline(self, profile: str, parent: Experiment | None = None,
                 description: str | None = None) -> dict:
        """Measure the incumbent at `profile` as its own ledger row (returned); with
        `parent`, that candidate is set aside meanwhile and put back after."""

    @abstractmethod
    def checkpoint(self, exp: Experiment, stage: str) -> None:
        """`exp` is entering `stage` (the loop records it, to resume after a kill)."""

    @abstractmethod
    def stop_requested(self) -> str | None:
        """Why to stop, once a stop was requested (a signal, the deadline, the stop file),
        else None."""

    def stopped(self) -> bool:
        """Whether a stop was requested (polled while the judge scores an artifact)."""
        return self.stop_requested() is not None

    @abstractmethod
    def say(self, line: str) -> None:
        """One line for the person watching."""
